package compose

import (
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"golang.org/x/text/language"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

// Template files. Each is a text/template; a file of the same name in the
// directory given to LoadTemplates replaces the built-in one. Templates may
// call each other by file name ({{template "footer.tmpl" .}}). Each is
// executed with a *TemplateData, except the batch templates, executed
// with a *BatchData.
const (
	// SubjectTemplate renders the subject of every type.
	SubjectTemplate = "subject.tmpl"
	// HeadlineTemplate says what happened in one line ("Bob Stone
	// commented on "Pour foundation""): the built-in subject after the
	// workspace, and BatchSection.Headline.
	HeadlineTemplate = "headline.tmpl"
	// GreetingTemplate is the first line of the built-in bodies.
	GreetingTemplate = "greeting.tmpl"
	// DetailsTemplate lists task, project, workspace, date change and
	// blocking task in the built-in bodies.
	DetailsTemplate = "details.tmpl"
	// LinkTemplate holds the deep link in the built-in bodies.
	LinkTemplate = "link.tmpl"
	// FooterTemplate says why the mail was sent and where to change that.
	FooterTemplate = "footer.tmpl"
	// HTMLTemplate renders the HTML part (Config.HTML) of every type. It is
	// an html/template: everything it prints is escaped for its context.
	HTMLTemplate = "mail.html.tmpl"
	// BatchSubjectTemplate renders the subject of a batch mail, one that
	// carries several notifications (ComposeBatch).
	BatchSubjectTemplate = "batch-subject.tmpl"
	// BatchBodyTemplate renders the body of a batch mail.
	BatchBodyTemplate = "batch-body.tmpl"
	// BatchHTMLTemplate renders the HTML part of a batch mail, an
	// html/template like HTMLTemplate.
	BatchHTMLTemplate = "batch-mail.html.tmpl"
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
var sharedTemplates = []string{SubjectTemplate, HeadlineTemplate, GreetingTemplate, DetailsTemplate, LinkTemplate, FooterTemplate, HTMLTemplate,
	BatchSubjectTemplate, BatchBodyTemplate, BatchHTMLTemplate}

// isHTML reports whether the template named name is an html/template.
func isHTML(name string) bool { return name == HTMLTemplate || name == BatchHTMLTemplate }

func templateFiles(defs []event.Def) []string {
	names := slices.Clone(sharedTemplates)
	for _, d := range defs {
		names = append(names, d.Template)
	}
	return names
}

//go:embed templates/*.tmpl templates/*/*.tmpl
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
	// Actor is the name of who acted, "Someone" when not given;
	// ActorCount how many people it names: 1, or more for a merged date
	// change ("Bob Stone and Carol Diaz"), for a verb that agrees
	// ("hat"/"haben").
	Actor      string
	ActorCount int
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
	// task.blocked, "" when not given; BlockedByLink its deep link, ""
	// when FRONTEND_BASE_URL is unset or there is no blocking task.
	BlockedBy, BlockedByLink string
	// Subject is the rendered subject; set for the HTML template only
	// (the subject template runs before it is known).
	Subject string
	// Label says in words what the type is about, in the mail's language
	// ("comments on your tasks"): the registry's label, translated.
	Label string
	// When is when it happened (occurred_at in the recipient's time zone,
	// in the mail's language), set only when the mail goes out more than
	// DelayNotice after it; "" otherwise.
	When string
	// Lang is the BCP 47 tag of the language the mail is written in
	// ("en", "de"), for the HTML part's lang attribute.
	Lang string
	// Product is the product name (Config.ProductName, else the From
	// display name), "" when neither is set.
	Product string
	// Snippet is the comment or mention text of task.comment and mention:
	// whitespace normalized, at most Config.SnippetMax characters, wrapped
	// at 72 columns, lines separated by "\n"; "" for other types.
	Snippet string
	// Link is the deep link to the task, "" when FRONTEND_BASE_URL is unset.
	Link string
	// SettingsURL is where to change notification settings, "" when
	// FRONTEND_BASE_URL is unset.
	SettingsURL string
	// UnsubscribeURL is the one-click unsubscribe URL for this recipient
	// and type (an https URL of the relay's public listener), "" when
	// one-click is off (Config.OneClick).
	UnsubscribeURL string
}

// Templates is a parsed, checked set of templates in every language it
// knows, safe for concurrent use. Build it once with LoadTemplates and
// share it through Config.Templates.
type Templates struct {
	langs    []*langTemplates // [0] is English, the fallback
	matcher  language.Matcher
	warnings []string
}

// langTemplates are the templates of one language.
type langTemplates struct {
	name    string // as in the directory: "en", "de", "pt-BR"
	lang    string // the built-in language of its strings: English or German
	subject *template.Template
	bodies  map[event.Type]*template.Template // of every type registered at load
	html    *htmltemplate.Template
	files   map[string]string // template name → file it came from

	headline                *template.Template
	batchSubject, batchBody *template.Template
	batchHTML               *htmltemplate.Template
}

// Warnings lists what LoadTemplates found incomplete but usable: a
// template or string a language lacks, for which English is used. The
// relay logs each at start-up.
func (t *Templates) Warnings() []string { return slices.Clone(t.warnings) }

// Languages lists the languages t has templates for, English first.
func (t *Templates) Languages() []string {
	names := make([]string, len(t.langs))
	for i, l := range t.langs {
		names[i] = l.name
	}
	return names
}

// forLocale returns the templates serving the BCP 47 tag locale.
func (t *Templates) forLocale(locale string) *langTemplates {
	return t.langs[matchIndex(t.matcher, locale)]
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

// LoadTemplates parses the built-in templates of every language and, when
// dir is not "", replaces each one with the file of the same name in dir:
// dir itself holds English overrides, a sub-directory named by a BCP 47
// tag (dir/de, dir/pt-BR) those of that language, which may be one that is
// not built in. A file in either whose name ends in ".tmpl" but is not one
// of TemplateFiles is an error (a misspelt override would otherwise be
// ignored); other files and other sub-directories are ignored.
//
// A language lacks nothing: a template it does not have is the English
// one, and a string it does not have (Text, TypeLabel) is English too;
// each such gap is listed by Warnings. Every template of every language is
// then executed once on sample events of every type, so a template that
// does not parse, fails at execution or renders an empty subject or body
// is reported here, at start-up, as a *TemplateError naming the file and
// line. A registered type with a body template neither built in nor in dir
// is a *TemplateError too.
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
	var dirLangs []string
	if dir != "" {
		var err error
		if dirLangs, err = overlayDir(dir, names, texts, files); err != nil {
			return nil, err
		}
	}
	for _, d := range defs {
		if slices.Contains(sharedTemplates, d.Template) {
			return nil, &TemplateError{File: "built-in:" + d.Template, Err: fmt.Errorf("type %q: its body template would replace the shared template of that name; give the type another template name", d.Type)}
		}
		if _, ok := texts[d.Template]; !ok {
			file := "built-in:" + d.Template
			if dir != "" {
				file = filepath.Join(dir, d.Template)
			}
			return nil, &TemplateError{File: file, Err: fmt.Errorf("type %q has no body template: it is not built in, nor in the template directory", d.Type)}
		}
	}

	t := &Templates{}
	en, err := parseLang(English, English, names, texts, files, defs)
	if err != nil {
		return nil, err
	}
	t.langs = append(t.langs, en)

	// Other languages: the built-in ones, then those of dir.
	langs := []string{German}
	for _, l := range dirLangs {
		if !slices.Contains(langs, l) {
			langs = append(langs, l)
		}
	}
	type set struct {
		texts, files map[string]string
		own          map[string]bool
	}
	sets := map[string]set{English: {texts, files, nil}}
	for _, name := range langs {
		// A language starts from the built-in language serving it (de-AT
		// from de), else from English.
		base := sets[English]
		if b, ok := sets[MatchLocale(name)]; ok {
			base = b
		}
		lt, lf, own := maps.Clone(base.texts), maps.Clone(base.files), maps.Clone(base.own)
		if own == nil {
			own = make(map[string]bool)
		}
		for _, n := range names {
			if b, err := builtinFS.ReadFile("templates/" + name + "/" + n); err == nil {
				lt[n], lf[n], own[n] = string(b), "built-in:"+name+"/"+n, true
			}
		}
		if slices.Contains(dirLangs, name) {
			sub := filepath.Join(dir, name)
			if _, err := overlayDir(sub, names, lt, lf); err != nil {
				return nil, err
			}
			for n, f := range lf {
				if strings.HasPrefix(f, sub+string(filepath.Separator)) {
					own[n] = true
				}
			}
		}
		sets[name] = set{lt, lf, own}
		strs := MatchLocale(name)
		for _, n := range names {
			if !own[n] {
				t.warnings = append(t.warnings, fmt.Sprintf("templates %s: %s is not translated, English is used", name, n))
			}
		}
		if strs == English && !strings.HasPrefix(name, English) {
			t.warnings = append(t.warnings, fmt.Sprintf("templates %s: no built-in strings for this language (names of fields and types, dates), English is used", name))
		} else {
			for _, k := range catalogGaps(strs, defs) {
				t.warnings = append(t.warnings, fmt.Sprintf("templates %s: string %q is not translated, English is used", name, k))
			}
		}
		l, err := parseLang(name, strs, names, lt, lf, defs)
		if err != nil {
			return nil, err
		}
		t.langs = append(t.langs, l)
	}
	tags := make([]language.Tag, len(t.langs))
	for i, l := range t.langs {
		tags[i] = language.Make(l.name)
	}
	t.matcher = language.NewMatcher(tags)
	if err := t.check(defs); err != nil {
		return nil, err
	}
	return t, nil
}

// overlayDir replaces texts and files by the templates in dir, and returns
// the names of its sub-directories that are language tags.
func overlayDir(dir string, names []string, texts, files map[string]string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("compose: template directory: %w", err)
	}
	var langs []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			if tag, err := language.Parse(name); err == nil && tag.String() == name && name != English {
				langs = append(langs, name)
			}
			continue
		}
		if !strings.HasSuffix(name, ".tmpl") || strings.HasPrefix(name, ".") {
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
	return langs, nil
}

// parseLang parses the templates of one language.
func parseLang(name, lang string, names []string, texts, files map[string]string, defs []event.Def) (*langTemplates, error) {
	root := template.New("").Funcs(funcs).Option("missingkey=error")
	hroot := htmltemplate.New("").Funcs(htmltemplate.FuncMap(funcs)).Funcs(htmltemplate.FuncMap{"linkify": linkify}).Option("missingkey=error")
	for _, n := range names {
		var err error
		if isHTML(n) {
			_, err = hroot.New(n).Parse(texts[n])
		} else {
			_, err = root.New(n).Parse(texts[n])
		}
		if err != nil {
			return nil, templateError(files, n, err)
		}
	}
	l := &langTemplates{name: name, lang: lang, subject: root.Lookup(SubjectTemplate), html: hroot.Lookup(HTMLTemplate),
		bodies: make(map[event.Type]*template.Template, len(defs)), files: files,
		headline: root.Lookup(HeadlineTemplate), batchSubject: root.Lookup(BatchSubjectTemplate), batchBody: root.Lookup(BatchBodyTemplate), batchHTML: hroot.Lookup(BatchHTMLTemplate)}
	for _, d := range defs {
		l.bodies[d.Type] = root.Lookup(d.Template)
	}
	return l, nil
}

// check composes sample events of every type in every language, with and
// without base URL, optional names and the HTML part, singly and as one
// batch of every type.
func (t *Templates) check(defs []event.Def) error {
	now := time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC)
	for _, l := range t.langs {
		for _, d := range defs {
			for _, full := range []bool{true, false} {
				ev := sampleEvent(d, full)
				for _, base := range []string{"https://app.example.com", ""} {
					s, err := Config{From: Address{Email: "notify@example.com"}, BaseURL: base, HTML: full}.normalize()
					if err != nil {
						return err
					}
					late := now
					if full {
						late = now.Add(time.Hour) // with "when it happened"
					}
					if _, err := l.compose(ev, &s, late, Options{}); err != nil {
						return err
					}
				}
			}
		}
		for _, full := range []bool{true, false} {
			base := "https://app.example.com"
			if !full {
				base = ""
			}
			s, err := Config{From: Address{Email: "notify@example.com"}, BaseURL: base, HTML: full}.normalize()
			if err != nil {
				return err
			}
			if _, err := l.composeBatch(sampleBatch(defs, full), &s, now.Add(time.Hour), Options{}); err != nil {
				return err
			}
		}
	}
	return nil
}

// sampleBatch is a batch of one sample event of every type in defs, with a
// merged date change when full.
func sampleBatch(defs []event.Def, full bool) []Section {
	var sections []Section
	for i, d := range defs {
		ev := sampleEvent(d, full)
		ev.ID = fmt.Sprintf("sample-%d", i)
		ev.Task.ID = fmt.Sprintf("t-%d", i)
		ev.OccurredAt = ev.OccurredAt.Add(time.Duration(i) * time.Minute)
		sec := Section{Events: []*event.Event{ev}}
		if full && ev.Change != nil {
			next := *ev
			next.ID += "-2"
			to := "2026-12-09"
			next.Change = &event.Change{Field: ev.Change.Field, From: ev.Change.To, To: &to}
			sec.Events = append(sec.Events, &next)
		}
		sections = append(sections, sec)
	}
	if len(sections) == 1 {
		ev := *sections[0].Events[0]
		ev.ID += "-b"
		sections = append(sections, Section{Events: []*event.Event{&ev}})
	}
	return sections
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

// linkify returns text as HTML: escaped, with every URL word (isURLWord) a
// link, the opening and closing punctuation around it kept outside.
func linkify(text string) htmltemplate.HTML {
	var b strings.Builder
	for i, line := range strings.Split(text, "\n") {
		if i > 0 {
			b.WriteByte('\n')
		}
		for j, w := range strings.Split(line, " ") {
			if j > 0 {
				b.WriteByte(' ')
			}
			if !isURLWord(w) {
				b.WriteString(htmltemplate.HTMLEscapeString(w))
				continue
			}
			lead := w[:len(w)-len(strings.TrimLeft(w, urlOpeners))]
			u := w[len(lead):]
			trail := ""
			for u != "" {
				c := u[len(u)-1]
				if strings.IndexByte(".,;:!?'\">]", c) >= 0 || c == ')' && strings.Count(u, "(") < strings.Count(u, ")") {
					trail, u = string(c)+trail, u[:len(u)-1]
					continue
				}
				break
			}
			b.WriteString(htmltemplate.HTMLEscapeString(lead))
			b.WriteString(`<a href="`)
			b.WriteString(htmltemplate.HTMLEscapeString(u))
			b.WriteString(`">`)
			b.WriteString(htmltemplate.HTMLEscapeString(u))
			b.WriteString(`</a>`)
			b.WriteString(htmltemplate.HTMLEscapeString(trail))
		}
	}
	return htmltemplate.HTML(b.String())
}
