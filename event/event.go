// Package event owns the notification event of the mailrelay contract (§3):
// its Go type, its decoding and validation, the registry of notification
// types (registry.go), and a helper that publishes it to JetStream with the
// de-duplication header set. Publishing services import this package so that
// they validate with exactly the code the relay uses.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Type is a notification type. The subject of an event is SubjectPrefix + Type.
type Type string

// The notification types of the contract; registry.go holds what the relay
// knows about each.
const (
	TaskAssigned    Type = "task.assigned"
	TaskDateChanged Type = "task.date_changed"
	TaskComment     Type = "task.comment"
	TaskBlocked     Type = "task.blocked"
	Mention         Type = "mention"
)

// Valid reports whether t is a registered type: one of the contract's, or
// one added with Register.
func (t Type) Valid() bool { return lookup(t) != nil }

// Subject is the NATS subject events of this type are published on.
func (t Type) Subject() string { return SubjectPrefix + string(t) }

const (
	// SubjectPrefix starts every event subject.
	SubjectPrefix = "notify."
	// DefaultMaxBytes is the default size limit of one encoded event (64 KiB).
	DefaultMaxBytes = 64 << 10
	// MaxClockSkew is how far occurred_at may lie ahead of the relay's clock
	// (contract §3); TooFarAhead applies it.
	MaxClockSkew = 24 * time.Hour
)

// RFC 5321 §4.5.3.1 size limits of recipient.email, in octets. The path
// limit of 256 counts the angle brackets, so the address itself has 254.
const (
	maxLocalPart = 64
	maxDomain    = 255
	maxAddress   = 254
)

// Sentinel errors. Validation errors wrap ErrInvalid, so errors.Is(err,
// ErrInvalid) tells a contract violation from any other failure.
var (
	// ErrInvalid is wrapped by every error that says an event breaks §3.
	ErrInvalid = errors.New("invalid event")
)

// Event is one notification for one recipient.
type Event struct {
	ID         string     `json:"id"`
	Type       Type       `json:"type"`
	OccurredAt time.Time  `json:"occurred_at"`
	Workspace  *Workspace `json:"workspace,omitempty"`
	Recipient  Recipient  `json:"recipient"`
	Actor      *Actor     `json:"actor,omitempty"`
	Task       Task       `json:"task"`
	Comment    *Comment   `json:"comment,omitempty"`
	Change     *Change    `json:"change,omitempty"`
	BlockedBy  *TaskRef   `json:"blocked_by,omitempty"`
}

// Workspace is where the task lives.
type Workspace struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// Recipient is the user the notification is for.
type Recipient struct {
	ID    string `json:"id"`
	Email string `json:"email,omitempty"`
	Name  string `json:"name,omitempty"`
}

// Actor is the user whose action caused the notification.
type Actor struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// Task is the task the notification is about.
type Task struct {
	ID      string `json:"id"`
	Title   string `json:"title"`
	Project string `json:"project,omitempty"`
}

// TaskRef names another task (the blocking one of task.blocked).
type TaskRef struct {
	ID    string `json:"id,omitempty"`
	Title string `json:"title,omitempty"`
}

// Comment is the comment of task.comment, or the text that mentions the
// recipient for mention.
type Comment struct {
	ID   string `json:"id,omitempty"`
	Body string `json:"body"`
}

// Change is the date change of task.date_changed. From and To are dates
// (YYYY-MM-DD) or nil for "not set".
type Change struct {
	Field string  `json:"field"`
	From  *string `json:"from"`
	To    *string `json:"to"`
}

// IDPattern is what a notification or user id must match.
const IDPattern = `^[A-Za-z0-9_-]{1,128}$`

const taskIDExpr = `^[A-Za-z0-9_.-]{1,128}$`

var (
	idPattern     = regexp.MustCompile(IDPattern)
	taskIDPattern = regexp.MustCompile(taskIDExpr)
)

// ValidID reports whether s may be a notification or user id.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// CheckID returns nil when s may be a notification or user id (ValidID),
// else the error "NAME must match IDPattern", NAME being how the message
// names the value (e.g. "recipient.id"). It is the one wording of the rule
// for every caller; it does not wrap ErrInvalid, since a bad user id given
// to the CLI or prefs is not a bad event.
func CheckID(name, s string) error {
	if ValidID(s) {
		return nil
	}
	return fmt.Errorf("%s must match %s", name, IDPattern)
}

// ValidTaskID reports whether s may be a task id.
func ValidTaskID(s string) bool { return taskIDPattern.MatchString(s) }

// Decode parses and validates one message. subject is the NATS subject the
// message was published on ("" skips the subject check), maxBytes the size
// limit (0 means DefaultMaxBytes).
//
// On a contract violation the error wraps ErrInvalid, and the returned
// event, when not nil, holds whatever could be decoded and always has a
// usable ID (ValidID), under which the caller may record the failure.
func Decode(subject string, data []byte, maxBytes int) (*Event, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if len(data) > maxBytes {
		return partialID(data), invalidf("event is %d bytes, over the limit of %d", len(data), maxBytes)
	}
	if !utf8.Valid(data) {
		return partialID(data), invalidf("event is not valid UTF-8")
	}
	var ev Event
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&ev); err != nil {
		return partialID(data), invalidf("event is not valid JSON for the schema: %v", err)
	}
	if dec.More() {
		return partialID(data), invalidf("event has trailing data after the JSON object")
	}
	if err := ev.validate(ev.OccurredAt.IsZero() && hasOccurredAt(data)); err != nil {
		if !ValidID(ev.ID) {
			return nil, err
		}
		return &ev, err
	}
	if subject != "" && subject != ev.Type.Subject() {
		return &ev, invalidf("type %q does not match subject %q", ev.Type, subject)
	}
	return &ev, nil
}

// partialID recovers the id of a message that did not decode whole, so that
// its failure can be recorded under that id when it is a valid one.
func partialID(data []byte) *Event {
	var probe struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(data, &probe) != nil || !ValidID(probe.ID) {
		return nil
	}
	return &Event{ID: probe.ID}
}

// hasOccurredAt reports whether data gives occurred_at a value other than
// null: only the raw message tells an absent time from the zero time, which
// decode to the same time.Time.
func hasOccurredAt(data []byte) bool {
	var probe struct {
		OccurredAt json.RawMessage `json:"occurred_at"`
	}
	return json.Unmarshal(data, &probe) == nil && len(probe.OccurredAt) > 0 && string(probe.OccurredAt) != "null"
}

// Validate checks the event against the rules of the contract's §3 (all but
// the size and subject rules, which need the raw message, and the clock
// rule, which needs the relay's clock: TooFarAhead). The error names the
// first field that breaks a rule and wraps ErrInvalid. A zero OccurredAt is
// "required": in a Go value it means the time was not set.
func (e *Event) Validate() error { return e.validate(false) }

// validate is Validate; zeroTimeGiven says the message held the zero time
// itself, which is "not a valid time" rather than "required".
func (e *Event) validate(zeroTimeGiven bool) error {
	def := lookup(e.Type)
	switch {
	case e.ID == "":
		return invalidf("id is required")
	case !ValidID(e.ID):
		return invalid(CheckID("id", e.ID))
	case e.Type == "":
		return invalidf("type is required")
	case def == nil:
		return invalidf("type %q is not one of %s", truncate(string(e.Type), 64), typeList())
	case e.OccurredAt.IsZero() && zeroTimeGiven:
		return invalidf("occurred_at: %s is the zero time, not a valid time", e.OccurredAt.UTC().Format(time.RFC3339))
	case e.OccurredAt.IsZero():
		return invalidf("occurred_at is required (RFC 3339)")
	case e.Recipient.ID == "":
		return invalidf("recipient.id is required")
	case !ValidID(e.Recipient.ID):
		return invalid(CheckID("recipient.id", e.Recipient.ID))
	case e.Task.ID == "":
		return invalidf("task.id is required")
	case !ValidTaskID(e.Task.ID):
		return invalidf("task.id must match %s", taskIDExpr)
	case !HasVisible(e.Task.Title):
		return required("task.title", e.Task.Title, "")
	}
	if e.Recipient.Email != "" {
		if err := checkAddress(e.Recipient.Email); err != nil {
			return err
		}
	}
	// The rules of the type's own sections come from its registry entry.
	return def.check(e)
}

// checkAddress accepts one bare address (no display name, no list) within
// the RFC 5321 size limits, which an SMTP server may otherwise refuse only
// after the relay has spent its attempts.
func checkAddress(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s || strings.ContainsAny(s, "\r\n") {
		return invalidf("recipient.email is not an email address")
	}
	if strings.Contains(s, "=?") {
		// RFC 2047 §5 forbids encoded-words in an address, yet mail clients
		// decode them there: "=?utf-8?q?a=E2=80=AEb?=@…" would show a bidi
		// override.
		return invalidf("recipient.email: contains \"=?\", which mail clients would decode as an RFC 2047 encoded-word")
	}
	at := strings.LastIndexByte(s, '@') // a quoted local part may hold '@', a domain may not
	for _, l := range []struct {
		what     string
		n, limit int
	}{
		{"the local part", at, maxLocalPart},
		{"the domain", len(s) - at - 1, maxDomain},
		{"the address", len(s), maxAddress},
	} {
		if l.n > l.limit {
			return invalidf("recipient.email: %s is %d octets, over the limit of %d (RFC 5321)", l.what, l.n, l.limit)
		}
	}
	return nil
}

// TooFarAhead returns an error wrapping ErrInvalid when occurred_at lies
// more than MaxClockSkew after now, the relay's clock: such a time is a
// publisher's mistake, and an event dated in the future would never go
// stale. It returns nil otherwise. Decode does not apply it, so that
// decoding needs no clock.
func (e *Event) TooFarAhead(now time.Time) error {
	if e.OccurredAt.After(now.Add(MaxClockSkew)) {
		return invalidf("occurred_at: %s is more than %gh ahead of the relay's clock (%s)",
			e.OccurredAt.Format(time.RFC3339Nano), MaxClockSkew.Hours(), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// HasVisible reports whether s holds at least one visible character: one
// that is not white space, a control or format character (zero-width
// spaces and joiners, bidi controls, tags), a variation selector, another
// default-ignorable code point (the Hangul fillers among them) or U+2800
// BRAILLE PATTERN BLANK, which renders as a blank and is a common filler.
// A required text without one is treated as empty (contract §3).
func HasVisible(s string) bool {
	for _, r := range s {
		if !invisible(r) {
			return true
		}
	}
	return false
}

func invisible(r rune) bool {
	return r == '\u2800' || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zs, unicode.Zl, unicode.Zp,
		unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point)
}

// required is the error of a required text that is empty or has no visible
// character; suffix follows the field's name (e.g. " for mention").
func required(name, s, suffix string) error {
	if s == "" {
		return invalidf("%s is required%s", name, suffix)
	}
	return invalidf("%s is required%s: it has no visible character", name, suffix)
}

func validDate(s string) bool {
	if _, err := time.Parse(time.DateOnly, s); err == nil {
		return true
	}
	_, err := time.Parse(time.RFC3339, s)
	return err == nil
}

// HasEmail reports whether the recipient has an address to mail.
func (e *Event) HasEmail() bool { return e.Recipient.Email != "" }

func typeList() string {
	defs := current.Load().defs
	s := make([]string, len(defs))
	for i, d := range defs {
		s[i] = string(d.Type)
	}
	return strings.Join(s, ", ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// invalid marks err as a contract violation.
func invalid(err error) error { return fmt.Errorf("%w: %w", ErrInvalid, err) }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
