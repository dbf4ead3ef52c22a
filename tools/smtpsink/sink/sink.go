// Package sink is a fast SMTP server that accepts every message and
// discards it, with an optional latency before each message's final reply
// (a stand-in for a remote relay). It is built on emersion/go-smtp and is
// meant for benchmarks: cmd tools/smtpsink runs it as a process, and the
// bench driver runs it in-process to time each acceptance.
package sink

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// Options configure a sink.
type Options struct {
	// Addr to listen on; "" means 127.0.0.1:0 (a free port).
	Addr string
	// Latency is added before the reply to each message's data.
	Latency time.Duration
	// OnAccept, when set, is called once per accepted message with its
	// first envelope recipient and the time of acceptance (just before the
	// 250 reply is written). It must be quick and safe for concurrent use.
	OnAccept func(rcpt string, at time.Time)
	// OnMessageID, when set, is called once per accepted message with the
	// value of its Message-ID header (angle brackets included; "" when it
	// has none) and the same time of acceptance as OnAccept. Setting it
	// makes the sink read each message's header section; without it the
	// data is discarded unread. It must be quick and safe for concurrent
	// use.
	OnMessageID func(messageID string, at time.Time)
}

// Sink is a running server.
type Sink struct {
	opts   Options
	ln     net.Listener
	srv    *smtp.Server
	served chan struct{}
	count  atomic.Int64
	conns  atomic.Int64
	stop   chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Start listens and serves in the background.
func Start(o Options) (*Sink, error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	s := &Sink{opts: o, ln: ln, served: make(chan struct{}), stop: make(chan struct{})}
	srv := smtp.NewServer(backend{s})
	srv.Domain = "smtpsink.localhost"
	srv.AllowInsecureAuth = true
	srv.MaxMessageBytes = 1 << 20
	srv.MaxRecipients = 100
	srv.ErrorLog = nopLogger{}
	s.srv = srv
	go func() {
		defer close(s.served)
		_ = srv.Serve(ln)
	}()
	return s, nil
}

// Addr is the address the sink listens on (host:port).
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Count is the number of messages accepted so far.
func (s *Sink) Count() int64 { return s.count.Load() }

// Connections is the number of connections accepted so far.
func (s *Sink) Connections() int64 { return s.conns.Load() }

// Close stops accepting and closes every connection at once (a sink has
// nothing to finish: a message waiting out its Latency gets 421), then
// waits for Serve to return; the connection handlers end on their own
// as their connections are closed. It returns nil after a clean stop;
// later calls return the same.
func (s *Sink) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		err := s.srv.Close() // go-smtp closes the listener and every connection
		<-s.served
		if err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = err
		}
	})
	return s.closeErr
}

type backend struct{ s *Sink }

func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) {
	b.s.conns.Add(1)
	return &session{s: b.s}, nil
}

type session struct {
	s    *Sink
	rcpt string
}

var errShutdown = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Shutting down"}

func (se *session) Mail(string, *smtp.MailOptions) error { return nil }

func (se *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if se.rcpt == "" {
		se.rcpt = to
	}
	return nil
}

func (se *session) Data(r io.Reader) error {
	var id string
	if se.s.opts.OnMessageID != nil {
		br := bufio.NewReader(r)
		id = messageID(br)
		r = br
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	if d := se.s.opts.Latency; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-se.s.stop:
			t.Stop()
			return errShutdown
		}
	}
	se.s.count.Add(1)
	at := time.Now()
	if f := se.s.opts.OnAccept; f != nil {
		f(se.rcpt, at)
	}
	if f := se.s.opts.OnMessageID; f != nil {
		f(id, at)
	}
	return nil
}

// messageID reads the header section from r (up to the blank line that
// ends it, or the end of the data) and returns the value of its first
// Message-ID field, unfolded and trimmed; "" when there is none.
func messageID(r *bufio.Reader) string {
	var id []byte
	in := false   // the field being read is Message-ID (continuation lines follow)
	rest := false // this piece continues a line longer than the buffer
	for {
		piece, err := r.ReadSlice('\n')
		body := bytes.TrimRight(piece, "\r\n")
		switch {
		case rest:
			if in {
				id = append(id, body...)
			}
		case len(body) == 0 && len(piece) > 0:
			return string(bytes.TrimSpace(id)) // the blank line: end of the header
		case len(body) == 0:
		case body[0] == ' ' || body[0] == '\t':
			if in {
				id = append(id, body...)
			}
		default:
			in = false
			if id == nil {
				if name, v, ok := bytes.Cut(body, []byte{':'}); ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("Message-ID")) {
					id, in = append([]byte{}, v...), true
				}
			}
		}
		rest = err == bufio.ErrBufferFull
		if err != nil && !rest {
			return string(bytes.TrimSpace(id))
		}
	}
}

func (se *session) Reset()        { se.rcpt = "" }
func (se *session) Logout() error { return nil }

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}
