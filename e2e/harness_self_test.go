package e2e

// Tests of the harness itself: they need the tools but not mailrelay.

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestHarnessNATS drives a real nats-server with the nats CLI: a stream, a
// de-duplicated publish, reading the message back, a consumer, KV buckets,
// and a restart (graceful and after SIGKILL) that keeps the data.
func TestHarnessNATS(t *testing.T) {
	t.Parallel()
	ns := startNATSServer(t, natsOptions{})
	url := ns.URL()

	natsCLIOK(t, url, "stream", "add", "SELFTEST",
		"--subjects", "selftest.>", "--storage", "file", "--retention", "limits",
		"--dupe-window", "2m", "--defaults")

	body := `{"id":"n-1","note":"{{not a template}}"}`
	first := natsPub(t, url, "selftest.hello", body, "n-1")
	if first.Stream != "SELFTEST" || first.Seq != 1 || first.Duplicate {
		t.Fatalf("first publish: %+v, want SELFTEST seq 1, not duplicate", first)
	}
	if again := natsPub(t, url, "selftest.hello", body, "n-1"); !again.Duplicate || again.Seq != 1 {
		t.Fatalf("publish with the same Nats-Msg-Id: %+v, want duplicate of seq 1", again)
	}
	if second := natsPub(t, url, "selftest.other", "-starts with a dash", ""); second.Seq != 2 {
		t.Fatalf("second publish: %+v, want seq 2", second)
	}

	msg := streamGet(t, url, "SELFTEST", 1)
	if msg.Subject != "selftest.hello" || string(msg.Data) != body {
		t.Fatalf("stream get 1: subject %q data %q, want selftest.hello %q", msg.Subject, msg.Data, body)
	}
	if got := msg.Header["Nats-Msg-Id"]; !slices.Equal(got, []string{"n-1"}) {
		t.Fatalf("stream get 1: Nats-Msg-Id %q, want [n-1] (headers %v)", got, msg.Header)
	}
	if msg2 := streamGet(t, url, "SELFTEST", 2); string(msg2.Data) != "-starts with a dash" || msg2.Header != nil {
		t.Fatalf("stream get 2: data %q headers %v", msg2.Data, msg2.Header)
	}

	info := streamInfo(t, url, "SELFTEST")
	if info.State.Msgs != 2 || info.Config.Storage != jetstream.FileStorage ||
		!slices.Equal(info.Config.Subjects, []string{"selftest.>"}) || info.Config.Duplicates != 2*time.Minute {
		t.Fatalf("stream info: config %+v state %+v", info.Config, info.State)
	}

	natsCLIOK(t, url, "consumer", "add", "SELFTEST", "worker",
		"--pull", "--ack", "explicit", "--deliver", "all", "--max-deliver", "3",
		"--filter", "selftest.>", "--defaults")
	ci := consumerInfo(t, url, "SELFTEST", "worker")
	if ci.Config.Durable != "worker" || ci.Config.MaxDeliver != 3 ||
		ci.Config.AckPolicy != jetstream.AckExplicitPolicy || ci.NumPending != 2 {
		t.Fatalf("consumer info: config %+v pending %d", ci.Config, ci.NumPending)
	}

	natsCLIOK(t, url, "kv", "add", "notify_prefs")
	natsCLIOK(t, url, "kv", "add", "notify_email_state")
	prefs := `{"email": {"task.assigned": true}}`
	prefsPut(t, url, "u42", prefs)
	if got, ok := kvGet(t, url, "notify_prefs", "u42"); !ok || got != prefs {
		t.Fatalf("kv get notify_prefs u42: %q %v, want %q", got, ok, prefs)
	}
	if got, ok := kvGet(t, url, "notify_prefs", "nobody"); ok {
		t.Fatalf("kv get of a missing key: %q, want not found", got)
	}
	if _, _, ok := stateGet(t, url, "n-1"); ok {
		t.Fatal("stateGet before any record: found")
	}
	kvPut(t, url, "notify_email_state", "n-1",
		`{"state":"sent","type":"task.assigned","recipient":"u42","attempts":1,"message_id":"<n-1@example.com>","updated_at":"2026-11-26T09:30:00Z"}`)
	st := waitState(t, url, "n-1", "sent", 5*time.Second)
	if st.Recipient != "u42" || st.Attempts != 1 || st.MessageID != "<n-1@example.com>" || st.UpdatedAt.IsZero() {
		t.Fatalf("state record: %+v", st)
	}

	checkKept := func(how string) {
		t.Helper()
		if got := streamInfo(t, url, "SELFTEST").State.Msgs; got != 2 {
			t.Fatalf("after %s: stream holds %d messages, want 2", how, got)
		}
		if _, ok := kvGet(t, url, "notify_prefs", "u42"); !ok {
			t.Fatalf("after %s: notify_prefs u42 lost", how)
		}
	}
	ns.Restart()
	if ns.URL() != url {
		t.Fatalf("restart moved the server from %s to %s", url, ns.URL())
	}
	checkKept("restart")
	ns.Kill()
	if _, err := natsCLI(t, url, "stream", "ls"); err == nil {
		t.Fatal("nats stream ls succeeded against a killed server")
	}
	ns.Restart()
	checkKept("kill and restart")
}

// testMail is a small message for the Mailpit tests.
func testMail(subject string) smtpMail {
	data := strings.Join([]string{
		"From: Notify <notify@example.com>",
		"To: Ann Lee <ann@example.com>",
		"Subject: " + subject,
		"Message-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@example.com>",
		"Date: Thu, 26 Nov 2026 09:30:00 +0000",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=UTF-8",
		"List-Unsubscribe: <https://app.example.com/settings/notifications>",
		"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
		"X-Selftest: yes",
		"",
		"Hello Ann,",
		"the body of " + subject + ".",
		"",
	}, "\r\n")
	return smtpMail{From: "notify@example.com", To: []string{"ann@example.com"}, Data: []byte(data)}
}

// TestHarnessMailpitSMTP sends over SMTP with AUTH and reads the message back
// through every API helper.
func TestHarnessMailpitSMTP(t *testing.T) {
	t.Parallel()
	mp := startMailpit(t, mailpitOptions{})
	auth := smtpClientOptions{Username: "relay", Password: "secret"}

	if err := sendSMTP(mp.SMTPAddr(), auth, testMail("first mail")); err != nil {
		t.Fatalf("send: %v", err)
	}
	msgs := mp.WaitForCount(t, 1, 10*time.Second)
	s := msgs[0]
	if s.Subject != "first mail" || s.Username != "relay" || s.MessageID != "first-mail@example.com" ||
		len(s.To) != 1 || s.To[0].Address != "ann@example.com" || s.To[0].Name != "Ann Lee" ||
		s.From == nil || s.From.Address != "notify@example.com" {
		t.Fatalf("summary: %+v", s)
	}

	h := mp.Headers(t, s.ID)
	for k, want := range map[string]string{
		"X-Selftest":            "yes",
		"Message-Id":            "<first-mail@example.com>",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
		"Content-Type":          "text/plain; charset=UTF-8",
	} {
		if got := h[k]; !slices.Equal(got, []string{want}) {
			t.Errorf("header %s: %q, want [%q] (all: %v)", k, got, want, h)
		}
	}

	if raw := string(mp.Raw(t, s.ID)); !strings.Contains(raw, "\r\nX-Selftest: yes\r\n") ||
		!strings.Contains(raw, "the body of first mail.") {
		t.Fatalf("raw message:\n%s", raw)
	}
	full := mp.Message(t, s.ID)
	if !strings.Contains(full.Text, "the body of first mail.") ||
		full.ListUnsubscribe.Header != "<https://app.example.com/settings/notifications>" ||
		full.ListUnsubscribe.HeaderPost != "List-Unsubscribe=One-Click" {
		t.Fatalf("message: text %q list-unsubscribe %+v", full.Text, full.ListUnsubscribe)
	}

	for i := range 4 {
		if err := sendSMTP(mp.SMTPAddr(), smtpClientOptions{}, testMail(fmt.Sprintf("mail %d", i))); err != nil {
			t.Fatalf("send without AUTH: %v", err)
		}
	}
	mp.pageSize = 2 // make Messages follow three pages
	all := mp.WaitForCount(t, 5, 10*time.Second)
	ids := map[string]bool{}
	for _, s := range all {
		ids[s.ID] = true
	}
	if len(ids) != 5 {
		t.Fatalf("Messages returned %d distinct of %d: %+v", len(ids), len(all), all)
	}

	mp.DeleteAll(t)
	if n := mp.Count(t); n != 0 {
		t.Fatalf("after DeleteAll: %d messages", n)
	}
}

// TestHarnessMailpitChaos makes Mailpit fail each SMTP stage on purpose and
// checks that clearing chaos lets mail through again.
func TestHarnessMailpitChaos(t *testing.T) {
	t.Parallel()
	mp := startMailpit(t, mailpitOptions{})
	auth := smtpClientOptions{Username: "relay", Password: "secret"}

	cases := []struct {
		name     string
		triggers chaosTriggers
		stage    string // where sendSMTP reports the failure
		code     int
	}{
		{"recipient 451", chaosTriggers{Recipient: chaosTrigger{ErrorCode: 451, Probability: 100}}, "RCPT TO", 451},
		{"sender 550", chaosTriggers{Sender: chaosTrigger{ErrorCode: 550, Probability: 100}}, "MAIL FROM", 550},
		{"authentication 454", chaosTriggers{Authentication: chaosTrigger{ErrorCode: 454, Probability: 100}}, "AUTH", 454},
	}
	for _, tc := range cases {
		// Subtests share one Mailpit, so they run in order.
		t.Run(tc.name, func(t *testing.T) {
			mp.SetChaos(t, tc.triggers)
			err := sendSMTP(mp.SMTPAddr(), auth, testMail(tc.name))
			var reply *textproto.Error
			if !errors.As(err, &reply) || reply.Code != tc.code || !strings.HasPrefix(err.Error(), tc.stage+":") {
				t.Fatalf("send with chaos: %v, want a %d reply at %s", err, tc.code, tc.stage)
			}
			if n := mp.Count(t); n != 0 {
				t.Fatalf("chaos let %d messages through", n)
			}
		})
	}

	mp.ClearChaos(t)
	if err := sendSMTP(mp.SMTPAddr(), auth, testMail("after chaos")); err != nil {
		t.Fatalf("send after ClearChaos: %v", err)
	}
	if got := mp.WaitForCount(t, 1, 10*time.Second); got[0].Subject != "after chaos" {
		t.Fatalf("after chaos: %+v", got)
	}
}

// TestHarnessMailpitTLS checks Mailpit with a certificate made at test time:
// plaintext is refused, TLS with the test CA works, TLS without it fails.
func TestHarnessMailpitTLS(t *testing.T) {
	t.Parallel()
	auth := func(tlsConf *tls.Config) smtpClientOptions {
		return smtpClientOptions{TLS: tlsConf, Username: "relay", Password: "secret"}
	}
	untrusted := &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}

	t.Run("require STARTTLS", func(t *testing.T) {
		t.Parallel()
		mp := startMailpit(t, mailpitOptions{TLS: mailpitRequireSTARTTLS})

		err := sendSMTP(mp.SMTPAddr(), smtpClientOptions{}, testMail("plaintext"))
		var reply *textproto.Error
		if !errors.As(err, &reply) || reply.Code != 530 {
			t.Fatalf("plaintext send: %v, want a 530 reply", err)
		}

		withoutCA := auth(untrusted)
		withoutCA.StartTLS = true
		var unknownCA x509.UnknownAuthorityError
		if err := sendSMTP(mp.SMTPAddr(), withoutCA, testMail("untrusted")); !errors.As(err, &unknownCA) {
			t.Fatalf("STARTTLS without the test CA: %v, want an unknown-authority error", err)
		}

		withCA := auth(mp.TLSConfig())
		withCA.StartTLS = true
		if err := sendSMTP(mp.SMTPAddr(), withCA, testMail("over starttls")); err != nil {
			t.Fatalf("STARTTLS send: %v", err)
		}
		if got := mp.WaitForCount(t, 1, 10*time.Second); got[0].Subject != "over starttls" || got[0].Username != "relay" {
			t.Fatalf("received: %+v", got)
		}
	})

	t.Run("implicit TLS", func(t *testing.T) {
		t.Parallel()
		mp := startMailpit(t, mailpitOptions{TLS: mailpitImplicitTLS})

		if greeting := plaintextGreeting(t, mp.SMTPAddr()); strings.HasPrefix(greeting, "220") {
			t.Fatalf("implicit-TLS port greeted a plaintext client: %q", greeting)
		}

		withoutCA := auth(untrusted)
		withoutCA.Implicit = true
		var unknownCA x509.UnknownAuthorityError
		if err := sendSMTP(mp.SMTPAddr(), withoutCA, testMail("untrusted")); !errors.As(err, &unknownCA) {
			t.Fatalf("TLS without the test CA: %v, want an unknown-authority error", err)
		}

		withCA := auth(mp.TLSConfig())
		withCA.Implicit = true
		if err := sendSMTP(mp.SMTPAddr(), withCA, testMail("over tls")); err != nil {
			t.Fatalf("implicit TLS send: %v", err)
		}
		if got := mp.WaitForCount(t, 1, 10*time.Second); got[0].Subject != "over tls" {
			t.Fatalf("received: %+v", got)
		}
	})
}

// plaintextGreeting speaks plain SMTP to addr and returns the first line it
// gets back ("" when the server closes the connection instead).
func plaintextGreeting(t testing.TB, addr string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	// A TLS server reads this as a broken handshake record and hangs up.
	if _, err := conn.Write([]byte("EHLO localhost\r\n")); err != nil {
		return ""
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return line
}
