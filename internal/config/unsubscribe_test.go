package config

import (
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const (
	testKey1 = "unsub-key-one-0123456789abcdef"
	testKey2 = "unsub-key-two-0123456789abcdef"
)

// TestUnsubscribeModes: one-click needs MAILRELAY_PUBLIC_URL and keys;
// otherwise the preferences page, or nothing. Status says which.
func TestUnsubscribeModes(t *testing.T) {
	for _, tt := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"none", nil, UnsubscribeNone},
		{"settings page", map[string]string{"FRONTEND_BASE_URL": "https://app.example.com"}, UnsubscribeSettingsPage},
		{"keys without public URL", map[string]string{"FRONTEND_BASE_URL": "https://app.example.com", "MAILRELAY_UNSUBSCRIBE_KEYS": testKey1}, UnsubscribeSettingsPage},
		{"one-click", map[string]string{"MAILRELAY_PUBLIC_URL": "https://relay.example.com/", "MAILRELAY_UNSUBSCRIBE_KEYS": testKey1 + "," + testKey2,
			"MAILRELAY_PUBLIC_ADDR": ":9467"}, UnsubscribeOneClick},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, tt.env)
			if got := c.UnsubscribeMode(); got != tt.want {
				t.Errorf("UnsubscribeMode = %q, want %q", got, tt.want)
			}
			st := c.Status()
			if st.Unsubscribe != tt.want || st.ListUnsubscribe != (tt.want != UnsubscribeNone) {
				t.Errorf("Status = %+v", st)
			}
			if tt.want == UnsubscribeOneClick {
				if st.PublicURL != "https://relay.example.com" || !st.PublicListener {
					t.Errorf("Status = %+v", st)
				}
				if keys := c.UnsubscribeKeyList(); len(keys) != 2 || keys[0] != testKey1 {
					t.Errorf("UnsubscribeKeyList has %d keys", len(keys))
				}
			}
			b, _ := json.Marshal(st)
			if strings.Contains(string(b), "unsub-key") {
				t.Errorf("status shows a key: %s", b)
			}
		})
	}
}

func TestUnsubscribeProblems(t *testing.T) {
	for _, tt := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"http public URL", map[string]string{"MAILRELAY_PUBLIC_URL": "http://relay.example.com", "MAILRELAY_UNSUBSCRIBE_KEYS": testKey1},
			`MAILRELAY_PUBLIC_URL: "http://relay.example.com" is not an absolute https URL`},
		{"public URL with a query", map[string]string{"MAILRELAY_PUBLIC_URL": "https://relay.example.com/?a=b", "MAILRELAY_UNSUBSCRIBE_KEYS": testKey1},
			"MAILRELAY_PUBLIC_URL:"},
		{"bad public addr", map[string]string{"MAILRELAY_PUBLIC_ADDR": "nope", "MAILRELAY_UNSUBSCRIBE_KEYS": testKey1}, `MAILRELAY_PUBLIC_ADDR: "nope" is not host:port`},
		{"public addr is the admin one", map[string]string{"MAILRELAY_PUBLIC_ADDR": "127.0.0.1:9466", "MAILRELAY_UNSUBSCRIBE_KEYS": testKey1},
			"MAILRELAY_PUBLIC_ADDR and MAILRELAY_HTTP_ADDR are both 127.0.0.1:9466"},
		{"public URL without keys", map[string]string{"MAILRELAY_PUBLIC_URL": "https://relay.example.com"},
			"MAILRELAY_UNSUBSCRIBE_KEYS (or MAILRELAY_UNSUBSCRIBE_KEYS_FILE): required when MAILRELAY_PUBLIC_URL is set"},
		{"public addr without keys", map[string]string{"MAILRELAY_PUBLIC_ADDR": ":9467"},
			"MAILRELAY_UNSUBSCRIBE_KEYS (or MAILRELAY_UNSUBSCRIBE_KEYS_FILE): required when MAILRELAY_PUBLIC_ADDR is set"},
		{"short key", map[string]string{"MAILRELAY_UNSUBSCRIBE_KEYS": testKey1 + ",short-SECRET"}, "MAILRELAY_UNSUBSCRIBE_KEYS: key 2 is shorter than 16 bytes"},
		{"keys and file", map[string]string{"MAILRELAY_UNSUBSCRIBE_KEYS": testKey1, "MAILRELAY_UNSUBSCRIBE_KEYS_FILE": "/nonexistent"},
			"MAILRELAY_UNSUBSCRIBE_KEYS and MAILRELAY_UNSUBSCRIBE_KEYS_FILE are both set: choose one"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ps := problemsOf(t, tt.env)
			if len(ps) != 1 || !strings.Contains(ps[0].Msg, tt.want) {
				t.Errorf("problems %v, want one containing %q", ps, tt.want)
			}
			for _, p := range ps {
				if strings.Contains(p.Msg, "unsub-key") || strings.Contains(p.Msg, "SECRET") {
					t.Errorf("a problem shows a key: %s", p.Msg)
				}
			}
		})
	}
}

// TestUnsubscribeKeysFile: keys from a file, one a line or comma-separated,
// never logged.
func TestUnsubscribeKeysFile(t *testing.T) {
	path := writeFile(t, "keys", testKey1+"\n"+testKey2+"\n")
	c := mustLoad(t, map[string]string{"MAILRELAY_UNSUBSCRIBE_KEYS_FILE": path, "MAILRELAY_PUBLIC_URL": "https://relay.example.com"})
	if keys := c.UnsubscribeKeyList(); len(keys) != 2 || keys[1] != testKey2 {
		t.Fatalf("keys from file: %d", len(keys))
	}
	if c.UnsubscribeMode() != UnsubscribeOneClick {
		t.Errorf("mode %q", c.UnsubscribeMode())
	}
	core, logs := observer.New(zap.InfoLevel)
	zap.New(core).Info("config", zap.Object("config", c))
	b, _ := json.Marshal(logs.All()[0].ContextMap())
	if strings.Contains(string(b), "unsub-key") || !strings.Contains(string(b), `"mailrelay_unsubscribe_keys":"[redacted]"`) {
		t.Errorf("start-up log: %s", b)
	}

	bad := writeFile(t, "keys", "short\n")
	ps := problemsOf(t, map[string]string{"MAILRELAY_UNSUBSCRIBE_KEYS_FILE": bad})
	if len(ps) != 1 || !strings.HasPrefix(ps[0].Msg, "MAILRELAY_UNSUBSCRIBE_KEYS_FILE: key 1 is shorter") {
		t.Errorf("problems %v", ps)
	}
}

// TestUnsubscribeWarnings: keys without a public URL, and a public URL
// this process does not serve, are said.
func TestUnsubscribeWarnings(t *testing.T) {
	base := map[string]string{"EMAIL_HOST": "smtp.example.com", "FRONTEND_BASE_URL": "https://app.example.com"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	has := func(ws []string, s string) bool {
		for _, w := range ws {
			if strings.Contains(w, s) {
				return true
			}
		}
		return false
	}
	if ws := mustLoad(t, with("MAILRELAY_UNSUBSCRIBE_KEYS", testKey1)).Warnings(); !has(ws, "MAILRELAY_UNSUBSCRIBE_KEYS is set but MAILRELAY_PUBLIC_URL is not") {
		t.Errorf("warnings %q", ws)
	}
	if ws := mustLoad(t, with("MAILRELAY_UNSUBSCRIBE_KEYS", testKey1, "MAILRELAY_PUBLIC_URL", "https://r.example.com")).Warnings(); !has(ws, "MAILRELAY_PUBLIC_ADDR is not") {
		t.Errorf("warnings %q", ws)
	}
	ws := mustLoad(t, with("MAILRELAY_UNSUBSCRIBE_KEYS", testKey1, "MAILRELAY_PUBLIC_URL", "https://r.example.com", "MAILRELAY_PUBLIC_ADDR", ":9467")).Warnings()
	if has(ws, "UNSUBSCRIBE") || has(ws, "PUBLIC") {
		t.Errorf("warnings for a complete one-click set-up: %q", ws)
	}
}
