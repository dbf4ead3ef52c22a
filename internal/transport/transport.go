// Package transport owns the mail backends of mailrelay: it renders a
// composed message into a go-mail message (Render), which every backend
// writes as RFC 5322 text, and hands it to one of the backends behind the
// Sender interface:
//
//   - SMTP: a relay over go-mail, with STARTTLS or implicit TLS, AUTH and a
//     pool of persistent connections (EMAIL_BACKEND=smtp);
//   - Console: writes each message to a stream such as stdout (console);
//   - File: writes one .eml file per message into a directory (file);
//   - Dummy: accepts and discards (dummy).
//
// Every failure is an *Error that says whether a retry can help
// (Temporary), the SMTP reply code and enhanced status code, and the step
// that failed, so callers classify failures without matching strings. The
// SMTP password never appears in an error or a log line.
package transport

import (
	"context"

	"github.com/mailrelay/mailrelay/compose"
)

// Sender sends one composed message. Implementations are safe for
// concurrent use.
type Sender interface {
	// Send delivers m, or returns an *Error. A nil error means the backend
	// accepted the message. Send gives up when ctx ends.
	Send(ctx context.Context, m *compose.Message) error
	// Close releases the backend's resources (connections, goroutines).
	// Send after Close fails with ErrClosed for backends that hold
	// resources.
	Close() error
}

var (
	_ Sender = (*SMTP)(nil)
	_ Sender = (*Console)(nil)
	_ Sender = (*File)(nil)
	_ Sender = (*Dummy)(nil)
)
