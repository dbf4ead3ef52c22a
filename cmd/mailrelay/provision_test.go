package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// assignedJSON is a valid task.assigned notification for user u1.
func assignedJSON(id string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"type":"task.assigned","occurred_at":%q,`+
		`"recipient":{"id":"u1","email":"ann@example.com"},"task":{"id":"t1","title":"Pour foundation"}}`,
		id, time.Now().UTC().Format(time.RFC3339)))
}

// TestProvisionCommand: before `mailrelay provision` a JetStream publish
// fails (no stream captures it, and `mailrelay publish` says to run
// provision); after it, every stream, consumer and bucket exists with the
// settings of the environment, the command printed them, and a JetStream
// publish is stored for the first relay to find. A second run changes
// nothing but a changed setting, and keeps what was published.
func TestProvisionCommand(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns.URL())
	ctx := natstest.Ctx(t)
	env := envFrom(map[string]string{"NATS_URL": ns.URL()})

	// Before: nothing captures notify.>, a JetStream publish says so.
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := event.PublishRaw(pctx, js, "notify.task.assigned", "early", assignedJSON("early"))
	cancel()
	if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("JetStream publish before provision: %v, want no stream response", err)
	}
	_, _, err = runCLIStdin(t, env, string(assignedJSON("early")), "publish")
	if err == nil || !strings.Contains(err.Error(), "mailrelay provision") {
		t.Fatalf("mailrelay publish before provision: %v, want an error pointing at `mailrelay provision`", err)
	}

	start := time.Now()
	out, stderr, err := runCLI(t, env, "provision")
	if err != nil {
		t.Fatalf("provision: %v\nstderr:\n%s", err, stderr)
	}
	t.Logf("provision took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	for _, want := range []string{"provisioned on " + ns.URL(), "stream", "NOTIFY", "notify.>", "mailrelay on NOTIFY",
		"NOTIFY_ADVISORIES", "mailrelay_advisories on NOTIFY_ADVISORIES", "notify_prefs", "notify_email_state", "REPLICAS",
		"duplicate window 1h0m0s", "max deliver 3", "ttl 720h0m0s",
		"NOTIFY_HELD", "message schedules", "mailrelay_flush on NOTIFY_HELD", "notify_seen"} {
		if !strings.Contains(out, want) {
			t.Errorf("provision output lacks %q:\n%s", want, out)
		}
	}
	for _, name := range []string{"NOTIFY", "NOTIFY_ADVISORIES", "KV_notify_prefs", "KV_notify_email_state"} {
		si, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s after provision: %v", name, err)
		}
		if r := si.CachedInfo().Config.Replicas; r != 1 {
			t.Errorf("stream %s: %d replicas, want 1", name, r)
		}
	}
	if _, err := js.Consumer(ctx, provision.Stream, provision.Consumer); err != nil {
		t.Fatalf("consumer mailrelay after provision: %v", err)
	}

	// A JetStream publish is stored now, with no relay running.
	ack, err := event.PublishRaw(ctx, js, "notify.task.assigned", "kept", assignedJSON("kept"))
	if err != nil || ack.Stream != provision.Stream || ack.Duplicate {
		t.Fatalf("JetStream publish after provision: %+v %v", ack, err)
	}
	if out, _, err := runCLIStdin(t, env, string(assignedJSON("kept-2")), "publish"); err != nil || !strings.Contains(out, "stream NOTIFY") {
		t.Fatalf("mailrelay publish after provision: %q %v", out, err)
	}

	// Again, with a changed setting: updated in place, nothing lost.
	out, stderr, err = runCLI(t, envFrom(map[string]string{"NATS_URL": ns.URL(), "MAILRELAY_ACK_WAIT": "45s"}), "provision")
	if err != nil {
		t.Fatalf("second provision: %v\nstderr:\n%s", err, stderr)
	}
	if !strings.Contains(out, "ack wait 45s") || !strings.Contains(out, "2 messages") || !strings.Contains(out, "2 pending") {
		t.Errorf("second provision output: want ack wait 45s and the 2 stored messages pending:\n%s", out)
	}
	c, err := js.Consumer(ctx, provision.Stream, provision.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	if ci := c.CachedInfo(); ci.Config.AckWait != 45*time.Second || ci.NumPending != 2 {
		t.Errorf("consumer after the second provision: ack wait %v, %d pending; want 45s, 2", ci.Config.AckWait, ci.NumPending)
	}
}

// runCLIStdin is runCLI with stdin.
func runCLIStdin(t *testing.T, getenv func(string) string, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut strings.Builder
	err = run(context.Background(), args, getenv, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// TestProvisionUnreachable: with no server, provision waits --timeout, then
// fails (exit 1) naming the server and the cause, and no secret.
func TestProvisionUnreachable(t *testing.T) {
	const secret = "s3cret-pw-in-url"
	port := closedPort(t)
	env := envFrom(map[string]string{"NATS_URL": fmt.Sprintf("nats://relay:%s@127.0.0.1:%d", secret, port), "NATS_TOKEN": "tok-secret"})
	start := time.Now()
	stdout, stderr, err := runCLI(t, env, "provision", "--timeout", "1500ms")
	took := time.Since(start)
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("provision without a server: %v (exit %d), want exit 1", err, exitCode(err))
	}
	if took < time.Second || took > 10*time.Second {
		t.Errorf("provision gave up after %v, want about the 1.5s timeout", took)
	}
	msg := err.Error()
	for _, want := range []string{"no NATS server reachable", fmt.Sprintf("127.0.0.1:%d", port), "within 1.5s", "connection refused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	for _, s := range []string{secret, "tok-secret"} {
		if strings.Contains(msg+stdout+stderr, s) {
			t.Errorf("output leaks the secret %q:\n%s\n%s\n%s", s, msg, stdout, stderr)
		}
	}
}

// TestProvisionWaitsForServer: a server that comes up within --timeout is
// provisioned (a deployment may start the job beside nats-server).
func TestProvisionWaitsForServer(t *testing.T) {
	port := closedPort(t)
	dir := t.TempDir()
	started := make(chan *server.Server, 1)
	go func() {
		time.Sleep(time.Second)
		s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
		if err != nil {
			t.Error(err)
			started <- nil
			return
		}
		go s.Start()
		started <- s
	}()
	t.Cleanup(func() {
		if s := <-started; s != nil {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	out, stderr, err := runCLI(t, envFrom(map[string]string{"NATS_URL": fmt.Sprintf("nats://127.0.0.1:%d", port)}), "provision", "--timeout", "20s")
	if err != nil {
		t.Fatalf("provision: %v\nstderr:\n%s", err, stderr)
	}
	if !strings.Contains(out, "notify_email_state") {
		t.Errorf("output:\n%s", out)
	}
}

// startRefusingServer runs a JetStream server with two users: "relay" may
// do anything, "pub" may only publish notifications and read its inbox.
func startRefusingServer(t *testing.T, jetStream bool) string {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: jetStream, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: "relay", Password: "relay-pw"},
			{Username: "pub", Password: "pub-pw", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"notify.>"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", "_INBOX_mailrelay.>"}},
			}},
		}}
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

// TestProvisionRefused: wrong credentials, an identity without the
// permissions, and a server without JetStream each fail at once (not after
// the timeout) with the cause, exit 1, and never the password.
func TestProvisionRefused(t *testing.T) {
	url := startRefusingServer(t, true)
	noJS := startRefusingServer(t, false)
	for _, tc := range []struct {
		name, url, user, password string
		want                      []string
	}{
		{"wrong password", url, "relay", "wrong-pw-marker", []string{"refused the credentials", "Authorization Violation"}},
		{"no permission", url, "pub", "pub-pw", []string{"NATS refused a request", "Permissions Violation for Publish to", "$JS.API."}},
		{"no JetStream", noJS, "relay", "relay-pw", []string{"JetStream is not enabled"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := envFrom(map[string]string{"NATS_URL": tc.url, "NATS_USER": tc.user, "NATS_PASSWORD": tc.password})
			start := time.Now()
			stdout, stderr, err := runCLI(t, env, "provision", "--timeout", "20s")
			took := time.Since(start)
			if err == nil || exitCode(err) != 1 {
				t.Fatalf("err = %v (exit %d), want exit 1", err, exitCode(err))
			}
			t.Logf("after %v: %v", took.Round(time.Millisecond), err)
			if took > 10*time.Second {
				t.Errorf("took %v: a refusal should end the command at once, not at the timeout", took)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q", w)
				}
			}
			if strings.Contains(err.Error()+stdout+stderr, tc.password) {
				t.Errorf("output leaks the password")
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
	// The identity with every permission provisions the same server.
	if _, stderr, err := runCLI(t, envFrom(map[string]string{"NATS_URL": url, "NATS_USER": "relay", "NATS_PASSWORD": "relay-pw"}), "provision"); err != nil {
		t.Fatalf("provision as relay: %v\n%s", err, stderr)
	}
}
