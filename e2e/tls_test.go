package e2e

// TLS to the SMTP server, against Mailpit with a certificate made at test
// time: STARTTLS, implicit TLS, a server without STARTTLS, an untrusted
// certificate.

import (
	"strings"
	"testing"
	"time"
)

// tlsRelayEnv is the environment of a relay sending to mp with the given
// extra variables (kv pairs).
func tlsRelayEnv(ns *natsProc, mp *mailpit, kv ...string) map[string]string {
	env := map[string]string{
		"NATS_URL":               ns.URL(),
		"EMAIL_HOST":             mp.SMTPHost(),
		"EMAIL_PORT":             itoa(mp.SMTPPort()),
		"EMAIL_TIMEOUT":          "5",
		"DEFAULT_FROM_EMAIL":     "notify@example.com",
		"FRONTEND_BASE_URL":      "https://app.example.com",
		"MAILRELAY_RETRY_DELAYS": "100ms",
		"MAILRELAY_LOG_LEVEL":    "debug",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	return env
}

// tlsPublish opts user in and publishes one task.assigned notification.
func tlsPublish(t *testing.T, ns *natsProc, env map[string]string, id string) {
	t.Helper()
	if res := runMailrelay(t, env, "", "prefs", "set", "u-tls", "task.assigned=on"); res.ExitCode != 0 {
		t.Fatalf("prefs set: %+v", res)
	}
	natsPub(t, ns.URL(), "notify.task.assigned", string(assignedEvent(id, "u-tls", "ann@example.com")), id)
}

// TestSMTPTLS: the relay and `mailrelay send-test` send over STARTTLS and
// implicit TLS when the server's certificate is trusted (SSL_CERT_FILE), and
// never fall back to plain text: a server without STARTTLS gets nothing and
// the notification ends inbox_only, an untrusted certificate fails at the
// tls step.
func TestSMTPTLS(t *testing.T) {
	t.Parallel()
	buildMailrelay(t)

	t.Run("STARTTLS trusted", func(t *testing.T) {
		t.Parallel()
		ns := startNATSServer(t, natsOptions{})
		mp := startMailpit(t, mailpitOptions{TLS: mailpitRequireSTARTTLS})
		env := tlsRelayEnv(ns, mp, "EMAIL_USE_TLS", "true", "SSL_CERT_FILE", mp.CAFile(),
			"EMAIL_HOST_USER", "relay", "EMAIL_HOST_PASSWORD", "tls-pw")
		res := runMailrelay(t, env, "", "send-test", "--to", "ann@example.com")
		if res.ExitCode != 0 || !strings.Contains(res.Stdout, "accepted by "+mp.SMTPAddr()+" (starttls) in ") {
			t.Fatalf("send-test: %+v", res)
		}
		r := startRelay(t, env)
		r.WaitReady(t, time.Minute)
		tlsPublish(t, ns, env, "tls-starttls")
		waitState(t, ns.URL(), "tls-starttls", "sent", time.Minute)
		mails := mp.WaitForCount(t, 2, time.Minute)
		for _, m := range mails {
			if m.Username != "relay" {
				t.Errorf("mail %q: AUTH user %q, want relay", m.Subject, m.Username)
			}
		}
	})

	t.Run("implicit TLS trusted", func(t *testing.T) {
		t.Parallel()
		ns := startNATSServer(t, natsOptions{})
		mp := startMailpit(t, mailpitOptions{TLS: mailpitImplicitTLS})
		env := tlsRelayEnv(ns, mp, "EMAIL_USE_SSL", "true", "SSL_CERT_FILE", mp.CAFile())
		res := runMailrelay(t, env, "", "send-test", "--to", "ann@example.com")
		if res.ExitCode != 0 || !strings.Contains(res.Stdout, "accepted by "+mp.SMTPAddr()+" (ssl) in ") {
			t.Fatalf("send-test: %+v", res)
		}
		r := startRelay(t, env)
		r.WaitReady(t, time.Minute)
		tlsPublish(t, ns, env, "tls-ssl")
		waitState(t, ns.URL(), "tls-ssl", "sent", time.Minute)
		mp.WaitForCount(t, 2, time.Minute)
	})

	t.Run("STARTTLS required but not offered", func(t *testing.T) {
		t.Parallel()
		ns := startNATSServer(t, natsOptions{})
		mp := startMailpit(t, mailpitOptions{TLS: mailpitNoTLS})
		env := tlsRelayEnv(ns, mp, "EMAIL_USE_TLS", "true",
			"EMAIL_HOST_USER", "relay", "EMAIL_HOST_PASSWORD", "tls-pw")
		res := runMailrelay(t, env, "", "send-test", "--to", "ann@example.com")
		if res.ExitCode != 1 || !strings.Contains(res.Stderr, "failed at step tls") || !strings.Contains(res.Stderr, "STARTTLS") {
			t.Errorf("send-test: %+v, want a failure at the tls step naming STARTTLS", res)
		}
		r := startRelay(t, env)
		r.WaitReady(t, time.Minute)
		tlsPublish(t, ns, env, "tls-nostarttls")
		st := waitState(t, ns.URL(), "tls-nostarttls", "inbox_only", time.Minute)
		if st.Attempts != 3 || !strings.Contains(st.Error, "STARTTLS") {
			t.Errorf("state: %+v, want 3 attempts and an error naming STARTTLS", st)
		}
		if n := mp.Count(t); n != 0 {
			t.Errorf("mailpit received %d messages in plain text, want none", n)
		}
		// Mailpit logs each command it receives: nothing after EHLO.
		for _, line := range strings.Split(readFile(mp.LogPath()), "\n") {
			if _, cmd, ok := strings.Cut(line, "received (127.0.0.1) "); ok && !strings.HasPrefix(cmd, "EHLO") && !strings.HasPrefix(cmd, "QUIT") {
				t.Errorf("the relay sent %q in plain text", strings.TrimSuffix(cmd, `"`))
			}
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		t.Parallel()
		ns := startNATSServer(t, natsOptions{})
		mp := startMailpit(t, mailpitOptions{TLS: mailpitRequireSTARTTLS})
		otherCA, _, _, _ := writeTestCerts(t, t.TempDir())
		env := tlsRelayEnv(ns, mp, "EMAIL_USE_TLS", "true", "SSL_CERT_FILE", otherCA)
		res := runMailrelay(t, env, "", "send-test", "--to", "ann@example.com")
		if res.ExitCode != 1 || !strings.Contains(res.Stderr, "failed at step tls") ||
			!strings.Contains(res.Stderr, "certificate") {
			t.Errorf("send-test: %+v, want a failure at the tls step about the certificate", res)
		}
		r := startRelay(t, env)
		r.WaitReady(t, time.Minute)
		tlsPublish(t, ns, env, "tls-untrusted")
		st := waitState(t, ns.URL(), "tls-untrusted", "inbox_only", time.Minute)
		if !strings.Contains(st.Error, "tls") || !strings.Contains(st.Error, "certificate") {
			t.Errorf("state: %+v, want a tls error about the certificate", st)
		}
		if n := mp.Count(t); n != 0 {
			t.Errorf("mailpit received %d messages, want none", n)
		}
	})
}
