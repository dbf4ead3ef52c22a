package transport

import (
	"bytes"
	"net/mail"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mailrelay/mailrelay/compose"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testMessage is a typical composed notification.
func testMessage() *compose.Message {
	return &compose.Message{
		From:       compose.Address{Name: "Acme Build", Email: "notify@example.com"},
		To:         compose.Address{Name: "Ann Lee", Email: "ann@example.com"},
		Subject:    "Bob Stone commented on Pour foundation",
		Date:       time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC),
		MessageID:  "<n.01JD3N6Q9W4ZK2V8X5T7R1M0PA@example.com>",
		InReplyTo:  "<t.x@d>",
		References: "<t.x@d>",
		Headers: []compose.Header{
			{Name: "Auto-Submitted", Value: "auto-generated"},
			{Name: "X-Auto-Response-Suppress", Value: "All"},
			{Name: "List-Id", Value: "Acme Build notifications <notify.app.example.com>"},
			{Name: "List-Unsubscribe", Value: "<https://app.example.com/settings/notifications>"},
			{Name: "List-Unsubscribe-Post", Value: "List-Unsubscribe=One-Click"},
			{Name: "X-Mailrelay-Reason", Value: "task.comment"},
		},
		Body: "Bob Stone commented on Pour foundation:\n\n  Concrete truck is late.\n\nhttps://app.example.com/tasks/t-1001\n",
	}
}

// parse reads raw as a message and fails the test when it is not one.
func parse(t *testing.T, raw []byte) *mail.Message {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("net/mail cannot read the message: %v\n%s", err, raw)
	}
	return msg
}
