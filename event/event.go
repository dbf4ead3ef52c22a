// Package event owns the notification event of the mailrelay contract (§3,
// amended by §9.1): its Go type, its decoding (decode.go) and validation,
// the rules as patterns that event.schema.json shares (rules.go), the
// Problems error that names every problem by its JSON path (problems.go),
// the registry of notification types (registry.go), and a helper that
// publishes it to JetStream with the de-duplication header set. Publishing
// services import this package so that they validate with exactly the code
// the relay uses.
package event

import (
	"errors"
	"fmt"
	"strconv"
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
	// Decode and Validate return it as Problems.
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
	// Locale is a BCP 47 language tag (LocalePattern), the language of
	// the mail; "" means the default.
	Locale string `json:"locale,omitempty"`
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

// ValidTaskID reports whether s may be a task id: TaskIDPattern, and not
// "." or "..".
func ValidTaskID(s string) bool { return taskIDPattern.MatchString(s) && s != "." && s != ".." }

// Decode parses and validates one message. subject is the NATS subject the
// message was published on ("" skips the subject check), maxBytes the size
// limit (0 means DefaultMaxBytes).
//
// An id may be a JSON string or a JSON integer from 0 to MaxIntegerID; the
// event holds its decimal string. A null field is an absent one. Keys are
// exact: a key that differs from a contract key only by case, or a key
// given twice, is a problem; other unknown keys are ignored.
//
// On a contract violation the error is Problems, which wraps ErrInvalid
// and names every problem by its JSON path; the returned event, when not
// nil, holds whatever could be decoded and always has a usable ID
// (ValidID), under which the caller may record the failure.
func Decode(subject string, data []byte, maxBytes int) (*Event, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if len(data) > maxBytes {
		return recoverID(data), Problems{{Message: fmt.Sprintf("event is %d bytes, over the limit of %d", len(data), maxBytes)}}
	}
	if !utf8.Valid(data) {
		return recoverID(data), Problems{{Message: "event is not valid UTF-8"}}
	}
	var r reader
	root, err := parse(data, &r.ps)
	if err != nil {
		return nil, Problems{{Message: err.Error()}}
	}
	ev := r.event(root)
	ps := r.ps
	ev.check(&ps)
	if subject != "" && ev.Type.Valid() && subject != ev.Type.Subject() && !ps.covers("type") {
		ps.add("type", "%q does not match subject %q (events of this type go to %s)", ev.Type, subject, ev.Type.Subject())
	}
	if len(ps) == 0 {
		return &ev, nil
	}
	ps.sort()
	if !ValidID(ev.ID) || ps.covers("id") {
		return nil, ps
	}
	return &ev, ps
}

// recoverID returns an event that holds only the id of a message that is
// not decoded whole, so that its failure can be recorded under that id
// when it is a valid one; else nil.
func recoverID(data []byte) *Event {
	var r reader
	root, err := parse(data, &r.ps)
	if err != nil || root.kind != kObject || root.dup["id"] {
		return nil
	}
	for _, m := range root.members {
		if m.key == "id" {
			if id := r.id("id", m.val); ValidID(id) && len(r.ps) == 0 {
				return &Event{ID: id}
			}
		}
	}
	return nil
}

// event reads the event's fields from the tree.
func (r *reader) event(root *value) Event {
	var e Event
	if root.kind != kObject {
		r.ps.add("", "the event must be a JSON object, not %s", root.what())
		return e
	}
	f := r.object("", root)
	e.ID = r.id("id", f["id"])
	e.Type = Type(r.text("type", f["type"]))
	e.OccurredAt = r.timestamp("occurred_at", f["occurred_at"])
	if w := r.object("workspace", f["workspace"]); w != nil {
		e.Workspace = &Workspace{ID: r.id("workspace.id", w["id"]), Name: r.text("workspace.name", w["name"])}
	}
	rc := r.object("recipient", f["recipient"])
	e.Recipient = Recipient{ID: r.id("recipient.id", rc["id"]), Email: r.text("recipient.email", rc["email"]),
		Name: r.text("recipient.name", rc["name"]), Locale: r.text("recipient.locale", rc["locale"])}
	if a := r.object("actor", f["actor"]); a != nil {
		e.Actor = &Actor{ID: r.id("actor.id", a["id"]), Name: r.text("actor.name", a["name"])}
	}
	t := r.object("task", f["task"])
	e.Task = Task{ID: r.id("task.id", t["id"]), Title: r.text("task.title", t["title"]), Project: r.text("task.project", t["project"])}
	if c := r.object("comment", f["comment"]); c != nil {
		e.Comment = &Comment{ID: r.id("comment.id", c["id"]), Body: r.text("comment.body", c["body"])}
	}
	if c := r.object("change", f["change"]); c != nil {
		e.Change = &Change{Field: r.text("change.field", c["field"]), From: r.date("change.from", c["from"]), To: r.date("change.to", c["to"])}
	}
	if b := r.object("blocked_by", f["blocked_by"]); b != nil {
		e.BlockedBy = &TaskRef{ID: r.id("blocked_by.id", b["id"]), Title: r.text("blocked_by.title", b["title"])}
	}
	return e
}

// Validate checks the event against the rules of the contract's §3 and
// §9.1 (all but the size, key and subject rules, which need the raw
// message, and the clock rule, which needs the relay's clock:
// TooFarAhead). The error is Problems, naming every field that breaks a
// rule, and wraps ErrInvalid. A zero OccurredAt is "required": in a Go
// value it means the time was not set.
func (e *Event) Validate() error {
	var ps Problems
	e.check(&ps)
	return ps.err()
}

// check adds the problems of e to ps, but none at a path that ps already
// names (a value that did not decode is not also "required").
func (e *Event) check(ps *Problems) {
	var found Problems
	add := func(path, format string, args ...any) {
		if !ps.covers(path) {
			found.add(path, format, args...)
		}
	}
	def := lookup(e.Type)
	switch {
	case e.ID == "":
		add("id", "is required")
	case !ValidID(e.ID):
		add("id", "must match %s", IDPattern)
	}
	switch {
	case e.Type == "":
		add("type", "is required")
	case def == nil:
		add("type", "%q is not one of %s", truncate(string(e.Type), 64), typeList())
	}
	switch y := e.OccurredAt.Year(); {
	case e.OccurredAt.IsZero():
		add("occurred_at", "is required (RFC 3339, e.g. 2026-11-26T09:30:00Z)")
	case y < 2 || y > 9999:
		add("occurred_at", "%s lies outside the years 0002 to 9999", e.OccurredAt.Format(time.RFC3339Nano))
	}
	switch {
	case e.Recipient.ID == "":
		add("recipient.id", "is required")
	case !ValidID(e.Recipient.ID):
		add("recipient.id", "must match %s", IDPattern)
	}
	if e.Recipient.Email != "" {
		if msg := checkAddress(e.Recipient.Email); msg != "" {
			add("recipient.email", "%s", msg)
		}
	}
	if !localePattern.MatchString(e.Recipient.Locale) {
		add("recipient.locale", "%q is not a BCP 47 language tag such as de, pt-BR or zh-Hant-TW", truncate(e.Recipient.Locale, 64))
	}
	switch {
	case e.Task.ID == "":
		add("task.id", "is required")
	case !taskIDPattern.MatchString(e.Task.ID):
		add("task.id", "must match %s", TaskIDPattern)
	case e.Task.ID == "." || e.Task.ID == "..":
		add("task.id", "may not be %q: the deep link /tasks/%s would lead to another page", e.Task.ID, e.Task.ID)
	}
	if !HasVisible(e.Task.Title) {
		add("task.title", "%s", requiredText(e.Task.Title, ""))
	}
	if b := e.BlockedBy; b != nil && (b.ID == "." || b.ID == "..") {
		add("blocked_by.id", "may not be %q: as a path segment it would lead to another page", b.ID)
	}
	// The rules of the type's own sections come from its registry entry.
	if def != nil {
		def.check(e, add)
	}
	*ps = append(*ps, found...)
}

// checkAddress accepts one bare address (no display name, no list) within
// the RFC 5321 size limits, which an SMTP server may otherwise refuse only
// after the relay has spent its attempts. It returns why s is not one, or
// "".
func checkAddress(s string) string {
	shown := strconv.Quote(truncate(s, 64))
	if strings.Contains(s, "=?") {
		// RFC 2047 §5 forbids encoded-words in an address, yet mail clients
		// decode them there: "=?utf-8?q?a=E2=80=AEb?=@…" would show a bidi
		// override.
		return `contains "=?", which mail clients would decode as an RFC 2047 encoded-word`
	}
	at := strings.LastIndexByte(s, '@')
	if at >= 0 && strings.HasPrefix(s[at+1:], "[") {
		return fmt.Sprintf("%s has a domain literal: give a domain name (user@example.com)", shown)
	}
	if !emailPattern.MatchString(s) {
		return fmt.Sprintf("%s is not an email address: give one bare address such as ann@example.com, without a name, quotes, spaces or angle brackets", shown)
	}
	for _, l := range []struct {
		what     string
		n, limit int
	}{
		{"the local part", at, maxLocalPart},
		{"the domain", len(s) - at - 1, maxDomain},
		{"the address", len(s), maxAddress},
	} {
		if l.n > l.limit {
			return fmt.Sprintf("%s is %d octets, over the limit of %d (RFC 5321)", l.what, l.n, l.limit)
		}
	}
	return ""
}

// TooFarAhead returns an error wrapping ErrInvalid (Problems) when
// occurred_at lies more than MaxClockSkew after now, the relay's clock:
// such a time is a publisher's mistake, and an event dated in the future
// would never go stale. It returns nil otherwise. Decode does not apply
// it, so that decoding needs no clock.
func (e *Event) TooFarAhead(now time.Time) error {
	if e.OccurredAt.After(now.Add(MaxClockSkew)) {
		return Problems{{Path: "occurred_at", Message: fmt.Sprintf("%s is more than %gh ahead of the relay's clock (%s)",
			e.OccurredAt.Format(time.RFC3339Nano), MaxClockSkew.Hours(), now.UTC().Format(time.RFC3339))}}
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
	return r == brailleBlank || unicode.In(r, invisibleTables...)
}

// brailleBlank and invisibleTables are the code points invisible() reports.
const brailleBlank = '\u2800'

var invisibleTables = []*unicode.RangeTable{unicode.Cc, unicode.Cf, unicode.Zs, unicode.Zl, unicode.Zp,
	unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point}

// requiredText is the message of a required text that is empty or has no
// visible character; suffix follows "is required" (e.g. " for mention").
func requiredText(s, suffix string) string {
	if s == "" {
		return "is required" + suffix
	}
	return "is required" + suffix + " (it has no visible character)"
}

// validDate reports whether s is a date or an RFC 3339 date-time.
func validDate(s string) bool { return datePattern.MatchString(s) || dateTimePattern.MatchString(s) }

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
