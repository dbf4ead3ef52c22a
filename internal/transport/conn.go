package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/wneessen/go-mail/smtp"
	"go.uber.org/zap"

	"github.com/mailrelay/mailrelay/internal/smtpwire"
)

// conn is one pooled SMTP connection, used by one Send at a time.
type conn struct {
	id       uint64
	raw      net.Conn     // the TCP connection under any TLS: closing it aborts I/O in flight
	client   *smtp.Client // go-mail's protocol client on top of raw
	lastUsed time.Time    // when it went back to the pool (under SMTP.mu)
	uses     int          // messages sent over it

	// What the server's EHLO reply allows, read once after the handshake.
	mode     smtpwire.Mode // lockstep, pipelined, or pipelined with BDAT
	params   []string      // MAIL FROM parameters: BODY=8BITMIME, SMTPUTF8
	utf8     bool          // SMTPUTF8 offered
	enhanced bool          // ENHANCEDSTATUSCODES offered: replies carry x.y.z codes
}

// extensions reads what the session's EHLO reply offers, and how messages
// will go over it.
func (c *conn) extensions(p Pipelining) {
	has := func(ext string) bool { ok, _ := c.client.Extension(ext); return ok }
	c.utf8 = has("SMTPUTF8")
	c.enhanced = has("ENHANCEDSTATUSCODES")
	// The parameters go-mail adds whenever the server offers them.
	if has("8BITMIME") {
		c.params = append(c.params, "BODY=8BITMIME")
	}
	if c.utf8 {
		c.params = append(c.params, "SMTPUTF8")
	}
	switch {
	case p == PipeliningOff || !has("PIPELINING"):
		c.mode = smtpwire.Lockstep
	case has("CHUNKING"):
		c.mode = smtpwire.Chunked
	default:
		c.mode = smtpwire.Pipelined
	}
}

// closedByPeer reports whether the server has said something since the
// connection went idle, or closed it: either way it is no longer waiting
// for MAIL. It looks without blocking and without consuming anything.
func (c *conn) closedByPeer() bool {
	if c.client.Text.R.Buffered() > 0 {
		return true
	}
	return peerSpoke(c.raw)
}

// abort closes the socket at once. Safe to call from any goroutine, any
// number of times; the smtp.Client's own Close would wait for the command
// in flight.
func (c *conn) abort() { _ = c.raw.Close() }

// dial opens and sets up a connection: TCP connect, implicit TLS
// (SecuritySSL), greeting, EHLO, STARTTLS (mandatory with SecurityStartTLS),
// AUTH. Each step has s.timeout; the end of ctx aborts whichever step is
// running. On failure the socket is closed and the *Error names the step.
func (s *SMTP) dial(ctx context.Context) (*conn, *Error) {
	dctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", s.addr)
	if err != nil {
		return nil, sessionError(dialStep(err), err)
	}
	c := &conn{id: s.nextID.Add(1), raw: raw}
	stop := context.AfterFunc(ctx, c.abort)
	client, step, err := s.handshake(dctx, raw)
	if !stop() && err == nil {
		step, err = StepConnect, ctx.Err()
	}
	if err != nil {
		c.abort()
		e := sessionError(step, err)
		s.log.Debug("smtp connection failed", zap.Uint64("smtp_conn", c.id),
			zap.String("step", step), zap.Int("smtp_code", e.Code), zap.Error(s.redact(err)))
		return nil, e
	}
	c.client = client
	c.extensions(s.pipelining)
	s.log.Debug("smtp connection opened", zap.Uint64("smtp_conn", c.id), zap.Stringer("smtp_mode", c.mode))
	return c, nil
}

// handshake runs the session setup on raw and returns the step that failed.
func (s *SMTP) handshake(ctx context.Context, raw net.Conn) (*smtp.Client, string, error) {
	deadline := func() { _ = raw.SetDeadline(time.Now().Add(s.timeout)) }
	deadline()

	var nc net.Conn = raw
	if s.security == SecuritySSL {
		tc := tls.Client(raw, s.tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, StepTLS, fmt.Errorf("implicit TLS handshake: %w", err)
		}
		nc = tc // smtp.NewClient sees a *tls.Conn: AUTH knows it is encrypted
	}

	client, err := smtp.NewClient(nc, s.host) // reads the 220 greeting
	if err != nil {
		return nil, StepConnect, fmt.Errorf("greeting: %w", err)
	}
	deadline()
	if err := client.Hello(s.helo); err != nil {
		return nil, StepHelo, err
	}

	if s.security == SecurityStartTLS {
		if ok, _ := client.Extension("STARTTLS"); !ok {
			return nil, StepTLS, ErrStartTLSUnsupported
		}
		deadline()
		if err := client.StartTLS(s.tlsConf); err != nil {
			return nil, StepTLS, fmt.Errorf("STARTTLS: %w", err)
		}
		if st, ok := client.TLSConnectionState(); !ok || !st.HandshakeComplete {
			return nil, StepTLS, errors.New("STARTTLS: no TLS session after the handshake")
		}
	}

	if s.auth {
		deadline()
		if err := s.authenticate(client); err != nil {
			return nil, StepAuth, err
		}
	}
	return client, "", nil
}

// authenticate logs in with PLAIN, or LOGIN when the server offers only
// that. Over a connection without TLS (SecurityNone) NewSMTP has already
// checked that this is allowed: a loopback host, or InsecureAuth; go-mail's
// mechanisms are then told so, like its PLAIN-NOENC and LOGIN-NOENC types.
// With TLS they refuse to run on a connection that is not encrypted.
func (s *SMTP) authenticate(client *smtp.Client) error {
	ok, offered := client.Extension("AUTH")
	if !ok {
		return errors.New("the server does not offer AUTH")
	}
	mechs := strings.Fields(strings.ToUpper(offered))
	allowClear := s.security == SecurityNone
	var auth smtp.Auth
	switch {
	case slices.Contains(mechs, "PLAIN"):
		auth = smtp.PlainAuth("", s.username, s.password, s.host, allowClear)
	case slices.Contains(mechs, "LOGIN"):
		auth = smtp.LoginAuth(s.username, s.password, s.host, allowClear)
	default:
		return fmt.Errorf("the server offers %q; mailrelay supports PLAIN and LOGIN", offered)
	}
	return client.Auth(auth)
}
