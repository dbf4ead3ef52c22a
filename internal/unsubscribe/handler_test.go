package unsubscribe

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go/jetstream"
)

const oneClickForm = "List-Unsubscribe=One-Click"

// kvPrefs is a real notify_prefs bucket on an in-process server.
func kvPrefs(t *testing.T) (jetstream.KeyValue, *prefs.Store) {
	t.Helper()
	_, _, h := natstest.StartProvisioned(t)
	return h.Prefs, prefs.New(h.Prefs)
}

func newTestHandler(t *testing.T, p jetstream.KeyValue, keys ...string) (*Handler, *Signer) {
	t.Helper()
	if len(keys) == 0 {
		keys = []string{keyA}
	}
	s := mustSigner(t, "https://relay.example.com", keys...)
	h := NewHandler(Config{Signer: s, SettingsURL: "https://app.example.com/settings/notifications"})
	if p != nil {
		h.SetPrefs(p)
	}
	return h, s
}

func do(h http.Handler, method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if method == http.MethodPost {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func storedValue(t *testing.T, kv jetstream.KeyValue, user string) (map[string]any, uint64) {
	t.Helper()
	e, err := kv.Get(context.Background(), user)
	if err != nil {
		t.Fatalf("get %s: %v", user, err)
	}
	var v map[string]any
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		t.Fatal(err)
	}
	return v, e.Revision()
}

// TestPostTurnsOffKeepingTheRest: the one-click POST turns Email off for
// the token's user and type alone, keeps every other field, answers 200
// without a redirect, and a second POST changes nothing.
func TestPostTurnsOffKeepingTheRest(t *testing.T) {
	kv, store := kvPrefs(t)
	ctx := context.Background()
	const stored = `{"email":{"task.comment":true,"mention":true},"time_zone":"Europe/Berlin","quiet_hours":{"start":"22:00","end":"07:00"}}`
	if _, err := kv.Put(ctx, "u42", []byte(stored)); err != nil {
		t.Fatal(err)
	}
	h, s := newTestHandler(t, kv)
	path := Path + s.Token(Claim{User: "u42", Type: event.TaskComment})

	// GET changes nothing.
	if w := do(h, http.MethodGet, path, ""); w.Code != http.StatusOK {
		t.Fatalf("GET: %d", w.Code)
	}
	if _, rev := storedValue(t, kv, "u42"); rev != 1 {
		t.Fatalf("GET changed the value (revision %d)", rev)
	}

	w := do(h, http.MethodPost, path, oneClickForm)
	if w.Code != http.StatusOK || w.Header().Get("Location") != "" {
		t.Fatalf("POST: %d, Location %q\n%s", w.Code, w.Header().Get("Location"), w.Body)
	}
	v, rev := storedValue(t, kv, "u42")
	email := v["email"].(map[string]any)
	if email["task.comment"] != false || email["mention"] != true {
		t.Errorf("email after POST: %v", email)
	}
	if v["time_zone"] != "Europe/Berlin" || v["quiet_hours"] == nil {
		t.Errorf("other fields lost: %v", v)
	}
	if on, _ := store.EmailEnabled(ctx, "u42", event.Mention); !on {
		t.Error("mention was turned off too")
	}

	// Idempotent: again, nothing written.
	if w := do(h, http.MethodPost, path, oneClickForm); w.Code != http.StatusOK {
		t.Fatalf("second POST: %d", w.Code)
	}
	if _, rev2 := storedValue(t, kv, "u42"); rev2 != rev {
		t.Errorf("second POST wrote again: revision %d → %d", rev, rev2)
	}
}

// TestPostUserWithoutPrefs: a user with no record is off already.
func TestPostUserWithoutPrefs(t *testing.T) {
	kv, _ := kvPrefs(t)
	h, s := newTestHandler(t, kv)
	path := Path + s.Token(Claim{User: "u-new", Type: event.Mention})
	if w := do(h, http.MethodPost, path, oneClickForm); w.Code != http.StatusOK {
		t.Fatalf("POST: %d", w.Code)
	}
	// Off already (missing means off): nothing needs writing.
	if _, err := kv.Get(context.Background(), "u-new"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("a record was written for a user who had none: %v", err)
	}
}

// TestPostBodies: the bodies mailbox providers send, and what is refused.
func TestPostBodies(t *testing.T) {
	kv, _ := kvPrefs(t)
	h, s := newTestHandler(t, kv)
	path := Path + s.Token(Claim{User: "u1", Type: event.TaskAssigned})

	var mp strings.Builder
	mw := multipart.NewWriter(&mp)
	_ = mw.WriteField("List-Unsubscribe", "One-Click")
	_ = mw.Close()

	for _, tt := range []struct {
		name, ctype, body string
		want              int
	}{
		{"urlencoded", "application/x-www-form-urlencoded", oneClickForm, 200},
		{"urlencoded with charset", "application/x-www-form-urlencoded; charset=utf-8", oneClickForm, 200},
		{"no content type", "", oneClickForm, 200},
		{"multipart", mw.FormDataContentType(), mp.String(), 200},
		{"empty body", "application/x-www-form-urlencoded", "", 400},
		{"wrong value", "application/x-www-form-urlencoded", "List-Unsubscribe=Yes", 400},
		{"json", "application/json", `{"List-Unsubscribe":"One-Click"}`, 400},
		{"too big", "application/x-www-form-urlencoded", oneClickForm + "&x=" + strings.Repeat("a", 8000), 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(tt.body))
			if tt.ctype != "" {
				r.Header.Set("Content-Type", tt.ctype)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("%d, want %d\n%s", w.Code, tt.want, w.Body)
			}
		})
	}
}

// TestBadTokensChangeNothing: forged, truncated and unknown-key tokens get
// a 4xx on GET and POST, and the bucket is untouched.
func TestBadTokensChangeNothing(t *testing.T) {
	kv, store := kvPrefs(t)
	ctx := context.Background()
	if _, err := kv.Put(ctx, "u42", []byte(`{"email":{"task.comment":true}}`)); err != nil {
		t.Fatal(err)
	}
	h, s := newTestHandler(t, kv)
	good := s.Token(Claim{User: "u42", Type: event.TaskComment})
	forged := []byte(good)
	forged[len(forged)-3] ^= 0x01
	if forged[len(forged)-3] == '_' || forged[len(forged)-3] == '-' {
		forged[len(forged)-3] = 'A'
	}
	for _, tt := range []struct {
		name, token string
		want        int
	}{
		{"forged", string(forged), 400},
		{"truncated", good[:len(good)-4], 400},
		{"unknown key", mustSigner(t, "", keyC).Token(Claim{User: "u42", Type: event.TaskComment}), 410},
		{"garbage", "hello", 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, m := range []string{http.MethodGet, http.MethodPost} {
				w := do(h, m, Path+tt.token, oneClickForm)
				if w.Code != tt.want {
					t.Errorf("%s: %d, want %d", m, w.Code, tt.want)
				}
			}
		})
	}
	if on, _ := store.EmailEnabled(ctx, "u42", event.TaskComment); !on {
		t.Error("a bad token turned Email off")
	}
	if _, rev := storedValue(t, kv, "u42"); rev != 1 {
		t.Errorf("a bad token wrote (revision %d)", rev)
	}
}

// TestOnlyUPaths: the public handler serves /u/<token> and nothing else,
// in particular none of the admin listener's paths.
func TestOnlyUPaths(t *testing.T) {
	h, s := newTestHandler(t, nil)
	tok := s.Token(Claim{User: "u1", Type: event.TaskAssigned})
	for _, tt := range []struct{ method, path string }{
		{"GET", "/"},
		{"GET", "/healthz"},
		{"GET", "/readyz"},
		{"GET", "/metrics"},
		{"GET", "/v1/status/email"},
		{"GET", "/v1/suppressions"},
		{"POST", "/v1/suppressions"},
		{"GET", "/u/"},
		{"GET", "/u"},
		{"GET", "/u/" + tok + "/x"},
		{"GET", "/x/u/" + tok},
		{"PUT", "/u/" + tok},
		{"DELETE", "/u/" + tok},
	} {
		w := do(h, tt.method, tt.path, "")
		if w.Code != http.StatusNotFound {
			t.Errorf("%s %s: %d, want 404", tt.method, tt.path, w.Code)
		}
	}
}

// TestPostBeforeNATS: without a store yet, 503 and a Retry-After.
func TestPostBeforeNATS(t *testing.T) {
	h, s := newTestHandler(t, nil)
	w := do(h, http.MethodPost, Path+s.Token(Claim{User: "u1", Type: event.TaskAssigned}), oneClickForm)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("%d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
}

// TestRateLimit: at least 10 requests a minute from one address always
// pass; a flood from one address is refused with 429, others go on.
func TestRateLimit(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s := mustSigner(t, "", keyA)
	h := NewHandler(Config{Signer: s, Now: clock})
	path := Path + s.Token(Claim{User: "u1", Type: event.TaskAssigned})
	get := func(remote string, hdr ...string) int {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.RemoteAddr = remote
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}

	// Ten a minute for ten minutes, each minute's at once: never refused.
	for m := range 10 {
		for i := range 10 {
			if c := get("203.0.113.7:4000"); c != 200 {
				t.Fatalf("minute %d request %d: %d", m, i, c)
			}
		}
		advance(time.Minute)
	}
	// A flood: refused once the burst is spent.
	refused := 0
	for range 100 {
		if get("203.0.113.8:4000") == http.StatusTooManyRequests {
			refused++
		}
	}
	if refused < 100-DefaultBurst-1 {
		t.Errorf("only %d of 100 flood requests refused", refused)
	}
	if c := get("203.0.113.9:4000"); c != 200 {
		t.Errorf("another address is refused too: %d", c)
	}
	// Behind a proxy on loopback, the forwarded address counts.
	if c := get("127.0.0.1:5000", "X-Forwarded-For", "198.51.100.1"); c != 200 {
		t.Errorf("forwarded client refused: %d", c)
	}
	// A public peer cannot choose its address with the header.
	if c := get("203.0.113.8:4001", "X-Forwarded-For", "198.51.100.2"); c != http.StatusTooManyRequests {
		t.Errorf("X-Forwarded-For from a public peer escaped the limit: %d", c)
	}
	// The bucket refills.
	advance(time.Minute)
	if c := get("203.0.113.8:4000"); c != 200 {
		t.Errorf("after a minute: %d", c)
	}
}

// TestPages: the GET page says what is turned off, in the token's
// language, has one form button and the settings link, and no script.
func TestPages(t *testing.T) {
	h, s := newTestHandler(t, nil)
	for _, tt := range []struct {
		name, lang, accept string
		want               []string
	}{
		{"english", "en", "", []string{`lang="en"`, "comments on your tasks", "Turn off these emails", "Change all notification settings"}},
		{"german from the mail", "de", "en-US,en", []string{`lang="de"`, "Kommentaren zu Ihren Aufgaben", "Diese E-Mails abbestellen", "Alle Benachrichtigungseinstellungen"}},
		{"german from the browser", "", "de-DE,de;q=0.9,en;q=0.8", []string{`lang="de"`, "Kommentaren zu Ihren Aufgaben"}},
		{"unknown language", "", "fr-FR", []string{`lang="en"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := do(h, http.MethodGet, Path+s.Token(Claim{User: "u1", Type: event.TaskComment, Lang: tt.lang}), "", "Accept-Language", tt.accept)
			body := w.Body.String()
			if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
				t.Fatalf("%d %s", w.Code, w.Header().Get("Content-Type"))
			}
			for _, want := range tt.want {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q:\n%s", want, body)
				}
			}
			for _, want := range []string{`<form method="post"`, `name="List-Unsubscribe" value="One-Click"`, `<button type="submit">`,
				`href="https://app.example.com/settings/notifications"`} {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q", want)
				}
			}
			if strings.Contains(body, "<script") || strings.Count(body, "<button") != 1 {
				t.Errorf("page has a script or not exactly one button:\n%s", body)
			}
			for k, v := range map[string]string{"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
				if w.Header().Get(k) != v {
					t.Errorf("%s: %q", k, w.Header().Get(k))
				}
			}
		})
	}
}

// TestPublicServer: over a real listener, /u/ works and nothing else does.
func TestPublicServer(t *testing.T) {
	kv, _ := kvPrefs(t)
	if _, err := kv.Put(context.Background(), "u1", []byte(`{"email":{"task.assigned":true}}`)); err != nil {
		t.Fatal(err)
	}
	h, s := newTestHandler(t, kv)
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.PostForm(srv.URL+Path+s.Token(Claim{User: "u1", Type: event.TaskAssigned}), url.Values{"List-Unsubscribe": {"One-Click"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "email about tasks assigned to you is now off") {
		t.Errorf("%d\n%s", resp.StatusCode, b)
	}
	for _, p := range []string{"/metrics", "/healthz", "/v1/status/email"} {
		resp, err := c.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", p, resp.StatusCode)
		}
	}
}

// TestWithOff: only a true entry is changed; everything else is kept.
func TestWithOff(t *testing.T) {
	for _, tt := range []struct {
		name, in, want string
		changed        bool
	}{
		{"on", `{"email":{"mention":true,"task.comment":true},"batch":"10m","x":{"y":1}}`, `{"batch":"10m","email":{"mention":false,"task.comment":true},"x":{"y":1}}`, true},
		{"off", `{"email":{"mention":false}}`, "", false},
		{"absent", `{"email":{"task.comment":true}}`, "", false},
		{"not a boolean", `{"email":{"mention":"yes"}}`, "", false},
		{"no email", `{"Email":{"mention":true}}`, "", false},
		{"not JSON", `nope`, "", false},
		{"null", `null`, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := withOff([]byte(tt.in), event.Mention)
			if changed != tt.changed || (changed && string(got) != tt.want) || (!changed && string(got) != tt.in) {
				t.Errorf("withOff(%s) = %s, %v", tt.in, got, changed)
			}
		})
	}
}

// TestConcurrentPosts: many POSTs for different types of one user at once
// all land (compare-and-set, nothing lost).
func TestConcurrentPosts(t *testing.T) {
	kv, store := kvPrefs(t)
	ctx := context.Background()
	if _, err := kv.Put(ctx, "u7", []byte(`{"email":{"task.assigned":true,"task.comment":true,"mention":true,"task.blocked":true},"time_zone":"UTC"}`)); err != nil {
		t.Fatal(err)
	}
	h, s := newTestHandler(t, kv)
	var wg sync.WaitGroup
	for _, typ := range []event.Type{event.TaskAssigned, event.TaskComment, event.Mention} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w := do(h, http.MethodPost, Path+s.Token(Claim{User: "u7", Type: typ}), oneClickForm); w.Code != 200 {
				t.Errorf("%s: %d", typ, w.Code)
			}
		}()
	}
	wg.Wait()
	p, _, err := store.Get(ctx, "u7")
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled(event.TaskAssigned) || p.Enabled(event.TaskComment) || p.Enabled(event.Mention) || !p.Enabled(event.TaskBlocked) {
		t.Errorf("after concurrent posts: %+v", p.Email)
	}
}
