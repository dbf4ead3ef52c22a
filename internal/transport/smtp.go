package transport

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wneessen/go-mail"
	"go.uber.org/zap"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/internal/smtpwire"
)

// Security says how the SMTP connection is protected. It is the one type
// for it: config parses EMAIL_USE_TLS and EMAIL_USE_SSL into it, and the
// status API and the start-up log print its String.
type Security int

// The ways to protect the SMTP connection.
const (
	SecurityNone     Security = iota // plain SMTP, no TLS
	SecurityStartTLS                 // STARTTLS, mandatory: a server without it gets nothing (EMAIL_USE_TLS)
	SecuritySSL                      // implicit TLS from the first byte (EMAIL_USE_SSL)
)

// String returns "none", "starttls" or "ssl", the words of the status API.
func (s Security) String() string {
	switch s {
	case SecurityNone:
		return "none"
	case SecurityStartTLS:
		return "starttls"
	case SecuritySSL:
		return "ssl"
	}
	return "Security(" + strconv.Itoa(int(s)) + ")"
}

// Defaults of SMTPConfig.
const (
	DefaultTimeout     = 15 * time.Second
	DefaultIdleTimeout = 30 * time.Second
	DefaultPoolSize    = 1
)

// quitTimeout bounds the polite QUIT when a healthy connection is closed.
const quitTimeout = 2 * time.Second

// SMTPConfig configures the SMTP backend.
type SMTPConfig struct {
	// Host is the relay host name or IP address; required. It follows
	// NormalizeHost, EMAIL_HOST's rule: an IPv6 address may be bracketed,
	// "[::1]" is dialled as ::1.
	Host     string
	Port     int      // 0 = 25 (465 with SecuritySSL)
	Security Security // SecurityNone, SecurityStartTLS or SecuritySSL

	// Username and Password authenticate with AUTH (PLAIN, or LOGIN when
	// the server offers only that). They go together, as EMAIL_HOST_USER
	// and EMAIL_HOST_PASSWORD do (SMTPAuth): both set means AUTH,
	// neither means none, and one without the other is refused.
	Username string
	Password string
	// InsecureAuth allows AUTH without TLS to a host that is not loopback
	// (MAILRELAY_SMTP_INSECURE_AUTH). Loopback hosts (localhost, 127.0.0.0/8,
	// ::1) are always allowed.
	InsecureAuth bool

	Timeout     time.Duration // bounds the connect, each setup step and each message; 0 = DefaultTimeout
	PoolSize    int           // most persistent connections; 0 = DefaultPoolSize
	IdleTimeout time.Duration // close connections idle longer; 0 = DefaultIdleTimeout
	// TLSConfig is cloned; nil means the system roots (Go honours
	// SSL_CERT_FILE and SSL_CERT_DIR). An empty ServerName becomes Host, and
	// MinVersion is raised to TLS 1.2.
	TLSConfig *tls.Config
	// HeloName is the name sent in EHLO (HELO): a host name or an address
	// literal, as NormalizeHeloName accepts it (MAILRELAY_EHLO_NAME); "" =
	// DefaultHeloName, this host's fully qualified name.
	HeloName string
	// Pipelining says whether the mail transaction may be pipelined (RFC
	// 2920, with BDAT when CHUNKING is offered) on a server that offers it
	// (MAILRELAY_SMTP_PIPELINING); PipeliningAuto, the zero value, does.
	Pipelining Pipelining
	// Signer, when set, signs every message (DKIM) right after it is
	// rendered; the signed bytes are what goes to the wire.
	Signer Signer
}

// Pipelining is MAILRELAY_SMTP_PIPELINING: whether the SMTP backend
// pipelines a server that offers PIPELINING.
type Pipelining int

// The pipelining settings.
const (
	PipeliningAuto Pipelining = iota // pipeline when the server offers PIPELINING; BDAT when it offers CHUNKING too
	PipeliningOff                    // always one command, one reply (for a server that offers it and misbehaves)
)

// String returns "auto" or "off", the words of MAILRELAY_SMTP_PIPELINING.
func (p Pipelining) String() string {
	switch p {
	case PipeliningAuto:
		return "auto"
	case PipeliningOff:
		return "off"
	}
	return "Pipelining(" + strconv.Itoa(int(p)) + ")"
}

// ParsePipelining reads MAILRELAY_SMTP_PIPELINING: "auto" or "off", in any
// case.
func ParsePipelining(v string) (Pipelining, bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "auto":
		return PipeliningAuto, true
	case "off":
		return PipeliningOff, true
	}
	return 0, false
}

// SMTP is the SMTP backend (EMAIL_BACKEND=smtp). It keeps a pool of up to
// PoolSize persistent connections: each is used by one Send at a time,
// dialled when needed, reused for later messages, thrown away after any
// error, and closed with QUIT by a background janitor once idle for longer
// than IdleTimeout. A Send that finds no free connection waits for one (or
// for its context). Close stops the janitor and closes the connections.
//
// Each connection is set up step by step with go-mail's smtp package
// (connect, implicit TLS, greeting, EHLO, STARTTLS, AUTH), so a failure
// names the step, the socket is always closed, and a cancelled context cuts
// any step short; messages then go over it with the smtpwire package:
// pipelined (MAIL, RCPT, DATA as one group, or MAIL, RCPT, BDAT and the
// content: one round trip a message) when the server offers PIPELINING,
// one command at a time otherwise, with no NOOP before and no RSET after a
// message. A pooled connection the server closed meanwhile is noticed
// before anything is written to it, or at MAIL FROM, and replaced once,
// transparently.
type SMTP struct {
	host        string
	addr        string
	security    Security
	auth        bool // Username and Password are set: AUTH after EHLO (and STARTTLS)
	username    string
	password    string
	tlsConf     *tls.Config
	helo        string
	timeout     time.Duration
	idleTimeout time.Duration
	pipelining  Pipelining
	signer      Signer // nil: messages go unsigned
	log         *zap.Logger
	secrets     []string // forms of the password that must never leave in an error

	slots       chan struct{} // one token per connection in use
	stop        chan struct{} // closed by Close
	janitorDone chan struct{}
	nextID      atomic.Uint64

	mu     sync.Mutex
	idle   []*conn // free connections, least recently used first
	closed bool
}

// NewSMTP checks cfg and returns an SMTP backend; it does not connect yet.
// The host and credentials are checked with NormalizeHost and
// SMTPAuth.Check, the functions config.Load applies to EMAIL_*, so the two
// never disagree on them: NewSMTP refuses what is not a host name or IP
// address, a username without a password or the reverse
// (ErrPasswordWithoutUser, ErrUserWithoutPassword), and AUTH without TLS to
// a host that is not loopback unless cfg.InsecureAuth is set
// (ErrInsecureAuth). log may be nil. Close must be called to stop the
// janitor goroutine.
func NewSMTP(cfg SMTPConfig, log *zap.Logger) (*SMTP, error) {
	if log == nil {
		log = zap.NewNop()
	}
	var problems []error
	host, ok := NormalizeHost(cfg.Host)
	switch {
	case cfg.Host == "":
		problems = append(problems, errors.New("no host (EMAIL_HOST)"))
	case !ok:
		problems = append(problems, fmt.Errorf("host %q is not a host name or IP address (EMAIL_HOST)", cfg.Host))
	}
	port := cfg.Port
	if port == 0 {
		port = mail.DefaultPort
		if cfg.Security == SecuritySSL {
			port = mail.DefaultPortSSL
		}
	}
	if port < 1 || port > 65535 {
		problems = append(problems, fmt.Errorf("port %d is not between 1 and 65535 (EMAIL_PORT)", cfg.Port))
	}
	if cfg.Pipelining != PipeliningAuto && cfg.Pipelining != PipeliningOff {
		problems = append(problems, fmt.Errorf("unknown pipelining mode %v (MAILRELAY_SMTP_PIPELINING)", cfg.Pipelining))
	}
	if cfg.Security < SecurityNone || cfg.Security > SecuritySSL {
		problems = append(problems, fmt.Errorf("unknown security %v", cfg.Security))
	}
	timeout := orDefault(cfg.Timeout, DefaultTimeout)
	if timeout < 0 {
		problems = append(problems, fmt.Errorf("timeout %v is negative (EMAIL_TIMEOUT)", cfg.Timeout))
	}
	idleTimeout := orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	if idleTimeout < 0 {
		problems = append(problems, fmt.Errorf("idle timeout %v is negative", cfg.IdleTimeout))
	}
	poolSize := cfg.PoolSize
	if poolSize == 0 {
		poolSize = DefaultPoolSize
	}
	if poolSize < 0 {
		problems = append(problems, fmt.Errorf("pool size %d is negative", cfg.PoolSize))
	}
	auth := SMTPAuth{
		Host:         host,
		User:         cfg.Username,
		HasPassword:  cfg.Password != "",
		TLS:          cfg.Security != SecurityNone,
		InsecureAuth: cfg.InsecureAuth,
	}
	if err := auth.Check(); errors.Is(err, ErrInsecureAuth) {
		problems = append(problems, fmt.Errorf("%w (host %s)", err, host))
	} else if err != nil {
		problems = append(problems, err)
	}
	helo, heloOK := NormalizeHeloName(cfg.HeloName)
	switch {
	case cfg.HeloName == "":
		helo = DefaultHeloName()
	case !heloOK:
		problems = append(problems, fmt.Errorf("EHLO name %q is not a host name or [IP literal] (MAILRELAY_EHLO_NAME)", cfg.HeloName))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("smtp backend: %w", errors.Join(problems...))
	}

	addr := net.JoinHostPort(host, strconv.Itoa(port))
	s := &SMTP{
		host:        host,
		addr:        addr,
		security:    cfg.Security,
		auth:        auth.Enabled(),
		username:    cfg.Username,
		password:    cfg.Password,
		tlsConf:     tlsConfig(cfg.TLSConfig, host),
		helo:        helo,
		timeout:     timeout,
		idleTimeout: idleTimeout,
		pipelining:  cfg.Pipelining,
		signer:      cfg.Signer,
		log:         log.With(zap.String("smtp_addr", addr), zap.Stringer("smtp_security", cfg.Security)),
		secrets:     secrets(cfg.Username, cfg.Password),
		slots:       make(chan struct{}, poolSize),
		stop:        make(chan struct{}),
		janitorDone: make(chan struct{}),
	}
	go s.janitor(max(idleTimeout/2, time.Millisecond))
	return s, nil
}

// Send renders m and sends it over a pooled connection. It returns nil once
// the server accepted the message (a failure after that, such as a broken
// connection, is ignored), or an *Error. A recipient or sender address with
// a non-ASCII local part goes only over a connection whose server offered
// SMTPUTF8 in its EHLO reply (with the SMTPUTF8 parameter on MAIL FROM);
// otherwise Send fails at once, permanently, at StepMail with an error
// wrapping ErrNoSMTPUTF8, and sends nothing.
//
// The transaction goes pipelined when the server offers PIPELINING (and
// Pipelining is not PipeliningOff), with the content in one BDAT chunk when
// it offers CHUNKING too; see the smtpwire package.
func (s *SMTP) Send(ctx context.Context, m *compose.Message) error {
	raw, err := renderBytes(m) // the rendered message: what goes to the wire, byte for byte
	if err != nil {
		return err
	}
	env, err := envelope(m)
	if err != nil {
		return &Error{Step: StepRender, Err: err}
	}
	if raw, err = signBytes(s.signer, raw); err != nil { // DKIM (sign.go)
		return err
	}
	utf8Err := smtputf8Needed(m.From.Email, m.To.Email) // nil: any server takes the addresses
	if e := s.acquire(ctx); e != nil {
		return e
	}
	defer func() { <-s.slots }()

	for attempt := 1; ; attempt++ {
		c, e := s.get(ctx, attempt > 1)
		if e != nil {
			return s.fail(ctx, e)
		}
		if utf8Err != nil && !c.utf8 {
			// Decided per connection, from the EHLO reply of this session.
			s.put(c) // nothing was sent over it
			return &Error{Step: StepMail, Err: utf8Err}
		}
		reused := !c.lastUsed.IsZero() // it waited in the pool: the server may have closed it
		e = s.deliver(ctx, c, env, raw)
		if e == nil {
			return nil
		}
		if attempt == 1 && reused && isStale(e) && ctx.Err() == nil {
			// The server closed the idle connection (or restarted): nothing
			// was accepted yet, so try once on a new one.
			s.log.Debug("pooled connection was dead, dialling a new one",
				zap.Uint64("smtp_conn", c.id), zap.Int("smtp_code", e.Code))
			continue
		}
		return s.fail(ctx, e)
	}
}

// Close stops the janitor and closes the idle connections with QUIT;
// connections still in use by a Send are closed when it returns. Later
// sends fail with ErrClosed. Close is idempotent.
func (s *SMTP) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()

	close(s.stop)
	<-s.janitorDone
	for _, c := range idle {
		s.closeConn(c, "closed")
	}
	return nil
}

// acquire waits for a connection slot.
func (s *SMTP) acquire(ctx context.Context) *Error {
	if err := ctx.Err(); err != nil {
		return &Error{Temporary: true, Step: StepPool, Err: err}
	}
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return &Error{Temporary: true, Step: StepPool, Err: ctx.Err()}
	case <-s.stop:
		return &Error{Temporary: true, Step: StepPool, Err: ErrClosed}
	}
}

// get returns the most recently used idle connection, or dials one (always
// when fresh). The caller holds a slot.
func (s *SMTP) get(ctx context.Context, fresh bool) (*conn, *Error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, &Error{Temporary: true, Step: StepPool, Err: ErrClosed}
	}
	if n := len(s.idle); n > 0 && !fresh {
		c := s.idle[n-1]
		s.idle[n-1] = nil
		s.idle = s.idle[:n-1]
		s.mu.Unlock()
		if time.Since(c.lastUsed) <= s.idleTimeout {
			if !c.closedByPeer() {
				return c, nil
			}
			// The server closed it, or said 421, while it was idle: a new
			// one, before anything is written to this one.
			s.discard(c)
			return s.dial(ctx)
		}
		// Expired before the janitor came by; older ones are its business.
		s.closeConn(c, "idle")
	} else {
		s.mu.Unlock()
	}
	return s.dial(ctx)
}

// put returns a healthy connection to the pool.
func (s *SMTP) put(c *conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.closeConn(c, "closed")
		return
	}
	c.lastUsed = time.Now()
	s.idle = append(s.idle, c)
	s.mu.Unlock()
}

// deliver sends raw, the rendered message, over c with the envelope env,
// and puts c back in the pool, or closes it after any failure (politely
// when the failed transaction left the session clean). This is where the
// message's bytes go to the wire.
func (s *SMTP) deliver(ctx context.Context, c *conn, env smtpwire.Envelope, raw []byte) *Error {
	env.MailParams = c.params
	_ = c.raw.SetDeadline(time.Now().Add(s.timeout))
	stop := context.AfterFunc(ctx, c.abort)
	err := smtpwire.Send(c.client.Text.R, c.client.Text.W, c.mode, env, raw)
	aborted := !stop()

	if err == nil && !aborted {
		c.uses++
		s.put(c)
		return nil
	}
	if err == nil {
		// Accepted just as ctx ended: the mail is out, the connection is not.
		s.discard(c)
		return nil
	}
	var we *smtpwire.Error
	if errors.As(err, &we) && we.Clean && !aborted {
		s.closeConn(c, "transaction failed")
	} else {
		s.discard(c)
	}
	return wireError(err, c.enhanced)
}

// envelope returns m's envelope as it goes on the wire, as go-mail wrote
// it: each address with its domain as an A-label, in angle brackets.
func envelope(m *compose.Message) (smtpwire.Envelope, error) {
	from, err := envelopeAddress(m.From.Email)
	if err != nil {
		return smtpwire.Envelope{}, fmt.Errorf("envelope sender: %w", err)
	}
	to, err := envelopeAddress(m.To.Email)
	if err != nil {
		return smtpwire.Envelope{}, fmt.Errorf("envelope recipient: %w", err)
	}
	return smtpwire.Envelope{From: from, To: []string{to}}, nil
}

func envelopeAddress(email string) (string, error) {
	addr, err := ASCIIAddress(email)
	if err != nil {
		return "", err
	}
	return (&netmail.Address{Address: addr}).String(), nil
}

// fail finishes an *Error for the caller: context attribution and
// password redaction.
func (s *SMTP) fail(ctx context.Context, e *Error) error {
	e = withContext(ctx, e)
	e.Err = s.redact(e.Err)
	return e
}

// isStale reports whether a failure on a reused connection means only that
// the connection was dead before the transaction started.
func isStale(e *Error) bool {
	return (e.Step == StepMail || e.Step == StepConnect) && (e.Code == 0 || e.Code == 421)
}

// janitor closes connections idle for longer than idleTimeout, every
// interval, until Close.
func (s *SMTP) janitor(interval time.Duration) {
	defer close(s.janitorDone)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-ticker.C:
			s.closeIdle(now)
		}
	}
}

// closeIdle closes the connections idle for longer than idleTimeout at now.
func (s *SMTP) closeIdle(now time.Time) {
	s.mu.Lock()
	n := 0
	for n < len(s.idle) && now.Sub(s.idle[n].lastUsed) > s.idleTimeout {
		n++
	}
	expired := make([]*conn, n)
	copy(expired, s.idle[:n])
	rest := copy(s.idle, s.idle[n:])
	clear(s.idle[rest:])
	s.idle = s.idle[:rest]
	s.mu.Unlock()

	for _, c := range expired {
		s.closeConn(c, "idle")
	}
}

// closeConn ends a healthy connection politely (QUIT, bounded by
// quitTimeout).
func (s *SMTP) closeConn(c *conn, reason string) {
	_ = c.raw.SetDeadline(time.Now().Add(min(s.timeout, quitTimeout)))
	_ = c.client.Quit()
	c.abort()
	s.log.Debug("smtp connection closed", zap.Uint64("smtp_conn", c.id),
		zap.String("reason", reason), zap.Int("messages", c.uses))
}

// discard drops a connection in an unknown state without a word.
func (s *SMTP) discard(c *conn) {
	c.abort()
	s.log.Debug("smtp connection discarded", zap.Uint64("smtp_conn", c.id), zap.Int("messages", c.uses))
}

// redact removes every form of the password from err's text. The result
// does not wrap err when something was removed, so the secret cannot be
// reached through errors.Unwrap either.
func (s *SMTP) redact(err error) error {
	if err == nil || len(s.secrets) == 0 {
		return err
	}
	text := err.Error()
	clean := text
	for _, secret := range s.secrets {
		clean = strings.ReplaceAll(clean, secret, "[redacted]")
	}
	if clean == text {
		return err
	}
	return errors.New(clean)
}

// secrets lists the password as typed and as AUTH PLAIN and LOGIN send it.
func secrets(username, password string) []string {
	if password == "" {
		return nil
	}
	enc := base64.StdEncoding
	return []string{
		enc.EncodeToString([]byte("\x00" + username + "\x00" + password)),
		enc.EncodeToString([]byte(password)),
		password,
	}
}

// tlsConfig completes the caller's TLS configuration.
func tlsConfig(base *tls.Config, host string) *tls.Config {
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	return cfg
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
