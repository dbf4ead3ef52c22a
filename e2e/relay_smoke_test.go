package e2e

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestRelayServeProvisions: a bare JetStream server is enough; `mailrelay
// serve` creates the stream, the consumer and both buckets, becomes ready,
// and exits cleanly on SIGTERM (docs/contract.md §2, §7).
func TestRelayServeProvisions(t *testing.T) {
	t.Parallel()
	buildMailrelay(t) // skip or fail before starting any server
	ns := startNATSServer(t, natsOptions{})
	r := startRelay(t, map[string]string{
		"NATS_URL":           ns.URL(),
		"EMAIL_BACKEND":      "dummy",
		"DEFAULT_FROM_EMAIL": "notify@example.com",
	})
	r.WaitReady(t, time.Minute)
	if code, err := httpStatus(r.HTTPURL() + "/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz: %d %v, want 200", code, err)
	}

	si := streamInfo(t, ns.URL(), "NOTIFY")
	if !slices.Equal(si.Config.Subjects, []string{"notify.>"}) || si.Config.Storage != jetstream.FileStorage ||
		si.Config.Retention != jetstream.LimitsPolicy || si.Config.Duplicates <= 0 {
		t.Errorf("stream NOTIFY: %+v", si.Config)
	}
	ci := consumerInfo(t, ns.URL(), "NOTIFY", "mailrelay")
	filter := ci.Config.FilterSubjects
	if ci.Config.FilterSubject != "" {
		filter = append(filter, ci.Config.FilterSubject)
	}
	if ci.Config.Durable != "mailrelay" || ci.Config.MaxDeliver != 3 ||
		ci.Config.AckPolicy != jetstream.AckExplicitPolicy || !slices.Equal(filter, []string{"notify.>"}) {
		t.Errorf("consumer mailrelay: %+v", ci.Config)
	}
	for _, bucket := range []string{"notify_prefs", "notify_email_state"} {
		if _, err := natsCLI(t, ns.URL(), "kv", "info", bucket); err != nil {
			t.Errorf("bucket %s: %v", bucket, err)
		}
	}

	if err := r.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	state, err := r.Wait(30 * time.Second)
	if err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	if state.ExitCode() != 0 {
		t.Fatalf("after SIGTERM: exit %s, want 0", state)
	}
}

// TestRelaySmokeMailOverSTARTTLS: one opted-in notification becomes one mail
// over STARTTLS with AUTH (the relay trusts the test CA through
// SSL_CERT_FILE), and its state record says sent.
func TestRelaySmokeMailOverSTARTTLS(t *testing.T) {
	t.Parallel()
	buildMailrelay(t)
	ns := startNATSServer(t, natsOptions{})
	mp := startMailpit(t, mailpitOptions{TLS: mailpitRequireSTARTTLS})
	const password = "s3cret-pw"
	env := map[string]string{
		"NATS_URL":            ns.URL(),
		"EMAIL_HOST":          mp.SMTPHost(),
		"EMAIL_PORT":          itoa(mp.SMTPPort()),
		"EMAIL_USE_TLS":       "true",
		"EMAIL_HOST_USER":     "relay",
		"EMAIL_HOST_PASSWORD": password,
		"SSL_CERT_FILE":       mp.CAFile(),
		"DEFAULT_FROM_EMAIL":  "notify@example.com",
		"FRONTEND_BASE_URL":   "https://app.example.com",
		"MAILRELAY_LOG_LEVEL": "debug",
	}
	r := startRelay(t, env)
	r.WaitReady(t, time.Minute)
	if res := runMailrelay(t, env, "", "prefs", "set", "u42", "task.comment=on"); res.ExitCode != 0 {
		t.Fatalf("prefs set: %+v", res)
	}

	event := `{"id":"n-100","type":"task.comment","occurred_at":"` + time.Now().UTC().Format(time.RFC3339) + `",` +
		`"recipient":{"id":"u42","email":"ann@example.com","name":"Ann Lee"},` +
		`"task":{"id":"t-1","title":"Pour foundation"},"comment":{"id":"c1","body":"The truck is late."}}`
	natsPub(t, ns.URL(), "notify.task.comment", event, "n-100")

	mail := mp.WaitForCount(t, 1, time.Minute)[0]
	if len(mail.To) != 1 || mail.To[0].Address != "ann@example.com" || mail.Username != "relay" {
		t.Errorf("mail: %+v", mail)
	}
	h := mp.Headers(t, mail.ID)
	// Contract §9.4: without one-click (MAILRELAY_PUBLIC_URL and keys) the
	// settings page goes without List-Unsubscribe-Post.
	if got, ok := h["List-Unsubscribe-Post"]; ok {
		t.Errorf("List-Unsubscribe-Post without one-click: %q", got)
	}
	if st := waitState(t, ns.URL(), "n-100", "sent", 30*time.Second); st.Attempts != 1 || st.Recipient != "u42" {
		t.Errorf("state: %+v", st)
	}
	r.Stop()
	if strings.Contains(r.Output(), password) {
		t.Error("the SMTP password appears in the relay's output")
	}
}
