package httpapi

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

func TestEndpoints(t *testing.T) {
	var ready atomic.Bool
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "mailrelay_test_total", Help: "t"})
	reg.MustRegister(c)
	c.Inc()
	readyFn := func() (bool, string) {
		if ready.Load() {
			return true, ""
		}
		return false, "NATS unreachable"
	}
	h := Handler(Config{Ready: readyFn, AdminToken: "s3cret-token", Registry: reg,
		Status: func() any { return map[string]any{"mode": "smtp", "port": 587} }})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	cases := []struct {
		name, method, path, auth string
		ready                    bool
		wantCode                 int
		wantBody                 string
	}{
		{name: "healthz", method: "GET", path: "/healthz", wantCode: 200},
		{name: "readyz not ready", method: "GET", path: "/readyz", wantCode: 503},
		{name: "readyz not ready says why", method: "GET", path: "/readyz", wantCode: 503, wantBody: "not ready: NATS unreachable"},
		{name: "readyz ready", method: "GET", path: "/readyz", ready: true, wantCode: 200},
		{name: "metrics", method: "GET", path: "/metrics", wantCode: 200, wantBody: "mailrelay_test_total 1"},
		{name: "status without token", method: "GET", path: "/v1/status/email", wantCode: 401},
		{name: "status wrong token", method: "GET", path: "/v1/status/email", auth: "Bearer nope", wantCode: 401},
		{name: "status token prefix only", method: "GET", path: "/v1/status/email", auth: "Bearer s3cret", wantCode: 401},
		{name: "status basic auth", method: "GET", path: "/v1/status/email", auth: "Basic czNjcmV0LXRva2Vu", wantCode: 401},
		{name: "status ok", method: "GET", path: "/v1/status/email", auth: "Bearer s3cret-token", wantCode: 200, wantBody: `"mode":"smtp"`},
		{name: "status lower-case scheme", method: "GET", path: "/v1/status/email", auth: "bearer s3cret-token", wantCode: 200},
		{name: "unknown path", method: "GET", path: "/nope", wantCode: 404},
		{name: "wrong method", method: "POST", path: "/healthz", wantCode: 405},
		{name: "wrong method on status", method: "DELETE", path: "/v1/status/email", wantCode: 405},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ready.Store(tc.ready)
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("code = %d, want %d (%s)", resp.StatusCode, tc.wantCode, body)
			}
			if !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("body %q lacks %q", body, tc.wantBody)
			}
			if strings.Contains(string(body), "s3cret") {
				t.Errorf("body leaks the token: %s", body)
			}
		})
	}
}

func TestStatusForbiddenWithoutToken(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{Status: func() any { return "x" }}))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("GET", srv.URL+"/v1/status/email", nil)
	req.Header.Set("Authorization", "Bearer ")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("code = %d, want 403", resp.StatusCode)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, Handler(Config{}), zap.NewNop()) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop")
	}
}
