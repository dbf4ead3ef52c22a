// Package config owns mailrelay's configuration: the environment variables
// (Django's EMAIL_* names, NATS_*, MAILRELAY_*), their defaults, their
// validation, and the views other packages need of them — the transport mode,
// the status JSON, the From address.
//
// Load reads every variable through a getenv function, applies the defaults
// of the variable table (Vars) and reports every problem at once, each naming
// its variable and what it accepts. Passwords and tokens are Secrets: they
// print, log and marshal as "[redacted]".
package config

import (
	"net/mail"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// Config is mailrelay's whole configuration. Load fills it from the
// environment; each field names the variable it comes from.
type Config struct {
	Email     Email     // the mail transport (EMAIL_*)
	Message   Message   // what every message carries
	NATS      NATS      // the NATS connection
	HTTP      HTTP      // the HTTP listener and its admin token
	JetStream JetStream // the stream, consumer and buckets mailrelay creates
	Relay     Relay     // how notifications are processed and sent
	Log       Log       // logging
}

// Email is the mail transport, configured with Django's EMAIL_* names.
type Email struct {
	Backend      Backend       `env:"EMAIL_BACKEND"`
	Host         string        `env:"EMAIL_HOST"` // empty with BackendSMTP: not configured
	Port         int           `env:"EMAIL_PORT"`
	UseTLS       bool          `env:"EMAIL_USE_TLS"` // STARTTLS
	UseSSL       bool          `env:"EMAIL_USE_SSL"` // implicit TLS
	User         string        `env:"EMAIL_HOST_USER"`
	Password     Secret        `env:"EMAIL_HOST_PASSWORD"`      // Load also fills it from PasswordFile
	PasswordFile string        `env:"EMAIL_HOST_PASSWORD_FILE"` // the path, as given
	Timeout      time.Duration `env:"-"`                        // EMAIL_TIMEOUT, read by parseSeconds
	FilePath     string        `env:"EMAIL_FILE_PATH"`
	InsecureAuth bool          `env:"MAILRELAY_SMTP_INSECURE_AUTH"`
}

// Message holds what every composed message carries.
type Message struct {
	From            string `env:"DEFAULT_FROM_EMAIL"`
	FrontendBaseURL string `env:"FRONTEND_BASE_URL"` // no trailing slash; "" disables links
	ListID          string `env:"MAILRELAY_LIST_ID"` // "" means compose derives it from From
	TemplateDir     string `env:"MAILRELAY_TEMPLATE_DIR"`
	SnippetMax      int    `env:"MAILRELAY_SNIPPET_MAX"`
}

// NATS is the connection to the NATS servers, with the nats ecosystem's
// variable names.
type NATS struct {
	URL      string `env:"NATS_URL"` // one URL or a comma-separated list; see Servers
	Creds    string `env:"NATS_CREDS"`
	NKey     string `env:"NATS_NKEY"` // seed file
	User     string `env:"NATS_USER"`
	Password Secret `env:"NATS_PASSWORD"`
	Token    Secret `env:"NATS_TOKEN"`
	// InboxPrefix is the prefix of this client's reply subjects.
	InboxPrefix string `env:"NATS_INBOX_PREFIX"`
	CA          string `env:"NATS_CA"`
	Cert        string `env:"NATS_CERT"`
	Key         string `env:"NATS_KEY"`
}

// HTTP is the status, health and metrics listener.
type HTTP struct {
	Addr           string `env:"MAILRELAY_HTTP_ADDR"`
	AdminToken     Secret `env:"MAILRELAY_ADMIN_TOKEN"`      // Load also fills it from AdminTokenFile
	AdminTokenFile string `env:"MAILRELAY_ADMIN_TOKEN_FILE"` // the path, as given
}

// JetStream holds the settings of the stream, consumer and buckets mailrelay
// creates, and of the embedded server.
type JetStream struct {
	Replicas        int           `env:"MAILRELAY_STREAM_REPLICAS"`
	MaxAge          time.Duration `env:"MAILRELAY_STREAM_MAX_AGE"`
	DuplicateWindow time.Duration `env:"MAILRELAY_DUPLICATE_WINDOW"`
	StateTTL        time.Duration `env:"MAILRELAY_STATE_TTL"`
	AckWait         time.Duration `env:"MAILRELAY_ACK_WAIT"`
	DataDir         string        `env:"MAILRELAY_DATA_DIR"`
}

// Relay holds how notifications are processed and sent.
type Relay struct {
	Concurrency     int             `env:"MAILRELAY_CONCURRENCY"`
	RetryDelays     []time.Duration `env:"MAILRELAY_RETRY_DELAYS"` // one or two; see RetryDelay
	MaxEventBytes   int             `env:"MAILRELAY_MAX_EVENT_BYTES"`
	StaleAfter      time.Duration   `env:"MAILRELAY_STALE_AFTER"` // 0 disables
	MaxRate         float64         `env:"MAILRELAY_MAX_RATE"`    // mails per second; 0 is no limit
	ShutdownTimeout time.Duration   `env:"MAILRELAY_SHUTDOWN_TIMEOUT"`
}

// Log is the logger's setup.
type Log struct {
	Format LogFormat     `env:"MAILRELAY_LOG_FORMAT"`
	Level  zapcore.Level `env:"MAILRELAY_LOG_LEVEL"`
}

// Mode values, as in the status JSON's "mode".
const (
	ModeSMTP          = "smtp"
	ModeConsole       = "console"
	ModeFile          = "file"
	ModeDummy         = "dummy"
	ModeNotConfigured = "not_configured"
)

// Security values, as in the status JSON's "security".
const (
	SecuritySTARTTLS = "starttls"
	SecuritySSL      = "ssl"
	SecurityNone     = "none"
)

// Mode returns the transport mode: the backend's name, or ModeNotConfigured
// for the smtp backend without EMAIL_HOST.
func (c *Config) Mode() string {
	if c.Email.Backend == BackendSMTP && c.Email.Host == "" {
		return ModeNotConfigured
	}
	return string(c.Email.Backend)
}

// Configured reports whether a transport is configured, that is whether Mode
// is not ModeNotConfigured.
func (c *Config) Configured() bool { return c.Mode() != ModeNotConfigured }

// Security returns how the SMTP connection is protected: SecuritySTARTTLS
// (EMAIL_USE_TLS), SecuritySSL (EMAIL_USE_SSL) or SecurityNone.
func (c *Config) Security() string {
	switch {
	case c.Email.UseTLS:
		return SecuritySTARTTLS
	case c.Email.UseSSL:
		return SecuritySSL
	default:
		return SecurityNone
	}
}

// InsecureAuthAllowed reports whether SMTP credentials may be sent without
// TLS: MAILRELAY_SMTP_INSECURE_AUTH is true, or EMAIL_HOST is loopback.
func (c *Config) InsecureAuthAllowed() bool {
	return c.Email.InsecureAuth || IsLoopback(c.Email.Host)
}

// SMTPAuth returns the SMTP credential settings, for SMTPAuth.Check (which
// Validate applies in ModeSMTP) and SMTPAuth.Enabled.
func (c *Config) SMTPAuth() SMTPAuth {
	e := c.Email
	return SMTPAuth{
		Host:         e.Host,
		User:         e.User,
		HasPassword:  e.Password.IsSet(),
		TLS:          e.UseTLS || e.UseSSL,
		InsecureAuth: e.InsecureAuth,
	}
}

// FromAddress returns the display name (possibly empty) and the address of
// DEFAULT_FROM_EMAIL. On a Config that did not validate it returns the raw
// value as the address.
func (c *Config) FromAddress() (name, addr string) {
	a, err := mail.ParseAddress(c.Message.From)
	if err != nil {
		return "", c.Message.From
	}
	return a.Name, a.Address
}

// FromDomain returns the lower-cased domain of DEFAULT_FROM_EMAIL, e.g.
// "example.com" for "Acme <notify@Example.com>".
func (c *Config) FromDomain() string {
	_, addr := c.FromAddress()
	at := strings.LastIndexByte(addr, '@')
	return strings.ToLower(addr[at+1:])
}

// Servers returns the NATS server URLs of NATS_URL, in order.
func (n NATS) Servers() []string {
	var urls []string
	for _, u := range strings.Split(n.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// RetryDelay returns how long to wait before the given attempt (2 or 3)
// after a temporary failure: the first MAILRELAY_RETRY_DELAYS value for
// attempt 2, the last for attempt 3 and later. It returns 0 for attempt 1 or
// an empty list.
func (r Relay) RetryDelay(attempt int) time.Duration {
	if attempt < 2 || len(r.RetryDelays) == 0 {
		return 0
	}
	return r.RetryDelays[min(attempt-2, len(r.RetryDelays)-1)]
}

// Status is the transport as GET /v1/status/email reports it (contract §7).
// It never holds the username or the password.
type Status struct {
	Mode            string `json:"mode"`
	Configured      bool   `json:"configured"`
	Host            string `json:"host"`
	Port            int    `json:"port"`
	Security        string `json:"security"`
	From            string `json:"from"`
	FrontendBaseURL string `json:"frontend_base_url"`
	ListUnsubscribe bool   `json:"list_unsubscribe"`
}

// Status returns the status view of the transport. Host, Port and Security
// describe the SMTP connection, so they are "", 0 and SecurityNone in every
// mode but ModeSMTP.
func (c *Config) Status() Status {
	s := Status{
		Mode:            c.Mode(),
		Configured:      c.Configured(),
		Security:        SecurityNone,
		From:            c.Message.From,
		FrontendBaseURL: c.Message.FrontendBaseURL,
		ListUnsubscribe: c.Message.FrontendBaseURL != "",
	}
	if s.Mode == ModeSMTP {
		s.Host, s.Port, s.Security = c.Email.Host, c.Email.Port, c.Security()
	}
	return s
}
