package config

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// The start-up log shows every variable of the table, with the value Load
// settled on, and never the value of a secret or a private variable.
func TestLogShowsEveryVariable(t *testing.T) {
	dir := t.TempDir()
	pem := writeFile(t, "pem", "x")
	tokenFile := writeFile(t, "token", "admin-"+marker+"\n")
	base := map[string]string{
		"EMAIL_BACKEND": "smtp", "EMAIL_HOST": "[::1]", "EMAIL_PORT": "2525",
		"EMAIL_USE_TLS": "true", "EMAIL_USE_SSL": "false",
		"EMAIL_HOST_USER": "smtp-user-" + marker, "EMAIL_HOST_PASSWORD": "smtp-" + marker,
		"EMAIL_TIMEOUT": "2.5", "EMAIL_FILE_PATH": dir,
		"DEFAULT_FROM_EMAIL": "Acme <notify@example.com>", "FRONTEND_BASE_URL": "https://app.example.com/",
		"MAILRELAY_SMTP_INSECURE_AUTH": "false", "MAILRELAY_LIST_ID": "tasks.example.com",
		"MAILRELAY_TEMPLATE_DIR": dir, "MAILRELAY_SNIPPET_MAX": "300",
		"NATS_URL":          "nats://a:4222, nats://nats-" + marker + "@b:4222",
		"NATS_INBOX_PREFIX": "_INBOX_test", "NATS_CA": pem, "NATS_CERT": pem, "NATS_KEY": pem,
		"MAILRELAY_HTTP_ADDR": "127.0.0.1:9999", "MAILRELAY_ADMIN_TOKEN_FILE": tokenFile,
		"MAILRELAY_RETRY_DELAYS": "10s, 1m", "MAILRELAY_ACK_WAIT": "90s", "MAILRELAY_CONCURRENCY": "4",
		"MAILRELAY_STREAM_REPLICAS": "3", "MAILRELAY_STREAM_MAX_AGE": "48h", "MAILRELAY_DUPLICATE_WINDOW": "30m",
		"MAILRELAY_STATE_TTL": "72h", "MAILRELAY_DATA_DIR": "/var/lib/mailrelay", "MAILRELAY_MAX_EVENT_BYTES": "2048",
		"MAILRELAY_STALE_AFTER": "1h", "MAILRELAY_MAX_RATE": "2.5", "MAILRELAY_SHUTDOWN_TIMEOUT": "30s",
		"MAILRELAY_LOG_FORMAT": "console", "MAILRELAY_LOG_LEVEL": "debug",
	}
	// NATS takes one way to authenticate: each is logged in turn.
	for name, auth := range map[string]map[string]string{
		"nats user":  {"NATS_USER": "nats-user", "NATS_PASSWORD": "nats-" + marker},
		"nats token": {"NATS_TOKEN": "token-" + marker},
		"nats creds": {"NATS_CREDS": pem},
		"nats nkey":  {"NATS_NKEY": pem},
	} {
		t.Run(name, func(t *testing.T) {
			env := maps.Clone(base)
			maps.Copy(env, auth)
			c := mustLoad(t, env)
			out := zapJSON(zap.Object("config", c))
			var entry struct {
				Config map[string]any `json:"config"`
			}
			if err := json.Unmarshal([]byte(out), &entry); err != nil {
				t.Fatalf("log line is not JSON: %v\n%s", err, out)
			}
			logged := entry.Config
			for _, v := range Vars() {
				if _, ok := logged[strings.ToLower(v.Name)]; !ok {
					t.Errorf("%s is missing from the start-up log", v.Name)
				}
				if (v.Secret || v.Private) && env[v.Name] != "" && strings.Contains(out, env[v.Name]) {
					t.Errorf("the value of %s is in the start-up log", v.Name)
				}
			}
			if strings.Contains(out, marker) {
				t.Errorf("a secret is in the start-up log:\n%s", out)
			}
			if want := len(Vars()) + 2; len(logged) != want { // + mode, email_security
				t.Errorf("%d fields logged, want %d:\n%s", len(logged), want, out)
			}
			for key, want := range map[string]any{
				"mode":                       "smtp",
				"email_security":             "starttls",
				"email_host":                 "::1",
				"email_port":                 2525.0,
				"email_use_tls":              true,
				"email_host_user":            "[redacted]",
				"email_host_password":        "[redacted]",
				"email_host_password_file":   "",
				"email_timeout":              "2.5s",
				"frontend_base_url":          "https://app.example.com",
				"nats_url":                   "nats://a:4222,nats://[redacted]@b:4222",
				"nats_key":                   pem,
				"mailrelay_admin_token":      "[redacted]",
				"mailrelay_admin_token_file": tokenFile,
				"mailrelay_retry_delays":     "10s,1m",
				"mailrelay_ack_wait":         "1m30s",
				"mailrelay_max_rate":         2.5,
				"mailrelay_log_level":        "debug",
				"mailrelay_log_format":       "console",
			} {
				if got := logged[key]; got != want {
					t.Errorf("%s logged as %#v, want %#v", key, got, want)
				}
			}
		})
	}
}

// Unset secrets and private values say so, instead of "[redacted]".
func TestLogUnsetSecrets(t *testing.T) {
	out := zapJSON(zap.Object("config", mustLoad(t, nil)))
	for _, key := range []string{"email_host_user", "email_host_password", "nats_password", "nats_token", "mailrelay_admin_token"} {
		if !strings.Contains(out, `"`+key+`":"[unset]"`) {
			t.Errorf("%s is not logged as [unset]:\n%s", key, out)
		}
	}
}
