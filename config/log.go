package config

import (
	"net/url"
	"strings"

	"go.uber.org/zap/zapcore"
)

// MarshalLogObject logs the effective configuration, for zap.Object or
// zap.Any at start-up. Secrets show as "[redacted]" or "[unset]", the SMTP
// username only as whether it is set, and credentials inside NATS_URL as
// "[redacted]".
func (c *Config) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("mode", c.Mode())
	enc.AddString("email_host", c.Email.Host)
	enc.AddInt("email_port", c.Email.Port)
	enc.AddString("email_security", c.Security())
	enc.AddBool("email_user_set", c.Email.User != "")
	enc.AddString("email_password", c.Email.Password.String())
	enc.AddDuration("email_timeout", c.Email.Timeout)
	enc.AddString("email_file_path", c.Email.FilePath)
	enc.AddBool("smtp_insecure_auth", c.Email.InsecureAuth)
	enc.AddString("from", c.Message.From)
	enc.AddString("frontend_base_url", c.Message.FrontendBaseURL)
	enc.AddString("list_id", c.Message.ListID)
	enc.AddString("template_dir", c.Message.TemplateDir)
	enc.AddInt("snippet_max", c.Message.SnippetMax)
	enc.AddString("nats_url", redactURLs(c.NATS.Servers()))
	enc.AddString("nats_creds", c.NATS.Creds)
	enc.AddString("nats_nkey", c.NATS.NKey)
	enc.AddString("nats_user", c.NATS.User)
	enc.AddString("nats_password", c.NATS.Password.String())
	enc.AddString("nats_token", c.NATS.Token.String())
	enc.AddString("nats_inbox_prefix", c.NATS.InboxPrefix)
	enc.AddString("nats_ca", c.NATS.CA)
	enc.AddString("nats_cert", c.NATS.Cert)
	enc.AddString("http_addr", c.HTTP.Addr)
	enc.AddString("admin_token", c.HTTP.AdminToken.String())
	enc.AddInt("stream_replicas", c.JetStream.Replicas)
	enc.AddDuration("stream_max_age", c.JetStream.MaxAge)
	enc.AddDuration("duplicate_window", c.JetStream.DuplicateWindow)
	enc.AddDuration("state_ttl", c.JetStream.StateTTL)
	enc.AddDuration("ack_wait", c.JetStream.AckWait)
	enc.AddString("data_dir", c.JetStream.DataDir)
	enc.AddInt("concurrency", c.Relay.Concurrency)
	enc.AddString("retry_delays", fmtDurations(c.Relay.RetryDelays))
	enc.AddInt("max_event_bytes", c.Relay.MaxEventBytes)
	enc.AddDuration("stale_after", c.Relay.StaleAfter)
	enc.AddFloat64("max_rate", c.Relay.MaxRate)
	enc.AddDuration("shutdown_timeout", c.Relay.ShutdownTimeout)
	return nil
}

// redactURLs joins urls with commas, each with its user info (a user and
// password, or a token) replaced by "[redacted]".
func redactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, s := range urls {
		out[i] = s
		if !strings.Contains(s, "@") {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || u.User == nil {
			// Not a URL we can take apart: keep only what follows the last @.
			out[i] = "[redacted]@" + s[strings.LastIndexByte(s, '@')+1:]
			continue
		}
		u.User = nil
		out[i] = strings.Replace(u.String(), "://", "://[redacted]@", 1)
	}
	return strings.Join(out, ",")
}
