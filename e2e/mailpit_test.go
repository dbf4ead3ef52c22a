package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/smtptest"
)

// mailpitTLS selects how Mailpit's SMTP listener uses TLS.
type mailpitTLS int

const (
	mailpitNoTLS           mailpitTLS = iota // plain SMTP, no STARTTLS offered
	mailpitSTARTTLS                          // STARTTLS offered, optional
	mailpitRequireSTARTTLS                   // STARTTLS required before MAIL or AUTH (--smtp-require-starttls)
	mailpitImplicitTLS                       // TLS from the first byte, "SMTPS" (--smtp-require-tls)
)

// mailpitOptions configures startMailpit. The zero value is plain SMTP that
// accepts any AUTH (or none), with chaos enabled but idle.
type mailpitOptions struct {
	TLS mailpitTLS
	// Username and Password, when set, make AUTH mandatory with exactly these
	// credentials (--smtp-auth-file) instead of accepting anything. Neither
	// may contain whitespace.
	Username, Password string
	// Args are extra command-line arguments.
	Args []string
}

// mailpit is a Mailpit child process: an SMTP server on 127.0.0.1 that keeps
// every message it accepts, with an HTTP API to read them back.
type mailpit struct {
	t        testing.TB
	bin      string
	args     []string
	dir      string
	smtpPort int
	httpPort int
	logPath  string

	caFile   string // CA that signed the SMTP certificate; "" without TLS
	certPool *x509.CertPool
	pageSize int // messages per API page in Messages; 0 means 250

	mu   sync.Mutex
	proc *process
}

// startMailpit starts bin/mailpit on free ports with its database in a
// temporary directory and waits until /readyz answers 200 and the SMTP port
// accepts connections. With a TLS mode it first generates a CA and a server
// certificate for 127.0.0.1 and localhost.
func startMailpit(t testing.TB, opts mailpitOptions) *mailpit {
	t.Helper()
	dir := t.TempDir()
	m := &mailpit{
		t:       t,
		bin:     requireTool(t, "mailpit"),
		dir:     dir,
		logPath: filepath.Join(dir, "mailpit.log"),
	}

	flags := []string{
		"--database", filepath.Join(dir, "mailpit.db"),
		"--max", "0", // keep every message
		"--enable-chaos",
		"--smtp-disable-rdns", // loopback only: no DNS
		"--disable-version-check",
		"--verbose", // log the SMTP conversation
	}
	if opts.Username != "" || opts.Password != "" {
		auth := filepath.Join(dir, "smtp-auth")
		if err := os.WriteFile(auth, []byte(opts.Username+":"+opts.Password+"\n"), 0o600); err != nil {
			t.Fatalf("mailpit: write auth file: %v", err)
		}
		flags = append(flags, "--smtp-auth-file", auth)
	} else {
		flags = append(flags, "--smtp-auth-accept-any")
	}
	if opts.TLS != mailpitNoTLS {
		ca, cert, key, pool := writeTestCerts(t, dir)
		m.caFile, m.certPool = ca, pool
		flags = append(flags, "--smtp-tls-cert", cert, "--smtp-tls-key", key)
	}
	switch opts.TLS {
	case mailpitNoTLS, mailpitSTARTTLS:
		// Mailpit refuses this flag together with a TLS requirement.
		flags = append(flags, "--smtp-auth-allow-insecure")
	case mailpitRequireSTARTTLS:
		flags = append(flags, "--smtp-require-starttls")
	case mailpitImplicitTLS:
		flags = append(flags, "--smtp-require-tls")
	}
	flags = append(flags, opts.Args...)

	dumpOnFailure(t, "mailpit", m.logPath)
	for attempt := 1; ; attempt++ {
		m.smtpPort, m.httpPort = freePort(t), freePort(t)
		m.args = append([]string{
			"--smtp", m.SMTPAddr(),
			"--listen", fmt.Sprintf("127.0.0.1:%d", m.httpPort),
		}, flags...)
		err := m.start()
		if err == nil {
			return m
		}
		if attempt < 3 && addressInUse(readFile(m.logPath)) {
			t.Logf("mailpit: %v; retrying on other ports", err)
			continue
		}
		t.Fatalf("mailpit: %v", err)
	}
}

// start runs mailpit with m.args and waits until it is ready.
func (m *mailpit) start() error {
	m.t.Helper()
	p := startProcess(m.t, procSpec{
		name:   "mailpit",
		bin:    m.bin,
		args:   m.args,
		env:    cleanEnv(m.dir), // no MP_* variables from the caller
		dir:    m.dir,
		stdout: m.logPath,
		stderr: m.logPath,
	})
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()

	msg, ok := poll(startTimeout, func() (bool, string) {
		if p.exited() {
			return true, "exited: " + p.exitDescription()
		}
		code, err := httpStatus(m.APIURL() + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		if code != 200 {
			return false, fmt.Sprintf("/readyz answered %d", code)
		}
		conn, err := net.DialTimeout("tcp", m.SMTPAddr(), 2*time.Second)
		if err != nil {
			return false, err.Error()
		}
		_ = conn.Close()
		return true, ""
	})
	switch {
	case !ok:
		p.kill()
		return fmt.Errorf("not ready within %v: %s", startTimeout, msg)
	case p.exited():
		return fmt.Errorf("%s before becoming ready", msg)
	}
	return nil
}

// SMTPAddr is host:port of the SMTP listener.
func (m *mailpit) SMTPAddr() string { return fmt.Sprintf("127.0.0.1:%d", m.smtpPort) }

// SMTPHost is the SMTP host, 127.0.0.1 (for EMAIL_HOST).
func (m *mailpit) SMTPHost() string { return "127.0.0.1" }

// SMTPPort is the SMTP port (for EMAIL_PORT).
func (m *mailpit) SMTPPort() int { return m.smtpPort }

// APIURL is the base of the web UI and API, http://127.0.0.1:<port>.
func (m *mailpit) APIURL() string { return fmt.Sprintf("http://127.0.0.1:%d", m.httpPort) }

// CAFile is the PEM file of the CA that signed the SMTP certificate, "" when
// TLS is off. Give it to mailrelay as SSL_CERT_FILE to make it trusted.
func (m *mailpit) CAFile() string { return m.caFile }

// TLSConfig trusts only the test CA and verifies the name 127.0.0.1.
func (m *mailpit) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: m.certPool, ServerName: m.SMTPHost(), MinVersion: tls.VersionTLS12}
}

// LogPath is Mailpit's log file.
func (m *mailpit) LogPath() string { return m.logPath }

func (m *mailpit) current() *process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc
}

// Stop shuts Mailpit down (an SMTP outage); Restart brings it back on the
// same ports with the same database. Safe to call from any goroutine.
func (m *mailpit) Stop() { m.current().stop(stopTimeout) }

// Restart stops Mailpit if it runs and starts it again on the same ports.
func (m *mailpit) Restart() {
	m.t.Helper()
	m.Stop()
	if err := m.start(); err != nil {
		m.t.Fatalf("mailpit restart: %v", err)
	}
}

// ---------------------------------------------------------------------------
// API

// mailAddress is a name and address as Mailpit's API returns them.
type mailAddress struct {
	Name    string
	Address string
}

// mailSummary is one entry of GET /api/v1/messages.
type mailSummary struct {
	ID          string // Mailpit's database ID, for the other calls
	MessageID   string // the Message-ID header, without <>
	Read        bool
	From        *mailAddress
	To          []mailAddress
	Cc          []mailAddress
	Bcc         []mailAddress
	ReplyTo     []mailAddress
	Subject     string
	Created     time.Time
	Username    string // the SMTP AUTH user, if any
	Tags        []string
	Size        uint64
	Attachments int
	Snippet     string
}

// mailMessage is GET /api/v1/message/{ID}: the parsed message.
type mailMessage struct {
	ID              string
	MessageID       string
	From            *mailAddress
	To              []mailAddress
	Cc              []mailAddress
	Bcc             []mailAddress
	ReplyTo         []mailAddress
	ReturnPath      string
	Subject         string
	ListUnsubscribe struct {
		Header     string   // List-Unsubscribe
		Links      []string // links Mailpit found in it
		Errors     string   // Mailpit's validation complaints
		HeaderPost string   // List-Unsubscribe-Post
	}
	Date        time.Time
	Tags        []string
	Username    string
	Text        string
	HTML        string
	Size        uint64
	Attachments []struct {
		PartID, FileName, ContentType string
		Size                          uint64
	}
}

// chaosTrigger makes Mailpit answer one SMTP stage with ErrorCode (400-599)
// with a Probability in percent (0 disables it).
type chaosTrigger struct {
	ErrorCode   int `json:"ErrorCode"`
	Probability int `json:"Probability"`
}

// chaosTriggers is the body of PUT /api/v1/chaos. Sender fails MAIL FROM,
// Recipient fails RCPT TO, Authentication fails AUTH (auth must be on).
type chaosTriggers struct {
	Sender         chaosTrigger `json:"Sender"`
	Recipient      chaosTrigger `json:"Recipient"`
	Authentication chaosTrigger `json:"Authentication"`
}

// api performs one API call and decodes a JSON answer into out (when not
// nil). Anything but 200 fails the test.
func (m *mailpit) api(t testing.TB, method, path string, in, out any) []byte {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatalf("mailpit %s %s: %v", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, m.APIURL()+path, body)
	if err != nil {
		t.Fatalf("mailpit %s %s: %v", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("mailpit %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("mailpit %s %s: read answer: %v", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("mailpit %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("mailpit %s %s: decode: %v in %s", method, path, err, b)
		}
	}
	return b
}

// messagesPage is GET /api/v1/messages.
type messagesPage struct {
	Total    int           `json:"total"`
	Messages []mailSummary `json:"messages"`
}

// Count is the number of messages Mailpit holds.
func (m *mailpit) Count(t testing.TB) int {
	t.Helper()
	var page messagesPage
	m.api(t, http.MethodGet, "/api/v1/messages?limit=1", nil, &page)
	return page.Total
}

// Messages lists every message, newest first, following the pages.
func (m *mailpit) Messages(t testing.TB) []mailSummary {
	t.Helper()
	limit := m.pageSize
	if limit <= 0 {
		limit = 250
	}
	var all []mailSummary
	for {
		var page messagesPage
		m.api(t, http.MethodGet, fmt.Sprintf("/api/v1/messages?start=%d&limit=%d", len(all), limit), nil, &page)
		all = append(all, page.Messages...)
		if len(page.Messages) < limit || len(all) >= page.Total {
			return all
		}
	}
}

// WaitForCount waits until Mailpit holds at least n messages and returns them
// (newest first). More than n fails the test: a mail too many is a bug.
func (m *mailpit) WaitForCount(t testing.TB, n int, timeout time.Duration) []mailSummary {
	t.Helper()
	eventually(t, timeout, func() (bool, string) {
		c := m.Count(t)
		return c >= n, fmt.Sprintf("mailpit holds %d messages, want %d", c, n)
	})
	msgs := m.Messages(t)
	if len(msgs) > n {
		var subjects []string
		for _, s := range msgs {
			subjects = append(subjects, fmt.Sprintf("%q to %v", s.Subject, s.To))
		}
		t.Fatalf("mailpit holds %d messages, want exactly %d:\n%s", len(msgs), n, strings.Join(subjects, "\n"))
	}
	return msgs
}

// Message returns the parsed message with Mailpit ID id.
func (m *mailpit) Message(t testing.TB, id string) mailMessage {
	t.Helper()
	var msg mailMessage
	m.api(t, http.MethodGet, "/api/v1/message/"+id, nil, &msg)
	return msg
}

// Headers returns the message's headers, keys in canonical MIME form
// ("Message-Id", "List-Unsubscribe-Post"), values decoded as stored.
func (m *mailpit) Headers(t testing.TB, id string) map[string][]string {
	t.Helper()
	var h map[string][]string
	m.api(t, http.MethodGet, "/api/v1/message/"+id+"/headers", nil, &h)
	return h
}

// Raw returns the message exactly as it was received over SMTP.
func (m *mailpit) Raw(t testing.TB, id string) []byte {
	t.Helper()
	return m.api(t, http.MethodGet, "/api/v1/message/"+id+"/raw", nil, nil)
}

// DeleteAll deletes every message.
func (m *mailpit) DeleteAll(t testing.TB) {
	t.Helper()
	m.api(t, http.MethodDelete, "/api/v1/messages", nil, nil)
}

// SetChaos replaces all chaos triggers (a zero ErrorCode means Mailpit's
// default: 451 for Sender and Recipient, 535 for Authentication).
func (m *mailpit) SetChaos(t testing.TB, triggers chaosTriggers) {
	t.Helper()
	var got chaosTriggers
	m.api(t, http.MethodPut, "/api/v1/chaos", triggers, &got)
	for _, c := range []struct {
		name      string
		want, got chaosTrigger
	}{
		{"Sender", triggers.Sender, got.Sender},
		{"Recipient", triggers.Recipient, got.Recipient},
		{"Authentication", triggers.Authentication, got.Authentication},
	} {
		if c.got.Probability != c.want.Probability || (c.want.ErrorCode != 0 && c.got.ErrorCode != c.want.ErrorCode) {
			t.Fatalf("mailpit chaos %s: set %+v, got %+v", c.name, c.want, c.got)
		}
	}
}

// ClearChaos turns every chaos trigger off.
func (m *mailpit) ClearChaos(t testing.TB) {
	t.Helper()
	m.SetChaos(t, chaosTriggers{})
}

// ---------------------------------------------------------------------------
// SMTP client and certificates for the harness's own tests

// smtpMail is one message to send with sendSMTP.
type smtpMail struct {
	From string
	To   []string
	Data []byte // the whole message, headers and body, CRLF line ends
}

// smtpClientOptions says how sendSMTP talks to the server.
type smtpClientOptions struct {
	TLS      *tls.Config // used for STARTTLS or implicit TLS
	StartTLS bool        // issue STARTTLS after EHLO
	Implicit bool        // TLS from the first byte
	Username string      // AUTH PLAIN when not empty
	Password string
}

// sendSMTP delivers mail to addr with net/smtp, step by step, and returns the
// first error; an SMTP reply error is a *textproto.Error with the code.
func sendSMTP(addr string, o smtpClientOptions, mail smtpMail) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	var conn net.Conn
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if o.Implicit {
		conn, err = tls.DialWithDialer(dialer, "tcp", addr, o.TLS)
	} else {
		conn, err = dialer.Dial("tcp", addr)
	}
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("greeting: %w", err)
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if o.StartTLS {
		if err := c.StartTLS(o.TLS); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
	}
	if o.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", o.Username, o.Password, host)); err != nil {
			return fmt.Errorf("AUTH: %w", err)
		}
	}
	if err := c.Mail(mail.From); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	for _, rcpt := range mail.To {
		if err := c.Rcpt(rcpt); err != nil {
			return fmt.Errorf("RCPT TO: %w", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(mail.Data); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return c.Quit()
}

// writeTestCerts creates a throwaway CA and a server certificate it signed for
// 127.0.0.1, ::1 and localhost, writes them as PEM files into dir and returns
// their paths and a pool that trusts the CA.
func writeTestCerts(t testing.TB, dir string) (caFile, certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	return smtptest.WriteCertificateFiles(t, dir)
}

// itoa is strconv.Itoa, for building environment maps.
func itoa(n int) string { return strconv.Itoa(n) }
