// Package sink is a fast SMTP server that accepts every message and
// discards it, with an optional latency before each message's final reply
// (a stand-in for a remote relay). It is built on emersion/go-smtp and is
// meant for benchmarks: cmd tools/smtpsink runs it as a process, and the
// bench driver runs it in-process to time each acceptance.
package sink

import (
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

	// handlers counts the accepted connections whose handler has not
	// closed them yet; open holds them, for the forced close.
	handlers sync.WaitGroup
	mu       sync.Mutex
	open     map[*trackedConn]struct{}

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
	s := &Sink{opts: o, served: make(chan struct{}), stop: make(chan struct{}),
		open: make(map[*trackedConn]struct{})}
	s.ln = trackListener{Listener: ln, s: s}
	srv := smtp.NewServer(backend{s})
	srv.Domain = "smtpsink.localhost"
	srv.AllowInsecureAuth = true
	srv.MaxMessageBytes = 1 << 20
	srv.MaxRecipients = 100
	srv.ErrorLog = nopLogger{}
	s.srv = srv
	go func() {
		defer close(s.served)
		_ = srv.Serve(s.ln)
	}()
	return s, nil
}

// Addr is the address the sink listens on (host:port).
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Count is the number of messages accepted so far.
func (s *Sink) Count() int64 { return s.count.Load() }

// Connections is the number of connections accepted so far.
func (s *Sink) Connections() int64 { return s.conns.Load() }

// Close stops accepting, closes every connection at once (a sink has
// nothing to finish: a message waiting out its Latency gets 421) and waits
// for the connection handlers to return. It returns nil once they have;
// later calls wait likewise.
func (s *Sink) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Sink) close() error {
	close(s.stop)
	// Close the listener and let Serve return first: after that no
	// connection can be accepted, and every accepted one is in s.open.
	lerr := s.ln.Close()
	<-s.served
	s.mu.Lock()
	for c := range s.open {
		// Its handler then fails reading, returns and closes the
		// trackedConn, which ends it in s.handlers.
		_ = c.Conn.Close()
	}
	s.mu.Unlock()
	s.handlers.Wait()
	if lerr != nil && !errors.Is(lerr, net.ErrClosed) {
		return lerr
	}
	return nil
}

// trackListener hands out trackedConns, so that Close can close the
// connections whose clients do not quit.
type trackListener struct {
	net.Listener
	s *Sink
}

func (l trackListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: l.s}
	l.s.handlers.Add(1) // in Serve's goroutine, before s.served is closed
	l.s.mu.Lock()
	l.s.open[tc] = struct{}{}
	l.s.mu.Unlock()
	return tc, nil
}

// trackedConn is a connection that leaves the sink's open set when it is
// closed; go-smtp closes it when its handler returns.
type trackedConn struct {
	net.Conn
	s    *Sink
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.open, c)
		c.s.mu.Unlock()
		c.s.handlers.Done()
	})
	return err
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
	if f := se.s.opts.OnAccept; f != nil {
		f(se.rcpt, time.Now())
	}
	return nil
}

func (se *session) Reset()        { se.rcpt = "" }
func (se *session) Logout() error { return nil }

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}
