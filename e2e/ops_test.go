package e2e

// Operating the relay: readiness across a NATS outage, the admin status
// endpoint, metrics, routing of unknown paths and methods, and help on
// every command.

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// opsJS connects to an unauthenticated server and returns a JetStream
// context.
func opsJS(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("e2e-ops"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestReadyzFollowsNATS: /readyz is 200 while the relay is connected and
// bound, 503 while nats-server is down (/healthz stays 200), and 200 again
// by itself once the server is back; a backlog published after the restart
// is mailed.
func TestReadyzFollowsNATS(t *testing.T) {
	t.Parallel()
	buildMailrelay(t)
	ns := startNATSServer(t, natsOptions{})
	mp := startMailpit(t, mailpitOptions{})
	env := map[string]string{
		"NATS_URL": ns.URL(), "EMAIL_HOST": mp.SMTPHost(), "EMAIL_PORT": itoa(mp.SMTPPort()),
		"DEFAULT_FROM_EMAIL": "notify@example.com", "MAILRELAY_RETRY_DELAYS": "100ms",
	}
	r := startRelay(t, env)
	r.WaitReady(t, time.Minute)
	if res := runMailrelay(t, env, "", "prefs", "set", "u-ops", "all=on"); res.ExitCode != 0 {
		t.Fatalf("prefs set: %+v", res)
	}
	status := func(path string) func() (bool, int, string) {
		return func() (bool, int, string) {
			code, err := httpStatus(r.HTTPURL() + path)
			if err != nil {
				return false, 0, err.Error()
			}
			return true, code, fmt.Sprintf("%s answered %d", path, code)
		}
	}
	want := func(path string, code int, timeout time.Duration) {
		t.Helper()
		eventually(t, timeout, func() (bool, string) {
			ok, got, msg := status(path)()
			return ok && got == code, msg
		})
	}

	ns.Stop()
	want("/readyz", http.StatusServiceUnavailable, 30*time.Second)
	want("/healthz", http.StatusOK, 5*time.Second)
	consistently(t, time.Second, func() (bool, string) {
		ok, got, msg := status("/readyz")()
		return ok && got == http.StatusServiceUnavailable, msg
	})
	if r.Exited() {
		t.Fatalf("the relay exited while NATS was down: %s", r.proc.exitDescription())
	}

	ns.Restart()
	want("/readyz", http.StatusOK, time.Minute)

	const n = 20
	js := opsJS(t, ns.URL())
	var ids []string
	for i := range n {
		id := fmt.Sprintf("ops-backlog-%02d", i)
		ids = append(ids, id)
		publishAssigned(t, js, id, "u-ops", "ann@example.com")
	}
	mails := mp.WaitForCount(t, n, time.Minute)
	seen := map[string]bool{}
	for _, m := range mails {
		seen[m.MessageID] = true
	}
	for _, id := range ids {
		if !seen["notify."+id+"@example.com"] {
			t.Errorf("no mail for %s", id)
		}
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		ci := consumerInfo(t, ns.URL(), "NOTIFY", "mailrelay")
		return ci.NumPending == 0 && ci.NumAckPending == 0,
			fmt.Sprintf("consumer: %d pending, %d ack pending", ci.NumPending, ci.NumAckPending)
	})
}

// The keys of GET /v1/status/email: the transport (docs/contract.md §7) and the
// live figures (docs/contract.md §7).
var (
	// unsubscribe, public_url and public_listener say which one-click
	// mode is on (contract §9.6).
	statusKeys = []string{"mode", "configured", "host", "port", "security", "from", "frontend_base_url", "list_unsubscribe",
		"unsubscribe", "public_url", "public_listener"}
	// deferred: what NOTIFY_HELD holds (volume control, docs/volume.md).
	liveKeys = []string{"pending", "ack_pending", "redelivered", "last_send", "deferred"}
)

// TestStatusEndpoint: GET /v1/status/email answers 403 when no admin token
// is configured, 401 without or with a wrong token, and 200 with the token:
// exactly the §7 keys plus the live figures, never the SMTP username or
// password. /metrics exports every mailrelay metric; unknown paths are 404
// and wrong methods 405.
func TestStatusEndpoint(t *testing.T) {
	t.Parallel()
	buildMailrelay(t)
	ns := startNATSServer(t, natsOptions{})
	mp := startMailpit(t, mailpitOptions{})
	user := "status-user-" + randomMarker()
	password := "status-pw-" + randomMarker()
	token := "status-token-" + randomMarker()
	env := map[string]string{
		"NATS_URL": ns.URL(), "EMAIL_HOST": mp.SMTPHost(), "EMAIL_PORT": itoa(mp.SMTPPort()),
		"EMAIL_HOST_USER": user, "EMAIL_HOST_PASSWORD": password,
		"DEFAULT_FROM_EMAIL": "notify@example.com", "FRONTEND_BASE_URL": "https://app.example.com",
	}

	// Without a token configured the endpoint is closed to everyone.
	noToken := startRelay(t, env)
	noToken.WaitReady(t, time.Minute)
	for _, auth := range []string{"", "Bearer " + token, "Bearer "} {
		if code, _, body := httpCall(t, http.MethodGet, noToken.HTTPURL()+"/v1/status/email", auth); code != http.StatusForbidden {
			t.Errorf("no token configured, Authorization %q: %d %s, want 403", auth, code, body)
		}
	}
	noToken.Stop()

	env["MAILRELAY_ADMIN_TOKEN"] = token
	r := startRelay(t, env)
	r.WaitReady(t, time.Minute)
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Bearer " + token + "x", "Basic " + token, token} {
		code, h, body := httpCall(t, http.MethodGet, r.HTTPURL()+"/v1/status/email", auth)
		if code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d %s, want 401", auth, code, body)
		}
		if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: WWW-Authenticate %q, want a Bearer challenge", auth, h.Get("WWW-Authenticate"))
		}
	}

	// One mail, so that last_send is filled in.
	if res := runMailrelay(t, env, "", "prefs", "set", "u-status", "task.assigned=on"); res.ExitCode != 0 {
		t.Fatalf("prefs set: %+v", res)
	}
	natsPub(t, ns.URL(), "notify.task.assigned", string(assignedEvent("status-1", "u-status", "ann@example.com")), "status-1")
	waitState(t, ns.URL(), "status-1", "sent", time.Minute)

	var status map[string]any
	var body string
	eventually(t, 30*time.Second, func() (bool, string) {
		var code int
		var h http.Header
		code, h, body = httpCall(t, http.MethodGet, r.HTTPURL()+"/v1/status/email", "Bearer "+token)
		if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
			t.Fatalf("with the token: %d %s %s, want 200 JSON", code, h.Get("Content-Type"), body)
		}
		status = nil
		decodeJSON(t, body, &status)
		last, _ := status["last_send"].(map[string]any)
		return last["result"] == "ok", "last_send is " + fmt.Sprint(status["last_send"])
	})
	var keys []string
	for k := range status {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	wantKeys := append(slices.Clone(statusKeys), liveKeys...)
	sort.Strings(wantKeys)
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("keys %v, want exactly %v", keys, wantKeys)
	}
	for k, v := range map[string]any{
		"mode": "smtp", "configured": true, "host": mp.SMTPHost(), "port": float64(mp.SMTPPort()),
		"security": "none", "from": "notify@example.com", "frontend_base_url": "https://app.example.com",
		"list_unsubscribe": true,
	} {
		if status[k] != v {
			t.Errorf("%s = %#v, want %#v", k, status[k], v)
		}
	}
	for _, k := range []string{"pending", "ack_pending", "redelivered"} {
		if _, ok := status[k].(float64); !ok {
			t.Errorf("%s = %#v, want a number", k, status[k])
		}
	}
	if d, _ := status["deferred"].(map[string]any); d == nil || d["notifications"] != float64(0) || d["recipients"] != float64(0) {
		t.Errorf("deferred = %#v, want notifications and recipients 0", status["deferred"])
	}
	for _, f := range append(secretForms(user, password), user) {
		if strings.Contains(body, f) {
			t.Errorf("the status answer contains the SMTP username or password (%q): %s", f, body)
		}
	}

	// Metrics.
	code, h, metrics := httpCall(t, http.MethodGet, r.HTTPURL()+"/metrics", "")
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", code, h.Get("Content-Type"))
	}
	for _, name := range []string{
		"mailrelay_notifications_total", "mailrelay_smtp_send_seconds", "mailrelay_smtp_errors_total",
		"mailrelay_in_flight", "mailrelay_retries_total", "mailrelay_advisories_total",
		"mailrelay_consumer_pending", "mailrelay_consumer_ack_pending", "mailrelay_consumer_redelivered",
		"mailrelay_deferred", "mailrelay_deferred_recipients", "mailrelay_deferred_oldest_seconds",
		"mailrelay_build_info",
	} {
		if !regexp.MustCompile(`(?m)^# TYPE ` + name + ` `).MatchString(metrics) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if !strings.Contains(metrics, `mailrelay_notifications_total{state="sent",type="task.assigned"} 1`) {
		t.Errorf("/metrics does not count the mail sent:\n%s", grepLines(metrics, "mailrelay_notifications_total"))
	}
	for _, f := range append(secretForms(user, password), user, token) {
		if strings.Contains(metrics, f) {
			t.Errorf("/metrics contains a secret (%q)", f)
		}
	}

	// Routing.
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/", 404},
		{http.MethodGet, "/nope", 404},
		{http.MethodGet, "/v1/status", 404},
		{http.MethodGet, "/v1/status/email/x", 404},
		{http.MethodGet, "/metrics/x", 404},
		{http.MethodPost, "/healthz", 405},
		{http.MethodPut, "/readyz", 405},
		{http.MethodDelete, "/metrics", 405},
		{http.MethodPost, "/v1/status/email", 405},
		{http.MethodHead, "/healthz", 200},
	} {
		code, h, _ := httpCall(t, c.method, r.HTTPURL()+c.path, "Bearer "+token)
		if code != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, code, c.want)
		}
		if c.want == 405 && !strings.Contains(h.Get("Allow"), "GET") {
			t.Errorf("%s %s: Allow %q, want GET", c.method, c.path, h.Get("Allow"))
		}
	}
}

// grepLines returns the lines of s that contain substr.
func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestHelpAndVersion: `mailrelay <command> --help` exits 0 and prints the
// command's usage for every command the top-level help lists (and their
// subcommands); `mailrelay version` prints the version. None of them reads
// the configuration, so a broken one does not matter.
func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	buildMailrelay(t)
	env := map[string]string{"EMAIL_USE_TLS": "true", "EMAIL_USE_SSL": "true",
		"NATS_URL": fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)),
		// A race-enabled binary otherwise sleeps 1s at every exit.
		"GORACE": "atexit_sleep_ms=0"}

	top := runMailrelay(t, env, "", "--help")
	if top.ExitCode != 0 {
		t.Fatalf("mailrelay --help: %+v", top)
	}
	// kong lists each command on a line of its own, indented by two spaces:
	// "  prefs get <user> [flags]".
	cmdRE := regexp.MustCompile(`(?m)^  ([a-z][a-z-]*(?: [a-z][a-z-]*)*)(?: [<\[-].*)?$`)
	var paths []string
	for _, m := range cmdRE.FindAllStringSubmatch(top.Stdout, -1) {
		paths = append(paths, m[1])
	}
	for _, want := range []string{"serve", "publish", "prefs get", "prefs set", "state get", "status", "send-test", "version"} {
		if !slices.Contains(paths, want) {
			t.Errorf("mailrelay --help does not list %q (found %q)", want, paths)
		}
	}
	// Parent commands too ("prefs", "state").
	for _, p := range slices.Clone(paths) {
		if parent, _, ok := strings.Cut(p, " "); ok && !slices.Contains(paths, parent) {
			paths = append(paths, parent)
		}
	}
	for _, p := range paths {
		args := append(strings.Fields(p), "--help")
		res := runMailrelay(t, env, "", args...)
		if res.ExitCode != 0 || !strings.Contains(res.Stdout, "Usage: mailrelay "+p) {
			t.Errorf("mailrelay %s: exit %d, stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.ExitCode, res.Stdout, res.Stderr)
		}
	}

	res := runMailrelay(t, env, "", "version")
	if res.ExitCode != 0 || !regexp.MustCompile(`^mailrelay \S+\n$`).MatchString(res.Stdout) {
		t.Errorf("mailrelay version: %+v", res)
	}
}
