package main

import (
	"encoding/base64"
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/smtptest"
)

// smtpEnv is the environment of a relay sending through srv.
func smtpEnv(srv *smtptest.Server, extra ...string) map[string]string {
	host, port := srv.Addr()
	env := map[string]string{
		"EMAIL_HOST":          host,
		"EMAIL_PORT":          strconv.Itoa(port),
		"EMAIL_TIMEOUT":       "5",
		"DEFAULT_FROM_EMAIL":  "Acme <notify@example.com>",
		"FRONTEND_BASE_URL":   "https://app.example.com",
		"MAILRELAY_LOG_LEVEL": "debug",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// secretForms are the ways a password could leak: as typed, in base64, and
// as AUTH PLAIN carries it.
func secretForms(user, password string) []string {
	enc := base64.StdEncoding
	return []string{password, enc.EncodeToString([]byte(password)),
		enc.EncodeToString([]byte("\x00" + user + "\x00" + password))}
}

func assertNoSecret(t *testing.T, where, text string, forms []string) {
	t.Helper()
	for _, f := range forms {
		if strings.Contains(text, f) {
			t.Errorf("%s contains a form of the password (%q):\n%s", where, f, text)
		}
	}
}

// TestSendTestSMTP: send-test sends one message through the configured SMTP
// server, with the notification headers, and prints where it was accepted,
// how long it took and its Message-ID.
func TestSendTestSMTP(t *testing.T) {
	const user, password = "relay", "pw-Ok7-unique"
	srv := smtptest.Start(t, smtptest.WithAuth(user, password))
	env := smtpEnv(srv, "EMAIL_HOST_USER", user, "EMAIL_HOST_PASSWORD", password)
	stdout, stderr, err := runCLI(t, envFrom(env), "send-test", "--to", "Ann Lee <ann@example.com>")
	if err != nil {
		t.Fatalf("send-test: %v\nstderr:\n%s", err, stderr)
	}
	host, port := srv.Addr()
	re := regexp.MustCompile(`^accepted by ` + regexp.QuoteMeta(net.JoinHostPort(host, strconv.Itoa(port))) +
		` \(none\) in [0-9.]+(µs|ms|s), Message-ID (<notify\.send-test-[^>]+@example\.com>)\n$`)
	m := re.FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("stdout = %q, want it to match %s", stdout, re)
	}
	msgs := srv.WaitFor(t, 1, 5*time.Second)
	got := msgs[0]
	if len(got.To) != 1 || got.To[0] != "ann@example.com" || got.From != "notify@example.com" || got.Username != user {
		t.Errorf("envelope: from %q to %q user %q", got.From, got.To, got.Username)
	}
	data := strings.ReplaceAll(string(got.Data), "\r\n", "\n")
	for _, h := range []string{
		"Message-ID: " + m[2], "Subject: mailrelay test message", "Auto-Submitted: auto-generated",
		"X-Auto-Response-Suppress: All", "X-Mailrelay-Reason: send-test",
		"List-Unsubscribe: <https://app.example.com/settings/notifications>", `To: "Ann Lee" <ann@example.com>`,
	} {
		if !strings.Contains(data, h+"\n") {
			t.Errorf("message lacks %q:\n%s", h, data)
		}
	}
	assertNoSecret(t, "stdout+stderr", stdout+stderr, secretForms(user, password))

	// Each run has its own Message-ID.
	stdout2, _, err := runCLI(t, envFrom(env), "send-test", "--to", "ann@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if m2 := re.FindStringSubmatch(stdout2); m2 == nil || m2[2] == m[2] {
		t.Errorf("second run: %q, want another Message-ID than %s", stdout2, m[2])
	}
}

// TestSendTestFailures: a failed send names the step, the server's code and
// whether the relay would retry, exits 1, and never shows the password, even
// when the server echoes it in its reply.
func TestSendTestFailures(t *testing.T) {
	const user, password = "relay", "pw-Fail9-unique"
	cases := []struct {
		name  string
		setup func(t *testing.T) map[string]string
		want  []string
	}{
		{"auth", func(t *testing.T) map[string]string {
			srv := smtptest.Start(t, smtptest.WithAuth(user, "something-else"))
			return smtpEnv(srv, "EMAIL_HOST_USER", user, "EMAIL_HOST_PASSWORD", password)
		}, []string{"at step auth", "server replied 535", "temporary", "hint: check EMAIL_HOST_USER"}},
		{"rcpt rejected, password echoed", func(t *testing.T) map[string]string {
			srv := smtptest.Start(t, smtptest.WithAuth(user, password))
			srv.SetReplyAt(smtptest.StageRcpt, 550, "5.1.1", "no mailbox; your password "+password+" is fine")
			return smtpEnv(srv, "EMAIL_HOST_USER", user, "EMAIL_HOST_PASSWORD", password)
		}, []string{"at step rcpt", "server replied 550 5.1.1", "permanent: the relay would not retry", "[redacted]"}},
		{"mail temporary", func(t *testing.T) map[string]string {
			srv := smtptest.Start(t)
			srv.SetReplyAt(smtptest.StageMail, 451, "4.3.0", "try later")
			return smtpEnv(srv)
		}, []string{"at step mail", "server replied 451 4.3.0", "temporary: the relay would retry", "try later"}},
		{"starttls not offered", func(t *testing.T) map[string]string {
			srv := smtptest.Start(t)
			return smtpEnv(srv, "EMAIL_USE_TLS", "true")
		}, []string{"(starttls) failed at step tls", "STARTTLS", "nothing was sent in plain text"}},
		{"connect refused", func(t *testing.T) map[string]string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port := l.Addr().(*net.TCPAddr).Port
			_ = l.Close()
			return map[string]string{"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": strconv.Itoa(port),
				"EMAIL_HOST_USER": user, "EMAIL_HOST_PASSWORD": password}
		}, []string{"at step connect", "hint: check EMAIL_HOST and EMAIL_PORT"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := c.setup(t)
			stdout, stderr, err := runCLI(t, envFrom(env), "send-test", "--to", "ann@example.com")
			if err == nil {
				t.Fatalf("send-test succeeded: %s", stdout)
			}
			if exitCode(err) != 1 {
				t.Errorf("exit %d, want 1", exitCode(err))
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(stdout, "accepted") {
				t.Errorf("stdout = %q", stdout)
			}
			assertNoSecret(t, "error, stdout and stderr", err.Error()+stdout+stderr, secretForms(user, password))
		})
	}
}

// TestSendTestNotConfigured: with the smtp backend and no EMAIL_HOST,
// send-test says so and fails.
func TestSendTestNotConfigured(t *testing.T) {
	stdout, _, err := runCLI(t, noEnv, "send-test", "--to", "ann@example.com")
	if !errors.Is(err, errNotConfigured) || exitCode(err) != 1 {
		t.Fatalf("err = %v (exit %d), want errNotConfigured (exit 1)", err, exitCode(err))
	}
	if !strings.Contains(err.Error(), "EMAIL_HOST is empty") || stdout != "" {
		t.Errorf("err = %v, stdout = %q", err, stdout)
	}
}

// TestSendTestOtherBackends: the console, file and dummy backends take the
// test message too; console writes it to stdout.
func TestSendTestOtherBackends(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		backend, want string
	}{
		{"console", "accepted by the console backend in "},
		{"file", "accepted by the file backend (" + dir + ") in "},
		{"django.core.mail.backends.dummy.EmailBackend", "accepted by the dummy backend in "},
	}
	for _, c := range cases {
		t.Run(c.backend, func(t *testing.T) {
			env := map[string]string{"EMAIL_BACKEND": c.backend, "EMAIL_FILE_PATH": dir}
			stdout, stderr, err := runCLI(t, envFrom(env), "send-test", "--to", "ann@example.com")
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			if !strings.Contains(stdout, c.want) {
				t.Errorf("stdout lacks %q:\n%s", c.want, stdout)
			}
			if c.backend == "console" && !strings.Contains(stdout, "Subject: mailrelay test message") {
				t.Errorf("console output lacks the message:\n%s", stdout)
			}
		})
	}
}

// TestSendTestBadAddress: --to must be one address; anything else is a usage
// error and nothing is sent.
func TestSendTestBadAddress(t *testing.T) {
	srv := smtptest.Start(t)
	for _, to := range []string{"", "ann", "ann@", "@example.com", "ann@example.com, bob@example.com",
		"ann@example.com\r\nBcc: eve@example.com", "Ann <ann@example.com", "ann@@example.com"} {
		t.Run(strconv.Quote(to), func(t *testing.T) {
			_, _, err := runCLI(t, envFrom(smtpEnv(srv)), "send-test", "--to", to)
			if err == nil || exitCode(err) != 2 {
				t.Fatalf("err = %v (exit %d), want a usage error (exit 2)", err, exitCode(err))
			}
		})
	}
	if n := srv.Count(); n != 0 {
		t.Errorf("server received %d messages", n)
	}
}
