package relay_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/relay"
	"github.com/mailrelay/mailrelay/internal/smtptest"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// get answers the status and body of GET http://addr/path (0 when refused).
func get(addr, path string) (int, string) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReadyz waits until /readyz answers code with a body containing want.
func waitReadyz(t *testing.T, addr string, code int, want string, timeout time.Duration) {
	t.Helper()
	natstest.Eventually(t, timeout, func() (bool, string) {
		c, body := get(addr, "/readyz")
		return c == code && strings.Contains(body, want), fmt.Sprintf("readyz = %d %q, want %d %q", c, body, code, want)
	})
}

// TestServerComesBackEmpty: nats-server dies and comes back with its store
// wiped. The relay says it is not ready while the server is away, then
// recreates the stream, consumers and buckets by itself, is ready again,
// and mails what is published afterwards.
func TestServerComesBackEmpty(t *testing.T) {
	e := newEnv(t)
	addr := freeAddr(t)
	e.startRelay(map[string]string{"MAILRELAY_HTTP_ADDR": addr})
	e.optIn("u1", event.TaskAssigned)
	e.publish(newEvent("before", event.TaskAssigned, "u1"), "before")
	e.waitState("before", state.Sent, 10*time.Second)

	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	waitReadyz(t, addr, 503, "NATS", 10*time.Second)
	e.ns.RestartEmpty()
	waitReadyz(t, addr, 200, "ready", 30*time.Second)
	if _, err := e.js.Stream(context.Background(), provision.Stream); err != nil {
		t.Fatalf("stream %s after the heal: %v", provision.Stream, err)
	}
	e.optIn("u1", event.TaskAssigned) // the preferences went with the store
	for i := range 20 {
		id := fmt.Sprintf("after%d", i)
		e.publish(newEvent(id, event.TaskAssigned, "u1"), id)
	}
	for i := range 20 {
		e.waitState(fmt.Sprintf("after%d", i), state.Sent, 20*time.Second)
	}
}

// TestObjectsDeletedUnderRelay: a bucket, the stream or the advisory
// stream deleted under a running relay is recreated, and the notifications
// that met the hole are decided on their merits (not inbox_only for "max
// deliveries reached").
func TestObjectsDeletedUnderRelay(t *testing.T) {
	cases := []struct {
		name    string
		del     func(ctx context.Context, e *env) error
		present func(ctx context.Context, e *env) error
		hole    bool // publish into the hole (a bucket); a deleted stream refuses publishes
	}{
		{"bucket " + prefs.Bucket,
			func(ctx context.Context, e *env) error { return e.js.DeleteKeyValue(ctx, prefs.Bucket) },
			func(ctx context.Context, e *env) error { _, err := e.js.KeyValue(ctx, prefs.Bucket); return err }, true},
		{"bucket " + state.Bucket,
			func(ctx context.Context, e *env) error { return e.js.DeleteKeyValue(ctx, state.Bucket) },
			func(ctx context.Context, e *env) error { _, err := e.js.KeyValue(ctx, state.Bucket); return err }, true},
		{"stream " + provision.Stream,
			func(ctx context.Context, e *env) error { return e.js.DeleteStream(ctx, provision.Stream) },
			func(ctx context.Context, e *env) error {
				_, err := e.js.Consumer(ctx, provision.Stream, provision.Consumer)
				return err
			}, false},
		{"stream " + hold.Stream,
			func(ctx context.Context, e *env) error { return e.js.DeleteStream(ctx, hold.Stream) },
			func(ctx context.Context, e *env) error {
				_, err := e.js.Consumer(ctx, hold.Stream, hold.Consumer)
				return err
			}, false},
		{"bucket " + provision.SeenBucket,
			func(ctx context.Context, e *env) error { return e.js.DeleteKeyValue(ctx, provision.SeenBucket) },
			func(ctx context.Context, e *env) error {
				_, err := e.js.KeyValue(ctx, provision.SeenBucket)
				return err
			}, true},
		{"stream " + provision.AdvisoryStream,
			func(ctx context.Context, e *env) error { return e.js.DeleteStream(ctx, provision.AdvisoryStream) },
			func(ctx context.Context, e *env) error {
				_, err := e.js.Consumer(ctx, provision.AdvisoryStream, provision.AdvisoryConsumer)
				return err
			}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			addr := freeAddr(t)
			e.startRelay(map[string]string{"MAILRELAY_HTTP_ADDR": addr, "MAILRELAY_ACK_WAIT": "30s"})
			e.optIn("u1", event.TaskAssigned)
			e.publish(newEvent("before", event.TaskAssigned, "u1"), "before")
			e.waitState("before", state.Sent, 10*time.Second)

			ctx := context.Background()
			if err := tc.del(ctx, e); err != nil {
				t.Fatal(err)
			}
			if tc.hole {
				e.publish(newEvent("hole", event.TaskAssigned, "u1"), "hole")
			}
			natstest.Eventually(t, 30*time.Second, func() (bool, string) {
				err := tc.present(ctx, e)
				return err == nil, fmt.Sprintf("%s: %v", tc.name, err)
			})
			if tc.hole {
				// With notify_prefs gone, the cache may still answer "on"
				// from memory (sent), or a direct read meets the recreated,
				// empty bucket (off by default): either is decided on its
				// merits.
				natstest.Eventually(t, 30*time.Second, func() (bool, string) {
					rec, ok := e.record("hole")
					good := rec.State == state.Sent || (tc.name == "bucket "+prefs.Bucket && rec.State == state.SkippedOptedOut)
					return ok && good, fmt.Sprintf("record of hole %+v", rec)
				})
			}
			waitReadyz(t, addr, 200, "ready", 20*time.Second)
			e.optIn("u1", event.TaskAssigned)
			e.publish(newEvent("after", event.TaskAssigned, "u1"), "after")
			e.waitState("after", state.Sent, 20*time.Second)
		})
	}
}

// startAuthServer runs a JetStream server that requires credentials.
func startAuthServer(t *testing.T, user, password, token string) string {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Username: user, Password: password, Authorization: token}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// runObserved runs a relay with vars, logging into an observer, until the
// test ends; it returns the HTTP address and the log.
func runObserved(t *testing.T, vars map[string]string) (string, *observer.ObservedLogs) {
	t.Helper()
	smtp := smtptest.Start(t)
	host, port := smtp.Addr()
	addr := freeAddr(t)
	v := map[string]string{"EMAIL_HOST": host, "EMAIL_PORT": strconv.Itoa(port), "MAILRELAY_HTTP_ADDR": addr,
		"DEFAULT_FROM_EMAIL": "notify@example.com"}
	for k, val := range vars {
		v[k] = val
	}
	cfg, err := config.Load(func(k string) string { return v[k] })
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx, cfg, relay.Options{Log: zap.New(core), Version: "test"}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("relay did not stop within 30s")
		}
	})
	return addr, logs
}

// logged reports whether a log entry's message or fields contain s.
func logged(logs *observer.ObservedLogs, s string) bool {
	for _, e := range logs.All() {
		if strings.Contains(e.Message, s) || strings.Contains(fmt.Sprint(e.ContextMap()), s) {
			return true
		}
	}
	return false
}

// TestNATSRefusesTheRelay: with wrong credentials the relay serves
// /healthz at once, answers /readyz 503 naming the refused credentials
// (never their value), and says so in its log.
func TestNATSRefusesTheRelay(t *testing.T) {
	cases := []struct {
		name, user, password, token string
		vars                        map[string]string
		secret, want                string
	}{
		{name: "user and password", user: "mailrelay", password: "right-pass",
			vars:   map[string]string{"NATS_USER": "mailrelay", "NATS_PASSWORD": "wrong-pass-7731"},
			secret: "wrong-pass-7731", want: "NATS refused the credentials from NATS_USER/NATS_PASSWORD"},
		{name: "token", token: "right-token",
			vars:   map[string]string{"NATS_TOKEN": "wrong-token-5519"},
			secret: "wrong-token-5519", want: "NATS refused the token in NATS_TOKEN"},
		{name: "no credentials", token: "right-token", vars: map[string]string{},
			want: "NATS requires credentials and none are set"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := startAuthServer(t, tc.user, tc.password, tc.token)
			tc.vars["NATS_URL"] = url
			addr, logs := runObserved(t, tc.vars)
			natstest.Eventually(t, 5*time.Second, func() (bool, string) {
				c, _ := get(addr, "/healthz")
				return c == 200, fmt.Sprintf("healthz = %d", c)
			})
			waitReadyz(t, addr, 503, tc.want, 10*time.Second)
			natstest.Eventually(t, 5*time.Second, func() (bool, string) {
				return logged(logs, tc.want), "the refusal is not in the log"
			})
			if _, body := get(addr, "/metrics"); !strings.Contains(body, `mailrelay_ready{reason="nats_refused"} 0`) {
				t.Errorf("metrics do not say why the relay is not ready")
			}
			if tc.secret != "" {
				_, body := get(addr, "/readyz")
				for _, e := range logs.All() {
					if strings.Contains(e.Message+fmt.Sprint(e.ContextMap()), tc.secret) {
						t.Fatalf("the secret reached the log: %s %v", e.Message, e.ContextMap())
					}
				}
				if strings.Contains(body, tc.secret) {
					t.Fatal("the secret reached /readyz")
				}
			}
		})
	}
}

// TestNATSUnreachable: with no server at NATS_URL the relay serves
// /healthz, answers /readyz 503 saying so, and logs it at once.
func TestNATSUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	start := time.Now()
	addr, logs := runObserved(t, map[string]string{"NATS_URL": "nats://" + closed})
	waitReadyz(t, addr, 503, "NATS unreachable", 5*time.Second)
	if c, _ := get(addr, "/healthz"); c != 200 {
		t.Fatalf("healthz = %d while NATS is unreachable", c)
	}
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		return logged(logs, "NATS unreachable"), "not logged"
	})
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("said after %s", d)
	}
	// Once per state change, not at every reconnect attempt (every 250 ms).
	time.Sleep(2 * time.Second)
	n := 0
	for _, e := range logs.FilterMessage("not ready").All() {
		if strings.Contains(fmt.Sprint(e.ContextMap()), "NATS unreachable") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d log lines say NATS is unreachable in 2s, want 1", n)
	}
}
