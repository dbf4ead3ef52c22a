package transport

import (
	"bytes"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"slices"
	"strings"
	"testing"

	"github.com/mailrelay/mailrelay/compose"
)

func render(t *testing.T, m *compose.Message) []byte {
	t.Helper()
	raw, err := renderBytes(m)
	if err != nil {
		t.Fatalf("renderBytes: %v", err)
	}
	return raw
}

// headerSection returns the raw header lines, CRLF included.
func headerSection(t *testing.T, raw []byte) string {
	t.Helper()
	head, _, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no CRLF CRLF between header and body:\n%q", raw)
	}
	return string(head) + "\r\n"
}

func TestRenderHeadersVerbatim(t *testing.T) {
	head := headerSection(t, render(t, testMessage()))
	want := []string{
		"List-Unsubscribe: <https://app.example.com/settings/notifications>",
		"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
		"Auto-Submitted: auto-generated",
		"X-Auto-Response-Suppress: All",
		"List-Id: Acme Build notifications <notify.app.example.com>",
		"X-Mailrelay-Reason: task.comment",
		"References: <t.x@d>",
		"In-Reply-To: <t.x@d>",
		"Message-ID: <n.01JD3N6Q9W4ZK2V8X5T7R1M0PA@example.com>",
		"Date: Thu, 26 Nov 2026 09:30:00 +0000",
		"Subject: Bob Stone commented on Pour foundation",
		`From: "Acme Build" <notify@example.com>`,
		`To: "Ann Lee" <ann@example.com>`,
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=UTF-8",
		"Content-Transfer-Encoding: quoted-printable",
	}
	for _, line := range want {
		if !strings.Contains("\r\n"+head, "\r\n"+line+"\r\n") {
			t.Errorf("header line %q missing or altered in:\n%s", line, head)
		}
	}
	if strings.Contains(head, "User-Agent") || strings.Contains(head, "X-Mailer") {
		t.Errorf("go-mail's default User-Agent leaked into:\n%s", head)
	}
}

func TestRenderNoHeaderInjection(t *testing.T) {
	const evil = "\r\nBcc: evil@example.com\r\nX-Injected: yes"
	tests := []struct {
		name   string
		mutate func(*compose.Message)
	}{
		{name: "subject CRLF", mutate: func(m *compose.Message) { m.Subject = "Hello" + evil }},
		{name: "subject bare LF", mutate: func(m *compose.Message) { m.Subject = "Hello\nX-Injected: yes" }},
		{name: "subject bare CR", mutate: func(m *compose.Message) { m.Subject = "Hello\rX-Injected: yes" }},
		{name: "to name", mutate: func(m *compose.Message) { m.To.Name = "Ann" + evil }},
		{name: "from name", mutate: func(m *compose.Message) { m.From.Name = "Acme" + evil }},
		{name: "header value", mutate: func(m *compose.Message) { m.Headers[0].Value = "auto-generated" + evil }},
		{name: "in-reply-to", mutate: func(m *compose.Message) { m.InReplyTo = "<t.x@d>" + evil }},
		{name: "references", mutate: func(m *compose.Message) { m.References = "<t.x@d>" + evil }},
	}
	wantKeys := []string{
		"Auto-Submitted", "Content-Transfer-Encoding", "Content-Type", "Date", "From",
		"In-Reply-To", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "Message-Id",
		"Mime-Version", "References", "Subject", "To", "X-Auto-Response-Suppress", "X-Mailrelay-Reason",
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := testMessage()
			tc.mutate(m)
			raw := render(t, m)
			head := headerSection(t, raw)
			// Every CR and LF in the header section belongs to a CRLF, and
			// each CRLF starts a new field or a folded continuation.
			for i, line := range strings.Split(strings.TrimSuffix(head, "\r\n"), "\r\n") {
				if strings.ContainsAny(line, "\r\n") {
					t.Fatalf("header line %d holds a bare CR or LF: %q", i, line)
				}
			}
			msg := parse(t, raw)
			var keys []string
			for k := range msg.Header {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, wantKeys) {
				t.Fatalf("header fields = %q\nwant %q\n%s", keys, wantKeys, head)
			}
			if len(msg.Header["Subject"]) != 1 || len(msg.Header["To"]) != 1 {
				t.Errorf("Subject or To repeated: %q %q", msg.Header["Subject"], msg.Header["To"])
			}
		})
	}
}

func TestRenderAddressesAndSubject(t *testing.T) {
	tests := []struct {
		name    string
		toName  string
		subject string
	}{
		{name: "ascii", toName: "Ann Lee", subject: "Plain subject"},
		{name: "non-ascii", toName: "Zoë Müller", subject: "Kommentar zu „Fundament gießen“"},
		{name: "quotes and comma", toName: `Lee, Ann "The Boss"`, subject: `Re: "quoted", (paren) <angle>`},
		{name: "long", toName: strings.Repeat("Ann ", 20), subject: strings.Repeat("word ", 32) + "end"},
	}
	dec := new(mime.WordDecoder)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := testMessage()
			m.To.Name, m.Subject = tc.toName, tc.subject
			raw := render(t, m)
			msg := parse(t, raw)
			to, err := msg.Header.AddressList("To")
			if err != nil || len(to) != 1 {
				t.Fatalf("To = %v, %v", to, err)
			}
			if to[0].Name != tc.toName || to[0].Address != "ann@example.com" {
				t.Errorf("To = %q <%s>, want %q <ann@example.com>", to[0].Name, to[0].Address, tc.toName)
			}
			subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
			if err != nil {
				t.Fatalf("decode Subject: %v", err)
			}
			if subject != tc.subject {
				t.Errorf("Subject = %q, want %q", subject, tc.subject)
			}
			for i, line := range strings.Split(headerSection(t, raw), "\r\n") {
				if len(line) > 998 {
					t.Errorf("header line %d is %d octets long", i, len(line))
				}
			}
		})
	}
}

func TestRenderBody(t *testing.T) {
	longLink := "https://app.example.com/tasks/" + strings.Repeat("t", 120)
	tests := []struct {
		name string
		body string
		want string // decoded body
	}{
		{name: "plain", body: "Hello Ann,\n\nBob commented.\n", want: "Hello Ann,\r\n\r\nBob commented.\r\n"},
		{name: "no final newline", body: "Hello", want: "Hello\r\n"},
		{name: "utf-8 and equals", body: "Zoë said a = b …\n", want: "Zoë said a = b …\r\n"},
		{name: "long deep link", body: "See:\n" + longLink + "\n", want: "See:\r\n" + longLink + "\r\n"},
		{name: "trailing space", body: "end with space \nnext\n", want: "end with space \r\nnext\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := testMessage()
			m.Body = tc.body
			raw := render(t, m)
			for i, line := range strings.Split(string(raw), "\r\n") {
				if strings.ContainsAny(line, "\r\n") {
					t.Fatalf("line %d holds a bare CR or LF: %q", i, line)
				}
				if len(line) > 78 {
					t.Errorf("line %d is %d characters long: %q", i, len(line), line)
				}
			}
			msg := parse(t, raw)
			if got := msg.Header.Get("Content-Type"); got != "text/plain; charset=UTF-8" {
				t.Errorf("Content-Type = %q", got)
			}
			body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
			if err != nil {
				t.Fatalf("decode body: %v", err)
			}
			if string(body) != tc.want {
				t.Errorf("body = %q, want %q", body, tc.want)
			}
		})
	}
}

func TestRenderMergesRepeatedHeaders(t *testing.T) {
	m := testMessage()
	m.Headers = append(m.Headers, compose.Header{Name: "list-unsubscribe", Value: "<mailto:unsub@example.com>"})
	msg := parse(t, render(t, m))
	got := msg.Header["List-Unsubscribe"]
	want := []string{"<https://app.example.com/settings/notifications>, <mailto:unsub@example.com>"}
	if !slices.Equal(got, want) {
		t.Errorf("List-Unsubscribe = %q, want %q", got, want)
	}
}

func TestRenderRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*compose.Message)
	}{
		{name: "no from", mutate: func(m *compose.Message) { m.From.Email = "" }},
		{name: "no to", mutate: func(m *compose.Message) { m.To = compose.Address{} }},
		{name: "invalid to", mutate: func(m *compose.Message) { m.To.Email = "not an address" }},
		{name: "CRLF in to address", mutate: func(m *compose.Message) { m.To.Email = "ann@example.com\r\nBcc: x@y" }},
		{name: "message-id without @", mutate: func(m *compose.Message) { m.MessageID = "<abc>" }},
		{name: "message-id with space", mutate: func(m *compose.Message) { m.MessageID = "<a b@c>" }},
		{name: "reserved header", mutate: func(m *compose.Message) { m.Headers = append(m.Headers, compose.Header{Name: "bcc", Value: "x@y"}) }},
		{name: "header name with colon", mutate: func(m *compose.Message) { m.Headers[0].Name = "X-A: b" }},
		{name: "header name with CRLF", mutate: func(m *compose.Message) { m.Headers[0].Name = "X-A\r\nBcc" }},
		{name: "empty header name", mutate: func(m *compose.Message) { m.Headers[0].Name = "" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := testMessage()
			tc.mutate(m)
			if msg, err := Render(m); err == nil {
				var buf bytes.Buffer
				_, _ = msg.WriteTo(&buf)
				t.Fatalf("Render succeeded:\n%s", buf.Bytes())
			}
		})
	}
	if _, err := Render(nil); err == nil {
		t.Error("Render(nil) succeeded")
	}
}

func TestRenderMessageIDBrackets(t *testing.T) {
	for _, id := range []string{"<n.1@example.com>", "n.1@example.com"} {
		m := testMessage()
		m.MessageID = id
		msg := parse(t, render(t, m))
		if got := msg.Header.Get("Message-Id"); got != "<n.1@example.com>" {
			t.Errorf("MessageID %q: Message-ID = %q, want <n.1@example.com>", id, got)
		}
	}
}

// Ensure addresses survive parsing with the standard library.
func TestRenderParsesWithNetMail(t *testing.T) {
	msg := parse(t, render(t, testMessage()))
	from, err := mail.ParseAddress(msg.Header.Get("From"))
	if err != nil || from.Name != "Acme Build" || from.Address != "notify@example.com" {
		t.Errorf("From = %v, %v", from, err)
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
}

// TestRenderEncodesEncodedWordText: a Subject or display name holding "=?"
// is written as encoded-words even when it is plain ASCII, so that a reader
// decodes it once, back to the literal text, and never into a CR, LF or a
// bidi control (headers.MustEncode).
func TestRenderEncodesEncodedWordText(t *testing.T) {
	const (
		bcc = "=?UTF-8?q?x=0D=0ABcc:_evil@evil.example=0D=0A?="
		rlo = "=?UTF-8?q?Invoice=E2=80=AEgnp.exe?="
	)
	tests := []struct {
		name   string
		mutate func(*compose.Message)
		field  string
		want   string
	}{
		{"subject", func(m *compose.Message) { m.Subject = bcc + ` commented on "T"` }, "Subject", bcc + ` commented on "T"`},
		{"subject non-ASCII", func(m *compose.Message) { m.Subject = "Zoë " + rlo }, "Subject", "Zoë " + rlo},
		{"to name", func(m *compose.Message) { m.To.Name = rlo }, "To", `"` + rlo + `" <ann@example.com>`},
		{"from name", func(m *compose.Message) { m.From.Name = bcc }, "From", `"` + bcc + `" <notify@example.com>`},
	}
	dec := new(mime.WordDecoder)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testMessage()
			tt.mutate(m)
			raw := render(t, m)
			msg, err := mail.ReadMessage(bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("ReadMessage: %v\n%s", err, raw)
			}
			value := msg.Header.Get(tt.field)
			if strings.Contains(value, "=?UTF-8?q?x=0D") || strings.Contains(value, "=?UTF-8?q?Invoice") {
				t.Errorf("%s carries the text raw: %q", tt.field, value)
			}
			got, err := dec.DecodeHeader(value)
			if err != nil || strings.TrimSpace(got) != tt.want {
				t.Errorf("%s = %q decodes to %q (%v), want %q", tt.field, value, got, err, tt.want)
			}
			if v := msg.Header.Get("Bcc"); v != "" {
				t.Errorf("Bcc appeared: %q", v)
			}
		})
	}
}
