package compose

import (
	"io"
	"net/mail"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mailrelay/mailrelay/headers"
)

// renderMail writes m as RFC 5322 text with raw UTF-8 (RFC 6532): the
// fields, a blank line, the body. It is the tests' stand-in for the
// transport, and the format of the golden files.
func renderMail(m *Message) string {
	var b strings.Builder
	field := func(name, value string) {
		b.WriteString(name)
		b.WriteString(": ")
		b.WriteString(value)
		b.WriteByte('\n')
	}
	field("Date", m.Date.Format(time.RFC1123Z))
	field("From", formatAddress(m.From))
	field("To", formatAddress(m.To))
	field("Subject", m.Subject)
	field("Message-ID", m.MessageID)
	field("In-Reply-To", m.InReplyTo)
	field("References", m.References)
	for _, h := range m.Headers {
		field(h.Name, h.Value)
	}
	b.WriteByte('\n')
	b.WriteString(m.Body)
	return b.String()
}

// formatAddress writes a mailbox with the display name as an atom phrase
// when it can be, else as a quoted string.
func formatAddress(a Address) string {
	if a.Name == "" {
		return "<" + a.Email + ">"
	}
	plain := !strings.Contains(a.Name, "=?") // net/mail decodes RFC 2047 words in atoms
	for _, r := range a.Name {
		if r < utf8.RuneSelf && !(r == ' ' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r)) {
			plain = false
			break
		}
	}
	if plain {
		return a.Name + " <" + a.Email + ">"
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(a.Name) + `" <` + a.Email + ">"
}

// checkMessage asserts every rule of docs/contract.md §5 that holds for any
// input: header values one line and bounded, subject at most 160 runes,
// body lines at most 78 runes (except the line holding only link and lines
// holding only one URL), valid
// UTF-8 throughout, and a rendering that net/mail parses back to the same
// addresses and body.
func checkMessage(t testing.TB, m *Message, link string) {
	t.Helper()
	values := map[string]string{
		"From.Name": m.From.Name, "From.Email": m.From.Email,
		"To.Name": m.To.Name, "To.Email": m.To.Email,
		"Subject": m.Subject, "Message-ID": m.MessageID,
		"In-Reply-To": m.InReplyTo, "References": m.References,
	}
	for _, h := range m.Headers {
		values["name of "+h.Name] = h.Name
		values[h.Name] = h.Value
	}
	for name, v := range values {
		if strings.ContainsAny(v, "\r\n") {
			t.Errorf("%s holds CR or LF: %q", name, v)
		}
		if !utf8.ValidString(v) {
			t.Errorf("%s is not valid UTF-8: %q", name, v)
		}
		for _, r := range v {
			if headers.IsControl(r) {
				t.Errorf("%s holds control character %U: %q", name, r, v)
				break
			}
		}
		if len(name)+2+len(v) > 900 {
			t.Errorf("%s is %d octets long", name, len(v))
		}
	}
	if n := utf8.RuneCountInString(m.Subject); n == 0 || n > MaxSubject {
		t.Errorf("subject has %d runes: %q", n, m.Subject)
	}
	if !utf8.ValidString(m.Body) {
		t.Errorf("body is not valid UTF-8")
	}
	if !strings.HasSuffix(m.Body, "\n") || strings.Contains(m.Body, "\r") {
		t.Errorf("body does not end in one LF or holds CR: %q", m.Body)
	}
	for i, line := range strings.Split(strings.TrimSuffix(m.Body, "\n"), "\n") {
		if n := utf8.RuneCountInString(line); n > MaxLine && (link == "" || strings.TrimSpace(line) != link) && !urlLine(line) {
			t.Errorf("body line %d has %d runes: %q", i+1, n, line)
		}
		for _, r := range line {
			if headers.IsControl(r) {
				t.Errorf("body line %d holds control character %U: %q", i+1, r, line)
				break
			}
		}
	}
	if link != "" && !strings.Contains(m.Body, "\n"+link+"\n") {
		t.Errorf("body lacks the deep link %q on a line of its own", link)
	}

	msg, err := mail.ReadMessage(strings.NewReader(renderMail(m)))
	if err != nil {
		t.Fatalf("net/mail cannot read the message: %v\n%s", err, renderMail(m))
	}
	for _, f := range []struct {
		field string
		want  Address
	}{{"From", m.From}, {"To", m.To}} {
		list, err := msg.Header.AddressList(f.field)
		if err != nil || len(list) != 1 {
			t.Errorf("%s does not parse as one address: %v (%q)", f.field, err, msg.Header.Get(f.field))
			continue
		}
		if list[0].Address != f.want.Email || list[0].Name != f.want.Name {
			t.Errorf("%s parses as %q <%s>, want %q <%s>", f.field, list[0].Name, list[0].Address, f.want.Name, f.want.Email)
		}
	}
	if got := msg.Header.Get("Subject"); got != m.Subject {
		t.Errorf("Subject reads back as %q, want %q", got, m.Subject)
	}
	body, err := io.ReadAll(msg.Body)
	if err != nil || string(body) != m.Body {
		t.Errorf("body reads back differently (%v)", err)
	}
}
