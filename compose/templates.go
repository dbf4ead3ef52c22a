package compose

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

// Template files. Each is a text/template; a file of the same name in the
// directory given to LoadTemplates replaces the built-in one. Templates may
// call each other by file name ({{template "footer.tmpl" .}}). Each is
// executed with a *TemplateData.
const (
	// SubjectTemplate renders the subject of every type.
	SubjectTemplate = "subject.tmpl"
	// GreetingTemplate is the first line of the built-in bodies.
	GreetingTemplate = "greeting.tmpl"
	// DetailsTemplate lists task, project, workspace, date change and
	// blocking task in the built-in bodies.
	DetailsTemplate = "details.tmpl"
	// LinkTemplate holds the deep link in the built-in bodies.
	LinkTemplate = "link.tmpl"
	// FooterTemplate says why the mail was sent and where to change that.
	FooterTemplate = "footer.tmpl"
)

// BodyTemplate returns the file name of the body template of type t, as
// its registry entry names it: by default the type followed by ".tmpl",
// e.g. "task.comment.tmpl".
func BodyTemplate(t event.Type) string {
	if d, ok := event.Lookup(t); ok {
		return d.Template
	}
	return string(t) + ".tmpl"
}

// TemplateFiles lists every template file name, built-in and overridable:
// the shared ones, then the body of every registered type.
func TemplateFiles() []string { return templateFiles(event.Defs()) }

// sharedTemplates are the templates that are not a type's body.
var sharedTemplates = []string{SubjectTemplate, GreetingTemplate, DetailsTemplate, LinkTemplate, FooterTemplate}

func templateFiles(defs []event.Def) []string {
	names := slices.Clone(sharedTemplates)
	for _, d := range defs {
		names = append(names, d.Template)
	}
	return names
}

//go:embed templates/*.tmpl
var builtinFS embed.FS

// TemplateData is what every template is executed with. Every string is
// already sanitized: one line, no control characters, bounded (names and
// titles at most 200 characters), except Snippet, which is several lines.
type TemplateData struct {
	// Type is the event type, e.g. "task.comment".
	Type string
	// ID is the notification id.
	ID string
	// Workspace is the workspace name, "" when not given.
	Workspace string
	// Recipient is the recipient's name, "" when not given.
	Recipient string
	// Actor is the name of who acted, "Someone" when not given.
	Actor string
	// Task is the task title; TaskID its id.
	Task, TaskID string
	// Project is the project name, "" when not given.
	Project string
	// FieldName is the changed field of task.date_changed ("planned_start"
	// or "planned_end"), Field the same in words ("planned start"); both ""
	// for other types.
	FieldName, Field string
	// From and To are the old and new dates of task.date_changed, "not set"
	// for null; "" for other types.
	From, To string
	// BlockedBy is the title (else the id) of the blocking task of
	// task.blocked, "" when not given.
	BlockedBy string
	// Snippet is the comment or mention text of task.comment and mention:
	// whitespace normalized, at most Config.SnippetMax characters, wrapped
	// at 72 columns, lines separated by "\n"; "" for other types.
	Snippet string
	// Link is the deep link to the task, "" when FRONTEND_BASE_URL is unset.
	Link string
	// SettingsURL is where to change notification settings, "" when
	// FRONTEND_BASE_URL is unset.
	SettingsURL string
}

// Templates is a parsed, checked set of templates, safe for concurrent use.
// Build it once with LoadTemplates and share it through Config.Templates.
type Templates struct {
	subject *template.Template
	bodies  map[event.Type]*template.Template // of every type registered at load
	files   map[string]string                 // template name → file it came from
}

// TemplateError reports a template that does not parse, fails to execute,
// or outputs nothing. It matches ErrTemplate with errors.Is.
type TemplateError struct {
	// File is the path of the template file ("built-in:NAME" for an
	// embedded one).
	File string
	// Line is the line in File where the problem is, 0 when unknown.
	Line int
	// Err is the underlying error.
	Err error
}

// Error names the file and line: "compose: template FILE:LINE: problem".
func (e *TemplateError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("compose: template %s:%d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("compose: template %s: %v", e.File, e.Err)
}

// Unwrap returns ErrTemplate and the underlying error.
func (e *TemplateError) Unwrap() []error { return []error{ErrTemplate, e.Err} }

// funcs are the functions templates may call besides text/template's own.
var funcs = template.FuncMap{
	// trunc N TEXT: TEXT as one line, cut at a word boundary to at most
	// N characters with "…".
	"trunc": func(n int, s string) string { return headers.Sanitize(s, n) },
	// quote TEXT: every line of TEXT prefixed with "> ".
	"quote": quote,
}

var builtin = sync.OnceValues(func() (*Templates, error) { return LoadTemplates("") })

// LoadTemplates parses the built-in templates and, when dir is not "",
// replaces each one with the file of the same name in dir. A file in dir
// whose name ends in ".tmpl" but is not one of TemplateFiles is an error
// (a misspelt override would otherwise be ignored); other files and
// sub-directories are ignored. Every template is then executed once on
// sample events of every type, so a template that does not parse, fails at
// execution or renders an empty subject or body is reported here, at
// start-up, as a *TemplateError naming the file and line. A registered type
// with a body template neither built in nor in dir is a *TemplateError too.
//
// The types are those registered when LoadTemplates is called (event.Defs);
// a type registered later has no body in the result.
func LoadTemplates(dir string) (*Templates, error) {
	defs := event.Defs()
	names := templateFiles(defs)
	texts := make(map[string]string, len(names))
	files := make(map[string]string, len(names))
	for _, name := range names {
		b, err := builtinFS.ReadFile("templates/" + name)
		if errors.Is(err, fs.ErrNotExist) && !slices.Contains(sharedTemplates, name) {
			continue // a type's body may come from dir alone; checked below
		}
		if err != nil {
			return nil, fmt.Errorf("compose: built-in template %s: %w", name, err)
		}
		texts[name], files[name] = string(b), "built-in:"+name
	}
	if dir != "" {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("compose: template directory: %w", err)
		}
		for _, e := range entries {
			name := e.Name()
			if !strings.HasSuffix(name, ".tmpl") || strings.HasPrefix(name, ".") || e.IsDir() {
				continue
			}
			path := filepath.Join(dir, name)
			if !slices.Contains(names, name) {
				return nil, &TemplateError{File: path, Err: fmt.Errorf("unknown template name (known: %s)", strings.Join(names, ", "))}
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("compose: template %s: %w", path, err)
			}
			texts[name], files[name] = string(b), path
		}
	}

	for _, d := range defs {
		if _, ok := texts[d.Template]; !ok {
			file := "built-in:" + d.Template
			if dir != "" {
				file = filepath.Join(dir, d.Template)
			}
			return nil, &TemplateError{File: file, Err: fmt.Errorf("type %q has no body template: it is not built in, nor in the template directory", d.Type)}
		}
	}

	root := template.New("").Funcs(funcs).Option("missingkey=error")
	for _, name := range names {
		if _, err := root.New(name).Parse(texts[name]); err != nil {
			return nil, templateError(files, name, err)
		}
	}
	t := &Templates{subject: root.Lookup(SubjectTemplate), bodies: make(map[event.Type]*template.Template, len(defs)), files: files}
	for _, d := range defs {
		t.bodies[d.Type] = root.Lookup(d.Template)
	}
	if err := t.check(defs); err != nil {
		return nil, err
	}
	return t, nil
}

// check composes sample events of every type, with and without base URL
// and optional names.
func (t *Templates) check(defs []event.Def) error {
	now := time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC)
	for _, d := range defs {
		for _, full := range []bool{true, false} {
			ev := sampleEvent(d, full)
			for _, base := range []string{"https://app.example.com", ""} {
				s, err := Config{From: Address{Email: "notify@example.com"}, BaseURL: base}.normalize()
				if err != nil {
					return err
				}
				if _, err := t.compose(ev, &s, now); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// sampleEvent is a valid event of type d, with the sections d requires and,
// when full, every optional field and section set.
func sampleEvent(d event.Def, full bool) *event.Event {
	ev := &event.Event{
		ID:         "sample",
		Type:       d.Type,
		OccurredAt: time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC),
		Recipient:  event.Recipient{ID: "u1", Email: "user@example.com"},
		Task:       event.Task{ID: "t-1", Title: "Sample task"},
	}
	sections := d.Requires
	if full {
		ev.Workspace = &event.Workspace{ID: "w1", Name: "Sample workspace"}
		ev.Recipient.Name = "Sample User"
		ev.Actor = &event.Actor{ID: "u2", Name: "Sample Actor"}
		ev.Task.Project = "Sample project"
		sections = slices.Concat(d.Requires, d.Optional)
	}
	for _, s := range sections {
		switch s {
		case event.SectionComment:
			ev.Comment = &event.Comment{ID: "c1", Body: "Sample comment"}
		case event.SectionChange:
			// Both dates when full; otherwise the other field, from "not set".
			from, to := "2026-12-01", "2026-12-05"
			ev.Change = &event.Change{Field: "planned_start", To: &to}
			if full {
				ev.Change = &event.Change{Field: "planned_end", From: &from, To: &to}
			}
		case event.SectionBlockedBy:
			ev.BlockedBy = &event.TaskRef{ID: "t-0", Title: "Sample blocker"}
		}
	}
	return ev
}

// templateError turns a parse or execution error of the template named name
// into a *TemplateError naming the file and line where it happened.
// text/template formats both as "template: NAME:LINE:…", where NAME is the
// file the failing text was parsed from.
func templateError(files map[string]string, name string, err error) *TemplateError {
	msg := err.Error()
	file, line := name, 0
	if rest, ok := strings.CutPrefix(msg, "template: "); ok {
		for n := range files {
			after, ok := strings.CutPrefix(rest, n+":")
			if !ok {
				continue
			}
			digits := after[:len(after)-len(strings.TrimLeft(after, "0123456789"))]
			if l, convErr := strconv.Atoi(digits); convErr == nil {
				file, line = n, l
				if tail := strings.TrimLeft(after[len(digits):], ":0123456789"); tail != "" {
					err = errors.New(strings.TrimSpace(tail))
				}
				break
			}
		}
	}
	if f, ok := files[file]; ok {
		file = f
	}
	return &TemplateError{File: file, Line: line, Err: err}
}

// quote prefixes every line of s with "> " ("" stays "").
func quote(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	b.Grow(len(s) + 2*(strings.Count(s, "\n")+1))
	for line := range strings.Lines(s) {
		if strings.TrimRight(line, "\n") == "" {
			b.WriteString(">" + line)
			continue
		}
		b.WriteString("> ")
		b.WriteString(line)
	}
	return b.String()
}
