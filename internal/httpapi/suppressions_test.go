package httpapi

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mailrelay/mailrelay/internal/suppress"
)

// memSuppressions is a suppression list in memory.
type memSuppressions struct {
	mu sync.Mutex
	m  map[string]suppress.Entry
}

func (s *memSuppressions) List(context.Context) ([]suppress.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []suppress.Entry
	for _, e := range s.m {
		out = append(out, e)
	}
	return out, nil
}

func (s *memSuppressions) Add(_ context.Context, e suppress.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[suppress.Key(e.Address)] = e
	return nil
}

func (s *memSuppressions) Remove(_ context.Context, a string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[suppress.Key(a)]; !ok {
		return suppress.ErrNotFound
	}
	delete(s.m, suppress.Key(a))
	return nil
}

func TestSuppressionEndpoints(t *testing.T) {
	store := &memSuppressions{m: map[string]suppress.Entry{}}
	var ready atomic.Bool
	h := Handler(Config{AdminToken: "tok", Suppressions: func() Suppressions {
		if !ready.Load() {
			return nil
		}
		return store
	}})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	do := func(method, path, body, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	steps := []struct {
		name, method, path, body, auth string
		ready                          bool
		code                           int
		want                           string
	}{
		{"no token", "GET", "/v1/suppressions", "", "", true, 401, "bearer token"},
		{"wrong token", "POST", "/v1/suppressions", `{"address":"a@example.com"}`, "Bearer nope", true, 401, ""},
		{"not provisioned yet", "GET", "/v1/suppressions", "", "Bearer tok", false, 503, "not available yet"},
		{"empty list", "GET", "/v1/suppressions", "", "Bearer tok", true, 200, `{"suppressions":[]}`},
		{"bad address", "POST", "/v1/suppressions", `{"address":"Ann <a@example.com>"}`, "Bearer tok", true, 400, "not an email address"},
		{"unknown field", "POST", "/v1/suppressions", `{"address":"a@example.com","why":"x"}`, "Bearer tok", true, 400, "the body must be"},
		{"add", "POST", "/v1/suppressions", `{"address":"a@example.com","reason":"asked"}`, "Bearer tok", true, 201, `"source":"operator"`},
		{"listed", "GET", "/v1/suppressions", "", "Bearer tok", true, 200, `"address":"a@example.com"`},
		{"remove, any case", "DELETE", "/v1/suppressions/A@Example.com", "", "Bearer tok", true, 204, ""},
		{"removed", "DELETE", "/v1/suppressions/a@example.com", "", "Bearer tok", true, 404, "not suppressed"},
	}
	for _, st := range steps {
		ready.Store(st.ready)
		code, body := do(st.method, st.path, st.body, st.auth)
		if code != st.code || !strings.Contains(body, st.want) {
			t.Fatalf("%s: %d %q, want %d containing %q", st.name, code, body, st.code, st.want)
		}
	}
}
