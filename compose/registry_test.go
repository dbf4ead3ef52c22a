package compose

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
)

// registerType adds d for the duration of the test. Tests that register a
// type must pass their own Templates: the built-in set, loaded once, would
// lack the type's body.
func registerType(t *testing.T, d event.Def) {
	t.Helper()
	unregister, err := event.Register(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unregister)
}

// TestTemplatesFollowRegistry: a registered type's body template (under the
// name its entry gives) is one of TemplateFiles, is required at start-up,
// and is executed with the sections its entry names.
func TestTemplatesFollowRegistry(t *testing.T) {
	registerType(t, event.Def{Type: "task.unblocked", Label: "tasks no longer blocked",
		Optional: []event.Section{event.SectionBlockedBy, event.SectionComment}, Template: "unblocked.tmpl"})

	if got := BodyTemplate("task.unblocked"); got != "unblocked.tmpl" {
		t.Errorf("BodyTemplate = %q, want the entry's template", got)
	}
	if got := BodyTemplate("task.deleted"); got != "task.deleted.tmpl" {
		t.Errorf("BodyTemplate of an unknown type = %q", got)
	}
	if files := TemplateFiles(); !slices.Contains(files, "unblocked.tmpl") || len(files) != len(sharedTemplates)+len(event.Types)+1 {
		t.Errorf("TemplateFiles = %q", files)
	}

	// Missing everywhere: a clear start-up error, not a panic.
	for _, dir := range []string{"", writeTemplates(t, map[string]string{"footer.tmpl": "-- \nbye"})} {
		_, err := LoadTemplates(dir)
		var te *TemplateError
		if !errors.As(err, &te) || !errors.Is(err, ErrTemplate) || !strings.Contains(err.Error(), `type "task.unblocked" has no body template`) {
			t.Fatalf("LoadTemplates(%q) = %v, want a *TemplateError naming the type", dir, err)
		}
		want := "built-in:unblocked.tmpl"
		if dir != "" {
			want = filepath.Join(dir, "unblocked.tmpl")
		}
		if te.File != want {
			t.Errorf("File = %q, want %q", te.File, want)
		}
	}

	// Present in the override directory: loaded, checked and used.
	dir := writeTemplates(t, map[string]string{"unblocked.tmpl": "{{.Actor}} unblocked {{.Task}} (was: {{.BlockedBy}}).\n{{quote .Snippet}}\n"})
	tpl, err := LoadTemplates(dir)
	if err != nil {
		t.Fatalf("LoadTemplates: %v", err)
	}
	cfg := testConfig("")
	cfg.Templates = tpl
	ev := goldenEvent(event.TaskBlocked, true, asciiTexts)
	ev.Type = "task.unblocked"
	ev.Comment = &event.Comment{Body: "Survey done"}
	m := mustCompose(t, ev, cfg)
	if want := "Bob Stone unblocked Pour foundation (was: Site survey).\n> Survey done"; !strings.HasPrefix(m.Body, want) {
		t.Errorf("body = %q, want it to start with %q", m.Body, want)
	}
	// The contract's types keep their built-in bodies.
	m = mustCompose(t, goldenEvent(event.TaskComment, true, asciiTexts), cfg)
	if !strings.Contains(m.Body, "Bob Stone commented on a task:") {
		t.Errorf("built-in body lost:\n%s", m.Body)
	}
}

// TestTemplateDataSectionsByType: a section shows only for the types whose
// entry has it, whatever else the event carries.
func TestTemplateDataSectionsByType(t *testing.T) {
	s := &settings{snippetMax: DefaultSnippetMax}
	tpl, err := LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range event.Types {
		ev := goldenEvent(typ, true, asciiTexts)
		from, to := "2026-12-01", "2026-12-05"
		ev.Comment = &event.Comment{Body: "text"}
		ev.Change = &event.Change{Field: "planned_end", From: &from, To: &to}
		ev.BlockedBy = &event.TaskRef{Title: "other"}
		d := newTemplateData(ev, s, tpl.langs[0], ev.OccurredAt, time.UTC)
		got := []bool{d.Snippet != "", d.Field != "", d.BlockedBy != ""}
		want := []bool{
			typ == event.TaskComment || typ == event.Mention,
			typ == event.TaskDateChanged,
			typ == event.TaskBlocked,
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: snippet, change, blocked by shown = %v, want %v", typ, got, want)
		}
	}
}
