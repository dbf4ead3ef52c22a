package compose

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

// Section is one part of a batch mail: one notification, or several
// task.date_changed notifications of one task and one change.field merged.
type Section struct{ Events []*event.Event }

// batchSnippetMax bounds the snippet of a section of a batch mail, in runes
// (Config.SnippetMax when that is smaller): a batch is read at a glance.
const batchSnippetMax = 200

// BatchData is what the batch templates (BatchSubjectTemplate,
// BatchBodyTemplate, BatchHTMLTemplate) are executed with. Its TemplateData
// describes the mail as a whole, so greeting.tmpl and footer.tmpl serve a
// batch as they serve a single mail: Type is the type every section has,
// else "batch"; ID the first notification's id; Workspace the workspace
// name every section shares, else ""; Label the labels of every type in
// the batch as a list ("comments on your tasks and mentions of you");
// UnsubscribeURL the one-click URL only when every section has the same
// type; Recipient, Lang, Product, SettingsURL and Subject (HTML only) as
// in a single mail. Its other fields are "".
type BatchData struct {
	TemplateData
	// Count is the number of sections (at least 2); More is Count-1.
	Count, More int
	// Sections are the sections, in the order of the mail.
	Sections []BatchSection
}

// BatchSection is one section of a batch mail: the TemplateData of its
// notification, with When always set and the snippet shorter (at most 200
// characters). Workspace is "" when BatchData names it for the whole mail.
// A merged date change reads as its last notification with From and When
// of the first one, and Actor naming everyone who changed it.
type BatchSection struct {
	TemplateData
	// N is the number of the section, from 1.
	N int
	// Headline is what happened, in one line (HeadlineTemplate).
	Headline string
}

// PlanBatch orders evs by occurred_at (ties: by id, stable), merges the
// task.date_changed events of the same task id and the same change.field
// into one section placed where the first of them is, reading "from" the
// first one's change.from "to" the last one's change.to; a merged change that
// ends where it started (first from == last to, both null counts as equal)
// is left out: all its events are returned in unchanged. Duplicated event
// ids (the same notification twice) keep only the first. Pure.
//
// Tasks are told apart by workspace id and task id, as threads are. A
// single date change is never left out, even one whose from equals its to:
// only a merge can cancel out. Nil events are skipped. Neither evs nor its
// events are changed; unchanged is in the order of occurrence.
func PlanBatch(evs []*event.Event) (sections []Section, unchanged []*event.Event) {
	list := make([]*event.Event, 0, len(evs))
	seen := make(map[string]bool, len(evs))
	for _, ev := range evs {
		if ev == nil || seen[ev.ID] {
			continue
		}
		seen[ev.ID] = true
		list = append(list, ev)
	}
	slices.SortStableFunc(list, func(a, b *event.Event) int {
		if c := a.OccurredAt.Compare(b.OccurredAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})

	at := make(map[mergeKey]int) // the section of each merged change
	for _, ev := range list {
		k, ok := keyOf(ev)
		if ok {
			if i, found := at[k]; found {
				sections[i].Events = append(sections[i].Events, ev)
				continue
			}
			at[k] = len(sections)
		}
		sections = append(sections, Section{Events: []*event.Event{ev}})
	}

	left := make(map[*event.Event]bool)
	kept := sections[:0]
	for _, sec := range sections {
		if n := len(sec.Events); n > 1 && sameDate(sec.Events[0].Change.From, sec.Events[n-1].Change.To) {
			for _, ev := range sec.Events {
				left[ev] = true
			}
			continue
		}
		kept = append(kept, sec)
	}
	if len(left) > 0 {
		for _, ev := range list {
			if left[ev] {
				unchanged = append(unchanged, ev)
			}
		}
	}
	if len(kept) == 0 {
		kept = nil
	}
	return kept, unchanged
}

// mergeKey is what the date changes merged into one section share.
type mergeKey struct{ workspace, task, field string }

// keyOf returns the merge key of a date change; ok is false for any other
// event.
func keyOf(ev *event.Event) (k mergeKey, ok bool) {
	if ev.Type != event.TaskDateChanged || ev.Change == nil {
		return mergeKey{}, false
	}
	if ev.Workspace != nil {
		k.workspace = ev.Workspace.ID
	}
	k.task, k.field = ev.Task.ID, ev.Change.Field
	return k, true
}

// sameDate reports whether two dates of a change are the same: both not
// set (null or blank), the same text, or date-times of the same instant.
func sameDate(a, b *string) bool {
	x, y := "", ""
	if a != nil {
		x = strings.TrimSpace(*a)
	}
	if b != nil {
		y = strings.TrimSpace(*b)
	}
	if x == y {
		return true
	}
	tx, errX := time.Parse(time.RFC3339Nano, strings.ToUpper(x))
	ty, errY := time.Parse(time.RFC3339Nano, strings.ToUpper(y))
	return errX == nil && errY == nil && tx.Equal(ty)
}

// ComposeBatch builds one mail carrying sections (at least one; error
// otherwise), in their order, sent at now; PlanBatch makes the sections.
// The events must be valid (as for Composer.ComposeFor) and for one
// recipient; the mail goes to the first one's address, in the language of
// o.Locale or else the first one's locale.
//
// One section of one event gives the same message as ComposeFor. One
// merged date change reads as a single date-change mail from the first
// change.from to the last change.to. Several sections give one mail with
// a short section each (BatchBodyTemplate), whose subject says how many
// there are and names the first.
//
// The Message-ID of a mail of several notifications is derived from their
// ids (the same notifications always give the same one, never that of a
// single mail). In-Reply-To and References thread the mail with its task
// when every section is about the same task (workspace id and task id),
// else they are "". List-Unsubscribe carries the one-click URL, with
// List-Unsubscribe-Post, only when every notification has the same type
// (the URL turns off one type); else the settings page, without -Post.
// The reason header is that type, else "batch".
//
// Errors: ErrBatch (no section, an empty section, a nil event, a section of
// several events that is not one task's date changes of one field, or
// notifications for different recipients), ErrNoAddress, one wrapping
// event.ErrInvalid for a type that has no template, or a *TemplateError.
func (c *Composer) ComposeBatch(sections []Section, now time.Time, o Options) (*Message, error) {
	first, err := checkBatch(sections)
	if err != nil {
		return nil, err
	}
	if len(sections) == 1 && len(sections[0].Events) == 1 {
		return c.ComposeFor(first, now, o)
	}
	locale := first.Recipient.Locale
	if o.Locale != "" {
		locale = o.Locale
	}
	return c.t.forLocale(locale).composeBatch(sections, &c.s, now, o)
}

// checkBatch checks the shape of sections and returns the first event.
func checkBatch(sections []Section) (*event.Event, error) {
	if len(sections) == 0 {
		return nil, fmt.Errorf("%w: no sections", ErrBatch)
	}
	var first *event.Event
	for i, sec := range sections {
		if len(sec.Events) == 0 {
			return nil, fmt.Errorf("%w: section %d is empty", ErrBatch, i+1)
		}
		if slices.Contains(sec.Events, nil) {
			return nil, fmt.Errorf("%w: section %d holds a nil event", ErrBatch, i+1)
		}
		if first == nil {
			first = sec.Events[0]
		}
		k, ok := keyOf(sec.Events[0])
		for _, ev := range sec.Events {
			if ev.Recipient.ID != first.Recipient.ID {
				return nil, fmt.Errorf("%w: notifications %s and %s are for different recipients", ErrBatch, first.ID, ev.ID)
			}
			if ev.Recipient.Email == "" {
				return nil, ErrNoAddress
			}
			if len(sec.Events) > 1 {
				if k2, ok2 := keyOf(ev); !ok || !ok2 || k2 != k {
					return nil, fmt.Errorf("%w: section %d merges notifications that are not date changes of one task and field", ErrBatch, i+1)
				}
			}
		}
	}
	return first, nil
}

// composeBatch builds the mail of checked sections, in the language of t.
func (t *langTemplates) composeBatch(sections []Section, s *settings, now time.Time, o Options) (*Message, error) {
	tz := o.zone()
	first := sections[0].Events[0]
	evs := make([]*event.Event, len(sections)) // what each section reads as
	for i, sec := range sections {
		evs[i] = sectionEvent(sec)
		if t.body(evs[i].Type) == nil {
			return nil, fmt.Errorf("compose: %w: type %q", event.ErrInvalid, evs[i].Type)
		}
	}
	id := batchMessageID(sections, s.domain)

	if len(sections) == 1 { // one merged date change: a single mail
		data := newTemplateData(evs[0], s, t, now, tz)
		data.Actor, data.ActorCount = t.actors(sections[0].Events)
		m, err := t.composeData(evs[0], data, s, now)
		if err != nil {
			return nil, err
		}
		m.MessageID = id
		return m, nil
	}

	short := *s
	short.snippetMax = min(s.snippetMax, batchSnippetMax)
	d := &BatchData{Count: len(sections), More: len(sections) - 1, Sections: make([]BatchSection, len(sections))}
	buf := getBuffer()
	defer putBuffer(buf)
	var labels []string
	sameType, oneTask, oneWorkspace := true, true, true
	for i, ev := range evs {
		sd := newTemplateData(ev, &short, t, now, tz)
		sd.When = whenText(t.lang, ev.OccurredAt.In(tz))
		if len(sections[i].Events) > 1 {
			sd.Actor, sd.ActorCount = t.actors(sections[i].Events)
		}
		buf.b, buf.max = buf.b[:0], maxSubjectOutput
		if err := t.execute(t.headline, buf, sd); err != nil {
			return nil, err
		}
		headline := headers.Sanitize(string(buf.b), MaxSubject)
		if headline == "" {
			return nil, t.emptyError(t.headline, "headline")
		}
		d.Sections[i] = BatchSection{TemplateData: *sd, N: i + 1, Headline: headline}
		if !slices.Contains(labels, sd.Label) {
			labels = append(labels, sd.Label)
		}
		sameType = sameType && ev.Type == evs[0].Type
		oneTask = oneTask && workspaceID(ev) == workspaceID(evs[0]) && ev.Task.ID == evs[0].Task.ID
		oneWorkspace = oneWorkspace && ev.Workspace != nil && workspaceID(ev) == workspaceID(evs[0]) &&
			sd.Workspace == d.Sections[0].Workspace
	}

	whole := &d.TemplateData
	whole.Type, whole.ID = "batch", first.ID
	whole.Recipient = headers.Sanitize(first.Recipient.Name, maxTextRunes)
	whole.Label = labels[0]
	if len(labels) > 1 {
		for i, l := range labels {
			labels[i] = fmt.Sprintf(text(t.lang, KeyListLabel), l)
		}
		whole.Label = joinList(t.lang, labels)
	}
	whole.Lang, whole.Product = t.name, s.product
	if s.base != "" {
		whole.SettingsURL = s.base + headers.SettingsPath
	}
	if sameType {
		whole.Type = string(evs[0].Type)
		whole.UnsubscribeURL = d.Sections[0].UnsubscribeURL
	}
	if oneWorkspace && d.Sections[0].Workspace != "" {
		whole.Workspace = d.Sections[0].Workspace
		for i := range d.Sections {
			d.Sections[i].Workspace = ""
		}
	}

	subject, text, html, err := t.render(t.batchSubject, t.batchBody, t.batchHTML, d, &whole.Subject, "", s.html)
	if err != nil {
		return nil, err
	}
	var thread string
	if oneTask {
		thread = headers.ThreadID(workspaceID(evs[0]), evs[0].Task.ID, s.domain)
	}
	return &Message{
		From:       s.fromHeader(),
		To:         Address{Name: headers.SanitizeHeader(first.Recipient.Name, maxNameRunes), Email: first.Recipient.Email},
		Subject:    subject,
		Date:       now,
		MessageID:  id,
		InReplyTo:  thread,
		References: thread,
		Headers:    s.headers(whole.UnsubscribeURL, whole.Type),
		Body:       text,
		HTML:       html,
	}, nil
}

// sectionEvent is the event a section reads as: its one event or, for a
// merged date change, a copy of the last one changing from the first one's
// change.from, addressed and dated as the first one (where the section
// stands in the order).
func sectionEvent(sec Section) *event.Event {
	evs := sec.Events
	if len(evs) == 1 {
		return evs[0]
	}
	first, last := evs[0], evs[len(evs)-1]
	ev := *last
	ev.Recipient, ev.OccurredAt = first.Recipient, first.OccurredAt
	ev.Change = &event.Change{Field: last.Change.Field, From: first.Change.From, To: last.Change.To}
	return &ev
}

func workspaceID(ev *event.Event) string {
	if ev.Workspace == nil {
		return ""
	}
	return ev.Workspace.ID
}

// actors names who acted in evs, each once, in order of their first
// action ("Bob Stone", "Bob Stone and Carol Diaz"), and how many they are.
func (t *langTemplates) actors(evs []*event.Event) (names string, n int) {
	var list []string
	for _, ev := range evs {
		name := ""
		if ev.Actor != nil {
			name = headers.Sanitize(ev.Actor.Name, maxTextRunes)
		}
		if name == "" {
			name = text(t.lang, KeySomeone)
		}
		if !slices.Contains(list, name) {
			list = append(list, name)
		}
	}
	return headers.Sanitize(joinList(t.lang, list), maxTextRunes), len(list)
}

// joinList joins items as a list in the words of lang: "a", "a and b",
// "a, b and c".
func joinList(lang string, items []string) string {
	if len(items) <= 1 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " " + text(lang, KeyAnd) + " " + items[len(items)-1]
}

// batchMessageID is the Message-ID of a mail of several notifications: that
// of the id "batch.FIRST.HASH", FIRST being the first notification's id and
// HASH 16 hex digits of the SHA-256 of every id carried, sorted. A
// notification id holds no ".", so no single mail has it; the same
// notifications always get the same one.
func batchMessageID(sections []Section, domain string) string {
	var ids []string
	for _, sec := range sections {
		for _, ev := range sec.Events {
			ids = append(ids, ev.ID)
		}
	}
	slices.Sort(ids)
	h := sha256.New()
	for _, id := range slices.Compact(ids) {
		h.Write([]byte(id))
		h.Write([]byte{0})
	}
	sum := h.Sum(nil)
	return headers.MessageID("batch."+sections[0].Events[0].ID+"."+hex.EncodeToString(sum[:8]), domain)
}
