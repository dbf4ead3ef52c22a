package event_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go/jetstream"
)

// register adds d for the duration of the test.
func register(t *testing.T, d event.Def) {
	t.Helper()
	unregister, err := event.Register(d)
	if err != nil {
		t.Fatalf("Register(%q): %v", d.Type, err)
	}
	t.Cleanup(unregister)
}

func defTypes(defs []event.Def) []event.Type {
	ts := make([]event.Type, len(defs))
	for i, d := range defs {
		ts[i] = d.Type
	}
	return ts
}

// TestRegistryBuiltin: the registry holds the contract's five types, in its
// order, with the derived subject, preference key and template.
func TestRegistryBuiltin(t *testing.T) {
	want := []event.Type{event.TaskAssigned, event.TaskDateChanged, event.TaskComment, event.TaskBlocked, event.Mention}
	if !slices.Equal(event.Types, want) {
		t.Fatalf("Types = %q, want %q", event.Types, want)
	}
	if got := defTypes(event.Defs()); !slices.Equal(got, want) {
		t.Fatalf("Defs = %q, want %q", got, want)
	}
	for _, d := range event.Defs() {
		if d.Subject() != "notify."+string(d.Type) || d.Subject() != d.Type.Subject() {
			t.Errorf("%s: Subject = %q", d.Type, d.Subject())
		}
		if d.PrefKey() != string(d.Type) {
			t.Errorf("%s: PrefKey = %q", d.Type, d.PrefKey())
		}
		if d.Template != string(d.Type)+".tmpl" {
			t.Errorf("%s: Template = %q", d.Type, d.Template)
		}
		if d.Label == "" {
			t.Errorf("%s: no label", d.Type)
		}
		if got, ok := event.Lookup(d.Type); !ok || got.Type != d.Type || !d.Type.Valid() {
			t.Errorf("%s: Lookup = %v, %v; Valid = %v", d.Type, got, ok, d.Type.Valid())
		}
	}
	if _, ok := event.Lookup("task.deleted"); ok || event.Type("task.deleted").Valid() {
		t.Error("an unknown type is registered")
	}
}

func TestRegisterRejects(t *testing.T) {
	cases := []struct {
		name string
		def  event.Def
		want string
	}{
		{"empty name", event.Def{Label: "x"}, "lower-case words"},
		{"upper case", event.Def{Type: "Task.Moved", Label: "x"}, "lower-case words"},
		{"wildcard", event.Def{Type: "task.*", Label: "x"}, "lower-case words"},
		{"empty token", event.Def{Type: "task..moved", Label: "x"}, "lower-case words"},
		{"no label", event.Def{Type: "task.moved"}, "label"},
		{"contract type again", event.Def{Type: event.Mention, Label: "x"}, "already registered"},
		{"unknown section", event.Def{Type: "task.moved", Label: "x", Requires: []event.Section{"attachment"}}, "unknown section"},
		{"template path", event.Def{Type: "task.moved", Label: "x", Template: "../moved.tmpl"}, "file name"},
		{"template suffix", event.Def{Type: "task.moved", Label: "x", Template: "moved.txt"}, "file name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			unregister, err := event.Register(tc.def)
			if err == nil {
				unregister()
				t.Fatal("Register succeeded")
			}
			if !errors.Is(err, event.ErrRegister) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want ErrRegister containing %q", err, tc.want)
			}
		})
	}
	if got := defTypes(event.Defs()); !slices.Equal(got, event.Types) {
		t.Errorf("a refused registration left %q", got)
	}
}

// TestRegisterUnregister: a registered type is valid, listed after the
// contract's, has its defaults filled and is gone after unregister; the
// contract's list does not change.
func TestRegisterUnregister(t *testing.T) {
	requires := []event.Section{event.SectionComment}
	unregister, err := event.Register(event.Def{Type: "task.reaction", Label: "reactions", Requires: requires})
	if err != nil {
		t.Fatal(err)
	}
	requires[0] = event.SectionChange // the registry keeps its own copy
	d, ok := event.Lookup("task.reaction")
	if !ok || d.Template != "task.reaction.tmpl" || !slices.Equal(d.Requires, []event.Section{event.SectionComment}) {
		t.Fatalf("Lookup = %+v, %v", d, ok)
	}
	if got, want := defTypes(event.Defs()), append(slices.Clone(event.Types), "task.reaction"); !slices.Equal(got, want) {
		t.Errorf("Defs = %q, want %q", got, want)
	}
	if len(event.Types) != 5 {
		t.Errorf("Types changed: %q", event.Types)
	}
	unregister()
	unregister() // harmless
	if event.Type("task.reaction").Valid() {
		t.Error("still valid after unregister")
	}
	if got := defTypes(event.Defs()); !slices.Equal(got, event.Types) {
		t.Errorf("Defs after unregister = %q", got)
	}
}

// TestValidateUsesRegistry: the type-specific rules come from the entry's
// sections, for a registered type as for the contract's.
func TestValidateUsesRegistry(t *testing.T) {
	register(t, event.Def{Type: "task.unblocked", Label: "tasks no longer blocked",
		Requires: []event.Section{event.SectionBlockedBy, event.SectionChange}})
	base := func() *event.Event {
		return &event.Event{ID: "n1", Type: "task.unblocked", OccurredAt: time.Now(),
			Recipient: event.Recipient{ID: "u1"}, Task: event.Task{ID: "t1", Title: "T"}}
	}
	to := "2026-12-01"
	cases := []struct {
		name string
		edit func(*event.Event)
		want string // "" = valid
	}{
		{"no blocked_by", func(*event.Event) {}, "blocked_by: is required for task.unblocked"},
		{"no change", func(e *event.Event) { e.BlockedBy = &event.TaskRef{ID: "t0"} }, "change: is required for task.unblocked"},
		{"bad change", func(e *event.Event) {
			e.BlockedBy = &event.TaskRef{ID: "t0"}
			e.Change = &event.Change{Field: "title"}
		}, "change.field"},
		{"valid", func(e *event.Event) {
			e.BlockedBy = &event.TaskRef{ID: "t0"}
			e.Change = &event.Change{Field: "planned_end", To: &to}
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := base()
			tc.edit(e)
			err := e.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, event.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

func TestCheckID(t *testing.T) {
	if err := event.CheckID("user id", "u-1_A"); err != nil {
		t.Errorf("valid id: %v", err)
	}
	for _, id := range []string{"", "a b", strings.Repeat("a", 129), "a.b"} {
		err := event.CheckID(`user id "x"`, id)
		if err == nil || err.Error() != `user id "x" must match ^[A-Za-z0-9_-]{1,128}$` {
			t.Errorf("CheckID(%q) = %v", id, err)
		}
		if errors.Is(err, event.ErrInvalid) {
			t.Errorf("CheckID(%q) wraps ErrInvalid", id)
		}
	}
}

// TestRegistryConcurrentReaders: readers need no lock while types come and
// go (run with -race).
func TestRegistryConcurrentReaders(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if !event.Mention.Valid() {
					t.Error("mention not valid")
					return
				}
				event.Type("task.flicker").Valid()
				_ = event.Defs()
			}
		})
	}
	for range 200 {
		unregister, err := event.Register(event.Def{Type: "task.flicker", Label: "x"})
		if err != nil {
			t.Error(err)
			break
		}
		unregister()
	}
	cancel()
	wg.Wait()
}

// TestSchemaTypesAreRegistry: event.schema.json cannot drift from the
// registry: its type enum is the contract's types, its conditional
// requirements are the entries' required sections, and its id patterns are
// IDPattern.
func TestSchemaTypesAreRegistry(t *testing.T) {
	b, err := os.ReadFile("event.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	type cond struct {
		If struct {
			Properties struct {
				Type struct {
					Enum  []event.Type `json:"enum"`
					Const event.Type   `json:"const"`
				} `json:"type"`
			} `json:"properties"`
		} `json:"if"`
		Then struct {
			Required []event.Section `json:"required"`
		} `json:"then"`
	}
	// An id is a string matching the pattern, or an integer (§9.1).
	type idSchema struct {
		AnyOf []struct {
			Type    string `json:"type"`
			Pattern string `json:"pattern"`
		} `json:"anyOf"`
	}
	var s struct {
		Properties struct {
			ID        idSchema                    `json:"id"`
			Type      struct{ Enum []event.Type } `json:"type"`
			Recipient struct {
				Properties struct {
					ID idSchema `json:"id"`
				} `json:"properties"`
			} `json:"recipient"`
		} `json:"properties"`
		AllOf []cond `json:"allOf"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("schema: %v", err)
	}
	if !slices.Equal(s.Properties.Type.Enum, event.Types) {
		t.Errorf("schema type enum = %q, registry = %q", s.Properties.Type.Enum, event.Types)
	}
	pattern := func(s idSchema) string { // of the string branch
		for _, b := range s.AnyOf {
			if b.Type == "string" {
				return b.Pattern
			}
		}
		return ""
	}
	if pattern(s.Properties.ID) != event.IDPattern || pattern(s.Properties.Recipient.Properties.ID) != event.IDPattern {
		t.Errorf("schema id patterns %q, %q; want %q", pattern(s.Properties.ID), pattern(s.Properties.Recipient.Properties.ID), event.IDPattern)
	}

	// Each type's required sections, as the schema says and as the registry does.
	got := map[event.Type][]event.Section{}
	for _, c := range s.AllOf {
		types := c.If.Properties.Type.Enum
		if c.If.Properties.Type.Const != "" {
			types = append(types, c.If.Properties.Type.Const)
		}
		for _, typ := range types {
			got[typ] = append(got[typ], c.Then.Required...)
		}
	}
	for _, d := range event.Defs() {
		if !slices.Equal(got[d.Type], d.Requires) {
			t.Errorf("%s: schema requires %q, registry %q", d.Type, got[d.Type], d.Requires)
		}
		delete(got, d.Type)
	}
	for typ := range got {
		t.Errorf("schema has requirements for unknown type %q", typ)
	}
}

// reactionTemplate is the body of the test's sixth type.
const reactionTemplate = `{{template "greeting.tmpl" .}}

{{.Actor}} reacted to your comment:

{{quote .Snippet}}

{{template "details.tmpl" .}}

{{template "link.tmpl" .}}

{{template "footer.tmpl" .}}
`

// countingKV counts direct reads, to tell a cached answer from a read.
type countingKV struct {
	jetstream.KeyValue
	gets atomic.Int64
}

func (kv *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	kv.gets.Add(1)
	return kv.KeyValue.Get(ctx, key)
}

// TestSixthType adds a type with one registry entry and one template, and
// nothing else: an event of it decodes and validates by its entry's rules,
// composes with its template, and the preferences cache answers for it from
// memory. Once unregistered, it is unknown everywhere again.
func TestSixthType(t *testing.T) {
	const reaction event.Type = "task.reaction"
	unregister, err := event.Register(event.Def{Type: reaction, Label: "reactions to your comments",
		Requires: []event.Section{event.SectionComment}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unregister)

	// Decode: the subject and the required comment come from the entry.
	data := []byte(`{"id":"n-react-1","type":"task.reaction","occurred_at":"2026-11-26T09:30:00Z",
"recipient":{"id":"u42","email":"ann@example.com","name":"Ann Lee"},"actor":{"id":"u7","name":"Bob Stone"},
"task":{"id":"t-1001","title":"Pour foundation"},"comment":{"id":"c9","body":"Thumbs up for the new date"}}`)
	ev, err := event.Decode("notify.task.reaction", data, 0)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if _, err := event.Decode("notify.mention", data, 0); err == nil || !strings.Contains(err.Error(), "does not match subject") {
		t.Errorf("Decode on another subject: %v", err)
	}
	noComment := *ev
	noComment.Comment = nil
	if err := noComment.Validate(); err == nil || !strings.Contains(err.Error(), "comment.body: is required for task.reaction") {
		t.Errorf("Validate without comment = %v", err)
	}

	// Compose: without its template the type refuses start-up; with it (an
	// override directory, as MAILRELAY_TEMPLATE_DIR gives) it composes.
	var te *compose.TemplateError
	if _, err := compose.LoadTemplates(""); !errors.As(err, &te) || !strings.Contains(err.Error(), `type "task.reaction" has no body template`) {
		t.Errorf("LoadTemplates without the template = %v, want a *TemplateError naming the type", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, compose.BodyTemplate(reaction)), []byte(reactionTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	tpl, err := compose.LoadTemplates(dir)
	if err != nil {
		t.Fatalf("LoadTemplates: %v", err)
	}
	cfg := compose.Config{From: compose.Address{Email: "notify@example.com"}, BaseURL: "https://app.example.com", Templates: tpl}
	m, err := compose.Compose(ev, cfg, time.Date(2026, 11, 26, 9, 31, 0, 0, time.UTC))
	if err != nil {
		t.Fatalf("Compose: %v", err)
	}
	if want := `Bob Stone updated "Pour foundation"`; m.Subject != want {
		t.Errorf("Subject = %q, want %q", m.Subject, want)
	}
	for _, want := range []string{"Hi Ann Lee,", "Bob Stone reacted to your comment:", "> Thumbs up for the new date",
		"https://app.example.com/tasks/t-1001", "Email is on for reactions to your comments"} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, m.Body)
		}
	}
	if i := slices.IndexFunc(m.Headers, func(h compose.Header) bool { return h.Name == "X-Mailrelay-Reason" }); i < 0 || m.Headers[i].Value != "task.reaction" {
		t.Errorf("headers = %v, want X-Mailrelay-Reason: task.reaction", m.Headers)
	}

	// Preferences: the cache answers "on" for the new type from memory.
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns.URL())
	bucket, err := js.CreateOrUpdateKeyValue(natstest.Ctx(t), jetstream.KeyValueConfig{Bucket: prefs.Bucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prefs.New(bucket).Set(natstest.Ctx(t), "u42", map[event.Type]bool{reaction: true, event.Mention: true}); err != nil {
		t.Fatalf("prefs Set: %v", err)
	}
	kv := &countingKV{KeyValue: bucket}
	cache := prefs.NewCache(kv, nc)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = cache.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	natstest.Eventually(t, 10*time.Second, func() (bool, string) { return cache.Ready(), "cache not ready" })
	on, err := cache.EmailEnabled(natstest.Ctx(t), ev.Recipient.ID, reaction)
	if err != nil || !on {
		t.Fatalf("EmailEnabled(u42, %s) = %v, %v; want on", reaction, on, err)
	}
	if n := kv.gets.Load(); n != 0 {
		t.Errorf("answered with %d direct reads, want from memory", n)
	}

	// Unregistered: unknown to every part again.
	unregister()
	if _, err := event.Decode("notify.task.reaction", data, 0); err == nil || !strings.Contains(err.Error(), "not one of") {
		t.Errorf("Decode after unregister = %v, want an unknown type", err)
	}
	if _, err := compose.LoadTemplates(dir); !errors.As(err, &te) || !strings.Contains(err.Error(), "unknown template name") {
		t.Errorf("LoadTemplates after unregister = %v, want the file refused as unknown", err)
	}
	if on, err := cache.EmailEnabled(natstest.Ctx(t), "u42", reaction); err != nil || on {
		t.Errorf("EmailEnabled after unregister = %v, %v; want off", on, err)
	}
}
