package compose

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"sync"
	"text/template"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

// Sentinel errors of Compose and LoadTemplates, matched with errors.Is. An
// event that breaks the contract gives an error wrapping event.ErrInvalid.
// None of these gets better on retry.
var (
	// ErrNoAddress: the recipient has no email address (the relay records
	// skipped_no_email before composing, so this is a caller bug).
	ErrNoAddress = errors.New("compose: recipient has no email address")
	// ErrConfig: the Config cannot produce well-formed headers.
	ErrConfig = errors.New("compose: invalid config")
	// ErrTemplate: a template did not parse, failed or panicked at
	// execution, or rendered an empty subject or body. The error is a
	// *TemplateError naming the file and line.
	ErrTemplate = errors.New("compose: template failed")
)

// Output limits of one template execution; a template that writes more
// (say {{range 1000000000}}) fails instead of exhausting memory.
const (
	maxSubjectOutput = 16 << 10
	maxBodyOutput    = 256 << 10
)

// Compose builds the mail for one notification, sent at now (the Date
// header). The event must be valid (event.Validate) and have a recipient
// address. It never panics: a template that fails or panics gives an
// error wrapping ErrTemplate.
//
// The result carries From (cfg.From), To (recipient name and address),
// Subject, Date, a Message-ID stable for the notification id, and
// In-Reply-To and References set to the thread id of the task; Headers
// holds, in this order, Auto-Submitted, X-Auto-Response-Suppress, List-Id,
// List-Unsubscribe and List-Unsubscribe-Post (when cfg.BaseURL is set; the
// latter only for https) and X-Mailrelay-Reason. No header value holds a CR
// or LF, whatever the event holds, nor an invisible or bidi character
// (headers.SanitizeHeader); the transport encodes a value holding "=?".
//
// Errors: one wrapping event.ErrInvalid for an event that breaks §3,
// ErrNoAddress, ErrConfig, or a *TemplateError (ErrTemplate). All are
// permanent for that event and config.
func Compose(ev *event.Event, cfg Config, now time.Time) (*Message, error) {
	if ev == nil {
		return nil, fmt.Errorf("compose: %w: no event", event.ErrInvalid)
	}
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	return c.Compose(ev, now)
}

// Composer is Compose with its Config checked and prepared once: the form
// for composing many mails with one configuration.
type Composer struct {
	s settings
	t *Templates
}

// New checks cfg and prepares it (the errors of Compose about the config).
func New(cfg Config) (*Composer, error) {
	s, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	t := s.templates
	if t == nil || t.subject == nil {
		if t, err = builtin(); err != nil {
			return nil, err
		}
	}
	return &Composer{s: s, t: t}, nil
}

// Compose builds the mail of ev, sent at now, as the function Compose does,
// but trusts ev to be valid: it must come from event.Decode (or have passed
// Event.Validate).
func (c *Composer) Compose(ev *event.Event, now time.Time) (*Message, error) {
	if ev.Recipient.Email == "" {
		return nil, ErrNoAddress
	}
	return c.t.compose(ev, &c.s, now)
}

// compose builds the message of a valid event with normalized settings.
func (t *Templates) compose(ev *event.Event, s *settings, now time.Time) (*Message, error) {
	body := t.body(ev.Type)
	if body == nil {
		return nil, fmt.Errorf("compose: %w: type %q", event.ErrInvalid, ev.Type)
	}
	data := newTemplateData(ev, s)

	buf := getBuffer()
	defer putBuffer(buf)
	buf.max = maxSubjectOutput
	if err := t.execute(t.subject, buf, data); err != nil {
		return nil, err
	}
	subject := headers.SanitizeHeader(string(buf.b), MaxSubject)
	if subject == "" {
		return nil, t.emptyError(t.subject, "subject")
	}
	buf.b, buf.max = buf.b[:0], maxBodyOutput
	if err := t.execute(body, buf, data); err != nil {
		return nil, err
	}
	text := finishBody(buf.b, data.Link)
	if text == "" {
		return nil, t.emptyError(body, "body")
	}

	domain := s.domain
	ws := ""
	if ev.Workspace != nil {
		ws = ev.Workspace.ID
	}
	thread := headers.ThreadID(ws, ev.Task.ID, domain)
	hs := make([]Header, 0, 6)
	hs = append(hs,
		Header{headers.AutoSubmitted, headers.AutoSubmittedValue},
		Header{headers.AutoResponseSuppress, headers.AutoResponseSuppressAll},
		Header{headers.ListIDHeader, s.listID},
	)
	if s.unsub != "" {
		hs = append(hs, Header{headers.ListUnsubscribeHeader, s.unsub})
		if s.oneClick {
			hs = append(hs, Header{headers.ListUnsubscribePost, headers.OneClickValue})
		}
	}
	hs = append(hs, Header{headers.Reason, string(ev.Type)})

	return &Message{
		From:       Address{Name: headers.SanitizeHeader(s.from.Name, maxNameRunes), Email: s.from.Email},
		To:         Address{Name: headers.SanitizeHeader(ev.Recipient.Name, maxNameRunes), Email: ev.Recipient.Email},
		Subject:    subject,
		Date:       now,
		MessageID:  headers.MessageID(ev.ID, domain),
		InReplyTo:  thread,
		References: thread,
		Headers:    hs,
		Body:       text,
	}, nil
}

// body returns the body template of type typ, nil for a type that was not
// registered when the templates were loaded.
func (t *Templates) body(typ event.Type) *template.Template { return t.bodies[typ] }

// newTemplateData prepares the sanitized, bounded view of ev that
// templates see.
func newTemplateData(ev *event.Event, s *settings) *TemplateData {
	d := &TemplateData{
		Type:      string(ev.Type),
		ID:        ev.ID,
		Recipient: headers.Sanitize(ev.Recipient.Name, maxTextRunes),
		Actor:     "Someone",
		Task:      headers.Sanitize(ev.Task.Title, maxTextRunes),
		TaskID:    ev.Task.ID,
		Project:   headers.Sanitize(ev.Task.Project, maxTextRunes),
	}
	if ev.Workspace != nil {
		d.Workspace = headers.Sanitize(ev.Workspace.Name, maxTextRunes)
	}
	if ev.Actor != nil {
		if name := headers.Sanitize(ev.Actor.Name, maxTextRunes); name != "" {
			d.Actor = name
		}
	}
	// A section shows only for the types whose registry entry has it.
	def, _ := event.Lookup(ev.Type)
	if def.Has(event.SectionComment) && ev.Comment != nil {
		d.Snippet = snippet(ev.Comment.Body, s.snippetMax)
	}
	if def.Has(event.SectionChange) {
		if c := ev.Change; c != nil {
			d.FieldName = headers.Sanitize(c.Field, maxTextRunes)
			switch c.Field {
			case "planned_start":
				d.Field = "planned start"
			case "planned_end":
				d.Field = "planned end"
			default:
				d.Field = d.FieldName
			}
			d.From, d.To = dateText(c.From), dateText(c.To)
		}
	}
	if def.Has(event.SectionBlockedBy) {
		if b := ev.BlockedBy; b != nil {
			d.BlockedBy = headers.Sanitize(b.Title, maxTextRunes)
			if d.BlockedBy == "" {
				d.BlockedBy = headers.Sanitize(b.ID, maxTextRunes)
			}
		}
	}
	if s.base != "" {
		d.Link = s.base + "/tasks/" + url.PathEscape(ev.Task.ID)
		d.SettingsURL = s.base + headers.SettingsPath
	}
	return d
}

// dateText is a date of a change as text: "not set" for null.
func dateText(d *string) string {
	if d == nil {
		return "not set"
	}
	if s := headers.Sanitize(*d, 64); s != "" {
		return s
	}
	return "not set"
}

// execute runs tp into w, turning an error or a panic into a
// *TemplateError.
func (t *Templates) execute(tp *template.Template, w io.Writer, data *TemplateData) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &TemplateError{File: t.file(tp.Name()), Err: fmt.Errorf("panic: %v", r)}
		}
	}()
	if err := tp.Execute(w, data); err != nil {
		return templateError(t.files, tp.Name(), err)
	}
	return nil
}

func (t *Templates) emptyError(tp *template.Template, what string) error {
	return &TemplateError{File: t.file(tp.Name()), Err: fmt.Errorf("rendered an empty %s", what)}
}

func (t *Templates) file(name string) string {
	if f, ok := t.files[name]; ok {
		return f
	}
	return name
}

// buffer is a bounded io.Writer, pooled across calls.
type buffer struct {
	b   []byte
	max int
}

var errTooLong = errors.New("output is too long")

// Write appends p, or fails once the output would exceed the bound.
func (w *buffer) Write(p []byte) (int, error) {
	if len(w.b)+len(p) > w.max {
		return 0, errTooLong
	}
	w.b = append(w.b, p...)
	return len(p), nil
}

var bufferPool = sync.Pool{New: func() any { return &buffer{b: make([]byte, 0, 2048)} }}

func getBuffer() *buffer { return bufferPool.Get().(*buffer) }

func putBuffer(w *buffer) {
	if cap(w.b) > 64<<10 {
		return // let an oversized one go
	}
	w.b = w.b[:0]
	bufferPool.Put(w)
}
