package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/mail"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap/zapcore"

	"github.com/mailrelay/mailrelay/headers"
	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/transport"
	"github.com/mailrelay/mailrelay/internal/unsubscribe"
)

// Problem is one thing wrong with the configuration.
type Problem struct {
	// Vars are the variables at fault, the one to change first.
	Vars []string
	// Msg is the whole message: it names the variables and says what they
	// accept. It never holds a secret's value.
	Msg string
}

// Error returns Msg.
func (p Problem) Error() string { return p.Msg }

// involves reports whether p is about one of the named variables.
func (p Problem) involves(names map[string]bool) bool {
	return slices.ContainsFunc(p.Vars, func(v string) bool { return names[v] })
}

// Problems is every problem found in a configuration, in the order of the
// Vars table. It is the error Load and Validate return; errors.As reaches it.
type Problems []Problem

// Error returns the messages, one a line.
func (ps Problems) Error() string {
	msgs := make([]string, len(ps))
	for i, p := range ps {
		msgs[i] = p.Msg
	}
	return strings.Join(msgs, "\n")
}

// Unwrap returns each Problem, for errors.Is and errors.As.
func (ps Problems) Unwrap() []error {
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errs
}

// sorted returns ps in the order of the table, or nil when it is empty, so
// that "no problem" is a nil error.
func (ps Problems) sorted() error {
	if len(ps) == 0 {
		return nil
	}
	first := func(p Problem) int {
		if len(p.Vars) == 0 {
			return len(vars)
		}
		return varIndex(p.Vars[0])
	}
	slices.SortStableFunc(ps, func(a, b Problem) int { return first(a) - first(b) })
	return ps
}

// notA is the problem of a value that is not what name accepts. A secret's
// value is left out.
func notA(name, value string) Problem {
	v := lookupVar(name)
	msg := fmt.Sprintf("%s: %q is not %s", name, value, v.Accepts)
	if v.Secret {
		msg = fmt.Sprintf("%s: the value is not %s", name, v.Accepts)
	}
	return Problem{Vars: []string{name}, Msg: msg}
}

// Validate reports every problem of c at once, as Problems, or nil. Load
// calls it; call it again on a Config built or changed by hand. It checks
// that the files and directories named exist, but the password and token
// files are Load's to read.
func (c *Config) Validate() error { return c.validate().sorted() }

// validate returns every problem of c, unsorted.
func (c *Config) validate() Problems {
	var k checker
	c.checkEmail(&k)
	c.checkMessage(&k)
	c.checkDKIM(&k)
	c.checkNATS(&k)
	c.checkHTTP(&k)
	c.checkUnsubscribe(&k)
	c.checkJetStream(&k)
	c.checkRelay(&k)
	k.check(c.Log.Format == LogJSON || c.Log.Format == LogConsole, "MAILRELAY_LOG_FORMAT", string(c.Log.Format))
	k.check(c.Log.Level >= zapcore.DebugLevel && c.Log.Level <= zapcore.ErrorLevel, "MAILRELAY_LOG_LEVEL", c.Log.Level.String())
	return k.problems
}

// checker collects problems.
type checker struct{ problems Problems }

// add records the problem p.
func (k *checker) add(p Problem) { k.problems = append(k.problems, p) }

// addf records a problem about the named variables; format names them.
func (k *checker) addf(names []string, format string, args ...any) {
	k.add(Problem{Vars: names, Msg: fmt.Sprintf(format, args...)})
}

// check records that name's value, shown as shown, is not what it accepts
// unless ok.
func (k *checker) check(ok bool, name, shown string) {
	if !ok {
		k.add(notA(name, shown))
	}
}

// checkInt checks that name's value v is from lo to hi.
func (k *checker) checkInt(name string, v, lo, hi int) {
	k.check(v >= lo && v <= hi, name, strconv.Itoa(v))
}

// checkFile checks that the file name names, if any, can be read.
func (k *checker) checkFile(name, path string) {
	if path == "" {
		return
	}
	if err := readable(path); err != nil {
		k.addf([]string{name}, "%s: %v", name, err)
	}
}

// checkEmail checks the transport variables (EMAIL_*).
func (c *Config) checkEmail(k *checker) {
	e := c.Email
	_, err := parseBackend(string(e.Backend))
	k.check(err == nil, "EMAIL_BACKEND", string(e.Backend))
	_, hostOK := transport.NormalizeHost(e.Host)
	k.check(e.Host == "" || hostOK, "EMAIL_HOST", e.Host)
	_, heloOK := transport.NormalizeHeloName(e.EHLOName)
	k.check(e.EHLOName == "" || heloOK, "MAILRELAY_EHLO_NAME", e.EHLOName)
	_, pipeOK := transport.ParsePipelining(e.Pipelining)
	k.check(pipeOK, "MAILRELAY_SMTP_PIPELINING", e.Pipelining)
	k.checkInt("EMAIL_PORT", e.Port, 1, 65535)
	if e.UseTLS && e.UseSSL {
		k.addf([]string{"EMAIL_USE_TLS", "EMAIL_USE_SSL"},
			"EMAIL_USE_TLS and EMAIL_USE_SSL are both true: choose one (STARTTLS, usually port 587, or implicit TLS, usually port 465)")
	}
	if c.Mode() == ModeSMTP {
		c.checkSMTPAuth(k)
	}
	k.check(e.Timeout > 0, "EMAIL_TIMEOUT", strconv.FormatFloat(e.Timeout.Seconds(), 'f', -1, 64))
	switch {
	case e.Backend == BackendFile && e.FilePath == "":
		k.addf([]string{"EMAIL_FILE_PATH"}, "EMAIL_FILE_PATH: required when EMAIL_BACKEND is file")
	case e.FilePath != "":
		if err := isDir(e.FilePath, true); err != nil {
			k.addf([]string{"EMAIL_FILE_PATH"}, "EMAIL_FILE_PATH: %v", err)
		}
	}
}

// checkSMTPAuth applies transport.SMTPAuth.Check, the rule the SMTP backend
// applies too, and words its refusal with the variables as the operator set
// them.
// Credentials matter only to the smtp backend with a host: Validate calls it
// in ModeSMTP alone, so a shared .env with credentials does not stop the
// console, file or dummy backend.
func (c *Config) checkSMTPAuth(k *checker) {
	e := c.Email
	password := "EMAIL_HOST_PASSWORD"
	if e.PasswordFile != "" {
		password = "EMAIL_HOST_PASSWORD_FILE"
	}
	switch err := c.SMTPAuth().Check(); {
	case errors.Is(err, transport.ErrPasswordWithoutUser):
		k.addf([]string{"EMAIL_HOST_USER", password},
			"EMAIL_HOST_USER: required when %s is set: the relay authenticates with both or with neither; set EMAIL_HOST_USER, or unset %s to send without SMTP AUTH",
			password, password)
	case errors.Is(err, transport.ErrUserWithoutPassword):
		// With EMAIL_HOST_PASSWORD_FILE set the file could not be read, a
		// problem of its own: naming the file here lets Load drop this one.
		vars := []string{"EMAIL_HOST_PASSWORD", "EMAIL_HOST_USER"}
		if e.PasswordFile != "" {
			vars = append(vars, "EMAIL_HOST_PASSWORD_FILE")
		}
		k.addf(vars,
			"EMAIL_HOST_PASSWORD (or EMAIL_HOST_PASSWORD_FILE): required when EMAIL_HOST_USER is set: the relay authenticates with both or with neither; set the password, or unset EMAIL_HOST_USER to send without SMTP AUTH")
	case errors.Is(err, transport.ErrInsecureAuth):
		k.addf([]string{"EMAIL_USE_TLS", "EMAIL_USE_SSL", "MAILRELAY_SMTP_INSECURE_AUTH"},
			"EMAIL_USE_TLS and EMAIL_USE_SSL are both false but EMAIL_HOST_USER is set: credentials are never sent in the clear to %s, which is not loopback; set one of them, or MAILRELAY_SMTP_INSECURE_AUTH=true to allow it",
			e.Host)
	case err != nil:
		k.addf([]string{"EMAIL_HOST_USER"}, "EMAIL_HOST_USER: %v", err)
	}
}

// checkMessage checks what every message carries.
func (c *Config) checkMessage(k *checker) {
	m := c.Message
	k.check(validFrom(m.From), "DEFAULT_FROM_EMAIL", m.From)
	if _, addr := c.FromAddress(); validFrom(m.From) {
		// An internationalised domain that IDNA2008 refuses (Load has
		// converted every other one to its A-label): no mail could go.
		if _, err := transport.ASCIIAddress(addr); err != nil {
			k.addf([]string{"DEFAULT_FROM_EMAIL"}, "DEFAULT_FROM_EMAIL: %v", err)
		}
	}
	k.check(m.FrontendBaseURL == "" || headers.CheckBaseURL(m.FrontendBaseURL) == nil, "FRONTEND_BASE_URL", m.FrontendBaseURL)
	k.check(m.ListID == "" || validListID(m.ListID), "MAILRELAY_LIST_ID", m.ListID)
	if m.TemplateDir != "" {
		if err := isDir(m.TemplateDir, false); err != nil {
			k.addf([]string{"MAILRELAY_TEMPLATE_DIR"}, "MAILRELAY_TEMPLATE_DIR: %v", err)
		}
	}
	k.checkInt("MAILRELAY_SNIPPET_MAX", m.SnippetMax, 1, 500)
	k.check(m.ProductName == "" || (utf8.RuneCountInString(m.ProductName) <= 100 && headers.Sanitize(m.ProductName, 0) == m.ProductName),
		"MAILRELAY_PRODUCT_NAME", m.ProductName)
}

// checkNATS checks the NATS connection.
func (c *Config) checkNATS(k *checker) {
	n := c.NATS
	servers := n.Servers()
	k.check(len(servers) > 0, "NATS_URL", redactURLs([]string{n.URL}))
	for _, u := range servers {
		k.check(validNATSURL(u), "NATS_URL", redactURLs([]string{u})) // a password in it never reaches an error
	}
	k.check(validInboxPrefix(n.InboxPrefix), "NATS_INBOX_PREFIX", n.InboxPrefix)
	k.checkFile("NATS_CREDS", n.Creds)
	k.checkFile("NATS_NKEY", n.NKey)
	k.checkFile("NATS_CA", n.CA)
	k.checkFile("NATS_CERT", n.Cert)
	k.checkFile("NATS_KEY", n.Key)
	if (n.Cert == "") != (n.Key == "") {
		k.addf([]string{"NATS_CERT", "NATS_KEY"}, "NATS_CERT and NATS_KEY go together: set both or neither")
	}
	if (n.User == "") != !n.Password.IsSet() {
		k.addf([]string{"NATS_USER", "NATS_PASSWORD"}, "NATS_USER and NATS_PASSWORD go together: set both or neither")
	}
	var auth []string
	for _, a := range []struct {
		name string
		set  bool
	}{
		{"NATS_CREDS", n.Creds != ""},
		{"NATS_NKEY", n.NKey != ""},
		{"NATS_USER", n.User != "" || n.Password.IsSet()},
		{"NATS_TOKEN", n.Token.IsSet()},
	} {
		if a.set {
			auth = append(auth, a.name)
		}
	}
	if len(auth) > 1 {
		k.addf(auth, "%s and %s are set: choose one way to authenticate to NATS",
			strings.Join(auth[:len(auth)-1], ", "), auth[len(auth)-1])
	}
}

// checkHTTP checks the HTTP listener and admin token.
func (c *Config) checkHTTP(k *checker) {
	h := c.HTTP
	k.check(validListenAddr(h.Addr), "MAILRELAY_HTTP_ADDR", h.Addr)
	if t := h.AdminToken.Reveal(); t == "" || validToken(t) {
		return
	}
	if h.AdminTokenFile != "" {
		k.addf([]string{"MAILRELAY_ADMIN_TOKEN_FILE"}, "MAILRELAY_ADMIN_TOKEN_FILE: the token in %q is not %s",
			h.AdminTokenFile, lookupVar("MAILRELAY_ADMIN_TOKEN").Accepts)
		return
	}
	k.add(notA("MAILRELAY_ADMIN_TOKEN", "")) // notA leaves a secret's value out anyway
}

// checkUnsubscribe checks the one-click unsubscribe settings: the public
// listener, its URL and the keys (whose values no problem shows).
func (c *Config) checkUnsubscribe(k *checker) {
	h := c.HTTP
	k.check(h.PublicAddr == "" || validListenAddr(h.PublicAddr), "MAILRELAY_PUBLIC_ADDR", h.PublicAddr)
	if h.PublicAddr != "" && h.PublicAddr == h.Addr {
		k.addf([]string{"MAILRELAY_PUBLIC_ADDR", "MAILRELAY_HTTP_ADDR"},
			"MAILRELAY_PUBLIC_ADDR and MAILRELAY_HTTP_ADDR are both %s: the public listener must not share the admin one", h.Addr)
	}
	k.check(h.PublicURL == "" || validPublicURL(h.PublicURL), "MAILRELAY_PUBLIC_URL", h.PublicURL)
	if h.UnsubscribeKeys.IsSet() {
		if _, err := unsubscribe.ParseKeys(h.UnsubscribeKeys.Reveal()); err != nil {
			name := "MAILRELAY_UNSUBSCRIBE_KEYS"
			if h.UnsubscribeKeysFile != "" {
				name = "MAILRELAY_UNSUBSCRIBE_KEYS_FILE"
			}
			k.addf([]string{name}, "%s: %v", name, err) // ParseKeys never shows a key
		}
		return
	}
	for _, v := range []struct{ name, value string }{
		{"MAILRELAY_PUBLIC_ADDR", h.PublicAddr},
		{"MAILRELAY_PUBLIC_URL", h.PublicURL},
	} {
		if v.value == "" {
			continue
		}
		vars := []string{"MAILRELAY_UNSUBSCRIBE_KEYS", v.name}
		if h.UnsubscribeKeysFile != "" {
			vars = append(vars, "MAILRELAY_UNSUBSCRIBE_KEYS_FILE") // unreadable: its own problem
		}
		k.addf(vars, "MAILRELAY_UNSUBSCRIBE_KEYS (or MAILRELAY_UNSUBSCRIBE_KEYS_FILE): required when %s is set: one-click links are signed with it", v.name)
	}
}

// validPublicURL reports whether u can be MAILRELAY_PUBLIC_URL: a base URL
// as FRONTEND_BASE_URL must be (headers.CheckBaseURL), and https, since RFC
// 8058 one-click needs an https URI.
func validPublicURL(u string) bool {
	return headers.CheckBaseURL(u) == nil && len(u) > 8 && strings.EqualFold(u[:8], "https://")
}

// checkJetStream checks the stream, consumer and bucket settings.
func (c *Config) checkJetStream(k *checker) {
	j := c.JetStream
	k.checkInt("MAILRELAY_STREAM_REPLICAS", j.Replicas, 1, 5)
	k.check(j.MaxAge > 0, "MAILRELAY_STREAM_MAX_AGE", fmtDuration(j.MaxAge))
	switch {
	case j.DuplicateWindow < 100*time.Millisecond:
		k.add(notA("MAILRELAY_DUPLICATE_WINDOW", fmtDuration(j.DuplicateWindow)))
	case j.MaxAge > 0 && j.DuplicateWindow > j.MaxAge:
		k.addf([]string{"MAILRELAY_DUPLICATE_WINDOW", "MAILRELAY_STREAM_MAX_AGE"},
			"MAILRELAY_DUPLICATE_WINDOW (%s) is longer than MAILRELAY_STREAM_MAX_AGE (%s): the stream cannot remember an id longer than it keeps messages",
			fmtDuration(j.DuplicateWindow), fmtDuration(j.MaxAge))
	}
	switch {
	case j.StateTTL <= 0:
		k.add(notA("MAILRELAY_STATE_TTL", fmtDuration(j.StateTTL)))
	case j.StateTTL < j.MaxAge:
		k.addf([]string{"MAILRELAY_STATE_TTL", "MAILRELAY_STREAM_MAX_AGE"},
			"MAILRELAY_STATE_TTL (%s) is shorter than MAILRELAY_STREAM_MAX_AGE (%s): a replayed or redelivered message must still find its record; raise the first or lower the second",
			fmtDuration(j.StateTTL), fmtDuration(j.MaxAge))
	}
	k.check(j.AckWait >= time.Second, "MAILRELAY_ACK_WAIT", fmtDuration(j.AckWait))
	k.check(j.DataDir != "", "MAILRELAY_DATA_DIR", j.DataDir)
}

// checkRelay checks the processing settings.
func (c *Config) checkRelay(k *checker) {
	r := c.Relay
	k.checkInt("MAILRELAY_CONCURRENCY", r.Concurrency, 1, 1024)
	k.check(len(r.RetryDelays) >= 1 && len(r.RetryDelays) <= policy.MaxDeliver-1 && !slices.ContainsFunc(r.RetryDelays, func(d time.Duration) bool { return d <= 0 }),
		"MAILRELAY_RETRY_DELAYS", fmtDurations(r.RetryDelays))
	k.checkInt("MAILRELAY_MAX_EVENT_BYTES", r.MaxEventBytes, 1024, 8<<20)
	k.check(r.StaleAfter >= 0, "MAILRELAY_STALE_AFTER", fmtDuration(r.StaleAfter))
	k.check(r.MaxRate >= 0 && !math.IsInf(r.MaxRate, 0), "MAILRELAY_MAX_RATE", strconv.FormatFloat(r.MaxRate, 'g', -1, 64))
	k.check(r.ShutdownTimeout > 0, "MAILRELAY_SHUTDOWN_TIMEOUT", fmtDuration(r.ShutdownTimeout))
	k.check(r.BatchWindow >= 0 && r.BatchWindow <= policy.MaxBatchWindow, "MAILRELAY_BATCH_WINDOW", fmtDuration(r.BatchWindow))
	k.check(r.SeenDelay >= 0 && r.SeenDelay <= policy.MaxBatchWindow, "MAILRELAY_SEEN_DELAY", fmtDuration(r.SeenDelay))
}

// Warnings returns what is allowed but probably not meant, each naming its
// variable, for the caller to log at start-up. It never holds a secret.
func (c *Config) Warnings() []string {
	var ws []string
	warn := func(format string, args ...any) { ws = append(ws, fmt.Sprintf(format, args...)) }
	e := c.Email
	switch c.Mode() {
	case ModeNotConfigured:
		warn("EMAIL_HOST is not set: email is not configured; notifications are recorded as skipped_not_configured and no mail is sent")
	case ModeSMTP:
		if !strings.Contains(c.FromDomain(), ".") {
			warn("DEFAULT_FROM_EMAIL (%s) is not at a public domain: use an address at a domain you control, with SPF and DKIM, or relays and mailbox providers will reject or junk the mail", c.Message.From)
		}
		switch {
		case e.Port == 465 && !e.UseSSL:
			warn("EMAIL_PORT is 465, the implicit TLS port, but EMAIL_USE_SSL is false")
		case e.Port == 587 && e.UseSSL:
			warn("EMAIL_USE_SSL is true but EMAIL_PORT is 587, the STARTTLS port: EMAIL_USE_TLS is probably meant")
		}
		if aw := c.JetStream.AckWait; aw < c.Policy().SendTimeout {
			warn("MAILRELAY_ACK_WAIT (%s) is shorter than twice EMAIL_TIMEOUT (%s): a slow SMTP server can make JetStream redeliver a message that is still being sent",
				fmtDuration(aw), fmtDuration(e.Timeout))
		}
	default:
		if e.Host != "" {
			warn("EMAIL_HOST is set but EMAIL_BACKEND is %s: no mail goes to %s", e.Backend, e.Host)
		}
	}

	// Which unsubscribe mode is on is said by the start-up log (relay) and
	// the status JSON, not here: settings_page is a choice, not a mistake.
	switch base := c.Message.FrontendBaseURL; {
	case base == "" && c.UnsubscribeMode() == UnsubscribeNone:
		warn("FRONTEND_BASE_URL is not set: mail carries no deep link and no List-Unsubscribe header")
	case base == "":
		warn("FRONTEND_BASE_URL is not set: mail carries no deep link, and the unsubscribe page links to no preferences page")
	case strings.HasPrefix(strings.ToLower(base), "http://"):
		warn("FRONTEND_BASE_URL is http://, not https://: deep links and the List-Unsubscribe preferences page are not encrypted, and mailbox providers distrust such links")
	}
	switch h := c.HTTP; {
	case h.UnsubscribeKeys.IsSet() && h.PublicURL == "":
		warn("MAILRELAY_UNSUBSCRIBE_KEYS is set but MAILRELAY_PUBLIC_URL is not: mail carries no one-click link")
	case h.PublicURL != "" && h.PublicAddr == "":
		warn("MAILRELAY_PUBLIC_URL is set but MAILRELAY_PUBLIC_ADDR is not: this process serves no /u/ links; another relay must serve them at %s", h.PublicURL)
	}

	for _, u := range c.NATS.Servers() {
		if strings.Contains(u, "@") {
			warn("NATS_URL carries credentials: prefer NATS_USER/NATS_PASSWORD, NATS_TOKEN or NATS_CREDS, which are never logged")
			break
		}
	}

	switch t := c.HTTP.AdminToken.Reveal(); {
	case t == "":
		warn("MAILRELAY_ADMIN_TOKEN is not set: GET /v1/status/email answers 403")
	case len(t) < 16:
		warn("MAILRELAY_ADMIN_TOKEN is shorter than 16 characters: use a long random token")
	}

	total := c.Relay.RetryDelay(2) + c.Relay.RetryDelay(3)
	if s := c.Relay.StaleAfter; s > 0 && s <= total {
		warn("MAILRELAY_STALE_AFTER (%s) is not longer than the MAILRELAY_RETRY_DELAYS total (%s): a retried notification may turn skipped_stale before its last attempt",
			fmtDuration(s), fmtDuration(total))
	}
	if s, w := c.Relay.StaleAfter, max(c.Relay.BatchWindow, c.Relay.SeenDelay); s > 0 && w >= s {
		warn("MAILRELAY_STALE_AFTER (%s) is not longer than MAILRELAY_BATCH_WINDOW/MAILRELAY_SEEN_DELAY (%s): held notifications turn skipped_stale before they go out",
			fmtDuration(s), fmtDuration(w))
	}
	ws = append(ws, c.dkimWarnings()...)
	return ws
}

var listIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$`)

// validListID reports whether s is a List-Id list identifier
// ("notifications.example.com") or a whole List-Id value, a phrase and the
// identifier in angle brackets ("Acme notifications <notifications.example.com>").
func validListID(s string) bool {
	if phrase, id, ok := strings.Cut(s, "<"); ok {
		id, ok = strings.CutSuffix(id, ">")
		return ok && validToken(strings.ReplaceAll(phrase, " ", "")) && !strings.ContainsAny(phrase, "<>") &&
			listIDPattern.MatchString(id)
	}
	return listIDPattern.MatchString(s)
}

// validFrom reports whether s is one RFC 5322 address, with an optional
// display name, on one line, whose address is one compose accepts
// (headers.CheckFrom).
func validFrom(s string) bool {
	if strings.ContainsAny(s, "\r\n") {
		return false
	}
	a, err := mail.ParseAddress(s)
	return err == nil && headers.CheckFrom(a.Address) == nil
}

// asciiFrom returns the From value s with its address's domain as its
// A-label (transport.ASCIIDomain), or s as it is when it does not parse or
// the domain does not convert.
func asciiFrom(s string) string {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return s
	}
	at := strings.LastIndexByte(a.Address, '@')
	domain := a.Address[at+1:]
	ascii, err := transport.ASCIIDomain(domain)
	i := strings.LastIndex(s, "@"+domain)
	if err != nil || ascii == domain || i < 0 {
		return s
	}
	return s[:i+1] + ascii + s[i+1+len(domain):]
}

// validNATSURL reports whether s is a server URL nats.go accepts: nats, tls,
// ws or wss with a host and an optional port from 1 to 65535; a bare
// host[:port] means nats.
func validNATSURL(s string) bool {
	if !strings.Contains(s, "://") {
		s = "nats://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Hostname() == "" || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	switch u.Scheme {
	case "nats", "tls":
		if u.Path != "" && u.Path != "/" {
			return false
		}
	case "ws", "wss":
	default:
		return false
	}
	if strings.HasSuffix(u.Host, ":") { // "host:" has a colon but no port
		return false
	}
	return u.Port() == "" || validPort(u.Port(), 1)
}

// validListenAddr reports whether s is host:port with a numeric port
// (0 picks a free one); the host may be empty for every interface.
func validListenAddr(s string) bool {
	host, port, err := net.SplitHostPort(s)
	_, hostOK := transport.NormalizeHost(host)
	return err == nil && validPort(port, 0) && (host == "" || hostOK)
}

// validPort reports whether s is a decimal port from lo to 65535.
func validPort(s string, lo int) bool {
	p, err := strconv.Atoi(s)
	return err == nil && p >= lo && p <= 65535
}

// validToken reports whether t is one word of printable ASCII, as a bearer
// token in an Authorization header must be.
func validToken(t string) bool {
	for _, r := range t {
		if r <= ' ' || r >= 0x7f {
			return false
		}
	}
	return true
}

// readable returns an error naming path unless it is a file that can be
// opened for reading.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot read %q: %w", path, pathErr(err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return fmt.Errorf("%q is a directory, not a file", path)
	}
	return nil
}

// isDir returns an error naming path unless it is a directory; a path that
// does not exist is fine when mayBeMissing (it is created on use).
func isDir(path string, mayBeMissing bool) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && mayBeMissing:
		return nil
	case err != nil:
		return fmt.Errorf("cannot use %q: %w", path, pathErr(err))
	case !fi.IsDir():
		return fmt.Errorf("%q is not a directory", path)
	}
	return nil
}

// fmtDuration formats d as a Go duration without zero tails: 168h, 2m, 1h30m.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// fmtDurations formats ds as a MAILRELAY_RETRY_DELAYS list.
func fmtDurations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmtDuration(d)
	}
	return strings.Join(s, ",")
}

// validInboxPrefix accepts dot-separated subject tokens of letters, digits,
// "_" and "-": no wildcards, no empty token.
func validInboxPrefix(p string) bool {
	if p == "" {
		return false
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" {
			return false
		}
		for _, r := range tok {
			if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}
