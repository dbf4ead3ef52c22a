package transport

import (
	"bytes"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/compose"
)

// FuzzRender: whatever text reaches the rendered header values (subject,
// display names, extra headers) and the body, the message parses with
// net/mail and carries exactly the header fields it was given: no field is
// added (no Bcc smuggled in with a CR/LF), none is lost; and it is 7-bit.
func FuzzRender(f *testing.F) {
	f.Add("Pour foundation", "Ann Lee", "task.comment", "Hello\nworld")
	f.Add("x\r\nBcc: evil@example.com", "Eve\r\nBcc: evil@example.com", "a\nb: c", "line\r\n.\r\nMAIL FROM:<x>")
	f.Add("Zoë Ångström 基礎工事 🚧", "José \"Núñez\"", "\x00\u2028", strings.Repeat("long ", 200))
	f.Fuzz(func(t *testing.T, subject, name, headerValue, body string) {
		m := &compose.Message{
			From:       compose.Address{Name: name, Email: "notify@example.com"},
			To:         compose.Address{Name: name, Email: "ann@example.com"},
			Subject:    subject,
			Date:       time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC),
			MessageID:  "<notify.n1@example.com>",
			InReplyTo:  "<task/t1@example.com>",
			References: "<task/t1@example.com>",
			Headers:    []compose.Header{{Name: "X-Mailrelay-Reason", Value: headerValue}},
			Body:       body,
		}
		raw, err := renderBytes(m)
		if err != nil {
			return // refusing bad input is fine; injecting is not
		}
		// ASCII addresses: the whole message is 7-bit, whatever the text,
		// so it may go to a server that offers neither 8BITMIME nor
		// SMTPUTF8 (contract §9.4).
		if i := bytes.IndexFunc(raw, func(r rune) bool { return r >= 0x80 }); i >= 0 {
			t.Fatalf("rendered message holds 8-bit data at %d:\n%q", i, raw)
		}
		parsed, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("rendered message does not parse: %v\n%s", err, raw)
		}
		for _, h := range []string{"Bcc", "Cc", "Mail-From"} {
			if v := parsed.Header.Get(h); v != "" {
				t.Fatalf("header %s appeared: %q", h, v)
			}
		}
		for _, h := range []string{"From", "To", "Subject", "Date", "Message-Id", "In-Reply-To", "References", "X-Mailrelay-Reason"} {
			if len(parsed.Header[h]) > 1 {
				t.Fatalf("header %s appears %d times", h, len(parsed.Header[h]))
			}
		}
		if got := parsed.Header.Get("Message-Id"); got != "<notify.n1@example.com>" {
			t.Fatalf("Message-ID = %q", got)
		}
		to, err := parsed.Header.AddressList("To")
		if err != nil || len(to) != 1 || to[0].Address != "ann@example.com" {
			t.Fatalf("To = %v, %v", to, err)
		}
	})
}
