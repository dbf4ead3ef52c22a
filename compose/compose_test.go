package compose

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

func testConfig(base string) Config {
	return Config{From: Address{Name: "Acme", Email: "notify@Example.COM"}, BaseURL: base}
}

func mustCompose(t *testing.T, ev *event.Event, cfg Config) *Message {
	t.Helper()
	m, err := Compose(ev, cfg, goldenNow)
	if err != nil {
		t.Fatalf("Compose: %v", err)
	}
	checkMessage(t, m, deepLink(cfg.BaseURL, ev.Task.ID))
	return m
}

func header(m *Message, name string) (string, bool) {
	for _, h := range m.Headers {
		if h.Name == name {
			return h.Value, true
		}
	}
	return "", false
}

// fakeOneClick makes "PREFIX" + user:type:locale.
type fakeOneClick string

func (f fakeOneClick) OneClickURL(user string, t event.Type, locale string) string {
	if locale == "" {
		locale = "en"
	}
	return string(f) + user + ":" + string(t) + ":" + locale
}

func TestComposeHeaders(t *testing.T) {
	tests := []struct {
		name       string
		base       string
		oneClick   OneClick
		unsub      string
		post       bool
		wantNoList bool
	}{
		// Contract §9.4 amends §5: an https base alone no longer brings
		// List-Unsubscribe-Post; only a one-click URL does.
		{name: "https base", base: "https://app.example.com/", unsub: "<https://app.example.com/settings/notifications>"},
		{name: "https base without slash", base: "https://app.example.com/sub", unsub: "<https://app.example.com/sub/settings/notifications>"},
		{name: "http base", base: "http://localhost:8000", unsub: "<http://localhost:8000/settings/notifications>"},
		{name: "no base", wantNoList: true},
		{name: "one-click", base: "https://app.example.com/", oneClick: fakeOneClick("https://relay.example.com/u/"),
			unsub: "<https://relay.example.com/u/u42:task.comment:en>", post: true},
		{name: "one-click without base", oneClick: fakeOneClick("https://relay.example.com/u/"),
			unsub: "<https://relay.example.com/u/u42:task.comment:en>", post: true},
		{name: "one-click URL not https", base: "https://app.example.com/", oneClick: fakeOneClick("http://relay.example.com/u/"),
			unsub: "<https://app.example.com/settings/notifications>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := goldenEvent(event.TaskComment, true, asciiTexts)
			cfg := testConfig(tt.base)
			cfg.OneClick = tt.oneClick
			m := mustCompose(t, ev, cfg)
			if u := strings.Trim(tt.unsub, "<>"); tt.post && !strings.Contains(m.Body, "\n"+u+"\n") {
				t.Errorf("the footer lacks the one-click URL %s on a line of its own:\n%s", u, m.Body)
			}
			want := map[string]string{
				"Auto-Submitted":           "auto-generated",
				"X-Auto-Response-Suppress": "All",
				"List-Id":                  "Acme <notifications.example.com>",
				"X-Mailrelay-Reason":       "task.comment",
			}
			for name, v := range want {
				if got, _ := header(m, name); got != v {
					t.Errorf("%s = %q, want %q", name, got, v)
				}
			}
			got, ok := header(m, "List-Unsubscribe")
			if tt.wantNoList {
				if ok {
					t.Errorf("List-Unsubscribe = %q without base URL", got)
				}
			} else if got != tt.unsub {
				t.Errorf("List-Unsubscribe = %q, want %q", got, tt.unsub)
			}
			post, ok := header(m, "List-Unsubscribe-Post")
			if ok != tt.post || (ok && post != "List-Unsubscribe=One-Click") {
				t.Errorf("List-Unsubscribe-Post = %q (present %v), want present %v", post, ok, tt.post)
			}
			if m.From != (Address{Name: "Acme", Email: "notify@Example.COM"}) || m.To != (Address{Name: "Ann Lee", Email: "ann@example.com"}) {
				t.Errorf("From %+v To %+v", m.From, m.To)
			}
			if !m.Date.Equal(goldenNow) {
				t.Errorf("Date = %v, want %v", m.Date, goldenNow)
			}
			if m.MessageID != "<notify.01JD3N6Q9W4ZK2V8X5T7R1M0PA@example.com>" {
				t.Errorf("Message-ID = %q", m.MessageID)
			}
		})
	}
}

func TestComposeThreading(t *testing.T) {
	cfg := testConfig("https://app.example.com")
	var thread string
	for _, typ := range event.Types {
		ev := goldenEvent(typ, true, asciiTexts)
		ev.ID = "n-" + strings.ReplaceAll(string(typ), ".", "-")
		m := mustCompose(t, ev, cfg)
		if m.InReplyTo != m.References {
			t.Errorf("%s: In-Reply-To %q != References %q", typ, m.InReplyTo, m.References)
		}
		if thread == "" {
			thread = m.InReplyTo
		} else if m.InReplyTo != thread {
			t.Errorf("%s: thread %q, want %q as for the other types", typ, m.InReplyTo, thread)
		}
		if m.MessageID == thread {
			t.Errorf("%s: Message-ID equals the thread id", typ)
		}
		again := mustCompose(t, ev, cfg)
		if again.MessageID != m.MessageID {
			t.Errorf("%s: Message-ID not stable: %q then %q", typ, m.MessageID, again.MessageID)
		}
	}

	other := goldenEvent(event.TaskAssigned, true, asciiTexts)
	other.Workspace.ID = "w2"
	if m := mustCompose(t, other, cfg); m.InReplyTo == thread {
		t.Errorf("another workspace shares thread %q", thread)
	}
	other = goldenEvent(event.TaskAssigned, true, asciiTexts)
	other.Task.ID = "t-1002"
	if m := mustCompose(t, other, cfg); m.InReplyTo == thread {
		t.Errorf("another task shares thread %q", thread)
	}
}

// TestComposeInjection puts CR, LF and other controls in every text field:
// none may reach a header, and the body stays within its bounds.
func TestComposeInjection(t *testing.T) {
	evil := "Eve\r\nBcc: victim@example.com\r\n\r\nbody\x00\t\u2028\u2029\u202e\x85\x1b[31m"
	for _, typ := range event.Types {
		t.Run(string(typ), func(t *testing.T) {
			ev := goldenEvent(typ, true, texts{evil, evil, evil, evil, evil, evil, evil})
			cfg := testConfig("https://app.example.com")
			cfg.From.Name = evil
			cfg.ListID = evil
			m := mustCompose(t, ev, cfg)
			if strings.Contains(renderMail(m), "\nBcc:") {
				t.Errorf("injected a Bcc field:\n%s", renderMail(m))
			}
		})
	}
}

func TestComposeLongInput(t *testing.T) {
	long := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit. ", 2000)
	run := strings.Repeat("A", 3000)
	cjk := strings.Repeat("基礎工事", 500)
	comb := strings.Repeat("e\u0301", 600)
	for name, text := range map[string]string{"words": long, "run": run, "cjk": cjk, "combining": comb} {
		for _, typ := range event.Types {
			t.Run(name+"/"+string(typ), func(t *testing.T) {
				ev := goldenEvent(typ, true, texts{text, text, text, text, text, text, text})
				m := mustCompose(t, ev, testConfig("https://app.example.com"))
				if typ == event.TaskComment || typ == event.Mention {
					quoted := quotedText(m.Body)
					if n := utf8.RuneCountInString(quoted); n > DefaultSnippetMax {
						t.Errorf("snippet has %d runes, want at most %d", n, DefaultSnippetMax)
					}
					if !strings.HasSuffix(quoted, "…") {
						t.Errorf("cut snippet does not end with …: %q", quoted)
					}
				}
			})
		}
	}
}

// quotedText joins the "> " lines of body back into the snippet (without
// the breaks wrapping added).
func quotedText(body string) string {
	var parts []string
	for _, line := range strings.Split(body, "\n") {
		if s, ok := strings.CutPrefix(line, "> "); ok {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "")
}

func TestComposeSnippetMax(t *testing.T) {
	body := strings.Repeat("word ", 400)
	tests := []struct {
		name string
		max  int
		want int // at most, in runes
	}{
		{"default", 0, DefaultSnippetMax},
		{"small", 40, 40},
		{"clamped", 10000, MaxSnippetMax},
		{"negative means default", -1, DefaultSnippetMax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := goldenEvent(event.Mention, true, asciiTexts)
			ev.Comment.Body = body
			cfg := testConfig("")
			cfg.SnippetMax = tt.max
			m := mustCompose(t, ev, cfg)
			// Wrapping replaced spaces with line breaks: count them back.
			var lines []string
			for _, line := range strings.Split(m.Body, "\n") {
				if s, ok := strings.CutPrefix(line, "> "); ok {
					lines = append(lines, s)
				}
			}
			got := utf8.RuneCountInString(strings.Join(lines, " "))
			if got > tt.want || got < tt.want-6 {
				t.Errorf("snippet has %d runes, want %d (cut at a word)", got, tt.want)
			}
		})
	}
}

func TestComposeDateChange(t *testing.T) {
	d1, d2 := "2026-12-01", "2026-12-05T10:00:00Z"
	tests := []struct {
		name     string
		change   event.Change
		wantLine string
	}{
		{"end moved", event.Change{Field: "planned_end", From: &d1, To: &d2}, "  Planned end:    2026-12-01 → 2026-12-05 10:00 (UTC)"},
		{"start set", event.Change{Field: "planned_start", To: &d1}, "  Planned start:  not set → 2026-12-01"},
		{"start cleared", event.Change{Field: "planned_start", From: &d1}, "  Planned start:  2026-12-01 → not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := goldenEvent(event.TaskDateChanged, true, asciiTexts)
			ev.Change = &tt.change
			m := mustCompose(t, ev, testConfig(""))
			if !strings.Contains(m.Body, "\n"+tt.wantLine+"\n") {
				t.Errorf("body lacks %q:\n%s", tt.wantLine, m.Body)
			}
		})
	}
}

func TestComposeErrors(t *testing.T) {
	valid := func() *event.Event { return goldenEvent(event.TaskAssigned, true, asciiTexts) }
	tests := []struct {
		name string
		ev   *event.Event
		cfg  Config
		want error
	}{
		{"nil event", nil, testConfig(""), event.ErrInvalid},
		{"bad id", func() *event.Event { e := valid(); e.ID = "a\r\nb"; return e }(), testConfig(""), event.ErrInvalid},
		{"bad task id", func() *event.Event { e := valid(); e.Task.ID = "t/1"; return e }(), testConfig(""), event.ErrInvalid},
		{"unknown type", func() *event.Event { e := valid(); e.Type = "task.deleted"; return e }(), testConfig(""), event.ErrInvalid},
		{"comment without body", func() *event.Event { e := valid(); e.Type = event.TaskComment; return e }(), testConfig(""), event.ErrInvalid},
		{"no address", func() *event.Event { e := valid(); e.Recipient.Email = ""; return e }(), testConfig(""), ErrNoAddress},
		{"no from", valid(), Config{}, ErrConfig},
		{"from with CRLF", valid(), Config{From: Address{Email: "a@b\r\nBcc: x@y"}}, ErrConfig},
		{"base not http", valid(), Config{From: Address{Email: "a@b.c"}, BaseURL: "ftp://x"}, ErrConfig},
		{"base with space", valid(), Config{From: Address{Email: "a@b.c"}, BaseURL: "https://x y"}, ErrConfig},
		{"base with query", valid(), Config{From: Address{Email: "a@b.c"}, BaseURL: "https://x/?a=1"}, ErrConfig},
		{"base without host", valid(), Config{From: Address{Email: "a@b.c"}, BaseURL: "https:///"}, ErrConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compose(tt.ev, tt.cfg, goldenNow)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Compose error = %v, want %v", err, tt.want)
			}
			if m != nil {
				t.Errorf("Compose returned a message with an error")
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"valid", Config{From: Address{Name: "N", Email: "notify@example.com"}, BaseURL: "https://app.example.com/"}, nil},
		{"valid http", Config{From: Address{Email: "notify@example.com"}, BaseURL: "http://localhost:8000"}, nil},
		{"every problem", Config{From: Address{Email: "not an address"}, BaseURL: "app.example.com", ListID: "a\nb", SnippetMax: -3},
			[]string{"from address", "base URL", "list id", "snippet max"}},
		{"from with name", Config{From: Address{Email: "N <n@example.com>"}}, []string{"from address"}},
		{"base with user", Config{From: Address{Email: "n@example.com"}, BaseURL: "https://u:p@app.example.com"}, []string{"base URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("Validate = %v, want ErrConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func writeTemplates(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadTemplatesOverride(t *testing.T) {
	dir := writeTemplates(t, map[string]string{
		"subject.tmpl":       "{{.Actor}} did {{.Type}}\r\nBcc: x@example.com\t on {{.Task}}",
		"task.assigned.tmpl": "Yo {{.Recipient}}!\n\n\n\n{{.Actor}} gave you {{.Task}}.\t" + strings.Repeat("blah ", 40) + "\n\n{{.Link}}\n\x00\u2028{{template \"footer.tmpl\" .}}\n\n\n",
		"README.md":          "ignored",
		"notes.tmpl.bak":     "ignored",
	})
	tpl, err := LoadTemplates(dir)
	if err != nil {
		t.Fatalf("LoadTemplates: %v", err)
	}
	cfg := testConfig("https://app.example.com")
	cfg.Templates = tpl
	m := mustCompose(t, goldenEvent(event.TaskAssigned, true, asciiTexts), cfg)
	if want := "Bob Stone did task.assigned Bcc: x@example.com on Pour foundation"; m.Subject != want {
		t.Errorf("Subject = %q, want %q", m.Subject, want)
	}
	if !strings.HasPrefix(m.Body, "Yo Ann Lee!\n\nBob Stone gave you Pour foundation. blah") {
		t.Errorf("body does not come from the override:\n%s", m.Body)
	}
	if strings.Contains(m.Body, "\n\n\n") {
		t.Errorf("body keeps repeated blank lines:\n%q", m.Body)
	}
	// Types not overridden keep the built-in wording.
	m = mustCompose(t, goldenEvent(event.TaskComment, true, asciiTexts), cfg)
	if !strings.Contains(m.Body, "Bob Stone commented on a task:") {
		t.Errorf("built-in body lost:\n%s", m.Body)
	}
}

func TestLoadTemplatesErrors(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		wantFile string
		wantLine int
		wantText string
	}{
		{"parse error", map[string]string{"footer.tmpl": "line one\nline two\n{{if .Type}}unclosed\n"}, "footer.tmpl", 0, "unexpected EOF"},
		{"bad action", map[string]string{"task.comment.tmpl": "a\nb\n{{.Actor | nosuchfunc}}\n"}, "task.comment.tmpl", 3, "nosuchfunc"},
		{"unknown field", map[string]string{"mention.tmpl": "hello\n\n{{.Nope}}\n"}, "mention.tmpl", 3, "Nope"},
		{"error in included", map[string]string{"greeting.tmpl": "{{index .Type 99}}"}, "greeting.tmpl", 1, "index out of range"},
		{"empty subject", map[string]string{"subject.tmpl": "{{/* nothing */}}  \n"}, "subject.tmpl", 0, "empty subject"},
		{"empty body", map[string]string{"task.blocked.tmpl": "\n\t\n"}, "task.blocked.tmpl", 0, "empty body"},
		{"unknown file", map[string]string{"task.asigned.tmpl": "x"}, "task.asigned.tmpl", 0, "unknown template"},
		{"runaway output", map[string]string{"task.assigned.tmpl": "{{range 100000000}}xxxxxxxxxx{{end}}"}, "task.assigned.tmpl", 0, "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeTemplates(t, tt.files)
			_, err := LoadTemplates(dir)
			var te *TemplateError
			if !errors.As(err, &te) || !errors.Is(err, ErrTemplate) {
				t.Fatalf("LoadTemplates error = %v, want a *TemplateError", err)
			}
			if te.File != filepath.Join(dir, tt.wantFile) {
				t.Errorf("File = %q, want %q", te.File, filepath.Join(dir, tt.wantFile))
			}
			if tt.wantLine != 0 && te.Line != tt.wantLine {
				t.Errorf("Line = %d, want %d (%v)", te.Line, tt.wantLine, err)
			}
			if tt.name == "parse error" && te.Line == 0 {
				t.Errorf("no line in %v", err)
			}
			if !strings.Contains(err.Error(), tt.wantText) || !strings.Contains(err.Error(), tt.wantFile) {
				t.Errorf("error %q does not name %q and %q", err, tt.wantFile, tt.wantText)
			}
		})
	}

	if _, err := LoadTemplates(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Errorf("LoadTemplates of a missing directory succeeded")
	}
}

func TestLoadTemplatesBuiltin(t *testing.T) {
	tpl, err := LoadTemplates("")
	if err != nil {
		t.Fatalf("LoadTemplates: %v", err)
	}
	cfg := testConfig("")
	ev := goldenEvent(event.TaskBlocked, true, asciiTexts)
	withNil := mustCompose(t, ev, cfg)
	cfg.Templates = tpl
	withLoaded := mustCompose(t, ev, cfg)
	cfg.Templates = &Templates{} // zero value: built-ins too
	withZero := mustCompose(t, ev, cfg)
	if renderMail(withNil) != renderMail(withLoaded) || renderMail(withNil) != renderMail(withZero) {
		t.Errorf("nil, zero and loaded built-in templates differ")
	}
}

// panicWriter is a template output that panics with a runtime error, which
// text/template does not recover.
type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) {
	var m map[string]int
	m["x"]++
	return 0, nil
}

func TestExecuteRecoversPanic(t *testing.T) {
	tpl, err := LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	en := tpl.langs[0]
	data := newTemplateData(goldenEvent(event.TaskAssigned, true, asciiTexts), &settings{snippetMax: DefaultSnippetMax}, en, goldenNow, time.UTC)
	err = func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("panic escaped: %v", r)
			}
		}()
		return en.execute(en.subject, panicWriter{}, data)
	}()
	if !errors.Is(err, ErrTemplate) || !strings.Contains(err.Error(), "panic") {
		t.Errorf("execute error = %v, want a template panic error", err)
	}
}

func TestComposeTemplateFailsAtRunTime(t *testing.T) {
	// Passes the start-up check (short sample titles) but fails on a long one.
	dir := writeTemplates(t, map[string]string{"task.assigned.tmpl": "{{.Actor}}\n{{if gt (len .Task) 100}}{{index .Task 1000}}{{end}}\n"})
	tpl, err := LoadTemplates(dir)
	if err != nil {
		t.Fatalf("LoadTemplates: %v", err)
	}
	ev := goldenEvent(event.TaskAssigned, true, asciiTexts)
	ev.Task.Title = strings.Repeat("x", 150)
	cfg := testConfig("")
	cfg.Templates = tpl
	_, err = Compose(ev, cfg, goldenNow)
	var te *TemplateError
	if !errors.As(err, &te) || te.Line != 2 || !strings.HasSuffix(te.File, "task.assigned.tmpl") {
		t.Errorf("Compose error = %v, want a *TemplateError at task.assigned.tmpl line 2", err)
	}
}

func TestComposeDoesNotMutateEvent(t *testing.T) {
	ev := goldenEvent(event.TaskComment, true, utf8Texts)
	before := *ev
	comment := *ev.Comment
	mustCompose(t, ev, testConfig("https://app.example.com"))
	if ev.Task != before.Task || *ev.Comment != comment || ev.Recipient != before.Recipient {
		t.Errorf("Compose changed the event")
	}
}

func TestComposeConcurrent(t *testing.T) {
	cfg := testConfig("https://app.example.com")
	want := renderMail(mustCompose(t, goldenEvent(event.TaskComment, true, utf8Texts), cfg))
	done := make(chan string)
	for range 8 {
		go func() {
			m, err := Compose(goldenEvent(event.TaskComment, true, utf8Texts), cfg, goldenNow)
			if err != nil {
				done <- err.Error()
				return
			}
			done <- renderMail(m)
		}()
	}
	for range 8 {
		if got := <-done; got != want {
			t.Errorf("concurrent Compose differs:\n%s", got)
		}
	}
}

func TestSubjectBounds(t *testing.T) {
	ev := goldenEvent(event.TaskDateChanged, true, asciiTexts)
	ev.Workspace.Name = strings.Repeat("Workspace ", 20)
	ev.Actor.Name = strings.Repeat("Actor ", 30)
	ev.Task.Title = strings.Repeat("Title ", 60)
	m := mustCompose(t, ev, testConfig(""))
	if n := utf8.RuneCountInString(m.Subject); n > MaxSubject {
		t.Errorf("subject has %d runes", n)
	}
	if !strings.Contains(m.Subject, "…") {
		t.Errorf("long parts not cut with …: %q", m.Subject)
	}
	if got := headers.Sanitize(m.Subject, 0); got != m.Subject {
		t.Errorf("subject not sanitized: %q", m.Subject)
	}
}
