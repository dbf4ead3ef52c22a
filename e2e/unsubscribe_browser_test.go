package e2e

// One-click unsubscribe (contract §9.4, §9.6) as a recipient and a mailbox
// provider meet it: the header of a real mail, the page in a real browser
// (headless Chromium driven by chromedp), the button, and the preference
// flipping in the notify_prefs bucket.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mailrelay/mailrelay/event"
)

const (
	oneClickPublicURL = "https://unsubscribe.example.com"
	oneClickKeyOld    = "e2e-old-unsubscribe-key-0123456789"
	oneClickKeyNew    = "e2e-new-unsubscribe-key-0123456789"
	oneClickAdmin     = "e2e-admin-token-0123456789abcdef"
)

// chromiumPath finds Debian's chromium; missing, the test skips, or fails
// with CI=true (`make test` installs it as root).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "e2e: no chromium on PATH (apt-get install chromium; `make test` does it as root)"
	if inCI() {
		t.Fatal(msg + "; CI is set, so the browser is required")
	}
	t.Skip(msg)
	return ""
}

// browser starts headless Chromium with a fresh profile and returns a
// chromedp context; everything ends with the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(800, 700),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // start the browser now, without a deadline
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancelT)
	return ctx
}

// runB runs one browser action and fails the test on an error.
func runB[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// artefactDir is where screenshots are kept (gitignored).
func artefactDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(mustRepoRoot(t), "e2e", "testdata", "tmp", "unsubscribe")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// oneClickStack starts a stack and a relay with one-click on; the public
// listener is on a loopback port (the "proxy" is the test rewriting the
// public URL's origin).
func oneClickStack(t *testing.T, keys string) (*e2eStack, *relayProc, map[string]string, string) {
	t.Helper()
	s := newStack(t)
	publicAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	env := s.env(
		"MAILRELAY_PUBLIC_ADDR", publicAddr,
		"MAILRELAY_PUBLIC_URL", oneClickPublicURL,
		"MAILRELAY_UNSUBSCRIBE_KEYS", keys,
		"MAILRELAY_ADMIN_TOKEN", oneClickAdmin,
	)
	r := startReadyRelay(t, env)
	return s, r, env, "http://" + publicAddr
}

// local turns a one-click URL into the loopback listener's.
func local(t *testing.T, u, publicBase string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(u, oneClickPublicURL+"/u/")
	if !ok {
		t.Fatalf("one-click URL %q is not under %s/u/", u, oneClickPublicURL)
	}
	return publicBase + "/u/" + rest
}

func prefsOf(t *testing.T, url, user string) map[string]any {
	t.Helper()
	raw, ok := kvGet(t, url, "notify_prefs", user)
	if !ok {
		t.Fatalf("no notify_prefs entry for %s", user)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatalf("notify_prefs[%s] = %s: %v", user, raw, err)
	}
	return v
}

func emailPref(v map[string]any, typ event.Type) any {
	e, _ := v["email"].(map[string]any)
	return e[string(typ)]
}

// TestE2EOneClickUnsubscribe: the mail carries the signed https URL and
// List-Unsubscribe-Post; `mailrelay unsubscribe-url` prints the same URL;
// the start-up log and the status endpoint say one_click; in Chromium the
// page (German, the mail's language) says what goes off, the button turns
// it off, the confirmation shows, and only that type flips in KV. A
// mailbox provider's POST works too and repeats harmlessly.
func TestE2EOneClickUnsubscribe(t *testing.T) {
	t.Parallel()
	ctx := browser(t) // skip or fail before starting servers
	s, r, env, public := oneClickStack(t, oneClickKeyNew+","+oneClickKeyOld)
	url := s.ns.URL()

	// The mode is said at start-up and by the status endpoint.
	if !strings.Contains(r.Stderr(), `"mode":"one_click"`) {
		t.Errorf("start-up log does not say one_click:\n%s", grepLines(r.Stderr(), "unsubscribe"))
	}
	if strings.Contains(r.Output(), oneClickKeyNew) || strings.Contains(r.Output(), oneClickKeyOld) {
		t.Error("a key reached the log")
	}
	req, _ := http.NewRequest(http.MethodGet, r.HTTPURL()+"/v1/status/email", nil)
	req.Header.Set("Authorization", "Bearer "+oneClickAdmin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"unsubscribe":"one_click"`) || strings.Contains(string(body), "unsubscribe-key") {
		t.Errorf("status: %s", body)
	}

	// The public listener serves /u/ only.
	for _, p := range []string{"/metrics", "/healthz", "/readyz", "/v1/status/email", "/", "/u/"} {
		if code, err := httpStatus(public + p); err != nil || code != http.StatusNotFound {
			t.Errorf("public %s: %d %v, want 404", p, code, err)
		}
	}

	prefsPut(t, url, "u-oc", `{"email":{"task.comment":true,"mention":true},"time_zone":"Europe/Berlin"}`)
	ev := newEvent("oc-1", event.TaskComment, "u-oc", "oc@example.com", "Olga C")
	ev.Recipient.Locale = "de-DE"
	pubEvent(t, url, ev)
	msgs := s.mp.WaitForCount(t, 1, settleTimeout)
	h := s.mp.Headers(t, msgs[0].ID)
	unsub := strings.TrimSpace(strings.Join(h["List-Unsubscribe"], ""))
	if !strings.HasPrefix(unsub, "<"+oneClickPublicURL+"/u/") || !strings.HasSuffix(unsub, ">") || strings.Contains(unsub, "u-oc") {
		t.Fatalf("List-Unsubscribe = %q", unsub)
	}
	if got := strings.Join(h["List-Unsubscribe-Post"], ""); strings.TrimSpace(got) != "List-Unsubscribe=One-Click" {
		t.Errorf("List-Unsubscribe-Post = %q", got)
	}
	oneClick := strings.Trim(unsub, "<>")
	if text := s.mp.Message(t, msgs[0].ID).Text; !strings.Contains(strings.ReplaceAll(text, "\r\n", "\n"), "\n"+oneClick+"\n") {
		t.Errorf("the body lacks the one-click URL on a line of its own:\n%s", text)
	}

	// The CLI prints the same URL.
	res := runMailrelay(t, env, "", "unsubscribe-url", "u-oc", "task.comment", "--locale", "de")
	if res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != oneClick {
		t.Errorf("unsubscribe-url: %+v, want %s", res, oneClick)
	}

	// The browser: the page changes nothing, says what goes off, in German.
	page := local(t, oneClick, public)
	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("button"))); err != nil {
		t.Fatalf("open %s: %v", page, err)
	}
	heading := runB(t, ctx, chromedp.Text(chromedp.CSS("h1")))
	text := runB(t, ctx, chromedp.Text(chromedp.CSS("main")))
	lang := runB(t, ctx, chromedp.AttributeValue(chromedp.CSS("html"), "lang")).Value
	if lang != "de" || heading != "Diese E-Mails abbestellen?" || !strings.Contains(text, "Kommentaren zu Ihren Aufgaben") ||
		!strings.Contains(text, "Alle Benachrichtigungseinstellungen ändern") {
		t.Errorf("page: lang %q, heading %q, text:\n%s", lang, heading, text)
	}
	if emailPref(prefsOf(t, url, "u-oc"), event.TaskComment) != true {
		t.Error("GET changed the preference")
	}
	if href := runB(t, ctx, chromedp.AttributeValue(chromedp.CSS("main a"), "href")).Value; href != e2eBaseURL+"/settings/notifications" {
		t.Errorf("settings link %q", href)
	}
	// Keyboard: the first Tab focuses the button, a real submit button.
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\t")); err != nil {
		t.Fatal(err)
	}
	if focused := runB(t, ctx, chromedp.Evaluate[string](`document.activeElement.tagName + ":" + document.activeElement.type`)); focused != "BUTTON:submit" {
		t.Errorf("first Tab focuses %q, want the button", focused)
	}

	before := runB(t, ctx, chromedp.FullScreenshot(100))
	// Enter on the focused button submits the form (keyboard only).
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.CSS(`[role="status"]`))); err != nil {
		t.Fatalf("press the button: %v", err)
	}
	done := runB(t, ctx, chromedp.Text(chromedp.CSS("main")))
	after := runB(t, ctx, chromedp.FullScreenshot(100))
	dir := artefactDir(t)
	for name, b := range map[string][]byte{"unsubscribe-page.png": before, "unsubscribe-done.png": after} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Error(err)
		}
	}
	t.Logf("screenshots in %s", dir)
	if !strings.Contains(done, "Erledigt: E-Mails zu Kommentaren zu Ihren Aufgaben sind jetzt abgeschaltet.") {
		t.Errorf("confirmation:\n%s", done)
	}
	v := prefsOf(t, url, "u-oc")
	if emailPref(v, event.TaskComment) != false || emailPref(v, event.Mention) != true || v["time_zone"] != "Europe/Berlin" {
		t.Errorf("notify_prefs after the button: %v", v)
	}

	// A mailbox provider's one-click POST (no cookies), twice: 200, no
	// redirect, and the same result.
	prefsPut(t, url, "u-oc2", `{"email":{"mention":true,"task.assigned":true}}`)
	res = runMailrelay(t, env, "", "unsubscribe-url", "u-oc2", "mention")
	if res.ExitCode != 0 {
		t.Fatalf("unsubscribe-url: %+v", res)
	}
	target := local(t, strings.TrimSpace(res.Stdout), public)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for i := range 2 {
		resp, err := client.Post(target, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("POST %d: %d", i+1, resp.StatusCode)
		}
	}
	v = prefsOf(t, url, "u-oc2")
	if emailPref(v, event.Mention) != false || emailPref(v, event.TaskAssigned) != true {
		t.Errorf("notify_prefs after one-click POSTs: %v", v)
	}

	// A forged token: 4xx, nothing changed.
	forged := target[:len(target)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(target, "AA")]
	resp, err = client.Post(forged, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Errorf("forged token: %d", resp.StatusCode)
	}
	if emailPref(prefsOf(t, url, "u-oc2"), event.TaskAssigned) != true {
		t.Error("a forged token changed preferences")
	}
	stopClean(t, r, 30*time.Second)
}

// TestE2EOneClickKeyRotation: a link signed with the old key works while
// that key is configured (second), and stops (4xx) once it is removed.
func TestE2EOneClickKeyRotation(t *testing.T) {
	t.Parallel()
	buildMailrelay(t)
	// Signed with the old key alone (what mail sent before the rotation carries).
	oldEnv := map[string]string{"MAILRELAY_PUBLIC_URL": oneClickPublicURL, "MAILRELAY_UNSUBSCRIBE_KEYS": oneClickKeyOld}
	res := runMailrelay(t, oldEnv, "", "unsubscribe-url", "u-rot", "task.assigned")
	if res.ExitCode != 0 {
		t.Fatalf("unsubscribe-url: %+v", res)
	}
	oldURL := strings.TrimSpace(res.Stdout)

	s, r, _, public := oneClickStack(t, oneClickKeyNew+","+oneClickKeyOld)
	prefsPut(t, s.ns.URL(), "u-rot", `{"email":{"task.assigned":true}}`)
	if code, err := httpStatus(local(t, oldURL, public)); err != nil || code != 200 {
		t.Errorf("old link after rotation: %d %v", code, err)
	}
	stopClean(t, r, 30*time.Second)

	// A relay with only the new key: the old link is dead, nothing changes.
	addr2 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r2 := startReadyRelay(t, s.env("MAILRELAY_PUBLIC_ADDR", addr2, "MAILRELAY_PUBLIC_URL", oneClickPublicURL,
		"MAILRELAY_UNSUBSCRIBE_KEYS", oneClickKeyNew))
	dead := local(t, oldURL, "http://"+addr2)
	resp, err := http.Post(dead, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone {
		t.Errorf("old link after its key was removed: %d, want 410", resp.StatusCode)
	}
	if emailPref(prefsOf(t, s.ns.URL(), "u-rot"), event.TaskAssigned) != true {
		t.Error("a link of a removed key changed preferences")
	}
	stopClean(t, r2, 30*time.Second)
}
