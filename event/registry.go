package event

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// builtin is the registry's data: the contract's notification types, in
// the contract's order. Adding a type is one entry here, its body template
// (compose/templates/NAME.tmpl) and its name in event.schema.json's enum
// (TestSchemaTypesAreRegistry keeps the two in step).
var builtin = []Def{
	{Type: TaskAssigned, Label: "tasks assigned to you"},
	{Type: TaskDateChanged, Label: "changes to planned dates", Requires: []Section{SectionChange}},
	{Type: TaskComment, Label: "comments on your tasks", Requires: []Section{SectionComment}},
	{Type: TaskBlocked, Label: "tasks that become blocked", Optional: []Section{SectionBlockedBy}},
	{Type: Mention, Label: "mentions of you", Requires: []Section{SectionComment}},
}

// Types lists the contract's notification types, in the contract's order
// (the built-in entries of the registry). Types added with Register are not
// in it; Defs lists every type known now.
var Types = func() []Type {
	ts := make([]Type, len(builtin))
	for i, d := range builtin {
		ts[i] = d.Type
	}
	return ts
}()

// Section is an optional part of an event that belongs to some types only.
// Its value is the part's JSON name.
type Section string

// The sections a type may require or carry.
const (
	// SectionComment is "comment", with a body that has a visible
	// character (HasVisible).
	SectionComment Section = "comment"
	// SectionChange is "change": a field (planned_start or planned_end)
	// and its old and new dates, each a date or null.
	SectionChange Section = "change"
	// SectionBlockedBy is "blocked_by", the task that blocks.
	SectionBlockedBy Section = "blocked_by"
)

// Def is everything the relay knows about one notification type, so that
// no other code lists types by hand.
type Def struct {
	// Type is the name, e.g. "task.comment": the event's "type", the
	// subject after SubjectPrefix and the key in notify_prefs' "email".
	Type Type
	// Label says in a few words what the recipient gets mail about, e.g.
	// "comments on your tasks".
	Label string
	// Requires lists the sections an event of this type must carry;
	// Validate checks them.
	Requires []Section
	// Optional lists the sections an event of this type may carry; mails
	// show them when present. Other sections are ignored for this type.
	Optional []Section
	// Template is the file name of the body template; "" means Type
	// followed by ".tmpl".
	Template string
}

// Subject is the NATS subject events of this type are published on.
func (d Def) Subject() string { return d.Type.Subject() }

// PrefKey is the key of this type in a notify_prefs value's "email" object:
// the type name (§4).
func (d Def) PrefKey() string { return string(d.Type) }

// Has reports whether events of this type require or may carry s.
func (d Def) Has(s Section) bool {
	return slices.Contains(d.Requires, s) || slices.Contains(d.Optional, s)
}

// check applies the rules of the sections the type requires, reporting
// each problem with add.
func (d *Def) check(e *Event, add func(path, format string, args ...any)) {
	for _, s := range d.Requires {
		s.check(e, add)
	}
}

// check reports an event that lacks s, or carries it broken.
func (s Section) check(e *Event, add func(path, format string, args ...any)) {
	switch s {
	case SectionComment:
		if e.Comment == nil {
			add("comment.body", "is required for %s", e.Type)
		} else if !HasVisible(e.Comment.Body) {
			add("comment.body", "%s", requiredText(e.Comment.Body, " for "+string(e.Type)))
		}
	case SectionChange:
		if e.Change == nil {
			add("change", "is required for %s", e.Type)
			return
		}
		if e.Change.Field != "planned_start" && e.Change.Field != "planned_end" {
			add("change.field", "must be planned_start or planned_end")
		}
		for _, f := range []struct {
			name string
			d    *string
		}{{"change.from", e.Change.From}, {"change.to", e.Change.To}} {
			if f.d != nil && !validDate(*f.d) {
				add(f.name, "%q is not a date (YYYY-MM-DD), an RFC 3339 date-time or null", truncate(*f.d, 64))
			}
		}
	case SectionBlockedBy:
		if e.BlockedBy == nil {
			add("blocked_by", "is required for %s", e.Type)
		}
	}
}

func (s Section) known() bool {
	return s == SectionComment || s == SectionChange || s == SectionBlockedBy
}

// registry is one immutable generation of the registered types. Readers
// load it with one atomic load and no lock; Register replaces it whole.
type registry struct {
	defs   []Def
	byType map[Type]*Def
}

func newRegistry(defs []Def) *registry {
	r := &registry{defs: defs, byType: make(map[Type]*Def, len(defs))}
	for i := range r.defs {
		r.byType[r.defs[i].Type] = &r.defs[i]
	}
	return r
}

var (
	current atomic.Pointer[registry]
	// writeMu orders Register and unregister (copy-on-write).
	writeMu sync.Mutex
)

func init() {
	defs := make([]Def, len(builtin))
	for i, d := range builtin {
		defs[i] = normalize(d)
	}
	current.Store(newRegistry(defs))
}

// lookup returns the registered definition of t, nil when t is unknown.
func lookup(t Type) *Def { return current.Load().byType[t] }

// Lookup returns the definition of t and whether t is registered. Its
// slices are the registry's own: read them, do not change them.
func Lookup(t Type) (Def, bool) {
	if d := lookup(t); d != nil {
		return *d, true
	}
	return Def{}, false
}

// Defs lists every registered type: the contract's, in its order, then
// those added with Register, in the order they were added. As for Lookup,
// the slices inside are shared.
func Defs() []Def { return slices.Clone(current.Load().defs) }

// typeName is what a type name may look like: NATS subject tokens that need
// no quoting, and a safe template file name.
var typeName = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)*$`)

// ErrRegister is wrapped by the errors of Register.
var ErrRegister = errors.New("event: cannot register type")

// Register adds a notification type beyond the contract's, for tests and
// for a program that embeds the relay and sets it up before it starts. The
// type also needs a body template (compose.LoadTemplates). unregister
// removes it again; calling it more than once is harmless.
//
// The error wraps ErrRegister: the name is empty, not lower-case
// dot-separated words, or already registered, or a section is unknown.
func Register(d Def) (unregister func(), err error) {
	if !typeName.MatchString(string(d.Type)) {
		return nil, fmt.Errorf("%w %q: the name must be lower-case words separated by dots", ErrRegister, d.Type)
	}
	if strings.TrimSpace(d.Label) == "" {
		return nil, fmt.Errorf("%w %q: a label is required", ErrRegister, d.Type)
	}
	for _, s := range slices.Concat(d.Requires, d.Optional) {
		if !s.known() {
			return nil, fmt.Errorf("%w %q: unknown section %q", ErrRegister, d.Type, s)
		}
	}
	if d.Template != "" && (!strings.HasSuffix(d.Template, ".tmpl") || strings.ContainsAny(d.Template, `/\`)) {
		return nil, fmt.Errorf("%w %q: template %q must be a file name ending in .tmpl", ErrRegister, d.Type, d.Template)
	}
	d = normalize(d)

	writeMu.Lock()
	defer writeMu.Unlock()
	old := current.Load()
	if old.byType[d.Type] != nil {
		return nil, fmt.Errorf("%w %q: already registered", ErrRegister, d.Type)
	}
	current.Store(newRegistry(append(slices.Clone(old.defs), d)))
	var once sync.Once
	return func() { once.Do(func() { remove(d.Type) }) }, nil
}

func remove(t Type) {
	writeMu.Lock()
	defer writeMu.Unlock()
	old := current.Load()
	current.Store(newRegistry(slices.DeleteFunc(slices.Clone(old.defs), func(d Def) bool { return d.Type == t })))
}

// normalize fills the derived defaults and copies the slices, so that the
// caller cannot change a registered definition afterwards.
func normalize(d Def) Def {
	if d.Template == "" {
		d.Template = string(d.Type) + ".tmpl"
	}
	d.Requires = slices.Clone(d.Requires)
	d.Optional = slices.Clone(d.Optional)
	return d
}
