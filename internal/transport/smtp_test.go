package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mailrelay/mailrelay/internal/smtptest"
)

const (
	wait         = 5 * time.Second // upper bound for anything that should be quick
	testPassword = "Tr0ub4dor&3-hunter2"
)

// smtpConfig points at srv with short timeouts.
func smtpConfig(srv *smtptest.Server) SMTPConfig {
	host, port := srv.Addr()
	return SMTPConfig{Host: host, Port: port, Timeout: wait, HeloName: "client.test"}
}

// newSMTP builds a backend closed at the end of the test.
func newSMTP(t testing.TB, cfg SMTPConfig, log *zap.Logger) *SMTP {
	t.Helper()
	s, err := NewSMTP(cfg, log)
	if err != nil {
		t.Fatalf("NewSMTP: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// asError unwraps the *Error of a failed send.
func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want a *transport.Error", err, err)
	}
	return e
}

func send(t *testing.T, s Sender) {
	t.Helper()
	if err := s.Send(context.Background(), testMessage()); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

func TestSMTPSend(t *testing.T) {
	srv := smtptest.Start(t)
	s := newSMTP(t, smtpConfig(srv), nil)
	send(t, s)

	got := srv.WaitFor(t, 1, wait)[0]
	if got.From != "notify@example.com" || len(got.To) != 1 || got.To[0] != "ann@example.com" {
		t.Errorf("envelope = %q -> %q, want notify@example.com -> [ann@example.com]", got.From, got.To)
	}
	if got.TLS {
		t.Error("session used TLS with Security None")
	}
	head := headerSection(t, got.Data)
	for _, line := range []string{
		"List-Unsubscribe: <https://app.example.com/settings/notifications>",
		"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
		"Auto-Submitted: auto-generated",
		"References: <t.x@d>",
		"Message-ID: <n.01JD3N6Q9W4ZK2V8X5T7R1M0PA@example.com>",
		"Subject: Bob Stone commented on Pour foundation",
	} {
		if !strings.Contains("\r\n"+head, "\r\n"+line+"\r\n") {
			t.Errorf("received header lacks %q:\n%s", line, head)
		}
	}
	msg := parse(t, got.Data)
	if msg.Header.Get("To") != `"Ann Lee" <ann@example.com>` {
		t.Errorf("To = %q", msg.Header.Get("To"))
	}
}

func TestSMTPConnectionReuse(t *testing.T) {
	tests := []struct {
		name      string
		poolSize  int
		senders   int
		perSender int
		wantConns int // exact when > 0; otherwise at most poolSize
	}{
		{name: "sequential over one connection", poolSize: 1, senders: 1, perSender: 10, wantConns: 1},
		{name: "sequential never opens a second", poolSize: 4, senders: 1, perSender: 10, wantConns: 1},
		{name: "12 senders share 3 connections", poolSize: 3, senders: 12, perSender: 5},
		{name: "8 senders, pool of 8", poolSize: 8, senders: 8, perSender: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.WithLatency(time.Millisecond))
			cfg := smtpConfig(srv)
			cfg.PoolSize = tc.poolSize
			s := newSMTP(t, cfg, nil)

			var wg sync.WaitGroup
			for range tc.senders {
				wg.Go(func() {
					for range tc.perSender {
						if err := s.Send(context.Background(), testMessage()); err != nil {
							t.Errorf("Send: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()

			n := tc.senders * tc.perSender
			if got := len(srv.WaitFor(t, n, wait)); got != n {
				t.Errorf("server got %d messages, want %d", got, n)
			}
			conns := srv.Connections()
			if conns > tc.poolSize || (tc.wantConns > 0 && conns != tc.wantConns) {
				t.Errorf("server saw %d connections for %d messages, pool size %d, want %d",
					conns, n, tc.poolSize, max(tc.wantConns, 1))
			}
		})
	}
}

func TestSMTPReplyClassification(t *testing.T) {
	tests := []struct {
		name      string
		script    func(*smtptest.Server)
		temporary bool
		code      int
		enhanced  string
		step      string
	}{
		{
			name:      "451 after data is temporary",
			script:    func(s *smtptest.Server) { s.SetReply(451, "4.3.0", "try again later") },
			temporary: true, code: 451, enhanced: "4.3.0", step: StepData,
		},
		{
			name:      "550 at rcpt is permanent",
			script:    func(s *smtptest.Server) { s.SetReplyAt(smtptest.StageRcpt, 550, "5.1.1", "no such user") },
			temporary: false, code: 550, enhanced: "5.1.1", step: StepRcpt,
		},
		{
			name:      "552 after data is permanent",
			script:    func(s *smtptest.Server) { s.SetReply(552, "5.3.4", "message too big") },
			temporary: false, code: 552, enhanced: "5.3.4", step: StepData,
		},
		{
			name:      "554 at mail is permanent",
			script:    func(s *smtptest.Server) { s.SetReplyAt(smtptest.StageMail, 554, "5.7.1", "sender rejected") },
			temporary: false, code: 554, enhanced: "5.7.1", step: StepMail,
		},
		{
			name:      "421 at mail is temporary",
			script:    func(s *smtptest.Server) { s.SetReplyAt(smtptest.StageMail, 421, "4.7.0", "busy") },
			temporary: true, code: 421, enhanced: "4.7.0", step: StepMail,
		},
		{
			name:      "450 at rcpt is temporary",
			script:    func(s *smtptest.Server) { s.SetReplyAt(smtptest.StageRcpt, 450, "4.2.1", "mailbox busy") },
			temporary: true, code: 450, enhanced: "4.2.1", step: StepRcpt,
		},
		{
			name:      "connection dropped after data is temporary (ambiguous)",
			script:    func(s *smtptest.Server) { s.DropNext(1) },
			temporary: true, code: 0, step: StepData,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := smtptest.Start(t)
			s := newSMTP(t, smtpConfig(srv), nil)
			tc.script(srv)

			err := s.Send(context.Background(), testMessage())
			e := asError(t, err)
			if e.Temporary != tc.temporary || e.Code != tc.code || e.Enhanced != tc.enhanced || e.Step != tc.step {
				t.Errorf("Error{Temporary: %v, Code: %d, Enhanced: %q, Step: %q}, want {%v, %d, %q, %q}; %v",
					e.Temporary, e.Code, e.Enhanced, e.Step, tc.temporary, tc.code, tc.enhanced, tc.step, err)
			}
			if IsPermanent(err) == tc.temporary {
				t.Errorf("IsPermanent = %v, want %v", IsPermanent(err), !tc.temporary)
			}
			if srv.Count() != 0 {
				t.Errorf("server accepted %d messages, want 0", srv.Count())
			}

			// The failed connection is gone; the next send gets a new one.
			srv.SetReply(0, "", "")
			srv.SetReplyAt(smtptest.StageRcpt, 0, "", "")
			srv.SetReplyAt(smtptest.StageMail, 0, "", "")
			send(t, s)
			srv.WaitFor(t, 1, wait)
			if got := srv.Connections(); got != 2 {
				t.Errorf("server saw %d connections, want 2 (the failed one is not reused)", got)
			}
		})
	}
}

func TestSMTPServerVanishes(t *testing.T) {
	srv := smtptest.Start(t)
	s := newSMTP(t, smtpConfig(srv), nil)
	send(t, s)

	srv.Vanish()
	err := s.Send(context.Background(), testMessage())
	e := asError(t, err)
	if !e.Temporary || e.Code != 0 || e.Step != StepConnect {
		t.Errorf("Error{Temporary: %v, Code: %d, Step: %q}, want {true, 0, connect}: %v", e.Temporary, e.Code, e.Step, err)
	}

	srv.Resume()
	send(t, s)
	if got := len(srv.WaitFor(t, 2, wait)); got != 2 {
		t.Errorf("server got %d messages, want 2", got)
	}
}

func TestSMTPDeadPooledConnectionIsReplaced(t *testing.T) {
	srv := smtptest.Start(t)
	s := newSMTP(t, smtpConfig(srv), nil)
	send(t, s)

	// The server restarts: the pooled connection is dead, which only MAIL
	// FROM can tell. The send must succeed on a new connection.
	srv.Vanish()
	srv.Resume()
	send(t, s)
	srv.WaitFor(t, 2, wait)
	if got := srv.Connections(); got != 2 {
		t.Errorf("server saw %d connections, want 2", got)
	}
}

func TestSMTPSecurity(t *testing.T) {
	cert, roots := smtptest.NewCertificate(t)
	_, otherRoots := smtptest.NewCertificate(t)
	tests := []struct {
		name     string
		server   []smtptest.Option
		security Security
		roots    *x509.CertPool
		wantStep string // "" = success
		wantErr  error
	}{
		{name: "starttls", server: []smtptest.Option{smtptest.WithStartTLS(cert)}, security: SecurityStartTLS, roots: roots},
		{name: "implicit tls", server: []smtptest.Option{smtptest.WithImplicitTLS(cert)}, security: SecuritySSL, roots: roots},
		{
			name: "starttls required, server does not offer it", security: SecurityStartTLS, roots: roots,
			wantStep: StepTLS, wantErr: ErrStartTLSUnsupported,
		},
		{
			name: "starttls, untrusted certificate", server: []smtptest.Option{smtptest.WithStartTLS(cert)},
			security: SecurityStartTLS, roots: otherRoots, wantStep: StepTLS,
		},
		{
			name: "implicit tls, untrusted certificate", server: []smtptest.Option{smtptest.WithImplicitTLS(cert)},
			security: SecuritySSL, roots: otherRoots, wantStep: StepTLS,
		},
		{name: "implicit tls against a plain server", security: SecuritySSL, roots: roots, wantStep: StepTLS},
		{
			name: "none never upgrades", server: []smtptest.Option{smtptest.WithStartTLS(cert)},
			security: SecurityNone,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := smtptest.Start(t, tc.server...)
			cfg := smtpConfig(srv)
			cfg.Security = tc.security
			cfg.TLSConfig = &tls.Config{RootCAs: tc.roots}
			s := newSMTP(t, cfg, nil)

			err := s.Send(context.Background(), testMessage())
			if tc.wantStep == "" {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				got := srv.WaitFor(t, 1, wait)[0]
				if got.TLS != (tc.security != SecurityNone) {
					t.Errorf("message TLS = %v with Security %v", got.TLS, tc.security)
				}
				return
			}
			e := asError(t, err)
			if e.Step != tc.wantStep || !e.Temporary {
				t.Errorf("Error{Step: %q, Temporary: %v}, want {%q, true}: %v", e.Step, e.Temporary, tc.wantStep, err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if srv.Count() != 0 {
				t.Errorf("server accepted %d messages, want none", srv.Count())
			}
		})
	}
}

func TestSMTPAuth(t *testing.T) {
	cert, roots := smtptest.NewCertificate(t)
	tests := []struct {
		name     string
		starttls bool
		username string
		password string
		wantCode int // 0 = success
		wantStep string
	}{
		{name: "plain over loopback", username: "ann", password: testPassword},
		{name: "plain after starttls", starttls: true, username: "ann", password: testPassword},
		{name: "wrong password", username: "ann", password: testPassword + "x", wantCode: 535, wantStep: StepAuth},
		{name: "wrong password after starttls", starttls: true, username: "ann", password: testPassword + "x", wantCode: 535, wantStep: StepAuth},
		{name: "no credentials configured", wantCode: 530, wantStep: StepMail},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := []smtptest.Option{smtptest.WithAuth("ann", testPassword)}
			if tc.starttls {
				opts = append(opts, smtptest.WithStartTLS(cert))
			}
			srv := smtptest.Start(t, opts...)
			cfg := smtpConfig(srv)
			cfg.Username, cfg.Password = tc.username, tc.password
			if tc.starttls {
				cfg.Security = SecurityStartTLS
				cfg.TLSConfig = &tls.Config{RootCAs: roots}
			}
			core, logs := observer.New(zapcore.DebugLevel)
			s := newSMTP(t, cfg, zap.New(core))

			err := s.Send(context.Background(), testMessage())
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				if got := srv.WaitFor(t, 1, wait)[0]; got.Username != "ann" {
					t.Errorf("server saw user %q, want ann", got.Username)
				}
			} else {
				e := asError(t, err)
				if e.Code != tc.wantCode || e.Step != tc.wantStep || !e.Temporary || IsPermanent(err) {
					t.Errorf("Error{Code: %d, Step: %q, Temporary: %v}, want {%d, %q, true}: %v",
						e.Code, e.Step, e.Temporary, tc.wantCode, tc.wantStep, err)
				}
				if srv.Count() != 0 {
					t.Errorf("server accepted %d messages, want 0", srv.Count())
				}
			}

			_ = s.Close()
			if logs.Len() == 0 {
				t.Error("no debug log at all: the leak check below would prove nothing")
			}
			texts := []string{fmt.Sprint(err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)}
			for _, entry := range logs.All() {
				texts = append(texts, entry.Message, fmt.Sprint(entry.ContextMap()))
			}
			for _, text := range texts {
				if tc.password != "" && strings.Contains(text, tc.password) || strings.Contains(text, testPassword) {
					t.Errorf("password leaked in %q", text)
				}
			}
		})
	}
}

func TestSMTPRedact(t *testing.T) {
	srv := smtptest.Start(t)
	cfg := smtpConfig(srv)
	cfg.Username, cfg.Password = "ann", testPassword
	s := newSMTP(t, cfg, nil)
	for _, secret := range secrets("ann", testPassword) {
		cause := errors.New("535 5.7.8 bad credentials " + secret + " rejected")
		got := s.redact(cause).Error()
		if strings.Contains(got, secret) || !strings.Contains(got, "[redacted]") {
			t.Errorf("redact(%q) = %q", cause, got)
		}
	}
	clean := errors.New("550 no such user")
	if got := s.redact(clean); got != clean {
		t.Errorf("redact changed an error without secrets: %v", got)
	}
}

func TestSMTPContext(t *testing.T) {
	t.Run("cancelled before send", func(t *testing.T) {
		srv := smtptest.Start(t)
		s := newSMTP(t, smtpConfig(srv), nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := s.Send(ctx, testMessage())
		if e := asError(t, err); !e.Temporary || !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want a temporary error wrapping context.Canceled", err)
		}
		if srv.Connections() != 0 {
			t.Errorf("dialled %d connections for a cancelled send", srv.Connections())
		}
	})

	t.Run("deadline while the server sits on the data", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.WithLatency(time.Hour))
		s := newSMTP(t, smtpConfig(srv), nil)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := s.Send(ctx, testMessage())
		if took := time.Since(start); took > wait {
			t.Errorf("Send returned after %v, want promptly after the deadline", took)
		}
		if e := asError(t, err); !e.Temporary || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want a temporary error wrapping context.DeadlineExceeded", err)
		}
		s.mu.Lock()
		idle := len(s.idle)
		s.mu.Unlock()
		if idle != 0 {
			t.Errorf("%d connection(s) back in the pool after an aborted send, want 0", idle)
		}
	})

	t.Run("deadline while waiting for a connection", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.WithLatency(time.Hour))
		cfg := smtpConfig(srv)
		cfg.PoolSize = 1
		s := newSMTP(t, cfg, nil)

		busyCtx, stopBusy := context.WithCancel(context.Background())
		busy := make(chan error, 1)
		go func() { busy <- s.Send(busyCtx, testMessage()) }()
		srv.WaitOpenConnections(t, 1, wait) // the only slot is taken

		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := s.Send(ctx, testMessage())
		if e := asError(t, err); e.Step != StepPool || !e.Temporary || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want a temporary %q error wrapping context.DeadlineExceeded", err, StepPool)
		}
		stopBusy()
		if err := <-busy; !errors.Is(err, context.Canceled) {
			t.Errorf("busy send: %v, want context.Canceled", err)
		}
	})

	t.Run("timeout without a context deadline", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.WithLatency(time.Hour))
		cfg := smtpConfig(srv)
		cfg.Timeout = 200 * time.Millisecond
		s := newSMTP(t, cfg, nil)
		err := s.Send(context.Background(), testMessage())
		if e := asError(t, err); !e.Temporary || e.Code != 0 || e.Step != StepData {
			t.Errorf("err = %v (%+v), want a temporary data error without code", err, e)
		}
	})
}

func TestSMTPIdleConnectionsClosed(t *testing.T) {
	srv := smtptest.Start(t)
	cfg := smtpConfig(srv)
	cfg.IdleTimeout = 50 * time.Millisecond
	s := newSMTP(t, cfg, nil)

	send(t, s)
	srv.WaitOpenConnections(t, 0, wait) // the janitor closed it
	send(t, s)                          // and the pool dials again
	srv.WaitFor(t, 2, wait)
	if got := srv.Connections(); got != 2 {
		t.Errorf("server saw %d connections, want 2", got)
	}
}

func TestSMTPClose(t *testing.T) {
	srv := smtptest.Start(t)
	cfg := smtpConfig(srv)
	cfg.PoolSize = 3
	s := newSMTP(t, cfg, nil)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { send(t, s) })
	}
	wg.Wait()

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	srv.WaitOpenConnections(t, 0, wait)
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	err := s.Send(context.Background(), testMessage())
	if e := asError(t, err); !errors.Is(err, ErrClosed) || !e.Temporary {
		t.Errorf("Send after Close = %v, want a temporary ErrClosed", err)
	}
}

func TestSMTPRenderFailureIsPermanent(t *testing.T) {
	srv := smtptest.Start(t)
	s := newSMTP(t, smtpConfig(srv), nil)
	m := testMessage()
	m.To.Email = "not an address"
	err := s.Send(context.Background(), m)
	if e := asError(t, err); e.Step != StepRender || !IsPermanent(err) {
		t.Errorf("err = %v, want a permanent render error", err)
	}
	if srv.Connections() != 0 {
		t.Errorf("dialled for a message that cannot be rendered")
	}
}

func TestNewSMTPConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     SMTPConfig
		wantErr string // "" = accepted
		is      error
	}{
		{name: "minimal", cfg: SMTPConfig{Host: "smtp.example.com"}},
		{name: "no host", cfg: SMTPConfig{}, wantErr: "EMAIL_HOST"},
		{name: "port out of range", cfg: SMTPConfig{Host: "smtp.example.com", Port: 70000}, wantErr: "EMAIL_PORT"},
		{name: "negative timeout", cfg: SMTPConfig{Host: "smtp.example.com", Timeout: -time.Second}, wantErr: "EMAIL_TIMEOUT"},
		{name: "negative pool", cfg: SMTPConfig{Host: "smtp.example.com", PoolSize: -1}, wantErr: "pool size"},
		{name: "unknown security", cfg: SMTPConfig{Host: "smtp.example.com", Security: 7}, wantErr: "security"},
		{name: "password without user", cfg: SMTPConfig{Host: "smtp.example.com", Password: testPassword}, wantErr: "EMAIL_HOST_USER", is: ErrPasswordWithoutUser},
		{name: "user without password", cfg: SMTPConfig{Host: "smtp.example.com", Security: SecurityStartTLS, Username: "ann"}, wantErr: "EMAIL_HOST_PASSWORD", is: ErrUserWithoutPassword},
		{name: "user without password to loopback", cfg: SMTPConfig{Host: "127.0.0.1", Username: "ann"}, wantErr: "EMAIL_HOST_PASSWORD", is: ErrUserWithoutPassword},
		{name: "host with port", cfg: SMTPConfig{Host: "smtp.example.com:25"}, wantErr: "EMAIL_HOST"},
		{name: "host with unbalanced bracket", cfg: SMTPConfig{Host: "[::1"}, wantErr: "EMAIL_HOST"},
		{name: "host bracketed IPv6", cfg: SMTPConfig{Host: "[2001:db8::1]"}},
		{name: "auth to [::1]", cfg: SMTPConfig{Host: "[::1]", Username: "ann", Password: testPassword}},
		{
			name:    "auth in clear text to a bracketed remote IPv6",
			cfg:     SMTPConfig{Host: "[2001:db8::1]", Username: "ann", Password: testPassword},
			wantErr: "MAILRELAY_SMTP_INSECURE_AUTH", is: ErrInsecureAuth,
		},
		{name: "helo with space", cfg: SMTPConfig{Host: "smtp.example.com", HeloName: "a b"}, wantErr: "MAILRELAY_EHLO_NAME"},
		{name: "helo with port", cfg: SMTPConfig{Host: "smtp.example.com", HeloName: "mx.example.com:25"}, wantErr: "MAILRELAY_EHLO_NAME"},
		{name: "helo address literal", cfg: SMTPConfig{Host: "smtp.example.com", HeloName: "[IPv6:2001:db8::1]"}},
		{
			name:    "auth in clear text to a remote host",
			cfg:     SMTPConfig{Host: "smtp.example.com", Username: "ann", Password: testPassword},
			wantErr: "MAILRELAY_SMTP_INSECURE_AUTH", is: ErrInsecureAuth,
		},
		{name: "auth in clear text allowed", cfg: SMTPConfig{Host: "smtp.example.com", Username: "ann", Password: testPassword, InsecureAuth: true}},
		{name: "auth over starttls", cfg: SMTPConfig{Host: "smtp.example.com", Security: SecurityStartTLS, Username: "ann", Password: testPassword}},
		{name: "auth over ssl", cfg: SMTPConfig{Host: "smtp.example.com", Security: SecuritySSL, Username: "ann", Password: testPassword}},
		{name: "auth to localhost", cfg: SMTPConfig{Host: "localhost", Username: "ann", Password: testPassword}},
		{name: "auth to 127.0.0.1", cfg: SMTPConfig{Host: "127.0.0.1", Username: "ann", Password: testPassword}},
		{name: "auth to ::1", cfg: SMTPConfig{Host: "::1", Username: "ann", Password: testPassword}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSMTP(tc.cfg, nil)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("NewSMTP: %v", err)
				}
				_ = s.Close()
				return
			}
			if err == nil {
				_ = s.Close()
				t.Fatalf("NewSMTP accepted %+v", tc.cfg)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %q, want it to mention %q", err, tc.wantErr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want %v", err, tc.is)
			}
			if strings.Contains(err.Error(), testPassword) {
				t.Errorf("err leaks the password: %q", err)
			}
		})
	}
}

// NewSMTP dials a bracketed IPv6 literal as the address it holds: the
// brackets are added once, by net.JoinHostPort, and TLS verifies the IP.
func TestNewSMTPBracketedHost(t *testing.T) {
	s, err := NewSMTP(SMTPConfig{Host: "[::1]", Port: 2525}, nil)
	if err != nil {
		t.Fatalf("NewSMTP: %v", err)
	}
	defer s.Close()
	if s.host != "::1" || s.addr != "[::1]:2525" || s.tlsConf.ServerName != "::1" {
		t.Errorf("host %q addr %q TLS server name %q, want ::1, [::1]:2525, ::1", s.host, s.addr, s.tlsConf.ServerName)
	}
}

func TestSecurityString(t *testing.T) {
	for s, want := range map[Security]string{SecurityNone: "none", SecurityStartTLS: "starttls", SecuritySSL: "ssl", 9: "Security(9)"} {
		if got := s.String(); got != want {
			t.Errorf("Security(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

func BenchmarkSMTPSend(b *testing.B) {
	for _, pool := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("pool=%d", pool), func(b *testing.B) {
			srv := smtptest.Start(b, smtptest.DiscardBodies())
			cfg := smtpConfig(srv)
			cfg.PoolSize = pool
			s := newSMTP(b, cfg, nil)
			m := testMessage()
			b.ReportAllocs()
			b.SetParallelism(pool)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.Send(context.Background(), m); err != nil {
						b.Errorf("Send: %v", err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(srv.Connections()), "conns")
		})
	}
}
