// Package config owns mailrelay's configuration: the environment variables
// (Django's EMAIL_* names, NATS_*, MAILRELAY_*), their defaults, their
// validation, and the views other packages need of them — the transport mode,
// the status JSON, the From address, the delivery policy.
//
// The rules themselves live with the packages that use the values: the SMTP
// host and credential rules in transport, the From and base-URL rules in
// headers, delivery policy and its defaults in policy. config applies them
// to the environment, once, and names the variable at fault.
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

	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/transport"
	"github.com/mailrelay/mailrelay/internal/unsubscribe"
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
	EHLOName     string        `env:"MAILRELAY_EHLO_NAME"`       // "" = the host's fully qualified name (transport.DefaultHeloName)
	Pipelining   string        `env:"MAILRELAY_SMTP_PIPELINING"` // "auto" or "off" (transport.ParsePipelining)
}

// Message holds what every composed message carries.
type Message struct {
	From            string `env:"DEFAULT_FROM_EMAIL"`
	FrontendBaseURL string `env:"FRONTEND_BASE_URL"` // no trailing slash; "" disables links
	ListID          string `env:"MAILRELAY_LIST_ID"` // "" means compose derives it from From
	TemplateDir     string `env:"MAILRELAY_TEMPLATE_DIR"`
	SnippetMax      int    `env:"MAILRELAY_SNIPPET_MAX"`
	HTML            bool   `env:"MAILRELAY_HTML"`         // add an HTML alternative part
	ProductName     string `env:"MAILRELAY_PRODUCT_NAME"` // "" means the From display name
	// DKIMKeyFile, DKIMSelector and DKIMDomain configure DKIM signing
	// (DKIMSigner); DKIMDomain "" means the From domain.
	DKIMKeyFile  string `env:"MAILRELAY_DKIM_KEY_FILE"`
	DKIMSelector string `env:"MAILRELAY_DKIM_SELECTOR"`
	DKIMDomain   string `env:"MAILRELAY_DKIM_DOMAIN"`
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
	// PublicAddr is the one-click unsubscribe listener, "" for none.
	PublicAddr string `env:"MAILRELAY_PUBLIC_ADDR"`
	// PublicURL is where that listener is reachable (https), "" for none.
	PublicURL string `env:"MAILRELAY_PUBLIC_URL"`
	// UnsubscribeKeys are the token secrets, comma-separated (see
	// UnsubscribeKeyList); Load also fills them from UnsubscribeKeysFile.
	UnsubscribeKeys     Secret `env:"MAILRELAY_UNSUBSCRIBE_KEYS"`
	UnsubscribeKeysFile string `env:"MAILRELAY_UNSUBSCRIBE_KEYS_FILE"` // the path, as given
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
	RetryDelays     []time.Duration `env:"MAILRELAY_RETRY_DELAYS"` // one or two; see Config.Policy
	MaxEventBytes   int             `env:"MAILRELAY_MAX_EVENT_BYTES"`
	StaleAfter      time.Duration   `env:"MAILRELAY_STALE_AFTER"` // 0 disables
	MaxRate         float64         `env:"MAILRELAY_MAX_RATE"`    // mails per second; 0 is no limit
	ShutdownTimeout time.Duration   `env:"MAILRELAY_SHUTDOWN_TIMEOUT"`
	BatchWindow     time.Duration   `env:"MAILRELAY_BATCH_WINDOW"` // 0: off (§9.3)
	SeenDelay       time.Duration   `env:"MAILRELAY_SEEN_DELAY"`   // 0: off (§9.3)
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

// Security returns how the SMTP connection is protected:
// transport.SecurityStartTLS (EMAIL_USE_TLS), transport.SecuritySSL
// (EMAIL_USE_SSL) or transport.SecurityNone.
func (c *Config) Security() transport.Security {
	switch {
	case c.Email.UseTLS:
		return transport.SecurityStartTLS
	case c.Email.UseSSL:
		return transport.SecuritySSL
	default:
		return transport.SecurityNone
	}
}

// InsecureAuthAllowed reports whether SMTP credentials may be sent without
// TLS: MAILRELAY_SMTP_INSECURE_AUTH is true, or EMAIL_HOST is loopback.
func (c *Config) InsecureAuthAllowed() bool {
	return c.Email.InsecureAuth || transport.IsLoopback(c.Email.Host)
}

// SMTPPipelining returns MAILRELAY_SMTP_PIPELINING as the transport takes
// it; Validate has refused anything but auto and off.
func (c *Config) SMTPPipelining() transport.Pipelining {
	p, _ := transport.ParsePipelining(c.Email.Pipelining)
	return p
}

// SMTPAuth returns the SMTP credential settings, for transport's rule
// (SMTPAuth.Check, which Validate applies in ModeSMTP) and SMTPAuth.Enabled.
func (c *Config) SMTPAuth() transport.SMTPAuth {
	e := c.Email
	return transport.SMTPAuth{
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
// after a temporary failure, as policy.RetryDelay chooses it from
// MAILRELAY_RETRY_DELAYS (the delay after attempt n is the one before
// attempt n+1). It returns 0 for attempt 1 or an empty list.
func (r Relay) RetryDelay(attempt int) time.Duration {
	if attempt < 2 || len(r.RetryDelays) == 0 {
		return 0
	}
	return policy.Policy{RetryDelays: r.RetryDelays}.RetryDelay(attempt - 1)
}

// Policy returns the delivery policy of this configuration: policy.Default
// with the retry delays, AckWait and staleness of the environment, and a
// send timeout of twice EMAIL_TIMEOUT (the connect and the message each have
// EMAIL_TIMEOUT).
func (c *Config) Policy() policy.Policy {
	p := policy.Default()
	p.RetryDelays = append([]time.Duration(nil), c.Relay.RetryDelays...)
	p.AckWait = c.JetStream.AckWait
	p.StaleAfter = c.Relay.StaleAfter
	p.SendTimeout = 2 * c.Email.Timeout
	p.BatchWindow = c.Relay.BatchWindow
	p.SeenDelay = c.Relay.SeenDelay
	return p
}

// Status is the transport as GET /v1/status/email reports it (contract §7).
// It never holds the username or the password.
type Status struct {
	Mode            string `json:"mode"`
	Configured      bool   `json:"configured"`
	Host            string `json:"host"`
	Port            int    `json:"port"`
	Security        string `json:"security"` // transport.Security's String: "starttls", "ssl" or "none"
	From            string `json:"from"`
	FrontendBaseURL string `json:"frontend_base_url"`
	ListUnsubscribe bool   `json:"list_unsubscribe"`
	// Unsubscribe is what List-Unsubscribe offers: UnsubscribeOneClick,
	// UnsubscribeSettingsPage or UnsubscribeNone.
	Unsubscribe string `json:"unsubscribe"`
	// PublicURL is MAILRELAY_PUBLIC_URL ("" when unset); PublicListener
	// says whether this process serves /u/ (MAILRELAY_PUBLIC_ADDR).
	PublicURL      string `json:"public_url"`
	PublicListener bool   `json:"public_listener"`
}

// Unsubscribe modes, as the status JSON's "unsubscribe" and the start-up
// log say them.
const (
	// UnsubscribeOneClick: List-Unsubscribe is a signed https URL of the
	// public listener, with List-Unsubscribe-Post (RFC 8058).
	UnsubscribeOneClick = "one_click"
	// UnsubscribeSettingsPage: List-Unsubscribe is the preferences page,
	// without List-Unsubscribe-Post.
	UnsubscribeSettingsPage = "settings_page"
	// UnsubscribeNone: no List-Unsubscribe at all.
	UnsubscribeNone = "none"
)

// UnsubscribeMode says what List-Unsubscribe offers: one-click with
// MAILRELAY_PUBLIC_URL and keys, else the preferences page with
// FRONTEND_BASE_URL, else nothing.
func (c *Config) UnsubscribeMode() string {
	switch {
	case c.HTTP.PublicURL != "" && c.HTTP.UnsubscribeKeys.IsSet():
		return UnsubscribeOneClick
	case c.Message.FrontendBaseURL != "":
		return UnsubscribeSettingsPage
	default:
		return UnsubscribeNone
	}
}

// UnsubscribeKeyList returns the unsubscribe keys, the signing one first;
// nil when none is set. Use the values only to sign and verify.
func (c *Config) UnsubscribeKeyList() []string {
	if !c.HTTP.UnsubscribeKeys.IsSet() {
		return nil
	}
	keys, err := unsubscribe.ParseKeys(c.HTTP.UnsubscribeKeys.Reveal())
	if err != nil {
		return nil
	}
	return keys
}

// Status returns the status view of the transport. Host, Port and Security
// describe the SMTP connection, so they are "", 0 and "none" in every mode
// but ModeSMTP.
func (c *Config) Status() Status {
	s := Status{
		Mode:            c.Mode(),
		Configured:      c.Configured(),
		Security:        transport.SecurityNone.String(),
		From:            c.Message.From,
		FrontendBaseURL: c.Message.FrontendBaseURL,
		ListUnsubscribe: c.UnsubscribeMode() != UnsubscribeNone,
		Unsubscribe:     c.UnsubscribeMode(),
		PublicURL:       c.HTTP.PublicURL,
		PublicListener:  c.HTTP.PublicAddr != "",
	}
	if s.Mode == ModeSMTP {
		s.Host, s.Port, s.Security = c.Email.Host, c.Email.Port, c.Security().String()
	}
	return s
}
