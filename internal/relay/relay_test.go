package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/relay"
	"github.com/mailrelay/mailrelay/internal/replay"
	"github.com/mailrelay/mailrelay/internal/smtptest"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// env is a test environment: a JetStream server and an SMTP server.
type env struct {
	t    *testing.T
	url  string
	ns   *natstest.Server
	smtp *smtptest.Server
	nc   *nats.Conn
	js   jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, ns: natstest.Start(t), smtp: smtptest.Start(t)}
	e.url = e.ns.URL()
	e.nc, e.js = natstest.Connect(t, e.url)
	return e
}

func (e *env) vars(extra map[string]string) map[string]string {
	host, port := e.smtp.Addr()
	v := map[string]string{
		"NATS_URL":               e.url,
		"EMAIL_HOST":             host,
		"EMAIL_PORT":             strconv.Itoa(port),
		"EMAIL_TIMEOUT":          "5",
		"DEFAULT_FROM_EMAIL":     "Acme <notify@example.com>",
		"FRONTEND_BASE_URL":      "https://app.example.com",
		"MAILRELAY_HTTP_ADDR":    "127.0.0.1:0",
		"MAILRELAY_RETRY_DELAYS": "50ms",
		"MAILRELAY_ACK_WAIT":     "2s",
		"MAILRELAY_CONCURRENCY":  "4",
	}
	for k, val := range extra {
		v[k] = val
	}
	return v
}

// startRelay runs a relay in-process until the returned stop is called (or
// the test ends).
func (e *env) startRelay(extra map[string]string) (stop func()) {
	e.t.Helper()
	vars := e.vars(extra)
	if vars["MAILRELAY_HTTP_ADDR"] == "127.0.0.1:0" {
		vars["MAILRELAY_HTTP_ADDR"] = freeAddr(e.t) // known, to poll /readyz
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		e.t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- relay.Run(ctx, cfg, relay.Options{Log: zaptest.NewLogger(e.t, zaptest.Level(zap.WarnLevel)), Version: "test"})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("relay: %v", err)
				}
			case <-time.After(30 * time.Second):
				e.t.Errorf("relay did not stop within 30s")
			}
		})
	}
	e.t.Cleanup(stop)
	// wait until the relay is ready: connected and bound to its consumer
	addr := cfg.HTTP.Addr
	natstest.Eventually(e.t, 30*time.Second, func() (bool, string) {
		c := readyz(addr)
		return c == 200, fmt.Sprintf("readyz = %d", c)
	})
	return stop
}

func (e *env) optIn(user string, types ...event.Type) {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), prefs.Bucket)
	if err != nil {
		e.t.Fatal(err)
	}
	ch := map[event.Type]bool{}
	for _, ty := range types {
		ch[ty] = true
	}
	if _, err := prefs.New(kv).Set(context.Background(), user, ch); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) publish(ev *event.Event, msgID string) {
	e.t.Helper()
	data, _ := json.Marshal(ev)
	if _, err := event.PublishRaw(context.Background(), e.js, ev.Type.Subject(), msgID, data); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) publishRaw(subject string, data []byte) {
	e.t.Helper()
	if _, err := e.js.Publish(context.Background(), subject, data); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) record(key string) (state.Record, bool) {
	kv, err := e.js.KeyValue(context.Background(), state.Bucket)
	if err != nil {
		return state.Record{}, false
	}
	r, _, err := state.New(kv).Get(context.Background(), key)
	return r, err == nil
}

func (e *env) waitState(key string, want state.State, timeout time.Duration) state.Record {
	e.t.Helper()
	var rec state.Record
	natstest.Eventually(e.t, timeout, func() (bool, string) {
		var ok bool
		rec, ok = e.record(key)
		return ok && rec.State == want, fmt.Sprintf("state of %s = %+v, want %s", key, rec, want)
	})
	return rec
}

func newEvent(id string, t event.Type, user string) *event.Event {
	from, to := "2026-12-01", "2026-12-05"
	ev := &event.Event{ID: id, Type: t, OccurredAt: time.Now().UTC().Add(-time.Second),
		Workspace: &event.Workspace{ID: "w1", Name: "Acme Build"},
		Recipient: event.Recipient{ID: user, Email: user + "@example.com", Name: "Ann Lee"},
		Actor:     &event.Actor{ID: "u7", Name: "Bob Stone"},
		Task:      event.Task{ID: "t-1001", Title: "Pour foundation", Project: "HQ"}}
	switch t {
	case event.TaskComment, event.Mention:
		ev.Comment = &event.Comment{ID: "c9", Body: "Concrete truck is late, see https://example.com/x"}
	case event.TaskDateChanged:
		ev.Change = &event.Change{Field: "planned_end", From: &from, To: &to}
	case event.TaskBlocked:
		ev.BlockedBy = &event.TaskRef{ID: "t-0999", Title: "Site survey"}
	}
	return ev
}

func TestAllTypesDelivered(t *testing.T) {
	e := newEnv(t)
	e.startRelay(nil)
	e.optIn("u1", event.Types...)
	for i, ty := range event.Types {
		e.publish(newEvent(fmt.Sprintf("n%d", i), ty, "u1"), fmt.Sprintf("n%d", i))
	}
	for i := range event.Types {
		rec := e.waitState(fmt.Sprintf("n%d", i), state.Sent, 10*time.Second)
		if rec.Attempts != 1 || rec.MessageID == "" {
			t.Errorf("n%d: %+v", i, rec)
		}
	}
	msgs := e.smtp.WaitFor(t, len(event.Types), 5*time.Second)
	if len(msgs) != len(event.Types) {
		t.Fatalf("%d mails, want %d", len(msgs), len(event.Types))
	}
	for _, m := range msgs {
		raw := string(m.Data)
		for _, h := range []string{"List-Unsubscribe: <https://app.example.com/settings/notifications>",
			"Auto-Submitted: auto-generated", "Message-ID: <"} {
			if !strings.Contains(raw, h) {
				t.Errorf("mail lacks %q:\n%s", h, raw)
			}
		}
		// Contract §9.4: no one-click claim for a login-gated settings page.
		if strings.Contains(raw, "List-Unsubscribe-Post") {
			t.Errorf("List-Unsubscribe-Post without one-click:\n%s", raw)
		}
	}
}

func TestSkips(t *testing.T) {
	e := newEnv(t)
	e.startRelay(nil)
	e.optIn("u1", event.TaskAssigned)

	e.publish(newEvent("off", event.Mention, "u1"), "off") // u1 has mention off
	e.publish(newEvent("noprefs", event.TaskAssigned, "u2"), "noprefs")
	noMail := newEvent("nomail", event.TaskAssigned, "u1")
	noMail.Recipient.Email = ""
	e.publish(noMail, "nomail")
	stale := newEvent("stale", event.TaskAssigned, "u1")
	stale.OccurredAt = time.Now().Add(-48 * time.Hour)
	e.publish(stale, "stale")
	e.publishRaw("notify.task.assigned", []byte(`{"id": "broken`))
	wrongSubject := newEvent("wrongsubj", event.TaskAssigned, "u1")
	data, _ := json.Marshal(wrongSubject)
	e.publishRaw("notify.mention", data)

	e.waitState("off", state.SkippedOptedOut, 10*time.Second)
	e.waitState("noprefs", state.SkippedOptedOut, 10*time.Second)
	e.waitState("nomail", state.SkippedNoEmail, 10*time.Second)
	e.waitState("stale", state.SkippedStale, 10*time.Second)
	e.waitState("wrongsubj", state.Invalid, 10*time.Second)
	// the broken message is recorded under its stream sequence (5)
	e.waitState(state.SeqKey(5), state.Invalid, 10*time.Second)
	if n := len(e.smtp.Messages()); n != 0 {
		t.Fatalf("%d mails sent, want none", n)
	}
	// invalid messages stay in the stream
	s, _ := e.js.Stream(context.Background(), provision.Stream)
	if _, err := s.GetMsg(context.Background(), 5); err != nil {
		t.Fatalf("invalid message gone from the stream: %v", err)
	}
}

func TestNotConfigured(t *testing.T) {
	e := newEnv(t)
	e.startRelay(map[string]string{"EMAIL_HOST": ""})
	e.optIn("u1", event.TaskAssigned)
	e.publish(newEvent("n1", event.TaskAssigned, "u1"), "n1")
	e.waitState("n1", state.SkippedNotConfigured, 10*time.Second)
}

func TestTemporaryFailuresEndInboxOnly(t *testing.T) {
	e := newEnv(t)
	e.smtp.SetReply(451, "4.3.0", "try again later")
	e.startRelay(nil)
	e.optIn("u1", event.TaskAssigned)
	e.publish(newEvent("n1", event.TaskAssigned, "u1"), "n1")
	rec := e.waitState("n1", state.InboxOnly, 15*time.Second)
	if rec.Attempts != 3 || !strings.Contains(rec.Error, "451") {
		t.Fatalf("record %+v, want 3 attempts and the 451", rec)
	}
	if n := len(e.smtp.Messages()); n != 0 {
		t.Fatalf("%d mails accepted, want 0", n)
	}
}

func TestPermanentFailure(t *testing.T) {
	e := newEnv(t)
	e.smtp.SetReply(550, "5.1.1", "no such user")
	e.startRelay(nil)
	e.optIn("u1", event.TaskAssigned)
	e.publish(newEvent("n1", event.TaskAssigned, "u1"), "n1")
	rec := e.waitState("n1", state.InboxOnly, 10*time.Second)
	if rec.Attempts != 1 || !strings.Contains(rec.Error, "550") {
		t.Fatalf("record %+v, want 1 attempt and the 550", rec)
	}
}

func TestSMTPDown(t *testing.T) {
	e := newEnv(t)
	e.smtp.Vanish()
	e.startRelay(nil)
	e.optIn("u1", event.TaskAssigned)
	e.publish(newEvent("n1", event.TaskAssigned, "u1"), "n1")
	rec := e.waitState("n1", state.InboxOnly, 20*time.Second)
	if rec.Attempts != 3 {
		t.Fatalf("record %+v, want 3 attempts", rec)
	}
	// the relay keeps running: once SMTP is back, mail flows
	e.smtp.Resume()
	e.publish(newEvent("n2", event.TaskAssigned, "u1"), "n2")
	e.waitState("n2", state.Sent, 15*time.Second)
}

func TestSameIDTwiceOneMail(t *testing.T) {
	e := newEnv(t)
	e.startRelay(nil)
	e.optIn("u1", event.TaskAssigned)
	ev := newEvent("n1", event.TaskAssigned, "u1")
	e.publish(ev, "first-msg-id")
	e.publish(ev, "second-msg-id")
	e.waitState("n1", state.Sent, 10*time.Second)
	// both copies are consumed (acked) before we count
	natstest.Eventually(t, 10*time.Second, func() (bool, string) {
		c, _ := e.js.Consumer(context.Background(), provision.Stream, provision.Consumer)
		info, err := c.Info(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return info.AckFloor.Stream == 2 && info.NumAckPending == 0, fmt.Sprintf("ack floor %d, pending %d", info.AckFloor.Stream, info.NumAckPending)
	})
	if n := len(e.smtp.Messages()); n != 1 {
		t.Fatalf("%d mails, want 1", n)
	}
}

// TestAdvisoryWithoutRelay: a notification runs out of deliveries while no
// relay runs (a relay that died holding it three times); the advisory is
// kept and turns it inbox_only when a relay comes back.
func TestAdvisoryWithoutRelay(t *testing.T) {
	e := newEnv(t)
	ctx := natstest.Ctx(t)
	h, err := provision.Provision(ctx, e.js, provision.Options{AckWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.optIn("u1", event.TaskAssigned)
	e.publish(newEvent("n1", event.TaskAssigned, "u1"), "n1")
	// a "relay" that takes the message and dies without acking, three times
	for i := 0; i < provision.MaxDeliver; i++ {
		natstest.Eventually(t, 5*time.Second, func() (bool, string) {
			b, err := h.Consumer.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
			if err != nil {
				return false, err.Error()
			}
			n := 0
			for range b.Messages() {
				n++
			}
			return n == 1, "no delivery"
		})
	}
	// the next pull makes the server emit the advisory; the advisory stream keeps it
	adv, err := e.js.Stream(ctx, provision.AdvisoryStream)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() (bool, string) {
		b, _ := h.Consumer.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond))
		if b != nil {
			for range b.Messages() {
			}
		}
		info, err := adv.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs == 1, fmt.Sprintf("%d advisories stored", info.State.Msgs)
	})
	if _, ok := e.record("n1"); ok {
		t.Fatal("state written with no relay running")
	}
	e.startRelay(map[string]string{"MAILRELAY_ACK_WAIT": "1s"})
	rec := e.waitState("n1", state.InboxOnly, 10*time.Second)
	if rec.Attempts != 3 {
		t.Errorf("attempts = %d, want 3", rec.Attempts)
	}
	if n := len(e.smtp.Messages()); n != 0 {
		t.Fatalf("%d mails, want 0", n)
	}
}

// TestCleanStopMidBacklog: stopping a relay mid-backlog and starting a new
// one loses nothing and mails nothing twice; and the stopping relay
// finishes what it had pulled instead of releasing it (a nak would cost
// each of those notifications one of its three deliveries).
func TestCleanStopMidBacklog(t *testing.T) {
	e := newEnv(t)
	e.smtp.SetLatency(2 * time.Millisecond)
	stop := e.startRelay(nil)
	e.optIn("u1", event.TaskAssigned)
	const n = 300
	for i := 0; i < n; i++ {
		e.publish(newEvent(fmt.Sprintf("n%d", i), event.TaskAssigned, "u1"), fmt.Sprintf("n%d", i))
	}
	var naks atomic.Int64
	sub, err := e.nc.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.NOTIFY.mailrelay", func(*nats.Msg) { naks.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() (bool, string) {
		return len(e.smtp.Messages()) >= 20, "fewer than 20 mails yet"
	})
	stop()
	sentAtStop := len(e.smtp.Messages())
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // advisories are published asynchronously
	if k := naks.Load(); k != 0 {
		t.Errorf("the stopping relay released %d notifications (nak) instead of finishing them", k)
	}
	c, err := e.js.Consumer(context.Background(), provision.Stream, provision.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := c.Info(context.Background())
	if err != nil || ci.NumRedelivered != 0 {
		t.Errorf("after the stop: %+v, %v; want nothing redelivered", ci, err)
	}
	// A pull answered just as the stop unsubscribed can leave a message
	// for AckWait (a race in the server's delivery, not the relay's doing).
	t.Logf("after the stop: %d pending an ack", ci.NumAckPending)
	t.Logf("%d of %d mailed when the stop returned", sentAtStop, n)
	e.startRelay(nil)
	natstest.Eventually(t, 60*time.Second, func() (bool, string) {
		got := len(e.smtp.Messages())
		return got >= n, fmt.Sprintf("%d of %d mails", got, n)
	})
	ids := map[string]int{}
	for _, m := range e.smtp.Messages() {
		for _, line := range strings.Split(string(m.Data), "\r\n") {
			if strings.HasPrefix(line, "Message-ID:") {
				ids[line]++
			}
		}
	}
	if len(ids) != n {
		t.Fatalf("%d distinct Message-IDs, want %d", len(ids), n)
	}
	for id, c := range ids {
		if c != 1 {
			t.Errorf("%s mailed %d times", id, c)
		}
	}
	for i := 0; i < n; i++ {
		if rec, ok := e.record(fmt.Sprintf("n%d", i)); !ok || rec.State != state.Sent {
			t.Errorf("n%d: %+v", i, rec)
		}
	}
}

var _ = errors.New

func TestReplayInboxOnly(t *testing.T) {
	e := newEnv(t)
	e.smtp.SetReply(550, "5.7.1", "relay access denied")
	e.startRelay(nil)
	e.optIn("u1", event.TaskAssigned)
	e.optIn("u2", event.TaskAssigned)
	e.publish(newEvent("a", event.TaskAssigned, "u1"), "a")
	e.publish(newEvent("b", event.TaskAssigned, "u2"), "b")
	e.waitState("a", state.InboxOnly, 10*time.Second)
	e.waitState("b", state.InboxOnly, 10*time.Second)
	e.smtp.SetReply(0, "", "")
	e.publish(newEvent("c", event.TaskAssigned, "u1"), "c")
	e.waitState("c", state.Sent, 10*time.Second)

	ctx := natstest.Ctx(t)
	stream, _ := e.js.Stream(ctx, provision.Stream)
	ledger, _ := e.js.KeyValue(ctx, state.Bucket)

	// a dry run (Plan alone) lists only inbox_only records of the user, and changes nothing
	plan, err := replay.Plan(ctx, stream, ledger, replay.Filter{User: "u1", Since: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || plan[0].ID != "a" || plan[0].Skip != "" {
		t.Fatalf("plan = %+v, want only a", plan)
	}
	if rec, _ := e.record("a"); rec.State != state.InboxOnly {
		t.Fatalf("plan changed the state: %+v", rec)
	}
	if _, err := replay.Plan(ctx, stream, ledger, replay.Filter{State: state.Sent}, time.Now()); err == nil {
		t.Fatal("replaying sent notifications was accepted")
	}

	res := replay.Run(ctx, e.js, ledger, plan, time.Now())
	if len(res) != 1 || !res[0].Replayed {
		t.Fatalf("run = %+v", res)
	}
	rec := e.waitState("a", state.Sent, 10*time.Second)
	if rec.Attempts != 1 {
		t.Errorf("replayed record %+v, want attempts 1", rec)
	}
	if rec, _ := e.record("b"); rec.State != state.InboxOnly {
		t.Errorf("b (other user) changed: %+v", rec)
	}
	// a second run finds nothing: a is sent now
	plan, _ = replay.Plan(ctx, stream, ledger, replay.Filter{User: "u1"}, time.Now())
	if len(plan) != 0 {
		t.Fatalf("second plan = %+v, want none", plan)
	}
	// one mail for a, one for c; none for b
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		return len(e.smtp.Messages()) == 2, fmt.Sprintf("%d mails", len(e.smtp.Messages()))
	})
}

// TestShutdownTimeoutReleasesTheRest: when sends hang at a stop, the relay
// gives up after MAILRELAY_SHUTDOWN_TIMEOUT: the sends in flight are
// cancelled (recorded retrying: the attempt counts), everything else it
// held is released at once (nak), and a new relay mails every notification
// long before AckWait (2m) could have brought them back.
func TestShutdownTimeoutReleasesTheRest(t *testing.T) {
	e := newEnv(t)
	e.smtp.SetLatency(time.Minute)
	vars := map[string]string{"MAILRELAY_SHUTDOWN_TIMEOUT": "1s", "MAILRELAY_CONCURRENCY": "2",
		"MAILRELAY_ACK_WAIT": "2m", "EMAIL_TIMEOUT": "1m", "MAILRELAY_RETRY_DELAYS": "100ms"}
	stop := e.startRelay(vars)
	e.optIn("u1", event.TaskAssigned)
	const n = 40
	for i := 0; i < n; i++ {
		e.publish(newEvent(fmt.Sprintf("h%d", i), event.TaskAssigned, "u1"), fmt.Sprintf("h%d", i))
	}
	c, err := e.js.Consumer(context.Background(), provision.Stream, provision.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() (bool, string) {
		ci, err := c.Info(context.Background())
		return err == nil && ci.NumAckPending >= 4, fmt.Sprintf("%+v %v", ci, err)
	})
	e.smtp.WaitOpenConnections(t, 2, 20*time.Second) // the two sends are under way
	start := time.Now()
	stop()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("stop took %s with a 1s shutdown timeout", d)
	}
	interrupted := 0
	for i := 0; i < n; i++ {
		rec, ok := e.record(fmt.Sprintf("h%d", i))
		switch {
		case !ok:
		case rec.State == state.Retrying && rec.Attempts == 1 && strings.Contains(rec.Error, "shutdown"):
			interrupted++
		case rec.State == state.Retrying && rec.Attempts == 0: // claimed, released before its send
		case rec.State == state.Sending: // claim write outstanding at the timeout: taken over by the redelivery
		default:
			t.Errorf("h%d: %+v, want retrying (interrupted by shutdown, or released before its send) or sending", i, rec)
		}
	}
	if interrupted > 2 {
		t.Errorf("%d sends recorded as interrupted, want at most 2 (MAILRELAY_CONCURRENCY)", interrupted)
	}
	t.Logf("%d sends interrupted by the shutdown timeout", interrupted)
	if n := len(e.smtp.Messages()); n != 0 {
		t.Errorf("%d mails accepted before the stop, want none", n)
	}

	e.smtp.SetLatency(0)
	e.startRelay(vars)
	natstest.Eventually(t, 60*time.Second, func() (bool, string) {
		for i := 0; i < n; i++ {
			if rec, ok := e.record(fmt.Sprintf("h%d", i)); !ok || rec.State != state.Sent {
				return false, fmt.Sprintf("h%d: %+v", i, rec)
			}
		}
		return true, ""
	})
	if got := len(messageIDs(e.smtp.Messages())); got != n {
		t.Errorf("%d notifications mailed, want %d", got, n)
	}
}
