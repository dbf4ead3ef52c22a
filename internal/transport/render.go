package transport

import (
	"bytes"
	"errors"
	"fmt"
	netmail "net/mail"
	"strings"

	"github.com/wneessen/go-mail"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/headers"
)

// reservedHeaders are the fields Render writes itself (or that must never
// come from a composed message, like Bcc); compose.Message.Headers may not
// name them.
var reservedHeaders = []string{
	"From", "To", "Cc", "Bcc", "Sender", "Subject", "Date", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding", "Content-Disposition",
}

// Render turns a composed message into a go-mail message: a single
// text/plain; charset=UTF-8 part in quoted-printable (7-bit clean, so it
// needs no 8BITMIME from the relay; ASCII text stays readable and lines
// stay within 76 characters, the deep-link line included).
//
// Every field goes through a setter that encodes (RFC 2047) or refuses CR,
// LF and non-ASCII instead of writing them raw: From and To with their
// display names (formatted by net/mail and parsed again by go-mail), and
// go-mail's Subject, Date, Message-ID (compose gives it with angle brackets, go-mail adds its own, so
// they are stripped here), In-Reply-To, References and the extra Headers.
// Plain-ASCII values such as "<https://app.example.com/settings/notifications>"
// come out unchanged, except a Subject or display name holding "=?", which is
// always encoded so that it reads literally (see encodeText). go-mail writes
// the header fields sorted by name, not in the order of Headers; repeated
// names are merged into one field, comma-separated.
//
// An IDN domain in From or To is written as its A-label (punycode), the form
// the envelope takes too; a non-ASCII local part is kept (see address.go:
// the SMTP backend sends it only to a server that offers SMTPUTF8).
//
// Render returns an error for a missing or invalid address (an IDN domain
// that IDNA2008 refuses among them), a malformed Message-ID, or a header
// name that is not a valid field name or is one Render writes itself.
func Render(m *compose.Message) (*mail.Msg, error) {
	if m == nil {
		return nil, errors.New("render: nil message")
	}
	msg := mail.NewMsg(
		mail.WithCharset(mail.CharsetUTF8),
		mail.WithEncoding(mail.EncodingQP),
		mail.WithNoDefaultUserAgent(),
	)

	from, err := mailbox(m.From)
	if err != nil {
		return nil, fmt.Errorf("render From: %w", err)
	}
	if err := msg.From(from); err != nil {
		return nil, fmt.Errorf("render From: %w", err)
	}
	to, err := mailbox(m.To)
	if err != nil {
		return nil, fmt.Errorf("render To: %w", err)
	}
	if err := msg.To(to); err != nil {
		return nil, fmt.Errorf("render To: %w", err)
	}

	msg.Subject(encodeText(m.Subject))
	if !m.Date.IsZero() {
		msg.SetDateWithValue(m.Date)
	}
	if m.MessageID != "" {
		id, err := msgID(m.MessageID)
		if err != nil {
			return nil, fmt.Errorf("render Message-ID: %w", err)
		}
		msg.SetMessageIDWithValue(id)
	}
	if m.InReplyTo != "" {
		msg.SetGenHeader(mail.HeaderInReplyTo, m.InReplyTo)
	}
	if m.References != "" {
		msg.SetGenHeader(mail.HeaderReferences, m.References)
	}
	if err := setHeaders(msg, m.Headers); err != nil {
		return nil, err
	}

	body := m.Body
	if !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	msg.SetBodyString(mail.TypeTextPlain, body)
	if m.HTML != "" {
		// multipart/alternative: the text part first (the least preferred),
		// then the HTML one, both quoted-printable.
		msg.AddAlternativeString(mail.TypeTextHTML, m.HTML)
	}
	return msg, nil
}

// renderBytes returns m as full RFC 5322 text, CRLF line endings, as Render
// builds it with the header fields folded as mail software expects
// (foldHeader), or a StepRender *Error. These are the bytes every backend
// sends or writes, and that a Signer signs.
func renderBytes(m *compose.Message) ([]byte, error) {
	msg, err := Render(m)
	if err != nil {
		return nil, &Error{Step: StepRender, Err: err}
	}
	var buf bytes.Buffer
	if _, err := msg.WriteTo(&buf); err != nil {
		return nil, &Error{Step: StepRender, Err: err}
	}
	return foldHeader(buf.Bytes()), nil
}

// maxFoldedLine is the line length header folding aims for (RFC 5322
// §2.1.1: 78 characters, CRLF excluded).
const maxFoldedLine = 78

// foldHeader rewrites the header section of raw, a message as go-mail
// writes it, so that each field is folded the way RFC 5322 §2.2.3 and mail
// software expect: a field that fits on one line of 78 characters is not
// folded; a longer one is folded at spaces, the first line holding at
// least the name and the first word of the value, never an empty value
// (go-mail folds a long first word onto its own line, "Subject:\r\n
// =?UTF-8?q?…", which Python's email reads back with a leading space). A
// word longer than a line stays whole (a line may reach 998 octets).
// Unfolding and refolding only moves CRLFs before existing spaces, so every
// value means what it meant (adjacent encoded-words stay separated by
// white space). The body, part headers included, is not touched.
func foldHeader(raw []byte) []byte {
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		return raw
	}
	var fields []string
	for _, line := range strings.Split(string(head), "\r\n") {
		if len(fields) > 0 && line != "" && (line[0] == ' ' || line[0] == '\t') {
			fields[len(fields)-1] += line // unfold: drop the CRLF, keep the WSP
			continue
		}
		fields = append(fields, line)
	}
	out := make([]byte, 0, len(raw)+64)
	for _, f := range fields {
		out = appendFolded(out, f)
	}
	out = append(out, "\r\n"...)
	return append(out, body...)
}

// appendFolded appends the unfolded field f ("Name: value") to b, folded.
func appendFolded(b []byte, f string) []byte {
	name, value, ok := strings.Cut(f, ":")
	if !ok {
		return append(append(b, f...), "\r\n"...)
	}
	value = strings.TrimLeft(value, " \t")
	if len(name)+2+len(value) <= maxFoldedLine {
		b = append(b, name...)
		b = append(b, ": "...)
		b = append(b, value...)
		return append(b, "\r\n"...)
	}
	words := strings.Split(value, " ")
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, words[0]...)
	n := len(name) + 2 + len(words[0])
	for _, w := range words[1:] {
		if w != "" && n+1+len(w) > maxFoldedLine {
			b = append(b, "\r\n "...)
			n = 1
		} else {
			b = append(b, ' ')
			n++
		}
		b = append(b, w...)
		n += len(w)
	}
	return append(b, "\r\n"...)
}

// mailbox formats a as an RFC 5322 mailbox. The address must be one bare
// address (the rule the event validation applies too); a domain with
// non-ASCII characters is written as its A-label (ASCIIDomain), and one that
// does not convert is refused, naming why; net/mail quotes the
// display name or, when it holds non-ASCII or control characters, encodes it
// (RFC 2047), and go-mail parses the result again, refusing what would not
// parse (FuzzRender: a display name of invalid UTF-8 that go-mail's
// FromMailAddress/ToMailAddress would have written unparseable).
func mailbox(a compose.Address) (string, error) {
	if a.Email == "" {
		return "", errors.New("no address")
	}
	p, err := netmail.ParseAddress(a.Email)
	if err != nil || p.Name != "" || p.Address != a.Email || strings.ContainsAny(a.Email, "\r\n") {
		return "", fmt.Errorf("%q is not an email address", a.Email)
	}
	addr, err := ASCIIAddress(a.Email)
	if err != nil {
		return "", fmt.Errorf("%q cannot be sent: %w", a.Email, err)
	}
	return (&netmail.Address{Name: encodeText(a.Name), Address: addr}).String(), nil
}

// encodeText returns text for a Subject or display name as go-mail should
// be given it. go-mail (through mime.WordEncoder) leaves plain ASCII as it
// is, so ASCII holding "=?" would reach the reader raw and be decoded there
// (headers.MustEncode); such text is given already encoded, and go-mail
// passes those ASCII encoded-words through, folding between them.
//
// A display name goes through net/mail's Address.String, which puts an
// ASCII name, encoded-words included, in a quoted-string. RFC 2047 §5 says
// not to decode there, but lenient readers do (Python's email, checked in
// compose's spoof tests): they show the literal text. A strict reader shows
// the encoded-words themselves; none shows what they would decode to.
// go-mail 0.8.1 writes every address field through Address.String, so there
// is no way to put a bare encoded-word there without a preformatted To.
func encodeText(s string) string {
	if headers.MustEncode(s) {
		return headers.EncodeWords(s)
	}
	return s
}

// msgID checks a msg-id ("<left@right>", brackets optional) and returns it
// without the brackets, as SetMessageIDWithValue wants it.
func msgID(v string) (string, error) {
	id := strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">")
	if id == "" || !strings.Contains(id, "@") {
		return "", fmt.Errorf("%q is not a msg-id like <left@right>", v)
	}
	for _, r := range id {
		if r <= ' ' || r > '~' || r == '<' || r == '>' {
			return "", fmt.Errorf("%q is not a msg-id like <left@right>", v)
		}
	}
	return id, nil
}

// setHeaders sets the extra header fields with SetGenHeader (which encodes
// unsafe values), merging repeated names in order of first appearance.
func setHeaders(msg *mail.Msg, headers []compose.Header) error {
	var names []string
	values := make(map[string][]string)
	for _, h := range headers {
		if err := checkHeaderName(h.Name); err != nil {
			return err
		}
		key := strings.ToLower(h.Name)
		if _, seen := values[key]; !seen {
			names = append(names, h.Name)
		}
		values[key] = append(values[key], h.Value)
	}
	for _, name := range names {
		msg.SetGenHeader(mail.Header(name), values[strings.ToLower(name)]...)
	}
	return nil
}

func checkHeaderName(name string) error {
	if name == "" {
		return errors.New("render: empty header name")
	}
	for i := 0; i < len(name); i++ {
		// RFC 5322 field-name: printable ASCII except colon.
		if c := name[i]; c < '!' || c > '~' || c == ':' {
			return fmt.Errorf("render: invalid header name %q", name)
		}
	}
	for _, r := range reservedHeaders {
		if strings.EqualFold(name, r) {
			return fmt.Errorf("render: header %q is set by the transport, not by Headers", name)
		}
	}
	return nil
}
