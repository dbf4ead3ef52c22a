package compose

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
)

func TestMatchLocale(t *testing.T) {
	for in, want := range map[string]string{
		"": "en", "en": "en", "en-GB": "en", "de": "de", "de-AT": "de", "de-CH": "de",
		"DE-at": "de", "fr": "en", "pt-BR": "en", "zh-Hant-TW": "en", "not a tag": "en",
	} {
		if got := MatchLocale(in); got != want {
			t.Errorf("MatchLocale(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCatalogComplete: German has every string and every type's label, so
// the built-in templates load without warnings.
func TestCatalogComplete(t *testing.T) {
	if gaps := catalogGaps(German, event.Defs()); len(gaps) > 0 {
		t.Errorf("German lacks %q", gaps)
	}
	tpl, err := LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	if w := tpl.Warnings(); len(w) > 0 {
		t.Errorf("built-in templates warn: %q", w)
	}
	if got := tpl.Languages(); !slices.Equal(got, []string{"en", "de"}) {
		t.Errorf("Languages = %q", got)
	}
	if got := TypeLabel("de-AT", event.TaskComment); got != "Kommentare zu Ihren Aufgaben" {
		t.Errorf("TypeLabel = %q", got)
	}
	if got := Text("fr", KeyUnsubscribeButton); got != "Turn off these emails" {
		t.Errorf("Text fallback = %q", got)
	}
}

// goldenDelayed is a sending time more than DelayNotice after occurred_at.
var goldenDelayed = time.Date(2026, 11, 26, 14, 40, 0, 0, time.UTC)

// TestGoldenLocale composes every type in German (de, and de-AT which
// falls back to it) and the delayed mail ("when it happened") in English
// and German in the recipient's zone; compared with testdata/golden/LOCALE.
func TestGoldenLocale(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no zone data: %v", err)
	}
	cfg := Config{From: Address{Name: "Acme Notifications", Email: "notify@example.com"}, BaseURL: "https://app.example.com/"}
	for _, locale := range []string{"de", "de-AT", "en"} {
		for _, typ := range event.Types {
			for _, delayed := range []bool{false, true} {
				if locale != "de" && !delayed {
					continue // de-AT must read as de; en without delay is TestGolden
				}
				for _, names := range []bool{true, false} {
					name := fmt.Sprintf("%s_%s_%s", typ, map[bool]string{true: "names", false: "nonames"}[names], map[bool]string{true: "delayed", false: "now"}[delayed])
					t.Run(locale+"/"+name, func(t *testing.T) {
						ev := goldenEvent(typ, names, asciiTexts)
						if typ == event.TaskBlocked {
							ev.BlockedBy = &event.TaskRef{ID: "t-0999", Title: "Site survey"}
						}
						ev.Recipient.Locale = locale
						now, o := goldenNow, Options{}
						if delayed {
							now, o = goldenDelayed, Options{TimeZone: berlin}
						}
						m, err := ComposeFor(ev, cfg, now, o)
						if err != nil {
							t.Fatalf("Compose: %v", err)
						}
						checkMessage(t, m, deepLink(cfg.BaseURL, ev.Task.ID))
						dir := locale
						if locale == "de-AT" {
							dir = "de"
						}
						compareGolden(t, filepath.Join("testdata", "golden", dir, name+".eml"), renderMail(m))
						if delayed != (strings.Contains(m.Body, "\n  When: ") || strings.Contains(m.Body, "\n  Zeitpunkt: ")) {
							t.Errorf("delayed %v, body:\n%s", delayed, m.Body)
						}
					})
				}
			}
		}
	}
}

// TestGoldenHTML: the HTML part of a comment mail, in English and German.
func TestGoldenHTML(t *testing.T) {
	for _, locale := range []string{"en", "de"} {
		t.Run(locale, func(t *testing.T) {
			cfg := Config{From: Address{Name: "Acme Notifications", Email: "notify@example.com"}, BaseURL: "https://app.example.com/", HTML: true}
			ev := goldenEvent(event.TaskComment, true, asciiTexts)
			ev.Recipient.Locale = locale
			ev.Comment.Body = `<script>alert(1)</script> "quoted" & see (https://example.com/a?b=1&c=2#frag). Done`
			m, err := ComposeFor(ev, cfg, goldenDelayed, Options{})
			if err != nil {
				t.Fatal(err)
			}
			plain, err := Compose(ev, Config{From: cfg.From, BaseURL: cfg.BaseURL}, goldenDelayed)
			if err != nil {
				t.Fatal(err)
			}
			if m.Body != plain.Body {
				t.Errorf("the text part changed with HTML on")
			}
			for _, bad := range []string{"<script>", "<img", "src=", "http://", "@import"} {
				if strings.Contains(m.HTML, bad) {
					t.Errorf("HTML holds %q", bad)
				}
			}
			for _, want := range []string{`<a href="https://example.com/a?b=1&amp;c=2#frag">`, `<a href="https://app.example.com/tasks/t-1001"`, `lang="` + locale + `"`, "&lt;script&gt;"} {
				if !strings.Contains(m.HTML, want) {
					t.Errorf("HTML lacks %q", want)
				}
			}
			compareGolden(t, filepath.Join("testdata", "golden", "html", locale+"_task.comment.html"), m.HTML)
		})
	}
}

// TestLoadTemplatesLocales: a directory overrides per language; a language
// that is not built in uses English for what it lacks, and says so.
func TestLoadTemplatesLocales(t *testing.T) {
	dir := t.TempDir()
	for path, text := range map[string]string{
		"de/task.comment.tmpl": "{{template \"greeting.tmpl\" .}}\n\nNEU: {{.Actor}} hat kommentiert.\n\n{{template \"footer.tmpl\" .}}\n",
		"fr/subject.tmpl":      "{{.Actor}} a mis à jour « {{.Task}} »",
		"fr/greeting.tmpl":     "Bonjour,",
		"notalang!/x.tmpl":     "ignored",
	} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, path), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tpl, err := LoadTemplates(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := tpl.Languages(); !slices.Equal(got, []string{"en", "de", "fr"}) {
		t.Errorf("Languages = %q", got)
	}
	w := strings.Join(tpl.Warnings(), "\n")
	for _, want := range []string{"templates fr: task.comment.tmpl is not translated", "templates fr: no built-in strings"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, "templates de:") {
		t.Errorf("German warns:\n%s", w)
	}
	cfg := Config{From: Address{Email: "notify@example.com"}, Templates: tpl}
	for locale, want := range map[string][]string{
		"de-AT": {"NEU: Bob Stone hat kommentiert.", "Sie erhalten diese E-Mail"},
		"fr-CA": {"Bonjour,", "Bob Stone commented on a task:", "You get this email"},
		"":      {"Hi Ann Lee,", "Bob Stone commented on a task:"},
	} {
		ev := goldenEvent(event.TaskComment, true, asciiTexts)
		ev.Recipient.Locale = locale
		m, err := Compose(ev, cfg, goldenNow)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range want {
			if !strings.Contains(m.Body, s) {
				t.Errorf("%q: body lacks %q:\n%s", locale, s, m.Body)
			}
		}
	}
}

// TestWhenItHappened: only a mail more than five minutes late says when,
// in the recipient's zone (UTC without one).
func TestWhenItHappened(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Skipf("no zone data: %v", err)
	}
	ev := goldenEvent(event.TaskAssigned, true, asciiTexts)
	for _, tt := range []struct {
		name string
		now  time.Time
		tz   *time.Location
		want string
	}{
		{"on time", ev.OccurredAt.Add(DelayNotice), nil, ""},
		{"late, UTC", ev.OccurredAt.Add(DelayNotice + time.Second), nil, "  When:           Thursday, 26 November 2026, 09:30 (UTC)"},
		{"late, offset zone", ev.OccurredAt.Add(5 * time.Hour), tokyo, "  When:           Thursday, 26 November 2026, 15:00 (IST)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ComposeFor(ev, testConfig(""), tt.now, Options{TimeZone: tt.tz})
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" && strings.Contains(m.Body, "When:") || tt.want != "" && !strings.Contains(m.Body, tt.want+"\n") {
				t.Errorf("body, want %q:\n%s", tt.want, m.Body)
			}
		})
	}
}
