package relay_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/consumer"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/transport"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func readyz(addr string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestNATSRestartUnderRelay: the server restarts under a running relay;
// /readyz goes 503, then 200 by itself, and the backlog drains.
func TestNATSRestartUnderRelay(t *testing.T) {
	e := newEnv(t)
	addr := freeAddr(t)
	e.startRelay(map[string]string{"MAILRELAY_HTTP_ADDR": addr})
	e.optIn("u1", event.TaskAssigned)
	e.publish(newEvent("before", event.TaskAssigned, "u1"), "before")
	e.waitState("before", state.Sent, 10*time.Second)
	natstest.Eventually(t, 5*time.Second, func() (bool, string) { return readyz(addr) == 200, "not ready" })

	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	natstest.Eventually(t, 10*time.Second, func() (bool, string) {
		c := readyz(addr)
		return c == 503, fmt.Sprintf("readyz = %d while NATS is down", c)
	})
	e.ns.Restart()
	natstest.Eventually(t, 20*time.Second, func() (bool, string) {
		c := readyz(addr)
		return c == 200, fmt.Sprintf("readyz = %d after NATS came back", c)
	})
	for i := range 50 {
		id := fmt.Sprintf("after%d", i)
		e.publish(newEvent(id, event.TaskAssigned, "u1"), id)
	}
	for i := range 50 {
		e.waitState(fmt.Sprintf("after%d", i), state.Sent, 20*time.Second)
	}
	if n := len(e.smtp.Messages()); n != 51 {
		t.Fatalf("%d mails, want 51", n)
	}
}

// TestSMTPFlapping: 30% random 451s, then a 20 s total outage: every
// notification ends sent or inbox_only (3 attempts), none stuck, and a
// relay started afterwards mails nothing again.
func TestSMTPFlapping(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 20s")
	}
	t.Parallel()
	e := newEnv(t)
	stop := e.startRelay(map[string]string{"MAILRELAY_RETRY_DELAYS": "100ms"})
	e.optIn("u1", event.TaskAssigned)
	e.smtp.SetFailureRate(0.3, 451, "4.3.0", "flap")
	var ids []string
	pub := func(prefix string, n int) {
		for i := range n {
			id := fmt.Sprintf("%s%d", prefix, i)
			ids = append(ids, id)
			e.publish(newEvent(id, event.TaskAssigned, "u1"), id)
		}
	}
	pub("flap", 150)
	settled := func() (bool, string) {
		for _, id := range ids {
			r, ok := e.record(id)
			if !ok || (r.State != state.Sent && r.State != state.InboxOnly) {
				return false, fmt.Sprintf("%s: %+v", id, r)
			}
		}
		return true, ""
	}
	natstest.Eventually(t, 30*time.Second, settled)
	e.smtp.Vanish()
	outage := time.Now()
	pub("outage", 50)
	natstest.Eventually(t, 20*time.Second, settled)
	time.Sleep(time.Until(outage.Add(20 * time.Second))) // the outage lasts 20 s whatever happens
	e.smtp.Resume()
	e.smtp.SetFailureRate(0, 0, "", "")
	pub("back", 20)
	natstest.Eventually(t, 20*time.Second, settled)

	sent, inbox := 0, 0
	for _, id := range ids {
		r, _ := e.record(id)
		switch r.State {
		case state.Sent:
			sent++
		case state.InboxOnly:
			inbox++
			if r.Attempts != 3 {
				t.Errorf("%s: inbox_only after %d attempts, want 3", id, r.Attempts)
			}
		}
	}
	mails := messageIDs(e.smtp.Messages())
	if len(mails) != sent {
		t.Errorf("%d notifications sent but %d distinct mails", sent, len(mails))
	}
	for i := range 50 {
		if r, _ := e.record(fmt.Sprintf("outage%d", i)); r.State != state.InboxOnly {
			t.Errorf("outage%d: %s, want inbox_only", i, r.State)
		}
	}
	t.Logf("%d sent, %d inbox_only", sent, inbox)
	c, _ := e.js.Consumer(context.Background(), provision.Stream, provision.Consumer)
	info, _ := c.Info(context.Background())
	if info.NumPending != 0 || info.NumAckPending != 0 {
		t.Errorf("stuck: pending %d, ack pending %d", info.NumPending, info.NumAckPending)
	}
	stop()

	before := len(e.smtp.Messages())
	e.startRelay(nil)
	time.Sleep(2 * time.Second) // a restarted relay has nothing to do: give it the chance to misbehave
	if after := len(e.smtp.Messages()); after != before {
		t.Fatalf("restarted relay mailed %d more", after-before)
	}
}

// handlerFor builds a handler over the test environment's real buckets and
// SMTP server, as a relay would.
func handlerFor(t *testing.T, e *env, h *provision.Handles) *consumer.Handler {
	t.Helper()
	host, port := e.smtp.Addr()
	sender, err := transport.NewSMTP(transport.SMTPConfig{Host: host, Port: port}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sender.Close() })
	cc := compose.Config{From: compose.Address{Email: "notify@example.com"}}
	return consumer.NewHandler(consumer.Config{Configured: true}, sender, prefs.New(h.Prefs), state.New(h.State),
		func(ev *event.Event, now time.Time, o compose.Options) (*compose.Message, error) {
			return compose.ComposeFor(ev, cc, now, o)
		})
}

// noAck is a delivery whose process dies before it can ack.
type noAck struct{ jetstream.Msg }

func (noAck) Ack() error { return nil }

func fetchOne(t *testing.T, c jetstream.Consumer) jetstream.Msg {
	t.Helper()
	var msg jetstream.Msg
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		b, err := c.Fetch(1, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return false, err.Error()
		}
		for m := range b.Messages() {
			msg = m
		}
		return msg != nil, "no delivery"
	})
	return msg
}

// crashSetup provisions with a 1 s AckWait, opts u1 in, publishes n1 and
// takes its first delivery, as a relay about to crash would.
func crashSetup(t *testing.T) (*env, *provision.Handles, jetstream.Msg) {
	t.Helper()
	e := newEnv(t)
	h, err := provision.Provision(natstest.Ctx(t), e.js, provision.Options{AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e.optIn("u1", event.TaskAssigned)
	e.publish(newEvent("n1", event.TaskAssigned, "u1"), "n1")
	return e, h, fetchOne(t, h.Consumer)
}

// TestCrashAfterSentRecorded: the process dies after the SMTP server
// accepted the mail and the ledger says sent, before the ack: the
// redelivered copy is recognised and not mailed again.
func TestCrashAfterSentRecorded(t *testing.T) {
	e, h, msg := crashSetup(t)
	ctx := natstest.Ctx(t)
	hd := handlerFor(t, e, h)
	out := hd.Handle(ctx, msg)
	if err := hd.Apply(noAck{msg}, out); err != nil { // state written, ack lost
		t.Fatal(err)
	}
	if r, _ := e.record("n1"); r.State != state.Sent {
		t.Fatalf("state %+v", r)
	}
	e.startRelay(map[string]string{"MAILRELAY_ACK_WAIT": "1s"})
	natstest.Eventually(t, 10*time.Second, func() (bool, string) {
		info, _ := h.Consumer.Info(ctx)
		return info.AckFloor.Stream == 1, "not acked yet"
	})
	if n := len(e.smtp.Messages()); n != 1 {
		t.Fatalf("%d mails, want 1", n)
	}
}

// TestCrashBeforeSentRecorded documents the one duplicate window: the
// process dies after the SMTP server accepted the mail but before the
// ledger says sent. The redelivery sends again (same Message-ID) and the
// notification ends sent.
func TestCrashBeforeSentRecorded(t *testing.T) {
	e, h, msg := crashSetup(t)
	ctx := natstest.Ctx(t)
	_ = handlerFor(t, e, h).Handle(ctx, msg) // claims and sends; the outcome is never applied
	if r, _ := e.record("n1"); r.State != state.Sending {
		t.Fatalf("state %+v, want the sending claim", r)
	}
	e.startRelay(map[string]string{"MAILRELAY_ACK_WAIT": "1s"})
	rec := e.waitState("n1", state.Sent, 10*time.Second)
	ids := messageIDs(e.smtp.Messages())
	if len(ids) != 1 || ids[rec.MessageID] != 2 {
		t.Fatalf("mails by Message-ID = %v, want the same one twice", ids)
	}
}

// TestPoisonMessage: an event that makes an operator's template fail is
// contained: invalid, terminated, and the relay keeps mailing.
func TestPoisonMessage(t *testing.T) {
	dir := t.TempDir()
	tmpl := `{{if eq .Task "POISON"}}{{template "no-such-template" .}}{{end}}{{template "greeting.tmpl" .}}

{{.Actor}} assigned you a task.
`
	if err := os.WriteFile(filepath.Join(dir, "task.assigned.tmpl"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.startRelay(map[string]string{"MAILRELAY_TEMPLATE_DIR": dir})
	e.optIn("u1", event.TaskAssigned)
	bad := newEvent("poison", event.TaskAssigned, "u1")
	bad.Task.Title = "POISON"
	e.publish(bad, "poison")
	e.publish(newEvent("fine", event.TaskAssigned, "u1"), "fine")
	rec := e.waitState("poison", state.Invalid, 10*time.Second)
	if rec.Error == "" {
		t.Error("invalid without a reason")
	}
	e.waitState("fine", state.Sent, 10*time.Second)
	if n := len(e.smtp.Messages()); n != 1 {
		t.Fatalf("%d mails, want 1", n)
	}
}

// TestMaxRate: MAILRELAY_MAX_RATE smooths a burst to that many mails per
// second for the process.
func TestMaxRate(t *testing.T) {
	e := newEnv(t)
	e.startRelay(map[string]string{"MAILRELAY_MAX_RATE": "20"})
	e.optIn("u1", event.TaskAssigned)
	const n = 40
	start := time.Now()
	for i := range n {
		id := fmt.Sprintf("r%d", i)
		e.publish(newEvent(id, event.TaskAssigned, "u1"), id)
	}
	e.smtp.WaitFor(t, n, 20*time.Second)
	// a burst of 20 is allowed at once, the other 20 need a second at 20/s
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("%d mails in %s: faster than 20/s after the first burst", n, d)
	}
}
