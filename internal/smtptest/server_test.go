package smtptest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const body = "Subject: hi\r\n\r\nhello\r\n"

// client is what a test needs to reach a server.
type client struct {
	tls      string // "", "starttls" or "implicit"
	roots    *x509.CertPool
	username string
	password string
}

// dial opens a session with srv the way c says.
func (c client) dial(t *testing.T, srv *Server) *smtp.Client {
	t.Helper()
	host, port := srv.Addr()
	addr := net.JoinHostPort(host, fmt.Sprint(port))
	cfg := &tls.Config{RootCAs: c.roots, ServerName: host, MinVersion: tls.VersionTLS12}
	var (
		sc  *smtp.Client
		err error
	)
	switch c.tls {
	case "":
		sc, err = smtp.Dial(addr)
	case "starttls":
		sc, err = smtp.DialStartTLS(addr, cfg)
	case "implicit":
		sc, err = smtp.DialTLS(addr, cfg)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = sc.Close() })
	if c.username != "" {
		if err := sc.Auth(sasl.NewPlainClient("", c.username, c.password)); err != nil {
			t.Fatalf("auth: %v", err)
		}
	}
	return sc
}

// send sends one message over a new session and closes it.
func (c client) send(t *testing.T, srv *Server) error {
	t.Helper()
	sc := c.dial(t, srv)
	err := sc.SendMail("from@example.com", []string{"to@example.com"}, strings.NewReader(body))
	_ = sc.Quit()
	return err
}

func TestRecordsMessages(t *testing.T) {
	cert, roots := NewCertificate(t)
	tests := []struct {
		name    string
		opts    []Option
		client  client
		wantTLS bool
		user    string
	}{
		{name: "plain", client: client{}},
		{name: "starttls", opts: []Option{WithStartTLS(cert)}, client: client{tls: "starttls", roots: roots}, wantTLS: true},
		{name: "implicit tls", opts: []Option{WithImplicitTLS(cert)}, client: client{tls: "implicit", roots: roots}, wantTLS: true},
		{
			name:    "starttls and auth",
			opts:    []Option{WithStartTLS(cert), WithAuth("ann", "s3cret")},
			client:  client{tls: "starttls", roots: roots, username: "ann", password: "s3cret"},
			wantTLS: true, user: "ann",
		},
		{name: "auth without tls", opts: []Option{WithAuth("ann", "s3cret")}, client: client{username: "ann", password: "s3cret"}, user: "ann"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := Start(t, tc.opts...)
			if err := tc.client.send(t, srv); err != nil {
				t.Fatalf("send: %v", err)
			}
			msgs := srv.WaitFor(t, 1, 5*time.Second)
			m := msgs[0]
			if m.From != "from@example.com" || len(m.To) != 1 || m.To[0] != "to@example.com" {
				t.Errorf("envelope = %q -> %q", m.From, m.To)
			}
			if string(m.Data) != body {
				t.Errorf("data = %q, want %q", m.Data, body)
			}
			if m.TLS != tc.wantTLS || m.Username != tc.user {
				t.Errorf("TLS, Username = %v, %q; want %v, %q", m.TLS, m.Username, tc.wantTLS, tc.user)
			}
			if got := srv.Connections(); got != 1 {
				t.Errorf("Connections() = %d, want 1", got)
			}
			srv.WaitOpenConnections(t, 0, 5*time.Second)
		})
	}
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name     string
		password string
		wantCode int
	}{
		{name: "wrong password", password: "nope", wantCode: 535},
		{name: "no auth", wantCode: 530},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := Start(t, WithAuth("ann", "s3cret"))
			sc := client{}.dial(t, srv)
			var err error
			if tc.password != "" {
				err = sc.Auth(sasl.NewPlainClient("", "ann", tc.password))
			} else {
				err = sc.SendMail("from@example.com", []string{"to@example.com"}, strings.NewReader(body))
			}
			var se *smtp.SMTPError
			if !errors.As(err, &se) || se.Code != tc.wantCode {
				t.Fatalf("err = %v, want SMTP %d", err, tc.wantCode)
			}
			if srv.Count() != 0 {
				t.Errorf("Count() = %d, want 0", srv.Count())
			}
		})
	}
}

func TestScriptedReplies(t *testing.T) {
	tests := []struct {
		name         string
		script       func(*Server)
		wantCodes    []int // per send, 0 = accepted
		wantEnhanced smtp.EnhancedCode
	}{
		{
			name:      "SetReply on data until cleared",
			script:    func(s *Server) { s.SetReply(451, "4.3.0", "try later") },
			wantCodes: []int{451, 451},
		},
		{
			name:         "FailNext on data",
			script:       func(s *Server) { s.FailNext(1, 552, "5.3.4", "too big") },
			wantCodes:    []int{552, 0, 0},
			wantEnhanced: smtp.EnhancedCode{5, 3, 4},
		},
		{
			name:         "FailNextAt rcpt",
			script:       func(s *Server) { s.FailNextAt(StageRcpt, 2, 550, "5.1.1", "no such user") },
			wantCodes:    []int{550, 550, 0},
			wantEnhanced: smtp.EnhancedCode{5, 1, 1},
		},
		{
			name:      "SetReplyAt mail",
			script:    func(s *Server) { s.SetReplyAt(StageMail, 421, "", "") },
			wantCodes: []int{421},
		},
		{
			name: "FailNext wins over SetReply",
			script: func(s *Server) {
				s.SetReply(451, "", "")
				s.FailNext(1, 554, "", "")
			},
			wantCodes: []int{554, 451},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := Start(t)
			tc.script(srv)
			accepted := 0
			for i, want := range tc.wantCodes {
				err := client{}.send(t, srv)
				var se *smtp.SMTPError
				switch {
				case want == 0 && err != nil:
					t.Fatalf("send %d: %v, want accepted", i, err)
				case want == 0:
					accepted++
				case !errors.As(err, &se) || se.Code != want:
					t.Fatalf("send %d: err = %v, want SMTP %d", i, err, want)
				case tc.wantEnhanced != (smtp.EnhancedCode{}) && se.EnhancedCode != tc.wantEnhanced:
					t.Errorf("send %d: enhanced = %v, want %v", i, se.EnhancedCode, tc.wantEnhanced)
				}
			}
			if srv.Count() != accepted {
				t.Errorf("Count() = %d, want %d", srv.Count(), accepted)
			}
		})
	}

	t.Run("SetReply 0 clears", func(t *testing.T) {
		srv := Start(t)
		srv.SetReply(451, "", "")
		srv.SetReply(0, "", "")
		if err := (client{}).send(t, srv); err != nil {
			t.Fatalf("send: %v", err)
		}
	})
}

func TestDropNext(t *testing.T) {
	srv := Start(t)
	srv.DropNext(1)
	sc := client{}.dial(t, srv)
	err := sc.SendMail("from@example.com", []string{"to@example.com"}, strings.NewReader(body))
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		t.Fatalf("err = %v, want a dropped connection (no SMTP reply)", err)
	}
	if err := (client{}).send(t, srv); err != nil {
		t.Fatalf("send after drop: %v", err)
	}
	if got := len(srv.WaitFor(t, 1, 5*time.Second)); got != 1 {
		t.Errorf("recorded %d messages, want 1", got)
	}
}

func TestVanishResume(t *testing.T) {
	srv := Start(t)
	idle := client{}.dial(t, srv) // an open session that Vanish must cut
	srv.WaitOpenConnections(t, 1, 5*time.Second)

	srv.Vanish()
	if got := srv.OpenConnections(); got != 0 {
		t.Errorf("OpenConnections() after Vanish = %d, want 0", got)
	}
	if err := idle.Noop(); err == nil {
		t.Error("NOOP on a vanished server's connection succeeded")
	}
	host, port := srv.Addr()
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(host, fmt.Sprint(port)), 2*time.Second); err == nil {
		_ = c.Close()
		t.Fatal("dial after Vanish succeeded, want connection refused")
	}

	srv.Resume()
	if h, p := srv.Addr(); h != host || p != port {
		t.Errorf("Addr() after Resume = %s:%d, want %s:%d", h, p, host, port)
	}
	if err := (client{}).send(t, srv); err != nil {
		t.Fatalf("send after Resume: %v", err)
	}
	srv.WaitFor(t, 1, 5*time.Second)
}

func TestLatencyAndVanish(t *testing.T) {
	srv := Start(t, WithLatency(time.Hour))
	sc := client{}.dial(t, srv)
	done := make(chan error, 1)
	go func() {
		done <- sc.SendMail("from@example.com", []string{"to@example.com"}, strings.NewReader(body))
	}()
	srv.WaitOpenConnections(t, 1, 5*time.Second)
	srv.Vanish() // must not wait for the hour
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("send during Vanish succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("send still blocked 10s after Vanish")
	}
}

func TestSetLatency(t *testing.T) {
	srv := Start(t, WithLatency(time.Hour))
	srv.SetLatency(0) // the hour no longer applies
	if err := (client{}).send(t, srv); err != nil {
		t.Fatalf("send: %v", err)
	}
	srv.SetLatency(50 * time.Millisecond)
	start := time.Now()
	if err := (client{}).send(t, srv); err != nil {
		t.Fatalf("send: %v", err)
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("send took %v, want at least the 50ms latency", took)
	}
	srv.WaitFor(t, 2, 5*time.Second)
}

func TestDiscardBodiesConcurrent(t *testing.T) {
	srv := Start(t, DiscardBodies())
	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := (client{}).send(t, srv); err != nil {
				t.Errorf("send: %v", err)
			}
		})
	}
	wg.Wait()
	if msgs := srv.WaitFor(t, n, 5*time.Second); msgs != nil {
		t.Errorf("Messages() = %d messages in DiscardBodies mode, want nil", len(msgs))
	}
	if got := srv.Count(); got != n {
		t.Errorf("Count() = %d, want %d", got, n)
	}
	if got := srv.Connections(); got != n {
		t.Errorf("Connections() = %d, want %d", got, n)
	}
}

func TestNewCertificateTrust(t *testing.T) {
	cert, _ := NewCertificate(t)
	_, otherRoots := NewCertificate(t)
	srv := Start(t, WithImplicitTLS(cert))
	host, port := srv.Addr()
	cfg := &tls.Config{RootCAs: otherRoots, ServerName: host, MinVersion: tls.VersionTLS12}
	c, err := tls.Dial("tcp", net.JoinHostPort(host, fmt.Sprint(port)), cfg)
	if err == nil {
		_ = c.Close()
		t.Fatal("handshake with another CA's pool succeeded")
	}
	var uerr x509.UnknownAuthorityError
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &uerr) && !errors.As(err, &verr) {
		t.Errorf("err = %v, want an unknown-authority verification error", err)
	}
}

func TestNewReplyPanicsOnNonsense(t *testing.T) {
	tests := []struct {
		name     string
		code     int
		enhanced string
	}{
		{name: "2xx", code: 250},
		{name: "bad enhanced", code: 550, enhanced: "5.1"},
		{name: "class mismatch", code: 451, enhanced: "5.1.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			_ = newReply(tc.code, tc.enhanced, "")
		})
	}
}

func TestSMTPUTF8(t *testing.T) {
	const from, to = "jürgen@exämple.com", "ann@example.com"
	t.Run("offered", func(t *testing.T) {
		srv := Start(t, WithSMTPUTF8())
		sc := client{}.dial(t, srv)
		if err := sc.Hello("client.example.com"); err != nil {
			t.Fatalf("EHLO: %v", err)
		}
		if ok, _ := sc.Extension("SMTPUTF8"); !ok {
			t.Fatal("EHLO reply lacks SMTPUTF8")
		}
		if err := sc.SendMail(from, []string{to}, strings.NewReader(body)); err != nil {
			t.Fatalf("send: %v", err)
		}
		_ = sc.Quit()
		m := srv.WaitFor(t, 1, 5*time.Second)[0]
		if !m.SMTPUTF8 || m.From != from || m.Helo != "client.example.com" {
			t.Errorf("SMTPUTF8 %v, From %q, Helo %q; want true, %q, client.example.com", m.SMTPUTF8, m.From, m.Helo, from)
		}
		cmds := srv.Commands()
		want := []string{"EHLO client.example.com", "MAIL FROM:<" + from + "> BODY=8BITMIME SMTPUTF8", "RCPT TO:<" + to + ">", "DATA", "QUIT"}
		if strings.Join(cmds, "\n") != strings.Join(want, "\n") {
			t.Errorf("Commands() = %q, want %q", cmds, want)
		}
		if !strings.Contains(string(srv.Received()), "Subject: hi\r\n") {
			t.Errorf("Received() lacks the message data: %q", srv.Received())
		}
	})
	t.Run("not offered", func(t *testing.T) {
		srv := Start(t)
		sc := client{}.dial(t, srv)
		if err := sc.Hello("client.example.com"); err != nil {
			t.Fatalf("EHLO: %v", err)
		}
		if ok, _ := sc.Extension("SMTPUTF8"); ok {
			t.Fatal("EHLO reply offers SMTPUTF8")
		}
		// go-smtp's client refuses to ask; on the wire, the server refuses.
		host, port := srv.Addr()
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, fmt.Sprint(port)), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		tp := textproto.NewConn(c)
		if _, _, err := tp.ReadResponse(220); err != nil {
			t.Fatal(err)
		}
		for _, step := range []struct {
			cmd  string
			code int
		}{{"EHLO raw.example.com", 250}, {"MAIL FROM:<a@example.com> SMTPUTF8", 504}, {"QUIT", 221}} {
			if err := tp.PrintfLine("%s", step.cmd); err != nil {
				t.Fatal(err)
			}
			if code, msg, err := tp.ReadResponse(step.code); err != nil {
				t.Fatalf("%s: %d %s: %v", step.cmd, code, msg, err)
			}
		}
		cmds := srv.Commands()
		want := []string{"EHLO client.example.com", "EHLO raw.example.com", "MAIL FROM:<a@example.com> SMTPUTF8", "QUIT"}
		if strings.Join(cmds, "\n") != strings.Join(want, "\n") {
			t.Errorf("Commands() = %q, want %q", cmds, want)
		}
	})
}

// Commands holds what travelled in the clear only: the EHLO and STARTTLS
// before the handshake, nothing after it; Message.Helo has the name anyway.
func TestCommandsStopAtTLS(t *testing.T) {
	cert, roots := NewCertificate(t)
	srv := Start(t, WithStartTLS(cert))
	if err := (client{tls: "starttls", roots: roots}).send(t, srv); err != nil {
		t.Fatalf("send: %v", err)
	}
	m := srv.WaitFor(t, 1, 5*time.Second)[0]
	cmds := srv.Commands()
	if len(cmds) != 2 || !strings.HasPrefix(cmds[0], "EHLO ") || cmds[1] != "STARTTLS" {
		t.Errorf("Commands() = %q, want the EHLO and STARTTLS only", cmds)
	}
	if m.Helo == "" || !m.TLS {
		t.Errorf("Helo %q, TLS %v; want the EHLO name over TLS", m.Helo, m.TLS)
	}
}
