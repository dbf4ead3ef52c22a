package e2e

import (
	"bytes"
	"context"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/transport"
)

// htmlMail composes a late German comment mail with the HTML part on.
func htmlMail(t *testing.T, locale string) *compose.Message {
	t.Helper()
	ev := &event.Event{ID: "html-" + locale, Type: event.TaskComment, OccurredAt: time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC),
		Recipient: event.Recipient{ID: "u1", Email: "ann@example.com", Name: "Ann Lee", Locale: locale},
		Workspace: &event.Workspace{ID: "w1", Name: "Acme Build"},
		Actor:     &event.Actor{ID: "u2", Name: "Bob Stone"},
		Task:      event.Task{ID: "t-1001", Title: "Pour foundation", Project: "HQ"},
		Comment: &event.Comment{Body: "Concrete truck is late, see https://status.example.com/deliveries/2026/11/26/truck-4711?include=eta,driver,route&format=long#eta. " +
			"<b>Not bold</b> & (https://example.com/wiki/Foo_(bar))."}}
	m, err := compose.ComposeFor(ev, compose.Config{From: compose.Address{Name: "Acme", Email: "notify@example.com"},
		BaseURL: "https://app.example.com", HTML: true}, time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC), compose.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestHTMLPartMailpit sends the HTML mail through Mailpit and asks its
// HTML compatibility check (at least 88 % supported or partially
// supported) and its link check (every link whole).
func TestHTMLPartMailpit(t *testing.T) {
	mp := startMailpit(t, mailpitOptions{})
	for _, locale := range []string{"en", "de"} {
		m := htmlMail(t, locale)
		msg, err := transport.Render(m)
		if err != nil {
			t.Fatal(err)
		}
		var raw bytes.Buffer
		if _, err := msg.WriteTo(&raw); err != nil {
			t.Fatal(err)
		}
		if err := smtp.SendMail(mp.SMTPAddr(), nil, m.From.Email, []string{m.To.Email}, raw.Bytes()); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	for _, s := range mp.WaitForCount(t, 2, 30*time.Second) {
		var check struct {
			Total struct {
				Supported, Partial, Unsupported float64
				Tests                           int
			}
			Warnings []struct{ Title, Slug string }
		}
		mp.api(t, "GET", "/api/v1/message/"+s.ID+"/html-check", nil, &check)
		score := check.Total.Supported + check.Total.Partial
		t.Logf("%s: Mailpit HTML check: %.2f%% supported, %.2f%% partial, %.2f%% unsupported (%d tests)",
			s.MessageID, check.Total.Supported, check.Total.Partial, check.Total.Unsupported, check.Total.Tests)
		for _, w := range check.Warnings {
			t.Logf("  warning: %s (%s)", w.Title, w.Slug)
		}
		if score < 88 {
			t.Errorf("%s: HTML compatibility %.2f%%, want at least 88%%", s.MessageID, score)
		}
		var links struct {
			Errors int
			Links  []struct {
				URL        string
				StatusCode int
				Status     string
			}
		}
		mp.api(t, "GET", "/api/v1/message/"+s.ID+"/link-check", nil, &links)
		want := map[string]bool{
			"https://status.example.com/deliveries/2026/11/26/truck-4711?include=eta,driver,route&format=long#eta": false,
			"https://example.com/wiki/Foo_(bar)":             false,
			"https://app.example.com/tasks/t-1001":           false,
			"https://app.example.com/settings/notifications": false,
		}
		for _, l := range links.Links {
			t.Logf("  link %s: %d %s", l.URL, l.StatusCode, l.Status)
			if _, ok := want[l.URL]; ok {
				want[l.URL] = true
			}
		}
		for u, seen := range want {
			if !seen {
				t.Errorf("%s: link check did not find %s whole", s.MessageID, u)
			}
		}
	}
}

// TestHTMLPartChromium renders the HTML part in headless Chromium, light
// and dark, at a narrow width, and keeps screenshots as test artefacts in
// e2e/testdata/tmp (git-ignored). Nothing is fetched: the page is loaded
// from a file and has no remote content.
func TestHTMLPartChromium(t *testing.T) {
	bin := chromiumPath(t)
	out := filepath.Join("testdata", "tmp")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, locale := range []string{"en", "de"} {
		m := htmlMail(t, locale)
		page := filepath.Join(t.TempDir(), "mail.html")
		if err := os.WriteFile(page, []byte(m.HTML), 0o600); err != nil {
			t.Fatal(err)
		}
		opts := []chromedp.ExecAllocatorOption{
			chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
			chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
			chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(360, 800),
		}
		actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancel := chromedp.NewContext(actx)
		ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
		var (
			shot             []byte
			h1, lang         string
			links            int
			scrollW, clientW int
		)
		err := chromedp.Do(ctx, chromedp.Navigate("file://"+mustAbs(t, page)))
		if err == nil {
			h1, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("h1").textContent`))
		}
		if err == nil {
			lang, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.lang`))
		}
		if err == nil {
			links, err = chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('a[href^="https://"]').length`))
		}
		if err == nil {
			scrollW, err = chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		}
		if err == nil {
			clientW, err = chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.clientWidth`))
		}
		if err == nil {
			shot, err = chromedp.Run(ctx, chromedp.FullScreenshot(90))
		}
		cancelT()
		cancel()
		cancelA()
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		if !strings.Contains(h1, "Bob Stone") || lang != locale || links < 4 {
			t.Errorf("%s: h1 %q, lang %q, %d links", locale, h1, lang, links)
		}
		if scrollW > clientW {
			t.Errorf("%s: page scrolls sideways at 360 px (%d > %d)", locale, scrollW, clientW)
		}
		path := filepath.Join(out, "html-part-"+locale+".jpg")
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", path, len(shot))
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
