// Package smtptest runs an in-process SMTP server for tests, built on
// github.com/emersion/go-smtp. Start listens on 127.0.0.1 and a free port,
// records every accepted message, and lets a test script failures (a reply
// code for MAIL, RCPT or DATA, a connection dropped after DATA, latency), make
// the server vanish and come back on the same port, require STARTTLS or
// implicit TLS with a certificate generated at test time, and require AUTH
// PLAIN, and offer SMTPUTF8 (RFC 6531) or not. The server counts the
// connections it accepted and the ones still open, so a test can check
// connection reuse and idle closing, and records the EHLO name and the
// command lines clients sent (Commands) and every byte they sent (Received),
// so a test can check what went over the wire, not only what was accepted.
// Everything is safe for concurrent use; waiting is done with deadlines,
// never with sleeps.
package smtptest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one message the server accepted.
type Message struct {
	From     string   // envelope sender (MAIL FROM)
	To       []string // envelope recipients (RCPT TO)
	Data     []byte   // the message as received, CRLF line endings, dot-unstuffed
	TLS      bool     // the session ran over TLS (STARTTLS or implicit)
	Username string   // the authenticated user, "" without AUTH
	SMTPUTF8 bool     // MAIL FROM carried the SMTPUTF8 parameter (only a server WithSMTPUTF8 accepts it)
	Helo     string   // the name the client gave in EHLO or HELO
}

// Stage is the SMTP command a scripted failure answers.
type Stage int

// Stages a failure can be scripted for.
const (
	StageMail Stage = iota // MAIL FROM
	StageRcpt              // RCPT TO
	StageData              // the reply after the message data
	numStages
)

// Option configures a Server at Start.
type Option func(*options)

type options struct {
	tls      *tls.Config
	implicit bool
	username string
	password string
	latency  time.Duration
	discard  bool
	utf8     bool
	hidden   []string // EHLO keywords not offered (WithoutExtensions)
}

// WithStartTLS makes the server offer STARTTLS with cert (see
// NewCertificate). AUTH is then offered only after STARTTLS.
func WithStartTLS(cert tls.Certificate) Option {
	return func(o *options) {
		o.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		o.implicit = false
	}
}

// WithImplicitTLS makes the server speak TLS from the first byte (SMTPS,
// port 465 style) with cert.
func WithImplicitTLS(cert tls.Certificate) Option {
	return func(o *options) {
		o.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		o.implicit = true
	}
}

// WithAuth makes the server offer AUTH PLAIN and require it before MAIL
// (530 5.7.0 otherwise). Only username/password is accepted.
func WithAuth(username, password string) Option {
	return func(o *options) { o.username, o.password = username, password }
}

// WithLatency delays the reply to every message's data by d (SetLatency
// changes it later).
func WithLatency(d time.Duration) Option {
	return func(o *options) { o.latency = d }
}

// WithSMTPUTF8 makes the server offer SMTPUTF8 (RFC 6531) in its EHLO reply
// and accept the SMTPUTF8 parameter on MAIL FROM. Without it the server does
// not offer the extension and refuses the parameter (504 5.5.4), as go-smtp
// does.
func WithSMTPUTF8() Option {
	return func(o *options) { o.utf8 = true }
}

// WithoutExtensions makes the server leave the named EHLO keywords out of
// its EHLO reply ("PIPELINING", "CHUNKING", "8BITMIME",
// "ENHANCEDSTATUSCODES"; go-smtp offers all four), so that a client sees a
// server without them. The commands themselves are still understood, as
// by many real servers. Only sessions in the clear are changed: not an
// implicit TLS session, nor the EHLO after STARTTLS.
func WithoutExtensions(keywords ...string) Option {
	return func(o *options) {
		for _, k := range keywords {
			o.hidden = append(o.hidden, strings.ToUpper(k))
		}
	}
}

// DiscardBodies makes the server read and drop message data, only counting
// accepted messages (see Count); Messages, Commands and Received then
// return nil. For benchmarks.
func DiscardBodies() Option {
	return func(o *options) { o.discard = true }
}

// Server is a running test SMTP server. Its methods are safe for concurrent
// use.
type Server struct {
	t    testing.TB
	opts options
	addr string // 127.0.0.1:port, kept across Vanish and Resume

	mu       sync.Mutex
	inst     *instance // nil while vanished or closed
	closed   bool
	msgs     []Message
	count    int
	accepted int
	open     int
	changed  chan struct{} // closed and replaced on every change of state
	latency  time.Duration
	always   [numStages]error
	next     [numStages]int
	nextErr  [numStages]error
	drop     int
	rate     float64 // share of messages failed at DATA with rateErr
	rateErr  error
	rnd      *rand.Rand
	cmds     []string // command lines clients sent in the clear, in order
	received []byte   // every byte clients sent, in the order read
}

// Start runs a server on 127.0.0.1 and a free port; t.Cleanup closes it.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{t: t, changed: make(chan struct{})}
	for _, o := range opts {
		o(&s.opts)
	}
	s.latency = s.opts.latency
	inst, err := s.listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen: %v", err)
	}
	s.inst = inst
	s.addr = inst.ln.Addr().String()
	t.Cleanup(s.Close)
	return s
}

// Addr returns the host and port the server listens on.
func (s *Server) Addr() (host string, port int) {
	h, p, _ := net.SplitHostPort(s.addr)
	port, _ = strconv.Atoi(p)
	return h, port
}

// Messages returns the messages accepted so far, oldest first (nil in
// DiscardBodies mode).
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Commands returns the command lines clients sent, in the order the server
// read them, without CRLF and without message data: "EHLO client.test",
// "MAIL FROM:<a@example.com> BODY=8BITMIME SMTPUTF8", "RCPT TO:<b@example.com>",
// "DATA", "QUIT"... as they were on the wire. Only what travelled in the
// clear is there: nothing of an implicit TLS session, nothing after
// STARTTLS (see Message.Helo for the EHLO name of any session). Nil in
// DiscardBodies mode.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

// Received returns every byte clients sent since Start, message data
// included, as read from the sockets (connections interleave; with TLS
// these are TLS records), for a test to check for instance that nothing
// 8-bit went to a server that did not offer SMTPUTF8. Nil in DiscardBodies
// mode.
func (s *Server) Received() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.received...)
}

// Count returns how many messages the server accepted.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Connections returns how many connections the server accepted since Start.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// OpenConnections returns how many connections are open right now.
func (s *Server) OpenConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// WaitFor waits until at least n messages were accepted and returns the
// accepted messages (nil in DiscardBodies mode); it fails the test when
// timeout passes first.
func (s *Server) WaitFor(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	if !s.wait(timeout, func() bool { return s.count >= n }) {
		t.Fatalf("smtptest: %d message(s) accepted after %v, want %d", s.Count(), timeout, n)
	}
	return s.Messages()
}

// WaitOpenConnections waits until exactly n connections are open; it fails
// the test when timeout passes first.
func (s *Server) WaitOpenConnections(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	if !s.wait(timeout, func() bool { return s.open == n }) {
		t.Fatalf("smtptest: %d connection(s) open after %v, want %d", s.OpenConnections(), timeout, n)
	}
}

// wait blocks until cond, evaluated under s.mu, holds or timeout passes.
func (s *Server) wait(timeout time.Duration, cond func() bool) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		ok, ch := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

// SetLatency changes the delay before the reply to each message's data
// (see WithLatency) for the messages that follow; 0 removes it.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetReply makes the reply to every following message's data code
// ("enhanced" like "5.1.1", "" for the generic X.0.0) until SetReply(0, "", "").
func (s *Server) SetReply(code int, enhanced, text string) {
	s.SetReplyAt(StageData, code, enhanced, text)
}

// SetReplyAt is SetReply for the given stage; code 0 clears it.
func (s *Server) SetReplyAt(stage Stage, code int, enhanced, text string) {
	var err error
	if code != 0 {
		err = newReply(code, enhanced, text)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.always[stage] = err
}

// FailNext makes the next n messages' data fail with code; it takes
// precedence over SetReply.
func (s *Server) FailNext(n, code int, enhanced, text string) {
	s.FailNextAt(StageData, n, code, enhanced, text)
}

// FailNextAt is FailNext for the given stage.
func (s *Server) FailNextAt(stage Stage, n, code int, enhanced, text string) {
	err := newReply(code, enhanced, text)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next[stage], s.nextErr[stage] = n, err
}

// DropNext makes the server read the data of the next n messages and then
// close the connection without replying: the client cannot tell whether the
// message was accepted. Dropped messages are not recorded.
func (s *Server) DropNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop = n
}

// Vanish closes the listener and every open connection: connecting is
// refused until Resume. It waits until all connection handlers returned.
func (s *Server) Vanish() {
	s.mu.Lock()
	inst := s.inst
	s.inst = nil
	s.mu.Unlock()
	if inst != nil {
		inst.shutdown(s.t)
	}
}

// Resume listens again on the same port after Vanish.
func (s *Server) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.inst != nil {
		return
	}
	inst, err := s.listen(s.addr)
	if err != nil {
		s.t.Errorf("smtptest: resume on %s: %v", s.addr, err)
		return
	}
	s.inst = inst
}

// Close stops the server for good; Start registers it with t.Cleanup.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.Vanish()
}

// newReply builds the scripted SMTP error; it panics on values no server
// could send, since that is a bug in the test.
func newReply(code int, enhanced, text string) error {
	if code < 400 || code > 599 {
		panic(fmt.Sprintf("smtptest: reply code %d is not a 4xx or 5xx", code))
	}
	ec := smtp.EnhancedCodeNotSet
	if enhanced != "" {
		parts := strings.Split(enhanced, ".")
		if len(parts) != 3 {
			panic(fmt.Sprintf("smtptest: enhanced status code %q is not like 5.1.1", enhanced))
		}
		for i, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 || n > 999 {
				panic(fmt.Sprintf("smtptest: enhanced status code %q is not like 5.1.1", enhanced))
			}
			ec[i] = n
		}
		if ec[0] != code/100 {
			panic(fmt.Sprintf("smtptest: enhanced status code %q does not match reply %d", enhanced, code))
		}
	}
	if text == "" {
		text = "scripted failure"
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}
}

// SetFailureRate fails that share (0..1) of the following messages at DATA,
// chosen at random (with a fixed seed, so runs are comparable), with the
// given reply; a rate of 0 stops it.
func (s *Server) SetFailureRate(rate float64, code int, enhanced, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rate = rate
	if rate > 0 {
		s.rateErr = newReply(code, enhanced, text)
	}
	if s.rnd == nil {
		s.rnd = rand.New(rand.NewPCG(1, 2))
	}
}

// scripted returns the failure scripted for stage, or nil.
func (s *Server) scripted(stage Stage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next[stage] > 0 {
		s.next[stage]--
		return s.nextErr[stage]
	}
	if stage == StageData && s.rate > 0 && s.rnd.Float64() < s.rate {
		return s.rateErr
	}
	return s.always[stage]
}

func (s *Server) currentLatency() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latency
}

func (s *Server) takeDrop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drop > 0 {
		s.drop--
		return true
	}
	return false
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	if !s.opts.discard {
		s.msgs = append(s.msgs, m)
	}
	s.signalLocked()
}

func (s *Server) recordReceived(b []byte, cmds []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received = append(s.received, b...)
	s.cmds = append(s.cmds, cmds...)
}

func (s *Server) connOpened() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted++
	s.open++
	s.signalLocked()
}

func (s *Server) connClosed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open--
	s.signalLocked()
}

func (s *Server) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// instance is one listening period of the server, from Start or Resume to
// Vanish or Close.
type instance struct {
	srv    *smtp.Server
	ln     *listener
	stop   chan struct{} // closed at shutdown: cuts latency waits short
	served chan struct{} // closed when Serve returned
}

func (s *Server) listen(addr string) (*instance, error) {
	nl, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	inst := &instance{
		ln:     &listener{Listener: nl, s: s, conns: make(map[*trackedConn]struct{})},
		stop:   make(chan struct{}),
		served: make(chan struct{}),
	}
	srv := smtp.NewServer(&backend{s: s, stop: inst.stop})
	srv.Domain = "smtptest.localhost"
	srv.ErrorLog = testLogger{s.t}
	srv.AllowInsecureAuth = s.opts.tls == nil
	srv.EnableSMTPUTF8 = s.opts.utf8
	var l net.Listener = inst.ln
	if s.opts.tls != nil {
		if s.opts.implicit {
			l = tls.NewListener(inst.ln, s.opts.tls)
		} else {
			srv.TLSConfig = s.opts.tls
		}
	}
	inst.srv = srv
	go func() {
		defer close(inst.served)
		_ = srv.Serve(l)
	}()
	return inst, nil
}

// shutdown closes the listener and every connection and waits for the
// connection handlers: nothing of the instance runs after it returns.
func (inst *instance) shutdown(t testing.TB) {
	close(inst.stop)
	_ = inst.ln.Close()
	<-inst.served // no Accept (and so no handler start) after this
	inst.ln.closeConns()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := inst.srv.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("smtptest: connection handlers still running 10s after shutdown")
	}
}

// listener counts and remembers accepted connections so that shutdown can
// close them all.
type listener struct {
	net.Listener
	s      *Server
	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l, clear: !l.s.opts.implicit, hidden: l.s.opts.hidden}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	l.s.connOpened()
	return tc, nil
}

func (l *listener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return l.Listener.Close()
}

func (l *listener) closeConns() {
	l.mu.Lock()
	conns := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *listener
	once sync.Once

	hidden []string // EHLO keywords to leave out of the server's replies

	// Read and Write run on the connection's handler goroutine, except
	// that go-smtp may close it from a BDAT reader: mu keeps the race
	// detector sure of it.
	mu       sync.Mutex
	clear    bool   // the bytes read are SMTP, not TLS records
	data     bool   // reading message data (after DATA, until the lone ".")
	dataSent bool   // DATA read, its reply not yet written
	chunk    int    // octets of a BDAT chunk still to skip
	line     []byte // the incomplete line read so far
}

// Write leaves hidden keywords out of EHLO replies, and watches the reply
// to DATA: only a 354 makes what follows message data. go-smtp writes one
// reply line per Write.
func (c *trackedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	clear := c.clear
	if clear && c.dataSent && len(p) >= 3 {
		c.dataSent = false
		c.data = string(p[:3]) == "354"
	}
	c.mu.Unlock()
	if clear && len(p) > 4 && string(p[:4]) == "250-" {
		kw, _, _ := strings.Cut(strings.TrimRight(string(p[4:]), "\r\n"), " ")
		for _, h := range c.hidden {
			if strings.EqualFold(kw, h) {
				return len(p), nil
			}
		}
	}
	return c.Conn.Write(p)
}

// Read records what the client sent: every byte, and its command lines
// while the session is in the clear.
func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.l.s.opts.discard {
		c.l.s.recordReceived(p[:n], c.commands(p[:n]))
	}
	return n, err
}

// commands splits b into lines and returns the complete command lines, in
// the clear part of the session. A DATA the server answered with 354
// starts message data, which ends at a lone "."; the chunk after "BDAT <n>"
// is skipped; STARTTLS ends the clear part (go-smtp answers 220 and turns
// to TLS at once). A client pipelines nothing after DATA before its reply
// (RFC 2920), so the reply is written before what follows is read.
func (c *trackedConn) commands(b []byte) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.clear {
		return nil
	}
	var cmds []string
	for len(b) > 0 {
		if c.chunk > 0 {
			n := min(c.chunk, len(b))
			c.chunk -= n
			b = b[n:]
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			c.line = append(c.line, b...)
			break
		}
		line := string(bytes.TrimSuffix(append(c.line, b[:i]...), []byte("\r")))
		c.line, b = c.line[:0], b[i+1:]
		switch {
		case c.data:
			c.data = line != "."
		default:
			cmds = append(cmds, line)
			verb, _, _ := strings.Cut(strings.ToUpper(line), " ")
			switch verb {
			case "DATA":
				c.dataSent = true // data only once the server says 354
			case "BDAT":
				if f := strings.Fields(line); len(f) >= 2 {
					c.chunk, _ = strconv.Atoi(f[1])
				}
			case "STARTTLS":
				c.clear = false
				return cmds
			}
		}
	}
	return cmds
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.s.connClosed()
	})
	return err
}

type backend struct {
	s    *Server
	stop <-chan struct{}
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{s: b.s, stop: b.stop, conn: c}, nil
}

// session is one SMTP session; go-smtp calls it from one goroutine.
type session struct {
	s    *Server
	stop <-chan struct{}
	conn *smtp.Conn
	user string
	from string
	utf8 bool
	to   []string
}

var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errShutdown     = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Shutting down"}
	errDropped      = errors.New("smtptest: connection dropped on purpose")
)

func (se *session) AuthMechanisms() []string {
	if se.s.opts.username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (se *session) Auth(mech string) (sasl.Server, error) {
	if se.s.opts.username == "" || mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if (identity != "" && identity != username) ||
			username != se.s.opts.username || password != se.s.opts.password {
			return smtp.ErrAuthFailed
		}
		se.user = username
		return nil
	}), nil
}

func (se *session) Mail(from string, opts *smtp.MailOptions) error {
	if se.s.opts.username != "" && se.user == "" {
		return errAuthRequired
	}
	if err := se.s.scripted(StageMail); err != nil {
		return err
	}
	se.from = from
	se.utf8 = opts != nil && opts.UTF8
	return nil
}

func (se *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := se.s.scripted(StageRcpt); err != nil {
		return err
	}
	se.to = append(se.to, to)
	return nil
}

func (se *session) Data(r io.Reader) error {
	var data []byte
	var err error
	if se.s.opts.discard {
		_, err = io.Copy(io.Discard, r)
	} else {
		data, err = io.ReadAll(r)
	}
	if err != nil {
		return err
	}
	if d := se.s.currentLatency(); d > 0 {
		timer := time.NewTimer(d)
		select {
		case <-timer.C:
		case <-se.stop:
			timer.Stop()
			return errShutdown
		}
	}
	if se.s.takeDrop() {
		_ = se.conn.Conn().Close()
		return errDropped
	}
	if err := se.s.scripted(StageData); err != nil {
		return err
	}
	_, isTLS := se.conn.TLSConnectionState()
	se.s.record(Message{
		From: se.from, To: append([]string(nil), se.to...), Data: data, TLS: isTLS, Username: se.user,
		SMTPUTF8: se.utf8, Helo: se.conn.Hostname(),
	})
	return nil
}

func (se *session) Reset() {
	se.from, se.utf8, se.to = "", false, nil
}

func (se *session) Logout() error { return nil }

// testLogger sends go-smtp's internal error log to the test log. Every
// goroutine that may log ends before the server's cleanup returns.
type testLogger struct{ t testing.TB }

func (l testLogger) Printf(format string, v ...any) { l.t.Logf("smtptest: "+format, v...) }
func (l testLogger) Println(v ...any)               { l.t.Logf("smtptest: %s", fmt.Sprintln(v...)) }
