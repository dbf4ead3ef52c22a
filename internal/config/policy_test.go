package config

import (
	"reflect"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/internal/policy"
)

// With no variable set, the policy is policy.Default (plus the send timeout
// EMAIL_TIMEOUT implies), and so are the process-wide defaults: the table
// takes them from policy.
func TestPolicyDefaults(t *testing.T) {
	c := mustLoad(t, nil)
	want := policy.Default()
	want.SendTimeout = 30 * time.Second
	if got := c.Policy(); !reflect.DeepEqual(got, want) {
		t.Errorf("Policy():\n got %+v\nwant %+v", got, want)
	}
	if c.Relay.Concurrency != policy.DefaultConcurrency || c.Relay.ShutdownTimeout != policy.DefaultShutdownTimeout {
		t.Errorf("concurrency %d, shutdown %s; policy defaults %d, %s", c.Relay.Concurrency, c.Relay.ShutdownTimeout,
			policy.DefaultConcurrency, policy.DefaultShutdownTimeout)
	}
}

func TestPolicyFromEnvironment(t *testing.T) {
	c := mustLoad(t, map[string]string{
		"MAILRELAY_RETRY_DELAYS": "10s", "MAILRELAY_ACK_WAIT": "90s", "MAILRELAY_STALE_AFTER": "0", "EMAIL_TIMEOUT": "2.5",
	})
	p := c.Policy()
	if !reflect.DeepEqual(p.RetryDelays, []time.Duration{10 * time.Second}) || p.AckWait != 90*time.Second ||
		p.StaleAfter != 0 || p.SendTimeout != 5*time.Second {
		t.Errorf("Policy() = %+v", p)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("a loaded configuration gives an invalid policy: %v", err)
	}
	p.RetryDelays[0] = time.Hour
	if c.Relay.RetryDelays[0] != 10*time.Second {
		t.Error("Policy shares its RetryDelays with the Config")
	}
}

// DEFAULT_FROM_EMAIL and FRONTEND_BASE_URL load exactly when compose
// accepts them: one rule each (headers.CheckFrom, headers.CheckBaseURL), so
// a value that loads never fails later at compose.New.
func TestFromAndBaseURLAgreeWithCompose(t *testing.T) {
	froms := []string{"notify@example.com", "Acme <notify@example.com>", `"Acme, Inc." <notify@example.com>`,
		`"a b"@example.com`, `Acme <"a<b"@example.com>`, "notify", "a@b@c", "<notify@example.com>"}
	bases := []string{"https://app.example.com/", "http://localhost:3000/app", "HTTPS://app.example.com", "https://:80",
		`https://app.example.com/a\b`, "https://app.example.com/?x", "https://u@app.example.com", "ftp://x",
		"https://app.example.com:99999", "https://app.example.com:65535/"}
	check := func(t *testing.T, env map[string]string) {
		t.Helper()
		c, loadErr := Load(getenv(env))
		if loadErr != nil {
			c = &Config{Message: Message{From: env["DEFAULT_FROM_EMAIL"], FrontendBaseURL: env["FRONTEND_BASE_URL"]}}
			if c.Message.From == "" {
				c.Message.From = "webmaster@localhost"
			}
		}
		name, addr := c.FromAddress()
		composeErr := compose.Config{From: compose.Address{Name: name, Email: addr}, BaseURL: c.Message.FrontendBaseURL}.Validate()
		if (loadErr == nil) != (composeErr == nil) {
			t.Errorf("%v: config.Load: %v\ncompose: %v", env, loadErr, composeErr)
		}
	}
	for _, f := range froms {
		check(t, map[string]string{"DEFAULT_FROM_EMAIL": f})
	}
	for _, b := range bases {
		check(t, map[string]string{"FRONTEND_BASE_URL": b})
	}
}
