package config

import (
	"strconv"
	"time"

	"github.com/mailrelay/mailrelay/internal/policy"
)

// Var describes one environment variable: the table that Load reads its
// defaults from, that the start-up log walks, and that docs/configuration.md's
// configuration table must match (TestConfigTableIsVars).
type Var struct {
	// Name is the environment variable.
	Name string
	// Default is used when the variable is unset or empty; "" means none.
	Default string
	// Accepts says what a valid value looks like; problems read
	// `NAME: "value" is not <Accepts>`.
	Accepts string
	// Help says what the variable does, in one or two sentences.
	Help string
	// Secret marks a password or token: its value never appears in an
	// error, a warning or a log.
	Secret bool
	// Private marks a value that is not a secret but that mailrelay never
	// shows either (the SMTP user name, which no API exposes): the start-up
	// log says only whether it is set.
	Private bool
}

// Phrases shared by several variables.
const (
	acceptsBool = "a boolean (true/false, 1/0, yes/no, on/off)"
	acceptsFile = "a readable file"
)

// vars is every variable mailrelay reads, in the order docs list them. It is
// the one place defaults are set; those of delivery policy are policy's own,
// formatted.
var vars = []Var{
	{Name: "EMAIL_BACKEND", Default: "smtp",
		Accepts: "smtp, console, file or dummy (or Django's django.core.mail.backends.{smtp,console,filebased,dummy}.EmailBackend)",
		Help:    "Mail transport: smtp sends through EMAIL_HOST, console writes each message to standard output, file writes each to EMAIL_FILE_PATH, dummy discards it."},
	{Name: "EMAIL_HOST",
		Accepts: "a host name or IP address, without scheme or port (the port goes in EMAIL_PORT)",
		Help:    "SMTP relay host: a host name or IP address; an IPv6 address may be bracketed ([::1] is read as ::1). Empty with the smtp backend means email is not configured: notifications are recorded as skipped_not_configured."},
	{Name: "EMAIL_PORT", Default: "25",
		Accepts: "a port (1-65535)",
		Help:    "SMTP port, e.g. 587 with EMAIL_USE_TLS or 465 with EMAIL_USE_SSL."},
	{Name: "EMAIL_USE_TLS", Default: "false",
		Accepts: acceptsBool,
		Help:    "Require STARTTLS. Exclusive with EMAIL_USE_SSL."},
	{Name: "EMAIL_USE_SSL", Default: "false",
		Accepts: acceptsBool,
		Help:    "Use implicit TLS (usually port 465). Exclusive with EMAIL_USE_TLS."},
	{Name: "EMAIL_HOST_USER", Private: true,
		Accepts: "a user name",
		Help:    "SMTP username. With a password, the relay authenticates (SMTP AUTH); with neither, it does not; one without the other refuses to start. Never exposed by any API."},
	{Name: "EMAIL_HOST_PASSWORD", Secret: true,
		Accepts: "a password",
		Help:    "SMTP password, set together with EMAIL_HOST_USER (one without the other refuses to start). Never exposed, never logged. Exclusive with EMAIL_HOST_PASSWORD_FILE."},
	{Name: "EMAIL_HOST_PASSWORD_FILE",
		Accepts: acceptsFile,
		Help:    "File holding the SMTP password (one trailing newline is ignored), for secret managers."},
	{Name: "EMAIL_TIMEOUT", Default: "15",
		Accepts: "a number of seconds greater than 0 like 15 or 2.5 (or a Go duration like 15s)",
		Help:    "Timeout in seconds for SMTP network operations."},
	{Name: "EMAIL_FILE_PATH",
		Accepts: "a directory",
		Help:    "Directory the file backend writes messages to; required when EMAIL_BACKEND is file."},
	{Name: "DEFAULT_FROM_EMAIL", Default: "webmaster@localhost",
		Accepts: "an email address like notify@example.com or Acme <notify@example.com>",
		Help:    "From address of every message. Its domain also names Message-IDs and, by default, the List-Id."},
	{Name: "FRONTEND_BASE_URL",
		Accepts: "an absolute http(s) URL with a host, an optional port from 1 to 65535 and no user, query or fragment, like https://app.example.com",
		Help:    "Base URL of the web app. Enables deep links and a List-Unsubscribe that points at its preferences page (never with List-Unsubscribe-Post: one-click needs MAILRELAY_PUBLIC_URL). Empty: no deep links, and List-Unsubscribe only with one-click."},
	{Name: "MAILRELAY_SMTP_INSECURE_AUTH", Default: "false",
		Accepts: acceptsBool,
		Help:    "Allow sending SMTP credentials without TLS to a host that is not loopback; without it such a setup refuses to start."},
	{Name: "MAILRELAY_SMTP_PIPELINING", Default: "auto",
		Accepts: "auto or off",
		Help:    "auto sends each mail's envelope as one group (RFC 2920), with the body in the same group (BDAT, RFC 3030) when the server offers CHUNKING: one round trip a mail. off keeps one command, one reply, for a server that offers PIPELINING and misbehaves."},
	{Name: "MAILRELAY_EHLO_NAME",
		Accepts: "a host name or [IP literal]",
		Help:    "Name the relay gives the SMTP server in EHLO. Default: this host's fully qualified name, found as Django finds it (the host name resolved to its canonical name, else the host name; never localhost when the host has a better name). An IP address is sent as an address literal like [192.0.2.1]."},
	{Name: "MAILRELAY_LIST_ID",
		Accepts: "a list identifier like notifications.example.com, or a whole List-Id like Acme notifications <notifications.example.com>",
		Help:    "List-Id of notification mail. Default: PRODUCT <notifications.DOMAIN>, PRODUCT being MAILRELAY_PRODUCT_NAME (else the display name of DEFAULT_FROM_EMAIL, else mailrelay notifications) and DOMAIN that of DEFAULT_FROM_EMAIL."},
	{Name: "MAILRELAY_TEMPLATE_DIR",
		Accepts: "an existing directory",
		Help:    "Optional directory whose templates override the built-in wording."},
	{Name: "MAILRELAY_SNIPPET_MAX", Default: "280",
		Accepts: "a whole number from 1 to 500",
		Help:    "Most characters of a comment or mention quoted in a mail before it is cut with an ellipsis."},
	{Name: "MAILRELAY_HTML", Default: "false",
		Accepts: acceptsBool,
		Help:    "true adds an HTML alternative part (multipart/alternative, the plain-text part first and unchanged): simple, accessible, no images or remote content, no tracking."},
	{Name: "MAILRELAY_PRODUCT_NAME",
		Accepts: "a name of at most 100 characters, without control characters",
		Help:    "Name of the product the notifications are about: the description of the default List-Id (PRODUCT <notifications.DOMAIN>) and the name in the HTML part. Default: the display name of DEFAULT_FROM_EMAIL."},
	{Name: "MAILRELAY_DKIM_KEY_FILE",
		Accepts: "a readable PEM private key file (RSA of 2048 to 4096 bits, or Ed25519; PKCS#8 or PKCS#1, unencrypted)",
		Help:    "DKIM signing key. Set, every mail is signed (relaxed/relaxed) over From, To, Subject, Date, Message-ID, List-Id, List-Unsubscribe, List-Unsubscribe-Post and the other content fields; publish the public key at MAILRELAY_DKIM_SELECTOR._domainkey.MAILRELAY_DKIM_DOMAIN (`mailrelay doctor` prints the record). A key that cannot be read or used refuses start-up."},
	{Name: "MAILRELAY_DKIM_SELECTOR",
		Accepts: "a DKIM selector: DNS labels of letters, digits and hyphens, like mr2026",
		Help:    "DKIM selector (s=); required with MAILRELAY_DKIM_KEY_FILE. Use a new selector for a new key, so the old record can stay published while mail signed with it is in flight."},
	{Name: "MAILRELAY_DKIM_DOMAIN",
		Accepts: "a domain name like example.com (an IDN as its A-label)",
		Help:    "DKIM signing domain (d=). Default: the domain of DEFAULT_FROM_EMAIL, which DMARC alignment needs (a parent domain of it aligns too)."},

	{Name: "NATS_URL", Default: "nats://127.0.0.1:4222",
		Accepts: "a NATS server URL like nats://host:4222 (a port from 1 to 65535), or a comma-separated list of them",
		Help:    "NATS server(s) to connect to. serve --embedded listens on the host:port of the first one."},
	{Name: "NATS_CREDS",
		Accepts: acceptsFile,
		Help:    "NATS credentials file (user JWT and NKey seed)."},
	{Name: "NATS_NKEY",
		Accepts: acceptsFile,
		Help:    "NATS NKey seed file."},
	{Name: "NATS_USER",
		Accepts: "a user name",
		Help:    "NATS user name, together with NATS_PASSWORD."},
	{Name: "NATS_PASSWORD", Secret: true,
		Accepts: "a password",
		Help:    "NATS password, together with NATS_USER. Never logged."},
	{Name: "NATS_TOKEN", Secret: true,
		Accepts: "a token",
		Help:    "NATS authentication token. Never logged."},
	{Name: "NATS_INBOX_PREFIX", Default: "_INBOX_mailrelay",
		Accepts: "a subject prefix like _INBOX_mailrelay (letters, digits, _ and -, dot-separated tokens, no wildcards)",
		Help:    "Prefix of the reply subjects mailrelay receives answers on. Its own prefix, apart from the default _INBOX of other clients, lets the server allow each identity only its own replies (see nats.conf). `mailrelay publish` uses the standard `_INBOX` unless this is set."},
	{Name: "NATS_CA",
		Accepts: acceptsFile,
		Help:    "PEM file of the CA certificates that verify the NATS server."},
	{Name: "NATS_CERT",
		Accepts: acceptsFile,
		Help:    "PEM client certificate for NATS TLS, together with NATS_KEY."},
	{Name: "NATS_KEY",
		Accepts: acceptsFile,
		Help:    "PEM client key for NATS TLS, together with NATS_CERT."},

	{Name: "MAILRELAY_HTTP_ADDR", Default: "127.0.0.1:9466",
		Accepts: "host:port like 127.0.0.1:9466 or :9466",
		Help:    "HTTP listener for /healthz, /readyz, /metrics and /v1/status/email."},
	{Name: "MAILRELAY_ADMIN_TOKEN", Secret: true,
		Accepts: "one word of printable ASCII (a bearer token)",
		Help:    "Bearer token for GET /v1/status/email; unset, that endpoint answers 403. Exclusive with MAILRELAY_ADMIN_TOKEN_FILE."},
	{Name: "MAILRELAY_ADMIN_TOKEN_FILE",
		Accepts: acceptsFile,
		Help:    "File holding the admin token (one trailing newline is ignored)."},
	{Name: "MAILRELAY_PUBLIC_ADDR",
		Accepts: "host:port like :9467 or 127.0.0.1:9467",
		Help:    "Public listener for one-click unsubscribe (GET and POST /u/<token>, nothing else; never the admin paths). Unset: no public listener. Needs MAILRELAY_UNSUBSCRIBE_KEYS."},
	{Name: "MAILRELAY_PUBLIC_URL",
		Accepts: "an absolute https URL with a host and no user, query or fragment, like https://mail.example.com",
		Help:    "The https URL at which the public listener is reachable from the internet (usually through a reverse proxy that forwards /u/ to MAILRELAY_PUBLIC_ADDR). With MAILRELAY_UNSUBSCRIBE_KEYS it turns on RFC 8058 one-click: List-Unsubscribe carries this URL with a signed token, plus List-Unsubscribe-Post. Unset: List-Unsubscribe is the preferences page, without List-Unsubscribe-Post."},
	{Name: "MAILRELAY_UNSUBSCRIBE_KEYS", Secret: true,
		Accepts: "comma-separated secrets of at least 16 characters each",
		Help:    "Secrets that sign and verify one-click unsubscribe tokens: the first signs, every one verifies, so put a new key first and keep the old one while mail signed with it matters. Never logged. Exclusive with MAILRELAY_UNSUBSCRIBE_KEYS_FILE."},
	{Name: "MAILRELAY_UNSUBSCRIBE_KEYS_FILE",
		Accepts: acceptsFile,
		Help:    "File holding the unsubscribe keys, separated by commas or newlines."},

	{Name: "MAILRELAY_RETRY_DELAYS", Default: fmtDurations(policy.DefaultRetryDelays()),
		Accepts: "a Go duration list like 30s,2m (one or two durations, each greater than 0)",
		Help:    "Delays before attempt 2 and attempt 3 after a temporary failure; one value serves both."},
	{Name: "MAILRELAY_ACK_WAIT", Default: fmtSeconds(policy.DefaultAckWait),
		Accepts: "a Go duration of at least 1s like 60s",
		Help:    "How long an unacknowledged delivery waits before the server redelivers it."},
	{Name: "MAILRELAY_CONCURRENCY", Default: strconv.Itoa(policy.DefaultConcurrency),
		Accepts: "a whole number from 1 to 1024",
		Help:    "Mails sent at once, and so the most SMTP connections and the most mails sent but not yet recorded (what a crash can duplicate). A relay holds up to twice this many notifications being prepared or sent, plus one pull batch."},
	{Name: "MAILRELAY_STREAM_REPLICAS", Default: "1",
		Accepts: "a whole number from 1 to 5",
		Help:    "Replicas of the stream and buckets mailrelay creates (3 on a cluster)."},
	{Name: "MAILRELAY_STREAM_MAX_AGE", Default: "168h",
		Accepts: "a Go duration greater than 0 like 168h",
		Help:    "How long the NOTIFY stream keeps messages for replay."},
	{Name: "MAILRELAY_DUPLICATE_WINDOW", Default: "1h",
		Accepts: "a Go duration from 100ms up to MAILRELAY_STREAM_MAX_AGE like 1h",
		Help:    "How long the stream remembers Nats-Msg-Id values to drop duplicate publishes."},
	{Name: "MAILRELAY_STATE_TTL", Default: "720h",
		Accepts: "a Go duration not shorter than MAILRELAY_STREAM_MAX_AGE like 720h",
		Help:    "How long notify_email_state keeps a record."},
	{Name: "MAILRELAY_DATA_DIR", Default: "./data",
		Accepts: "a directory",
		Help:    "Where serve --embedded keeps JetStream data."},
	{Name: "MAILRELAY_MAX_EVENT_BYTES", Default: "65536",
		Accepts: "a whole number of bytes from 1024 to 8388608",
		Help:    "Largest event accepted; a bigger one is invalid."},
	{Name: "MAILRELAY_STALE_AFTER", Default: fmtDuration(policy.DefaultStaleAfter),
		Accepts: "a Go duration of 0 or more like 24h (0 disables)",
		Help:    "A notification older than this when it would be sent is skipped_stale; 0 disables the check."},
	{Name: "MAILRELAY_BATCH_WINDOW", Default: "0",
		Accepts: "a Go duration from 0 to 24h like 2m (0: off)",
		Help:    "Batching window: a recipient's first notification waits this long, and everything for them until then goes out as one mail. A user's \"batch\" preference overrides it. 0 sends one mail per notification at once, as in v1."},
	{Name: "MAILRELAY_SEEN_DELAY", Default: "0",
		Accepts: "a Go duration from 0 to 24h like 10m (0: off)",
		Help:    "No mail goes out earlier than this after occurred_at; a notification the app marked seen in notify_seen by then is skipped_seen. 0: off."},
	{Name: "MAILRELAY_MAX_RATE",
		Accepts: "a number of mails per second like 5 or 0.5 (0 or empty: no limit)",
		Help:    "Optional ceiling on mails per second for one process."},
	{Name: "MAILRELAY_SHUTDOWN_TIMEOUT", Default: fmtDuration(policy.DefaultShutdownTimeout),
		Accepts: "a Go duration greater than 0 like 25s",
		Help:    "How long a stopping relay takes to finish the notifications it holds before it cancels their sends and releases them."},
	{Name: "MAILRELAY_LOG_FORMAT", Default: "json",
		Accepts: "json or console",
		Help:    "Log format."},
	{Name: "MAILRELAY_LOG_LEVEL", Default: "info",
		Accepts: "debug, info, warn or error",
		Help:    "Least severe level that is logged."},
}

// fmtSeconds formats d as whole seconds ("60s"), the way AckWait has always
// been documented; fmtDuration would write "1m".
func fmtSeconds(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// Vars returns every variable mailrelay reads, with its default, what it
// accepts and what it means, in documentation order.
func Vars() []Var {
	return append([]Var(nil), vars...)
}

// Names returns the names of every variable mailrelay reads, in
// documentation order.
func Names() []string {
	names := make([]string, len(vars))
	for i, v := range vars {
		names[i] = v.Name
	}
	return names
}

// lookupVar returns the table entry for name. It panics on a name missing
// from the table, which is a bug that every test run catches.
func lookupVar(name string) Var {
	for _, v := range vars {
		if v.Name == name {
			return v
		}
	}
	panic("config: variable " + name + " is not in the table")
}

// varIndex returns the position of name in the table, or len(vars).
func varIndex(name string) int {
	for i, v := range vars {
		if v.Name == name {
			return i
		}
	}
	return len(vars)
}
