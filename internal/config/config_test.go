package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/mailrelay/mailrelay/internal/transport"
)

// getenv returns a getenv function over m.
func getenv(m map[string]string) func(string) string {
	return func(name string) string { return m[name] }
}

// mustLoad loads m and fails the test on any problem.
func mustLoad(t *testing.T, m map[string]string) *Config {
	t.Helper()
	c, err := Load(getenv(m))
	if err != nil {
		t.Fatalf("Load(%v): %v", m, err)
	}
	return c
}

// problemsOf loads m, expects it to fail, and returns its problems.
func problemsOf(t *testing.T, m map[string]string) Problems {
	t.Helper()
	c, err := Load(getenv(m))
	if err == nil {
		t.Fatalf("Load(%v) = nil error, want problems", m)
	}
	if c != nil {
		t.Errorf("Load(%v) returned a Config along with an error", m)
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Load error %T is not Problems: %v", err, err)
	}
	return ps
}

// writeFile writes content to a new file in a temporary directory and
// returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadDefaults(t *testing.T) {
	c := mustLoad(t, nil)
	want := Config{
		Email: Email{Backend: BackendSMTP, Port: 25, Timeout: 15 * time.Second, Pipelining: "auto"},
		Message: Message{
			From:       "webmaster@localhost",
			SnippetMax: 280,
		},
		NATS: NATS{URL: "nats://127.0.0.1:4222", InboxPrefix: "_INBOX_mailrelay"},
		HTTP: HTTP{Addr: "127.0.0.1:9466"},
		JetStream: JetStream{
			Replicas:        1,
			MaxAge:          168 * time.Hour,
			DuplicateWindow: time.Hour,
			StateTTL:        720 * time.Hour,
			AckWait:         60 * time.Second,
			DataDir:         "./data",
		},
		Relay: Relay{
			Concurrency:     8,
			RetryDelays:     []time.Duration{30 * time.Second, 2 * time.Minute},
			MaxEventBytes:   65536,
			StaleAfter:      24 * time.Hour,
			ShutdownTimeout: 25 * time.Second,
		},
		Log: Log{Format: LogJSON, Level: zapcore.InfoLevel},
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", *c, want)
	}
	if got := c.Mode(); got != ModeNotConfigured {
		t.Errorf("Mode() = %q, want %q", got, ModeNotConfigured)
	}
	if got := c.Security(); got != transport.SecurityNone {
		t.Errorf("Security() = %q, want %q", got, transport.SecurityNone)
	}
}

// Every default in the table is a value its variable accepts, and an empty
// variable means its default.
func TestEmptyMeansDefault(t *testing.T) {
	m := map[string]string{}
	for _, v := range Vars() {
		m[v.Name] = "  "
	}
	for _, v := range Vars() {
		if v.Secret {
			delete(m, v.Name) // a secret is taken as it is, spaces included
		}
	}
	if got, want := mustLoad(t, m), mustLoad(t, nil); !reflect.DeepEqual(got, want) {
		t.Errorf("blank variables:\n got %+v\nwant %+v", got, want)
	}
}

func TestLoadGood(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, "creds", "x")
	tests := []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{"backend console", map[string]string{"EMAIL_BACKEND": "console"}, func(t *testing.T, c *Config) {
			if c.Email.Backend != BackendConsole || c.Mode() != ModeConsole {
				t.Errorf("backend %q mode %q", c.Email.Backend, c.Mode())
			}
		}},
		{"backend upper case, padded", map[string]string{"EMAIL_BACKEND": " CONSOLE "}, func(t *testing.T, c *Config) {
			if c.Email.Backend != BackendConsole {
				t.Errorf("backend %q", c.Email.Backend)
			}
		}},
		{"backend file", map[string]string{"EMAIL_BACKEND": "file", "EMAIL_FILE_PATH": dir}, func(t *testing.T, c *Config) {
			if c.Mode() != ModeFile || c.Email.FilePath != dir {
				t.Errorf("mode %q path %q", c.Mode(), c.Email.FilePath)
			}
		}},
		{"backend file, directory not created yet", map[string]string{"EMAIL_BACKEND": "file", "EMAIL_FILE_PATH": filepath.Join(dir, "new")}, func(t *testing.T, c *Config) {}},
		{"backend dummy", map[string]string{"EMAIL_BACKEND": "dummy"}, func(t *testing.T, c *Config) {
			if c.Mode() != ModeDummy || !c.Configured() {
				t.Errorf("mode %q configured %v", c.Mode(), c.Configured())
			}
		}},
		{"credentials in the clear, allowed", map[string]string{"EMAIL_HOST": "smtp.example.com", "EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD": "p", "MAILRELAY_SMTP_INSECURE_AUTH": "yes"}, func(t *testing.T, c *Config) {}},
		{"credentials in the clear to loopback", map[string]string{"EMAIL_HOST": "localhost", "EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD": "p"}, func(t *testing.T, c *Config) {}},
		{"credentials in the clear, not configured", map[string]string{"EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD": "p"}, func(t *testing.T, c *Config) {}},
		{"smtp with host", map[string]string{"EMAIL_HOST": "smtp.example.com"}, func(t *testing.T, c *Config) {
			if c.Mode() != ModeSMTP || !c.Configured() {
				t.Errorf("mode %q configured %v", c.Mode(), c.Configured())
			}
		}},
		{"host IPv4", map[string]string{"EMAIL_HOST": "192.0.2.1"}, func(t *testing.T, c *Config) {}},
		{"host IPv6", map[string]string{"EMAIL_HOST": "2001:db8::1"}, func(t *testing.T, c *Config) {}},
		{"host IPv6 bracketed", map[string]string{"EMAIL_HOST": "[::1]"}, func(t *testing.T, c *Config) {
			if !c.InsecureAuthAllowed() {
				t.Error("[::1] is loopback")
			}
			// Normalised once, for the backend, the status API and the log.
			if c.Email.Host != "::1" || c.Status().Host != "::1" {
				t.Errorf("host %q, status host %q, want ::1", c.Email.Host, c.Status().Host)
			}
		}},
		{"host IPv6 bracketed, credentials in the clear to it", map[string]string{"EMAIL_HOST": "[::1]", "EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD": "p"}, func(t *testing.T, c *Config) {
			if !c.SMTPAuth().Enabled() {
				t.Error("AUTH not enabled")
			}
		}},
		{"host IPv4 bracketed", map[string]string{"EMAIL_HOST": "[192.0.2.1]"}, func(t *testing.T, c *Config) {
			if c.Email.Host != "192.0.2.1" {
				t.Errorf("host %q", c.Email.Host)
			}
		}},
		{"user without password, smtp not configured", map[string]string{"EMAIL_HOST_USER": "u"}, func(t *testing.T, c *Config) {}},
		{"password without user, console backend", map[string]string{"EMAIL_BACKEND": "console", "EMAIL_HOST": "smtp.example.com", "EMAIL_HOST_PASSWORD": "p"}, func(t *testing.T, c *Config) {}},
		{"no credentials, no TLS, remote host", map[string]string{"EMAIL_HOST": "smtp.example.com"}, func(t *testing.T, c *Config) {
			if c.SMTPAuth().Enabled() {
				t.Error("AUTH enabled without credentials")
			}
		}},
		{"host container name", map[string]string{"EMAIL_HOST": "mail_relay"}, func(t *testing.T, c *Config) {}},
		{"port 587", map[string]string{"EMAIL_PORT": "587"}, func(t *testing.T, c *Config) {
			if c.Email.Port != 587 {
				t.Errorf("port %d", c.Email.Port)
			}
		}},
		{"port 1", map[string]string{"EMAIL_PORT": "1"}, func(t *testing.T, c *Config) {}},
		{"port 65535", map[string]string{"EMAIL_PORT": "65535"}, func(t *testing.T, c *Config) {}},
		{"tls true", map[string]string{"EMAIL_USE_TLS": "true"}, func(t *testing.T, c *Config) {
			if !c.Email.UseTLS || c.Security() != transport.SecurityStartTLS {
				t.Errorf("tls %v security %q", c.Email.UseTLS, c.Security())
			}
		}},
		{"ssl yes", map[string]string{"EMAIL_USE_SSL": "yes"}, func(t *testing.T, c *Config) {
			if !c.Email.UseSSL || c.Security() != transport.SecuritySSL {
				t.Errorf("ssl %v security %q", c.Email.UseSSL, c.Security())
			}
		}},
		{"tls and ssl, one false", map[string]string{"EMAIL_USE_TLS": "1", "EMAIL_USE_SSL": "False"}, func(t *testing.T, c *Config) {}},
		{"user and password", map[string]string{"EMAIL_HOST_USER": "relay", "EMAIL_HOST_PASSWORD": " pw with spaces "}, func(t *testing.T, c *Config) {
			if c.Email.User != "relay" || c.Email.Password.Reveal() != " pw with spaces " {
				t.Errorf("user %q password %q", c.Email.User, c.Email.Password.Reveal())
			}
		}},
		{"timeout seconds", map[string]string{"EMAIL_TIMEOUT": "30"}, func(t *testing.T, c *Config) {
			if c.Email.Timeout != 30*time.Second {
				t.Errorf("timeout %v", c.Email.Timeout)
			}
		}},
		{"timeout decimal", map[string]string{"EMAIL_TIMEOUT": "2.5"}, func(t *testing.T, c *Config) {
			if c.Email.Timeout != 2500*time.Millisecond {
				t.Errorf("timeout %v", c.Email.Timeout)
			}
		}},
		{"timeout Go duration", map[string]string{"EMAIL_TIMEOUT": "1m"}, func(t *testing.T, c *Config) {
			if c.Email.Timeout != time.Minute {
				t.Errorf("timeout %v", c.Email.Timeout)
			}
		}},
		{"from with display name", map[string]string{"DEFAULT_FROM_EMAIL": "Acme <notify@Acme.com>"}, func(t *testing.T, c *Config) {
			name, addr := c.FromAddress()
			if name != "Acme" || addr != "notify@Acme.com" || c.FromDomain() != "acme.com" {
				t.Errorf("FromAddress() = %q, %q; FromDomain() = %q", name, addr, c.FromDomain())
			}
		}},
		{"from bare", map[string]string{"DEFAULT_FROM_EMAIL": "notify@example.com"}, func(t *testing.T, c *Config) {
			if name, addr := c.FromAddress(); name != "" || addr != "notify@example.com" {
				t.Errorf("FromAddress() = %q, %q", name, addr)
			}
		}},
		{"frontend https, trailing slash", map[string]string{"FRONTEND_BASE_URL": "https://app.example.com/"}, func(t *testing.T, c *Config) {
			if c.Message.FrontendBaseURL != "https://app.example.com" {
				t.Errorf("base %q", c.Message.FrontendBaseURL)
			}
		}},
		{"frontend http with port and path", map[string]string{"FRONTEND_BASE_URL": "http://localhost:3000/app//"}, func(t *testing.T, c *Config) {
			if c.Message.FrontendBaseURL != "http://localhost:3000/app" {
				t.Errorf("base %q", c.Message.FrontendBaseURL)
			}
		}},
		{"insecure auth on", map[string]string{"MAILRELAY_SMTP_INSECURE_AUTH": "ON", "EMAIL_HOST": "smtp.example.com"}, func(t *testing.T, c *Config) {
			if !c.Email.InsecureAuth || !c.InsecureAuthAllowed() {
				t.Error("insecure auth not allowed")
			}
		}},
		{"insecure auth off to remote host", map[string]string{"MAILRELAY_SMTP_INSECURE_AUTH": "off", "EMAIL_HOST": "smtp.example.com"}, func(t *testing.T, c *Config) {
			if c.InsecureAuthAllowed() {
				t.Error("insecure auth allowed")
			}
		}},
		{"list id", map[string]string{"MAILRELAY_LIST_ID": "tasks.acme.example"}, func(t *testing.T, c *Config) {
			if c.Message.ListID != "tasks.acme.example" {
				t.Errorf("ListID %q", c.Message.ListID)
			}
		}},
		{"list id whole", map[string]string{"MAILRELAY_LIST_ID": "Acme tasks <tasks.acme.example>"}, func(t *testing.T, c *Config) {}},
		{"list id in brackets", map[string]string{"MAILRELAY_LIST_ID": "<tasks.acme.example>"}, func(t *testing.T, c *Config) {}},
		{"template dir", map[string]string{"MAILRELAY_TEMPLATE_DIR": dir}, func(t *testing.T, c *Config) {
			if c.Message.TemplateDir != dir {
				t.Errorf("template dir %q", c.Message.TemplateDir)
			}
		}},
		{"snippet max 500", map[string]string{"MAILRELAY_SNIPPET_MAX": "500"}, func(t *testing.T, c *Config) {
			if c.Message.SnippetMax != 500 {
				t.Errorf("snippet max %d", c.Message.SnippetMax)
			}
		}},
		{"nats url list", map[string]string{"NATS_URL": "nats://a:4222, tls://b:4443"}, func(t *testing.T, c *Config) {
			if got := c.NATS.Servers(); !reflect.DeepEqual(got, []string{"nats://a:4222", "tls://b:4443"}) {
				t.Errorf("Servers() = %q", got)
			}
		}},
		{"nats url without scheme", map[string]string{"NATS_URL": "localhost:4222"}, func(t *testing.T, c *Config) {}},
		{"nats url websocket", map[string]string{"NATS_URL": "wss://nats.example.com/ws"}, func(t *testing.T, c *Config) {}},
		{"nats url ports 1 and 65535", map[string]string{"NATS_URL": "nats://a:1,tls://b:65535"}, func(t *testing.T, c *Config) {}},
		{"nats creds and tls files", map[string]string{"NATS_CREDS": file, "NATS_CA": file, "NATS_CERT": file, "NATS_KEY": file}, func(t *testing.T, c *Config) {
			if c.NATS.Creds != file || c.NATS.Cert != file {
				t.Errorf("nats %+v", c.NATS)
			}
		}},
		{"nats nkey", map[string]string{"NATS_NKEY": file}, func(t *testing.T, c *Config) {}},
		{"nats user and password", map[string]string{"NATS_USER": "relay", "NATS_PASSWORD": "pw"}, func(t *testing.T, c *Config) {
			if c.NATS.User != "relay" || c.NATS.Password.Reveal() != "pw" {
				t.Errorf("nats user %q", c.NATS.User)
			}
		}},
		{"nats token", map[string]string{"NATS_TOKEN": "tok"}, func(t *testing.T, c *Config) {
			if c.NATS.Token.Reveal() != "tok" {
				t.Error("token not read")
			}
		}},
		{"http addr all interfaces", map[string]string{"MAILRELAY_HTTP_ADDR": ":9466"}, func(t *testing.T, c *Config) {}},
		{"http addr IPv6, free port", map[string]string{"MAILRELAY_HTTP_ADDR": "[::1]:0"}, func(t *testing.T, c *Config) {}},
		{"admin token", map[string]string{"MAILRELAY_ADMIN_TOKEN": "0123456789abcdef0123"}, func(t *testing.T, c *Config) {
			if c.HTTP.AdminToken.Reveal() != "0123456789abcdef0123" {
				t.Error("token not read")
			}
		}},
		{"one retry delay serves both", map[string]string{"MAILRELAY_RETRY_DELAYS": "1m"}, func(t *testing.T, c *Config) {
			if c.Relay.RetryDelay(2) != time.Minute || c.Relay.RetryDelay(3) != time.Minute {
				t.Errorf("delays %v", c.Relay.RetryDelays)
			}
		}},
		{"two retry delays, spaced", map[string]string{"MAILRELAY_RETRY_DELAYS": "10s, 1m"}, func(t *testing.T, c *Config) {
			r := c.Relay
			if r.RetryDelay(1) != 0 || r.RetryDelay(2) != 10*time.Second || r.RetryDelay(3) != time.Minute || r.RetryDelay(4) != time.Minute {
				t.Errorf("delays %v", r.RetryDelays)
			}
		}},
		{"ack wait 1s", map[string]string{"MAILRELAY_ACK_WAIT": "1s", "EMAIL_TIMEOUT": "0.5"}, func(t *testing.T, c *Config) {
			if c.JetStream.AckWait != time.Second {
				t.Errorf("ack wait %v", c.JetStream.AckWait)
			}
		}},
		{"concurrency 1024", map[string]string{"MAILRELAY_CONCURRENCY": "1024"}, func(t *testing.T, c *Config) {
			if c.Relay.Concurrency != 1024 {
				t.Errorf("concurrency %d", c.Relay.Concurrency)
			}
		}},
		{"replicas 3", map[string]string{"MAILRELAY_STREAM_REPLICAS": "3"}, func(t *testing.T, c *Config) {
			if c.JetStream.Replicas != 3 {
				t.Errorf("replicas %d", c.JetStream.Replicas)
			}
		}},
		{"data dir", map[string]string{"MAILRELAY_DATA_DIR": "/var/lib/mailrelay"}, func(t *testing.T, c *Config) {
			if c.JetStream.DataDir != "/var/lib/mailrelay" {
				t.Errorf("data dir %q", c.JetStream.DataDir)
			}
		}},
		{"state ttl equal to max age", map[string]string{"MAILRELAY_STATE_TTL": "48h", "MAILRELAY_STREAM_MAX_AGE": "48h"}, func(t *testing.T, c *Config) {
			if c.JetStream.StateTTL != 48*time.Hour || c.JetStream.MaxAge != 48*time.Hour {
				t.Errorf("jetstream %+v", c.JetStream)
			}
		}},
		{"duplicate window 100ms", map[string]string{"MAILRELAY_DUPLICATE_WINDOW": "100ms"}, func(t *testing.T, c *Config) {
			if c.JetStream.DuplicateWindow != 100*time.Millisecond {
				t.Errorf("window %v", c.JetStream.DuplicateWindow)
			}
		}},
		{"max event bytes bounds", map[string]string{"MAILRELAY_MAX_EVENT_BYTES": "8388608"}, func(t *testing.T, c *Config) {
			if c.Relay.MaxEventBytes != 8<<20 {
				t.Errorf("max event bytes %d", c.Relay.MaxEventBytes)
			}
		}},
		{"stale after 0 disables", map[string]string{"MAILRELAY_STALE_AFTER": "0"}, func(t *testing.T, c *Config) {
			if c.Relay.StaleAfter != 0 {
				t.Errorf("stale after %v", c.Relay.StaleAfter)
			}
		}},
		{"max rate decimal", map[string]string{"MAILRELAY_MAX_RATE": "0.5"}, func(t *testing.T, c *Config) {
			if c.Relay.MaxRate != 0.5 {
				t.Errorf("max rate %v", c.Relay.MaxRate)
			}
		}},
		{"max rate 0 is unlimited", map[string]string{"MAILRELAY_MAX_RATE": "0"}, func(t *testing.T, c *Config) {}},
		{"shutdown timeout", map[string]string{"MAILRELAY_SHUTDOWN_TIMEOUT": "1m30s"}, func(t *testing.T, c *Config) {
			if c.Relay.ShutdownTimeout != 90*time.Second {
				t.Errorf("shutdown %v", c.Relay.ShutdownTimeout)
			}
		}},
		{"log console, warning", map[string]string{"MAILRELAY_LOG_FORMAT": "Console", "MAILRELAY_LOG_LEVEL": "WARN"}, func(t *testing.T, c *Config) {
			if c.Log.Format != LogConsole || c.Log.Level != zapcore.WarnLevel {
				t.Errorf("log %+v", c.Log)
			}
		}},
		{"log debug", map[string]string{"MAILRELAY_LOG_LEVEL": "debug"}, func(t *testing.T, c *Config) {
			if c.Log.Level != zapcore.DebugLevel {
				t.Errorf("level %v", c.Log.Level)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustLoad(t, tt.env))
		})
	}
}

func TestBooleans(t *testing.T) {
	for _, s := range []string{"true", "TRUE", "True", "1", "yes", "YES", "on", "On"} {
		if c := mustLoad(t, map[string]string{"EMAIL_USE_TLS": s}); !c.Email.UseTLS {
			t.Errorf("EMAIL_USE_TLS=%q read as false", s)
		}
	}
	for _, s := range []string{"false", "FALSE", "0", "no", "No", "off", "OFF", ""} {
		if c := mustLoad(t, map[string]string{"EMAIL_USE_TLS": s}); c.Email.UseTLS {
			t.Errorf("EMAIL_USE_TLS=%q read as true", s)
		}
	}
}

func TestDjangoBackends(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		value string
		want  Backend
	}{
		{"django.core.mail.backends.smtp.EmailBackend", BackendSMTP},
		{"django.core.mail.backends.console.EmailBackend", BackendConsole},
		{"django.core.mail.backends.filebased.EmailBackend", BackendFile},
		{"django.core.mail.backends.dummy.EmailBackend", BackendDummy},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			c := mustLoad(t, map[string]string{"EMAIL_BACKEND": tt.value, "EMAIL_FILE_PATH": dir})
			if c.Email.Backend != tt.want {
				t.Errorf("backend %q, want %q", c.Email.Backend, tt.want)
			}
		})
	}
}

func TestLoadBad(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, "plain", "x")
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name string
		env  map[string]string
		// want is the variable the one problem is about (its message starts
		// with it) and text a part of its message.
		want, text string
	}{
		{"backend unknown", map[string]string{"EMAIL_BACKEND": "smtps"}, "EMAIL_BACKEND",
			`EMAIL_BACKEND: "smtps" is not smtp, console, file or dummy (or Django's django.core.mail.backends.{smtp,console,filebased,dummy}.EmailBackend)`},
		{"backend locmem", map[string]string{"EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend"}, "EMAIL_BACKEND", "is not smtp, console, file or dummy"},
		{"host with port", map[string]string{"EMAIL_HOST": "smtp.example.com:587"}, "EMAIL_HOST", "the port goes in EMAIL_PORT"},
		{"host with scheme", map[string]string{"EMAIL_HOST": "smtp://smtp.example.com"}, "EMAIL_HOST", `"smtp://smtp.example.com" is not a host name`},
		{"host with space", map[string]string{"EMAIL_HOST": "smtp example.com"}, "EMAIL_HOST", "is not a host name"},
		{"port too big", map[string]string{"EMAIL_PORT": "70000"}, "EMAIL_PORT", `EMAIL_PORT: "70000" is not a port (1-65535)`},
		{"port 0", map[string]string{"EMAIL_PORT": "0"}, "EMAIL_PORT", `EMAIL_PORT: "0" is not a port (1-65535)`},
		{"port not a number", map[string]string{"EMAIL_PORT": "smtp"}, "EMAIL_PORT", `EMAIL_PORT: "smtp" is not a port (1-65535)`},
		{"port overflows", map[string]string{"EMAIL_PORT": "99999999999"}, "EMAIL_PORT", `"99999999999" is not a port`},
		{"tls not a boolean", map[string]string{"EMAIL_USE_TLS": "maybe"}, "EMAIL_USE_TLS",
			`EMAIL_USE_TLS: "maybe" is not a boolean (true/false, 1/0, yes/no, on/off)`},
		{"ssl not a boolean", map[string]string{"EMAIL_USE_SSL": "2"}, "EMAIL_USE_SSL", `"2" is not a boolean`},
		{"tls and ssl", map[string]string{"EMAIL_USE_TLS": "true", "EMAIL_USE_SSL": "yes"}, "EMAIL_USE_TLS",
			"EMAIL_USE_TLS and EMAIL_USE_SSL are both true: choose one"},
		{"timeout 0", map[string]string{"EMAIL_TIMEOUT": "0"}, "EMAIL_TIMEOUT", `EMAIL_TIMEOUT: "0" is not a number of seconds greater than 0`},
		{"timeout negative", map[string]string{"EMAIL_TIMEOUT": "-1.5"}, "EMAIL_TIMEOUT", `EMAIL_TIMEOUT: "-1.5" is not a number of seconds`},
		{"timeout text", map[string]string{"EMAIL_TIMEOUT": "soon"}, "EMAIL_TIMEOUT", `EMAIL_TIMEOUT: "soon" is not a number of seconds`},
		{"timeout NaN", map[string]string{"EMAIL_TIMEOUT": "NaN"}, "EMAIL_TIMEOUT", `"NaN" is not a number of seconds`},
		{"timeout overflows", map[string]string{"EMAIL_TIMEOUT": "1e300"}, "EMAIL_TIMEOUT", `"1e300" is not a number of seconds`},
		{"file backend without path", map[string]string{"EMAIL_BACKEND": "file"}, "EMAIL_FILE_PATH",
			"EMAIL_FILE_PATH: required when EMAIL_BACKEND is file"},
		{"file path is a file", map[string]string{"EMAIL_BACKEND": "file", "EMAIL_FILE_PATH": file}, "EMAIL_FILE_PATH", "is not a directory"},
		{"from not an address", map[string]string{"DEFAULT_FROM_EMAIL": "notify"}, "DEFAULT_FROM_EMAIL",
			`DEFAULT_FROM_EMAIL: "notify" is not an email address like notify@example.com or Acme <notify@example.com>`},
		{"from two addresses", map[string]string{"DEFAULT_FROM_EMAIL": "a@example.com, b@example.com"}, "DEFAULT_FROM_EMAIL", "is not an email address"},
		{"frontend without scheme", map[string]string{"FRONTEND_BASE_URL": "app.example.com"}, "FRONTEND_BASE_URL",
			`FRONTEND_BASE_URL: "app.example.com" is not an absolute http(s) URL`},
		{"frontend ftp", map[string]string{"FRONTEND_BASE_URL": "ftp://app.example.com"}, "FRONTEND_BASE_URL", "is not an absolute http(s) URL"},
		{"frontend relative", map[string]string{"FRONTEND_BASE_URL": "/app"}, "FRONTEND_BASE_URL", "is not an absolute http(s) URL"},
		{"frontend no host", map[string]string{"FRONTEND_BASE_URL": "https:///app"}, "FRONTEND_BASE_URL", "is not an absolute http(s) URL"},
		{"frontend query", map[string]string{"FRONTEND_BASE_URL": "https://app.example.com/?x=1"}, "FRONTEND_BASE_URL", "is not an absolute http(s) URL"},
		{"frontend fragment", map[string]string{"FRONTEND_BASE_URL": "https://app.example.com/#/"}, "FRONTEND_BASE_URL", "is not an absolute http(s) URL"},
		{"frontend user info", map[string]string{"FRONTEND_BASE_URL": "https://u@app.example.com"}, "FRONTEND_BASE_URL", "is not an absolute http(s) URL"},
		{"frontend space", map[string]string{"FRONTEND_BASE_URL": "https://app.example.com/a b"}, "FRONTEND_BASE_URL", "is not an absolute http(s) URL"},
		{"frontend angle bracket", map[string]string{"FRONTEND_BASE_URL": "https://app.example.com/>"}, "FRONTEND_BASE_URL", "is not an absolute http(s) URL"},
		{"frontend port 99999", map[string]string{"FRONTEND_BASE_URL": "https://app.example.com:99999"}, "FRONTEND_BASE_URL",
			`FRONTEND_BASE_URL: "https://app.example.com:99999" is not an absolute http(s) URL with a host, an optional port from 1 to 65535`},
		{"frontend port 0", map[string]string{"FRONTEND_BASE_URL": "http://localhost:0/app"}, "FRONTEND_BASE_URL", "is not an absolute http(s) URL"},
		{"frontend empty port", map[string]string{"FRONTEND_BASE_URL": "https://app.example.com:/"}, "FRONTEND_BASE_URL", "is not an absolute http(s) URL"},
		{"insecure auth not a boolean", map[string]string{"MAILRELAY_SMTP_INSECURE_AUTH": "please"}, "MAILRELAY_SMTP_INSECURE_AUTH", `"please" is not a boolean`},
		{"pipelining neither auto nor off", map[string]string{"MAILRELAY_SMTP_PIPELINING": "on"}, "MAILRELAY_SMTP_PIPELINING", `"on" is not auto or off`},
		{"list id without dot", map[string]string{"MAILRELAY_LIST_ID": "notifications"}, "MAILRELAY_LIST_ID", `MAILRELAY_LIST_ID: "notifications" is not a list identifier`},
		{"list id unclosed bracket", map[string]string{"MAILRELAY_LIST_ID": "Acme <n.example.com"}, "MAILRELAY_LIST_ID", "is not a list identifier"},
		{"list id phrase with newline", map[string]string{"MAILRELAY_LIST_ID": "Acme\r\nBcc: x <n.example.com>"}, "MAILRELAY_LIST_ID", "is not a list identifier"},
		{"template dir missing", map[string]string{"MAILRELAY_TEMPLATE_DIR": missing}, "MAILRELAY_TEMPLATE_DIR", "no such file or directory"},
		{"template dir is a file", map[string]string{"MAILRELAY_TEMPLATE_DIR": file}, "MAILRELAY_TEMPLATE_DIR", "is not a directory"},
		{"snippet max 0", map[string]string{"MAILRELAY_SNIPPET_MAX": "0"}, "MAILRELAY_SNIPPET_MAX", `MAILRELAY_SNIPPET_MAX: "0" is not a whole number from 1 to 500`},
		{"snippet max 501", map[string]string{"MAILRELAY_SNIPPET_MAX": "501"}, "MAILRELAY_SNIPPET_MAX", `"501" is not a whole number from 1 to 500`},
		{"nats url http", map[string]string{"NATS_URL": "http://nats:4222"}, "NATS_URL", `NATS_URL: "http://nats:4222" is not a NATS server URL`},
		{"nats url bad port", map[string]string{"NATS_URL": "nats://a:4222,nats://b:99999"}, "NATS_URL", `NATS_URL: "nats://b:99999" is not a NATS server URL`},
		{"nats url no host", map[string]string{"NATS_URL": "nats://"}, "NATS_URL", "is not a NATS server URL"},
		{"nats url port 0", map[string]string{"NATS_URL": "nats://host:0"}, "NATS_URL", `NATS_URL: "nats://host:0" is not a NATS server URL like nats://host:4222 (a port from 1 to 65535)`},
		{"nats url port 70000", map[string]string{"NATS_URL": "nats://host:70000"}, "NATS_URL", `NATS_URL: "nats://host:70000" is not a NATS server URL`},
		{"nats url bare host, port 70000", map[string]string{"NATS_URL": "host:70000"}, "NATS_URL", `NATS_URL: "host:70000" is not a NATS server URL`},
		{"nats url websocket port 65536", map[string]string{"NATS_URL": "wss://nats.example.com:65536/ws"}, "NATS_URL", "is not a NATS server URL"},
		{"nats url empty port", map[string]string{"NATS_URL": "nats://host:"}, "NATS_URL", `NATS_URL: "nats://host:" is not a NATS server URL`},
		{"nats url only commas", map[string]string{"NATS_URL": ", ,"}, "NATS_URL", "is not a NATS server URL"},
		{"nats creds missing", map[string]string{"NATS_CREDS": missing}, "NATS_CREDS", `NATS_CREDS: cannot read "` + missing + `": no such file or directory`},
		{"nats nkey missing", map[string]string{"NATS_NKEY": missing}, "NATS_NKEY", "cannot read"},
		{"nats ca is a directory", map[string]string{"NATS_CA": dir}, "NATS_CA", "is a directory, not a file"},
		{"nats cert without key", map[string]string{"NATS_CERT": file}, "NATS_CERT", "NATS_CERT and NATS_KEY go together"},
		{"nats key without cert", map[string]string{"NATS_KEY": file}, "NATS_CERT", "NATS_CERT and NATS_KEY go together"},
		{"nats password without user", map[string]string{"NATS_PASSWORD": "pw"}, "NATS_USER", "NATS_USER and NATS_PASSWORD go together"},
		{"nats user without password", map[string]string{"NATS_USER": "relay"}, "NATS_USER", "NATS_USER and NATS_PASSWORD go together"},
		{"nats creds and token", map[string]string{"NATS_CREDS": file, "NATS_TOKEN": "t"}, "NATS_CREDS",
			"NATS_CREDS and NATS_TOKEN are set: choose one way to authenticate to NATS"},
		{"http addr without port", map[string]string{"MAILRELAY_HTTP_ADDR": "localhost"}, "MAILRELAY_HTTP_ADDR",
			`MAILRELAY_HTTP_ADDR: "localhost" is not host:port like 127.0.0.1:9466 or :9466`},
		{"http addr port only", map[string]string{"MAILRELAY_HTTP_ADDR": "9466"}, "MAILRELAY_HTTP_ADDR", "is not host:port"},
		{"http addr named port", map[string]string{"MAILRELAY_HTTP_ADDR": "localhost:http"}, "MAILRELAY_HTTP_ADDR", "is not host:port"},
		{"http addr port too big", map[string]string{"MAILRELAY_HTTP_ADDR": ":70000"}, "MAILRELAY_HTTP_ADDR", "is not host:port"},
		{"admin token with space", map[string]string{"MAILRELAY_ADMIN_TOKEN": "two words"}, "MAILRELAY_ADMIN_TOKEN",
			"MAILRELAY_ADMIN_TOKEN: the value is not one word of printable ASCII (a bearer token)"},
		{"credentials in the clear", map[string]string{"EMAIL_HOST": "smtp.example.com", "EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD": "p"}, "EMAIL_USE_TLS",
			"EMAIL_USE_TLS and EMAIL_USE_SSL are both false but EMAIL_HOST_USER is set: credentials are never sent in the clear to smtp.example.com"},
		{"credentials in the clear to a bracketed remote IPv6", map[string]string{"EMAIL_HOST": "[2001:db8::1]", "EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD": "p"}, "EMAIL_USE_TLS",
			"credentials are never sent in the clear to 2001:db8::1,"},
		{"password without user", map[string]string{"EMAIL_HOST": "smtp.example.com", "EMAIL_USE_TLS": "true", "EMAIL_HOST_PASSWORD": "p"}, "EMAIL_HOST_USER",
			"EMAIL_HOST_USER: required when EMAIL_HOST_PASSWORD is set: the relay authenticates with both or with neither"},
		{"password file without user", map[string]string{"EMAIL_HOST": "smtp.example.com", "EMAIL_USE_SSL": "true", "EMAIL_HOST_PASSWORD_FILE": file}, "EMAIL_HOST_USER",
			"EMAIL_HOST_USER: required when EMAIL_HOST_PASSWORD_FILE is set"},
		{"password without user, in the clear", map[string]string{"EMAIL_HOST": "smtp.example.com", "EMAIL_HOST_PASSWORD": "p"}, "EMAIL_HOST_USER",
			"EMAIL_HOST_USER: required when EMAIL_HOST_PASSWORD is set"},
		{"user without password", map[string]string{"EMAIL_HOST": "smtp.example.com", "EMAIL_USE_TLS": "true", "EMAIL_HOST_USER": "u"}, "EMAIL_HOST_PASSWORD",
			"EMAIL_HOST_PASSWORD (or EMAIL_HOST_PASSWORD_FILE): required when EMAIL_HOST_USER is set"},
		{"user without password, loopback", map[string]string{"EMAIL_HOST": "localhost", "EMAIL_HOST_USER": "u"}, "EMAIL_HOST_PASSWORD",
			"required when EMAIL_HOST_USER is set"},
		{"user with an unreadable password file", map[string]string{"EMAIL_HOST": "smtp.example.com", "EMAIL_USE_TLS": "true", "EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD_FILE": missing}, "EMAIL_HOST_PASSWORD_FILE",
			"no such file or directory"},
		{"host with unbalanced bracket", map[string]string{"EMAIL_HOST": "[::1"}, "EMAIL_HOST", `"[::1" is not a host name`},
		{"host with closing bracket only", map[string]string{"EMAIL_HOST": "::1]"}, "EMAIL_HOST", "is not a host name"},
		{"host name bracketed", map[string]string{"EMAIL_HOST": "[smtp.example.com]"}, "EMAIL_HOST", "is not a host name"},
		{"host IPv6 with port", map[string]string{"EMAIL_HOST": "[::1]:25"}, "EMAIL_HOST", "is not a host name"},
		{"retry delays not durations", map[string]string{"MAILRELAY_RETRY_DELAYS": "x"}, "MAILRELAY_RETRY_DELAYS",
			`MAILRELAY_RETRY_DELAYS: "x" is not a Go duration list like 30s,2m`},
		{"retry delays without unit", map[string]string{"MAILRELAY_RETRY_DELAYS": "30"}, "MAILRELAY_RETRY_DELAYS", `"30" is not a Go duration list`},
		{"retry delays three", map[string]string{"MAILRELAY_RETRY_DELAYS": "30s,1m,2m"}, "MAILRELAY_RETRY_DELAYS", `"30s,1m,2m" is not a Go duration list`},
		{"retry delays empty item", map[string]string{"MAILRELAY_RETRY_DELAYS": "30s,"}, "MAILRELAY_RETRY_DELAYS", `"30s," is not a Go duration list`},
		{"retry delays zero", map[string]string{"MAILRELAY_RETRY_DELAYS": "0s"}, "MAILRELAY_RETRY_DELAYS", `"0s" is not a Go duration list`},
		{"retry delays negative", map[string]string{"MAILRELAY_RETRY_DELAYS": "30s,-2m"}, "MAILRELAY_RETRY_DELAYS", `"30s,-2m" is not a Go duration list`},
		{"ack wait too short", map[string]string{"MAILRELAY_ACK_WAIT": "500ms"}, "MAILRELAY_ACK_WAIT",
			`MAILRELAY_ACK_WAIT: "500ms" is not a Go duration of at least 1s like 60s`},
		{"ack wait without unit", map[string]string{"MAILRELAY_ACK_WAIT": "60"}, "MAILRELAY_ACK_WAIT", `"60" is not a Go duration`},
		{"concurrency 0", map[string]string{"MAILRELAY_CONCURRENCY": "0"}, "MAILRELAY_CONCURRENCY", `"0" is not a whole number from 1 to 1024`},
		{"concurrency 1025", map[string]string{"MAILRELAY_CONCURRENCY": "1025"}, "MAILRELAY_CONCURRENCY", `"1025" is not a whole number from 1 to 1024`},
		{"concurrency text", map[string]string{"MAILRELAY_CONCURRENCY": "many"}, "MAILRELAY_CONCURRENCY", `"many" is not a whole number`},
		{"replicas 0", map[string]string{"MAILRELAY_STREAM_REPLICAS": "0"}, "MAILRELAY_STREAM_REPLICAS", `"0" is not a whole number from 1 to 5`},
		{"replicas 6", map[string]string{"MAILRELAY_STREAM_REPLICAS": "6"}, "MAILRELAY_STREAM_REPLICAS", `"6" is not a whole number from 1 to 5`},
		{"stream max age 0", map[string]string{"MAILRELAY_STREAM_MAX_AGE": "0"}, "MAILRELAY_STREAM_MAX_AGE", `"0s" is not a Go duration greater than 0`},
		{"duplicate window too short", map[string]string{"MAILRELAY_DUPLICATE_WINDOW": "50ms"}, "MAILRELAY_DUPLICATE_WINDOW",
			`MAILRELAY_DUPLICATE_WINDOW: "50ms" is not a Go duration from 100ms up to MAILRELAY_STREAM_MAX_AGE`},
		{"duplicate window longer than max age", map[string]string{"MAILRELAY_DUPLICATE_WINDOW": "200h"}, "MAILRELAY_DUPLICATE_WINDOW",
			"MAILRELAY_DUPLICATE_WINDOW (200h) is longer than MAILRELAY_STREAM_MAX_AGE (168h)"},
		{"state ttl shorter than max age", map[string]string{"MAILRELAY_STATE_TTL": "24h"}, "MAILRELAY_STATE_TTL",
			"MAILRELAY_STATE_TTL (24h) is shorter than MAILRELAY_STREAM_MAX_AGE (168h)"},
		{"state ttl 0", map[string]string{"MAILRELAY_STATE_TTL": "0"}, "MAILRELAY_STATE_TTL", `"0s" is not a Go duration not shorter than MAILRELAY_STREAM_MAX_AGE`},
		{"max event bytes too small", map[string]string{"MAILRELAY_MAX_EVENT_BYTES": "1023"}, "MAILRELAY_MAX_EVENT_BYTES", `"1023" is not a whole number of bytes from 1024 to 8388608`},
		{"max event bytes too big", map[string]string{"MAILRELAY_MAX_EVENT_BYTES": "8388609"}, "MAILRELAY_MAX_EVENT_BYTES", `"8388609" is not a whole number of bytes`},
		{"max event bytes with unit", map[string]string{"MAILRELAY_MAX_EVENT_BYTES": "64KiB"}, "MAILRELAY_MAX_EVENT_BYTES", `"64KiB" is not a whole number of bytes`},
		{"stale after negative", map[string]string{"MAILRELAY_STALE_AFTER": "-1h"}, "MAILRELAY_STALE_AFTER", `MAILRELAY_STALE_AFTER: "-1h" is not a Go duration of 0 or more`},
		{"stale after text", map[string]string{"MAILRELAY_STALE_AFTER": "never"}, "MAILRELAY_STALE_AFTER", `"never" is not a Go duration of 0 or more`},
		{"max rate negative", map[string]string{"MAILRELAY_MAX_RATE": "-1"}, "MAILRELAY_MAX_RATE", `MAILRELAY_MAX_RATE: "-1" is not a number of mails per second`},
		{"max rate text", map[string]string{"MAILRELAY_MAX_RATE": "fast"}, "MAILRELAY_MAX_RATE", `"fast" is not a number of mails per second`},
		{"max rate NaN", map[string]string{"MAILRELAY_MAX_RATE": "NaN"}, "MAILRELAY_MAX_RATE", `"NaN" is not a number of mails per second`},
		{"max rate infinite", map[string]string{"MAILRELAY_MAX_RATE": "+Inf"}, "MAILRELAY_MAX_RATE", `"+Inf" is not a number of mails per second`},
		{"shutdown timeout 0", map[string]string{"MAILRELAY_SHUTDOWN_TIMEOUT": "0s"}, "MAILRELAY_SHUTDOWN_TIMEOUT", `"0s" is not a Go duration greater than 0`},
		{"log format", map[string]string{"MAILRELAY_LOG_FORMAT": "xml"}, "MAILRELAY_LOG_FORMAT", `MAILRELAY_LOG_FORMAT: "xml" is not json or console`},
		{"log level unknown", map[string]string{"MAILRELAY_LOG_LEVEL": "loud"}, "MAILRELAY_LOG_LEVEL", `MAILRELAY_LOG_LEVEL: "loud" is not debug, info, warn or error`},
		{"log level panic", map[string]string{"MAILRELAY_LOG_LEVEL": "panic"}, "MAILRELAY_LOG_LEVEL", `"panic" is not debug, info, warn or error`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := problemsOf(t, tt.env)
			if len(ps) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(ps), ps)
			}
			p := ps[0]
			if len(p.Vars) == 0 || p.Vars[0] != tt.want || !strings.HasPrefix(p.Msg, tt.want) {
				t.Errorf("problem %q about %v, want one about %s", p.Msg, p.Vars, tt.want)
			}
			if !strings.Contains(p.Msg, tt.text) {
				t.Errorf("problem %q\nwant it to contain %q", p.Msg, tt.text)
			}
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	ps := problemsOf(t, map[string]string{
		"MAILRELAY_LOG_LEVEL":    "loud",
		"EMAIL_PORT":             "70000",
		"EMAIL_USE_TLS":          "true",
		"EMAIL_USE_SSL":          "true",
		"MAILRELAY_RETRY_DELAYS": "x",
		"MAILRELAY_STATE_TTL":    "1h",
		"NATS_URL":               "http://nats",
		"EMAIL_TIMEOUT":          "never",
	})
	want := []string{ // in the order of the table
		`EMAIL_PORT: "70000" is not a port (1-65535)`,
		"EMAIL_USE_TLS and EMAIL_USE_SSL are both true: choose one",
		`EMAIL_TIMEOUT: "never" is not a number of seconds`,
		`NATS_URL: "http://nats" is not a NATS server URL`,
		`MAILRELAY_RETRY_DELAYS: "x" is not a Go duration list like 30s,2m`,
		"MAILRELAY_STATE_TTL (1h) is shorter than MAILRELAY_STREAM_MAX_AGE (168h)",
		`MAILRELAY_LOG_LEVEL: "loud" is not debug, info, warn or error`,
	}
	if len(ps) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(want), ps)
	}
	for i, w := range want {
		if !strings.HasPrefix(ps[i].Msg, w) {
			t.Errorf("problem %d = %q, want it to start with %q", i, ps[i].Msg, w)
		}
	}
	if got := strings.Count(ps.Error(), "\n"); got != len(want)-1 {
		t.Errorf("Error() has %d lines, want one a problem:\n%s", got+1, ps.Error())
	}
	var p Problem
	if !errors.As(error(ps), &p) || p.Msg != ps[0].Msg {
		t.Errorf("errors.As(Problems, *Problem) = %q, want the first problem", p.Msg)
	}
}

// A problem of one variable is reported once, even when a later check
// depends on the value that did not parse.
func TestParseFailureNotReportedTwice(t *testing.T) {
	ps := problemsOf(t, map[string]string{"MAILRELAY_STREAM_MAX_AGE": "week", "MAILRELAY_DUPLICATE_WINDOW": "1h"})
	if len(ps) != 1 || ps[0].Vars[0] != "MAILRELAY_STREAM_MAX_AGE" {
		t.Errorf("got %v, want one problem about MAILRELAY_STREAM_MAX_AGE", ps)
	}
}

func TestValidateHandBuilt(t *testing.T) {
	c := mustLoad(t, nil)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() of a loaded Config: %v", err)
	}
	c.Email.Backend = "pigeon"
	c.Relay.RetryDelays = nil
	err := c.Validate()
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 2 {
		t.Fatalf("Validate() = %v, want 2 problems", err)
	}
	if !strings.HasPrefix(ps[0].Msg, `EMAIL_BACKEND: "pigeon"`) || !strings.HasPrefix(ps[1].Msg, `MAILRELAY_RETRY_DELAYS: ""`) {
		t.Errorf("Validate() = %v", err)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string // "" with noFile: the file does not exist
		noFile  bool
		want    string // the secret read
		problem string // or a part of the problem
	}{
		{name: "trailing newline trimmed", content: "s3cret\n", want: "s3cret"},
		{name: "only one newline trimmed", content: "s3cret\n\n", want: "s3cret\n"},
		{name: "CRLF trimmed", content: "s3cret\r\n", want: "s3cret"},
		{name: "no newline", content: "s3cret", want: "s3cret"},
		{name: "inner spaces kept", content: " s3 cret \n", want: " s3 cret "},
		{name: "missing", noFile: true, problem: "no such file or directory"},
		{name: "empty", content: "\n", problem: "is empty"},
		{name: "too big", content: strings.Repeat("x", maxSecretFile+1), problem: "is larger than 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if !tt.noFile {
				if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Load(getenv(map[string]string{"EMAIL_HOST_PASSWORD_FILE": path}))
			if tt.problem == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := c.Email.Password.Reveal(); got != tt.want {
					t.Errorf("password %q, want %q", got, tt.want)
				}
				if c.Email.PasswordFile != path {
					t.Errorf("PasswordFile %q, want %q", c.Email.PasswordFile, path)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			want := `EMAIL_HOST_PASSWORD_FILE: `
			if msg := err.Error(); !strings.HasPrefix(msg, want) || !strings.Contains(msg, path) || !strings.Contains(msg, tt.problem) {
				t.Errorf("error %q, want one starting %q naming %q and saying %q", msg, want, path, tt.problem)
			}
		})
	}

	t.Run("a directory", func(t *testing.T) {
		_, err := Load(getenv(map[string]string{"MAILRELAY_ADMIN_TOKEN_FILE": dir}))
		if err == nil || !strings.HasPrefix(err.Error(), "MAILRELAY_ADMIN_TOKEN_FILE: cannot read") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("admin token from file", func(t *testing.T) {
		path := writeFile(t, "token", "0123456789abcdef0123\n")
		c := mustLoad(t, map[string]string{"MAILRELAY_ADMIN_TOKEN_FILE": path})
		if c.HTTP.AdminToken.Reveal() != "0123456789abcdef0123" {
			t.Error("admin token not read from its file")
		}
	})
	t.Run("admin token file with two words", func(t *testing.T) {
		path := writeFile(t, "token", "two words\n")
		ps := problemsOf(t, map[string]string{"MAILRELAY_ADMIN_TOKEN_FILE": path})
		want := `MAILRELAY_ADMIN_TOKEN_FILE: the token in "` + path + `" is not one word of printable ASCII`
		if len(ps) != 1 || !strings.HasPrefix(ps[0].Msg, want) {
			t.Errorf("problems %v, want one starting %q", ps, want)
		}
	})
	for _, name := range []string{"EMAIL_HOST_PASSWORD", "MAILRELAY_ADMIN_TOKEN"} {
		t.Run(name+" and its file", func(t *testing.T) {
			path := writeFile(t, "secret", "from-file")
			ps := problemsOf(t, map[string]string{name: "from-env", name + "_FILE": path})
			want := name + " and " + name + "_FILE are both set: choose one"
			if len(ps) != 1 || ps[0].Msg != want {
				t.Errorf("problems %v, want %q", ps, want)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want Status
	}{
		{"not configured", nil, Status{
			Mode: "not_configured", Security: "none", From: "webmaster@localhost", Unsubscribe: "none",
		}},
		{"smtp starttls", map[string]string{
			"EMAIL_HOST": "smtp.example.com", "EMAIL_PORT": "587", "EMAIL_USE_TLS": "true",
			"EMAIL_HOST_USER": "relay-user", "EMAIL_HOST_PASSWORD": "relay-password",
			"DEFAULT_FROM_EMAIL": "notify@example.com", "FRONTEND_BASE_URL": "https://app.example.com/",
		}, Status{
			Mode: "smtp", Configured: true, Host: "smtp.example.com", Port: 587, Security: "starttls",
			From: "notify@example.com", FrontendBaseURL: "https://app.example.com", ListUnsubscribe: true,
			Unsubscribe: "settings_page",
		}},
		{"smtp ssl", map[string]string{"EMAIL_HOST": "smtp.example.com", "EMAIL_PORT": "465", "EMAIL_USE_SSL": "on"}, Status{
			Mode: "smtp", Configured: true, Host: "smtp.example.com", Port: 465, Security: "ssl", From: "webmaster@localhost",
			Unsubscribe: "none",
		}},
		{"console ignores the SMTP settings", map[string]string{"EMAIL_BACKEND": "console", "EMAIL_HOST": "smtp.example.com", "EMAIL_USE_TLS": "yes"}, Status{
			Mode: "console", Configured: true, Security: "none", From: "webmaster@localhost", Unsubscribe: "none",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustLoad(t, tt.env).Status(); got != tt.want {
				t.Errorf("Status():\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// The status JSON has exactly the contract's fields, and never the username
// or the password in any form.
func TestStatusJSON(t *testing.T) {
	c := mustLoad(t, map[string]string{
		"EMAIL_HOST": "smtp.example.com", "EMAIL_PORT": "587", "EMAIL_USE_TLS": "true",
		"EMAIL_HOST_USER": "user-MARKER", "EMAIL_HOST_PASSWORD": "password-MARKER",
		"DEFAULT_FROM_EMAIL": "notify@example.com", "FRONTEND_BASE_URL": "https://app.example.com",
	})
	b, err := json.Marshal(c.Status())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"mode":"smtp","configured":true,"host":"smtp.example.com","port":587,` +
		`"security":"starttls","from":"notify@example.com",` +
		`"frontend_base_url":"https://app.example.com","list_unsubscribe":true,` +
		`"unsubscribe":"settings_page","public_url":"","public_listener":false}`
	if string(b) != want {
		t.Errorf("status JSON:\n got %s\nwant %s", b, want)
	}
	if strings.Contains(strings.ToLower(string(b)), "marker") || strings.Contains(string(b), "redacted") {
		t.Errorf("status JSON carries the credentials: %s", b)
	}
}

func TestWarnings(t *testing.T) {
	good := map[string]string{
		"EMAIL_HOST": "smtp.example.com", "EMAIL_PORT": "587", "EMAIL_USE_TLS": "true",
		"EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD": "p",
		"DEFAULT_FROM_EMAIL": "notify@example.com", "FRONTEND_BASE_URL": "https://app.example.com",
		"MAILRELAY_ADMIN_TOKEN": "0123456789abcdef0123",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name string
		env  map[string]string
		want string // a part of the one warning; "" for none
	}{
		{"none", good, ""},
		{"not configured", with("EMAIL_HOST", ""), "EMAIL_HOST is not set: email is not configured"},
		{"http frontend", with("FRONTEND_BASE_URL", "http://app.example.com"), "FRONTEND_BASE_URL is http://, not https://"},
		{"no frontend", with("FRONTEND_BASE_URL", ""), "FRONTEND_BASE_URL is not set"},
		{"from localhost", with("DEFAULT_FROM_EMAIL", ""), "DEFAULT_FROM_EMAIL (webmaster@localhost) is not at a public domain"},
		{"port 465 without ssl", with("EMAIL_PORT", "465"), "EMAIL_PORT is 465"},
		{"ssl on 587", with("EMAIL_USE_TLS", "", "EMAIL_USE_SSL", "true"), "EMAIL_USE_SSL is true but EMAIL_PORT is 587"},
		{"no credentials", with("EMAIL_HOST_USER", "", "EMAIL_HOST_PASSWORD", ""), ""},
		{"credentials in the clear, allowed", with("EMAIL_USE_TLS", "false", "MAILRELAY_SMTP_INSECURE_AUTH", "true"), ""},
		{"credentials in the clear to loopback", with("EMAIL_USE_TLS", "false", "EMAIL_HOST", "127.0.0.1"), ""},
		{"ack wait short", with("MAILRELAY_ACK_WAIT", "20s"), "MAILRELAY_ACK_WAIT (20s) is shorter than twice EMAIL_TIMEOUT (15s)"},
		{"host with console backend", with("EMAIL_BACKEND", "console"), "EMAIL_HOST is set but EMAIL_BACKEND is console"},
		{"nats url credentials", with("NATS_URL", "nats://u:p@nats:4222"), "NATS_URL carries credentials"},
		{"no admin token", with("MAILRELAY_ADMIN_TOKEN", ""), "MAILRELAY_ADMIN_TOKEN is not set: GET /v1/status/email answers 403"},
		{"short admin token", with("MAILRELAY_ADMIN_TOKEN", "short"), "MAILRELAY_ADMIN_TOKEN is shorter than 16 characters"},
		{"stale before retries end", with("MAILRELAY_STALE_AFTER", "2m"), "MAILRELAY_STALE_AFTER (2m) is not longer than the MAILRELAY_RETRY_DELAYS total (2m30s)"},
		{"stale with one delay", with("MAILRELAY_STALE_AFTER", "1m", "MAILRELAY_RETRY_DELAYS", "30s"), "MAILRELAY_RETRY_DELAYS total (1m)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := mustLoad(t, tt.env).Warnings()
			switch {
			case tt.want == "" && len(ws) != 0:
				t.Errorf("warnings %q, want none", ws)
			case tt.want != "" && (len(ws) != 1 || !strings.Contains(ws[0], tt.want)):
				t.Errorf("warnings %q, want one containing %q", ws, tt.want)
			}
		})
	}
}

func TestInboxPrefix(t *testing.T) {
	cases := []struct {
		value string
		ok    bool
	}{
		{"_INBOX_relay2", true}, {"acme.mailrelay", true}, {"_INBOX.>", false}, {"a..b", false}, {"a.*", false}, {"a b", false}, {"trailing.", false},
	}
	for _, tc := range cases {
		t.Run(tc.value, func(t *testing.T) {
			_, err := Load(getenv(map[string]string{"NATS_INBOX_PREFIX": tc.value}))
			if tc.ok != (err == nil) {
				t.Fatalf("NATS_INBOX_PREFIX=%q: err = %v", tc.value, err)
			}
			if err != nil && !strings.Contains(err.Error(), "NATS_INBOX_PREFIX") {
				t.Fatalf("error does not name the variable: %v", err)
			}
		})
	}
}
