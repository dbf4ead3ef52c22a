package compose

import "time"

// Address is a mailbox: an optional display name and an address.
type Address struct {
	Name  string
	Email string
}

// Header is one extra header field of a composed message. Values are plain
// text with no CR or LF; the transport encodes them as needed.
type Header struct {
	Name  string
	Value string
}

// Message is a composed plain-text mail, independent of any mail library.
// The transport turns it into RFC 5322 text.
type Message struct {
	From    Address
	To      Address
	Subject string
	Date    time.Time
	// MessageID, InReplyTo and References are full msg-id values,
	// angle brackets included, e.g. "<notify.01JD3N6Q@example.com>".
	MessageID  string
	InReplyTo  string
	References string
	// Headers are the remaining fields (Auto-Submitted, List-Id,
	// List-Unsubscribe, …) in the order they are written.
	Headers []Header
	// Body is the text/plain; charset=UTF-8 body, lines separated by "\n".
	Body string
	// HTML is the text/html; charset=UTF-8 alternative to Body, "" unless
	// Config.HTML is set. The transport sends both as
	// multipart/alternative, Body first.
	HTML string
}
