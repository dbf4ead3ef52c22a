// Package httpapi serves mailrelay's HTTP endpoints (contract §7): health,
// readiness, Prometheus metrics and the admin email-status endpoint.
package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Config wires the handlers to the running relay.
type Config struct {
	// Ready reports whether the relay can do its work (connected to NATS,
	// its streams, consumers and buckets present, bound to its consumer)
	// and, when not, why: /readyz answers 503 with that reason.
	Ready func() (bool, string)
	// Status returns the /v1/status/email body.
	Status func() any
	// AdminToken guards /v1/status/email; "" answers 403 to everyone.
	AdminToken string
	Registry   *prometheus.Registry
	// Suppressions returns the suppression list, nil until the relay has
	// provisioned it (the endpoints answer 503 meanwhile).
	Suppressions func() Suppressions
}

// Handler returns the HTTP handler.
func Handler(c Config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if c.Ready == nil {
			text(w, http.StatusServiceUnavailable, "not ready")
			return
		}
		if ok, why := c.Ready(); !ok {
			text(w, http.StatusServiceUnavailable, "not ready: "+why)
			return
		}
		text(w, http.StatusOK, "ready")
	})
	if c.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(c.Registry, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /v1/status/email", c.admin(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.Status())
	}))
	c.suppressionRoutes(mux)
	return mux
}

// admin guards h with the bearer token: 403 when none is configured, 401
// without the right one.
func (c Config) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c.AdminToken == "" {
			jsonError(w, http.StatusForbidden, "the admin endpoints are disabled: no MAILRELAY_ADMIN_TOKEN is configured")
			return
		}
		if !authorized(r.Header.Get("Authorization"), c.AdminToken) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mailrelay"`)
			jsonError(w, http.StatusUnauthorized, "a valid bearer token is required")
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// authorized compares the bearer token in constant time.
func authorized(header, token string) bool {
	const prefix = "bearer "
	if len(header) < len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return false
	}
	got := strings.TrimSpace(header[len(prefix):])
	return subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

func text(w http.ResponseWriter, code int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(s + "\n"))
}

func jsonError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// Serve listens on addr and serves h until ctx ends, then shuts down
// gracefully. Every server phase has a timeout, so slow clients cannot
// hold connections.
func Serve(ctx context.Context, addr string, h http.Handler, log *zap.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ServeListener(ctx, ln, h, log)
}

// ServeListener is Serve on an open listener.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler, log *zap.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
