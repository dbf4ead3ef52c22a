package compose

import (
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"net/url"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

// Sentinel errors of Compose, ComposeBatch and LoadTemplates, matched with errors.Is. An
// event that breaks the contract gives an error wrapping event.ErrInvalid.
// None of these gets better on retry.
var (
	// ErrNoAddress: the recipient has no email address (the relay records
	// skipped_no_email before composing, so this is a caller bug).
	ErrNoAddress = errors.New("compose: recipient has no email address")
	// ErrConfig: the Config cannot produce well-formed headers.
	ErrConfig = errors.New("compose: invalid config")
	// ErrBatch: ComposeBatch was given no section, an empty section or a
	// nil event, a section merging what PlanBatch would not merge, or
	// notifications for different recipients (a caller bug).
	ErrBatch = errors.New("compose: invalid batch")
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
// List-Unsubscribe (cfg.OneClick's URL, else the settings page when
// cfg.BaseURL is set), List-Unsubscribe-Post (only with a one-click URL) and
// X-Mailrelay-Reason. No header value holds a CR
// or LF, whatever the event holds, nor an invisible or bidi character
// (headers.SanitizeHeader); the transport encodes a value holding "=?".
//
// Errors: one wrapping event.ErrInvalid for an event that breaks §3,
// ErrNoAddress, ErrConfig, or a *TemplateError (ErrTemplate). All are
// permanent for that event and config.
func Compose(ev *event.Event, cfg Config, now time.Time) (*Message, error) {
	return ComposeFor(ev, cfg, now, Options{})
}

// ComposeFor is Compose with the recipient's options: their time zone
// (from notify_prefs) and, when set, a locale that replaces the event's
// recipient.locale. The mail is written in the language of the templates
// that serve the locale (de-AT → de → English, golang.org/x/text/language
// matching); times in the body are in o.TimeZone (UTC when nil).
func ComposeFor(ev *event.Event, cfg Config, now time.Time, o Options) (*Message, error) {
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
	return c.ComposeFor(ev, now, o)
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
	if t == nil || len(t.langs) == 0 {
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
	return c.ComposeFor(ev, now, Options{})
}

// ComposeFor is Compose with the recipient's options (see the function
// ComposeFor). The consumer passes the time zone of the recipient's
// preferences in o.TimeZone.
func (c *Composer) ComposeFor(ev *event.Event, now time.Time, o Options) (*Message, error) {
	if ev.Recipient.Email == "" {
		return nil, ErrNoAddress
	}
	locale := ev.Recipient.Locale
	if o.Locale != "" {
		locale = o.Locale
	}
	return c.t.forLocale(locale).compose(ev, &c.s, now, o)
}

// compose builds the message of a valid event with normalized settings.
func (t *langTemplates) compose(ev *event.Event, s *settings, now time.Time, o Options) (*Message, error) {
	if t.body(ev.Type) == nil {
		return nil, fmt.Errorf("compose: %w: type %q", event.ErrInvalid, ev.Type)
	}
	return t.composeData(ev, newTemplateData(ev, s, t, now, o.zone()), s, now)
}

// composeData builds the message of ev from its prepared data.
func (t *langTemplates) composeData(ev *event.Event, data *TemplateData, s *settings, now time.Time) (*Message, error) {
	subject, text, html, err := t.render(t.subject, t.body(ev.Type), t.html, data, &data.Subject, data.Link, s.html)
	if err != nil {
		return nil, err
	}
	ws := ""
	if ev.Workspace != nil {
		ws = ev.Workspace.ID
	}
	thread := headers.ThreadID(ws, ev.Task.ID, s.domain)
	return &Message{
		From:       s.fromHeader(),
		To:         Address{Name: headers.SanitizeHeader(ev.Recipient.Name, maxNameRunes), Email: ev.Recipient.Email},
		Subject:    subject,
		Date:       now,
		MessageID:  headers.MessageID(ev.ID, s.domain),
		InReplyTo:  thread,
		References: thread,
		Headers:    s.headers(data.UnsubscribeURL, string(ev.Type)),
		Body:       text,
		HTML:       html,
	}, nil
}

// render executes the subject, body and (with withHTML) HTML templates on
// data, and enforces the rules of the contract on what they wrote (link is
// the deep link finishBody keeps whole). subject points into data: the
// HTML template sees the finished subject there.
func (t *langTemplates) render(subjectTpl, bodyTpl *template.Template, htmlTpl *htmltemplate.Template, data any, subject *string, link string, withHTML bool) (subj, text, html string, err error) {
	buf := getBuffer()
	defer putBuffer(buf)
	buf.max = maxSubjectOutput
	if err := t.execute(subjectTpl, buf, data); err != nil {
		return "", "", "", err
	}
	subj = headers.SanitizeHeader(string(buf.b), MaxSubject)
	if subj == "" {
		return "", "", "", t.emptyError(subjectTpl, "subject")
	}
	buf.b, buf.max = buf.b[:0], maxBodyOutput
	if err := t.execute(bodyTpl, buf, data); err != nil {
		return "", "", "", err
	}
	text = finishBody(buf.b, link)
	if text == "" {
		return "", "", "", t.emptyError(bodyTpl, "body")
	}
	if withHTML {
		*subject = subj
		buf.b = buf.b[:0]
		if err := t.execute(htmlTpl, buf, data); err != nil {
			return "", "", "", err
		}
		html = string(buf.b)
		if strings.TrimSpace(html) == "" {
			return "", "", "", &TemplateError{File: t.file(htmlTpl.Name()), Err: errors.New("rendered an empty HTML part")}
		}
	}
	return subj, text, html, nil
}

// fromHeader is the From of every mail.
func (s *settings) fromHeader() Address {
	return Address{Name: headers.SanitizeHeader(s.from.Name, maxNameRunes), Email: s.from.Email}
}

// headers returns, in order, Auto-Submitted, X-Auto-Response-Suppress,
// List-Id, List-Unsubscribe (oneClick when set, else the settings page),
// List-Unsubscribe-Post (with oneClick only) and the reason header.
func (s *settings) headers(oneClick, reason string) []Header {
	hs := make([]Header, 0, 6)
	hs = append(hs,
		Header{headers.AutoSubmitted, headers.AutoSubmittedValue},
		Header{headers.AutoResponseSuppress, headers.AutoResponseSuppressAll},
		Header{headers.ListIDHeader, s.listID},
	)
	// One-click (contract §9.4): the signed https URL with
	// List-Unsubscribe-Post; otherwise the settings page without it.
	if v, ok := headers.OneClickUnsubscribe(oneClick); ok {
		hs = append(hs, Header{headers.ListUnsubscribeHeader, v},
			Header{headers.ListUnsubscribePost, headers.OneClickValue})
	} else if s.unsub != "" {
		hs = append(hs, Header{headers.ListUnsubscribeHeader, s.unsub})
	}
	return append(hs, Header{headers.Reason, reason})
}

// body returns the body template of type typ, nil for a type that was not
// registered when the templates were loaded.
func (t *langTemplates) body(typ event.Type) *template.Template { return t.bodies[typ] }

// newTemplateData prepares the sanitized, bounded view of ev that
// templates see, in the language of t, sent at now to a recipient in tz.
func newTemplateData(ev *event.Event, s *settings, t *langTemplates, now time.Time, tz *time.Location) *TemplateData {
	lang := t.lang
	d := &TemplateData{
		Type:       string(ev.Type),
		ID:         ev.ID,
		Recipient:  headers.Sanitize(ev.Recipient.Name, maxTextRunes),
		Actor:      text(lang, KeySomeone),
		ActorCount: 1,
		Task:       headers.Sanitize(ev.Task.Title, maxTextRunes),
		TaskID:     ev.Task.ID,
		Project:    headers.Sanitize(ev.Task.Project, maxTextRunes),
		Label:      headers.Sanitize(typeLabel(lang, ev.Type), maxTextRunes),
		Lang:       t.name,
		Product:    s.product,
	}
	if ev.Workspace != nil {
		d.Workspace = headers.Sanitize(ev.Workspace.Name, maxTextRunes)
	}
	if ev.Actor != nil {
		if name := headers.Sanitize(ev.Actor.Name, maxTextRunes); name != "" {
			d.Actor = name
		}
	}
	if !ev.OccurredAt.IsZero() && now.Sub(ev.OccurredAt) > DelayNotice {
		d.When = whenText(lang, ev.OccurredAt.In(tz))
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
				d.Field = text(lang, KeyPlannedStart)
			case "planned_end":
				d.Field = text(lang, KeyPlannedEnd)
			default:
				d.Field = d.FieldName
			}
			d.From, d.To = dateText(lang, c.From, tz), dateText(lang, c.To, tz)
		}
	}
	if def.Has(event.SectionBlockedBy) {
		if b := ev.BlockedBy; b != nil {
			d.BlockedBy = headers.Sanitize(b.Title, maxTextRunes)
			if d.BlockedBy == "" {
				d.BlockedBy = headers.Sanitize(b.ID, maxTextRunes)
			}
			if s.base != "" && b.ID != "" {
				d.BlockedByLink = s.base + "/tasks/" + url.PathEscape(b.ID)
			}
		}
	}
	if s.base != "" {
		d.Link = s.base + "/tasks/" + url.PathEscape(ev.Task.ID)
		d.SettingsURL = s.base + headers.SettingsPath
	}
	if s.oneClick != nil { // one-click unsubscribe (contract §9.4): an https URL or none
		if u := s.oneClick.OneClickURL(ev.Recipient.ID, ev.Type, ev.Recipient.Locale); u != "" {
			if _, ok := headers.OneClickUnsubscribe(u); ok {
				d.UnsubscribeURL = u
			}
		}
	}
	return d
}

// executor is a text/template or html/template template.
type executor interface {
	Name() string
	Execute(w io.Writer, data any) error
}

// execute runs tp into w, turning an error or a panic into a
// *TemplateError.
func (t *langTemplates) execute(tp executor, w io.Writer, data any) (err error) {
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

func (t *langTemplates) emptyError(tp *template.Template, what string) error {
	return &TemplateError{File: t.file(tp.Name()), Err: fmt.Errorf("rendered an empty %s", what)}
}

func (t *langTemplates) file(name string) string {
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
