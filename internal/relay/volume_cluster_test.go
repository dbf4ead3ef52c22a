package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"net/mail"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/smtptest"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/nats-io/nats.go/jetstream"
)

// volMail is one accepted mail: its envelope recipient and Message-ID (read
// with net/mail, so a folded header is read whole).
type volMail struct {
	To        string
	MessageID string
}

func volMails(t *testing.T, msgs []smtptest.Message) []volMail {
	t.Helper()
	var out []volMail
	for _, m := range msgs {
		msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatalf("an accepted mail does not parse: %v\n%s", err, m.Data)
		}
		to := ""
		if len(m.To) == 1 {
			to = m.To[0]
		} else {
			t.Errorf("mail %s: envelope recipients %v, want one", msg.Header.Get("Message-Id"), m.To)
		}
		out = append(out, volMail{To: to, MessageID: strings.TrimSpace(msg.Header.Get("Message-Id"))})
	}
	return out
}

// TestClusterHeldLeaderKilled: a three-node cluster with every stream,
// consumer and bucket R3 (MAILRELAY_STREAM_REPLICAS=3), three relays, a
// 3 s batching window; 20 recipients × 3 notifications. Once all are
// deferred, and while their windows are open, the node leading NOTIFY_HELD
// is shut down (the relay connected to it moves to another node). The
// windows still close on the surviving nodes and are flushed: every
// notification is sent exactly once, one mail per recipient carrying its
// three, the ledger records batch 3 and that mail's Message-ID.
func TestClusterHeldLeaderKilled(t *testing.T) {
	runHeldLeaderKilled(t, false)
}

// TestClusterHeldLeaderKilledAsWindowsClose: the same, but the node leading
// NOTIFY_HELD is shut down at the moment the windows close, so that the
// schedules fire, and the flushes run, while a new leader is elected.
func TestClusterHeldLeaderKilledAsWindowsClose(t *testing.T) {
	runHeldLeaderKilled(t, true)
}

// closeOffset is when, after the first window closes, the AsWindowsClose
// variant kills the leader.
var closeOffset = 100 * time.Millisecond

func runHeldLeaderKilled(t *testing.T, atClose bool) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	const users, perUser = 20, 3
	cl := natstest.StartCluster(t, 3)
	e := &env{t: t, url: cl.URLs(), smtp: smtptest.Start(t)}
	e.nc, e.js = natstest.Connect(t, e.url)
	vars := map[string]string{"MAILRELAY_STREAM_REPLICAS": "3", "MAILRELAY_CONCURRENCY": "4", "MAILRELAY_ACK_WAIT": "5s",
		"MAILRELAY_RETRY_DELAYS": "500ms", "MAILRELAY_BATCH_WINDOW": "3s"}
	ctx := natstest.Ctx(t)
	// provision first (one caller: see FIELD-NOTES on concurrent creates)
	if _, err := provision.Provision(ctx, e.js, provision.Options{Replicas: 3, AckWait: 5 * time.Second, RetryUntilTimeout: true}); err != nil {
		t.Fatal(err)
	}
	// One relay is pinned to the node leading NOTIFY_HELD (it learns the
	// others from the cluster, as any client does), so killing that node
	// makes its connection move; two use every node.
	leader := cl.StreamLeader("$G", hold.Stream)
	if leader == nil {
		t.Fatalf("no %s leader", hold.Stream)
	}
	pinnedAddr := freeAddr(t)
	e.startRelay(withVars(vars, "NATS_URL", leader.URL(), "MAILRELAY_HTTP_ADDR", pinnedAddr))
	for range 2 {
		e.startRelay(vars)
	}
	held, err := e.js.Stream(ctx, hold.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if r := held.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("%s replicas = %d, want 3", hold.Stream, r)
	}
	flush, err := e.js.Consumer(ctx, hold.Stream, hold.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	if r := flush.CachedInfo().Config.Replicas; r != 3 && r != 0 {
		t.Fatalf("%s replicas = %d, want 3", hold.Consumer, r)
	}

	var ids []string
	userOf := map[string]string{}
	for u := range users {
		user := fmt.Sprintf("hl%02d", u)
		e.optIn(user, event.TaskAssigned)
	}
	// what the ledger went through, to explain a mail too many; the
	// bucket is looked up now: after the kill, a lookup can time out
	// while the cluster elects
	history := watchLedger(t, e)
	kv, err := e.js.KeyValue(ctx, state.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	ledger := state.New(kv)
	start := time.Now()
	for u := range users {
		user := fmt.Sprintf("hl%02d", u)
		for k := 1; k <= perUser; k++ {
			id := fmt.Sprintf("%s-n%d", user, k)
			ids = append(ids, id)
			userOf[id] = user
			e.publish(newEvent(id, event.TaskAssigned, user), id)
		}
	}
	var firstClose time.Time
	natstest.Eventually(t, 30*time.Second, func() (bool, string) {
		firstClose = time.Time{}
		for _, id := range ids {
			r, ok := e.record(id)
			if !ok || r.State != state.Deferred {
				return false, fmt.Sprintf("%s: %+v", id, r)
			}
			if firstClose.IsZero() || r.Until.Before(firstClose) {
				firstClose = r.Until
			}
		}
		return true, ""
	})
	if l := cl.StreamLeader("$G", hold.Stream); l == nil {
		t.Fatalf("no %s leader", hold.Stream)
	} else if l != leader {
		t.Logf("%s leader moved from %s to %s since the relays started: the pinned relay is not on it", hold.Stream, leader.Name(), l.Name())
		leader = l
	}
	if n := e.smtp.Count(); n != 0 {
		t.Fatalf("%d mails before the leader was killed: a window closed already", n)
	}
	deferredAfter := time.Since(start)
	if atClose {
		// the schedules fire at firstClose; the flushes follow within
		// some 100 ms
		time.Sleep(time.Until(firstClose.Add(closeOffset)))
	}
	killed := time.Now()
	if !atClose && !killed.Before(firstClose) {
		t.Fatalf("all deferred only at %v, after the first window closed (%v)", killed, firstClose)
	}
	t.Logf("all %d deferred after %v; shutting down %s leader %s %v before the first window closes (%d mails so far)",
		len(ids), deferredAfter.Round(time.Millisecond), hold.Stream, leader.Name(), firstClose.Sub(killed).Round(time.Millisecond), e.smtp.Count())
	leader.Shutdown()
	leader.WaitForShutdown()

	// the relay that was connected to the dead node is ready again, on
	// another one
	natstest.Eventually(t, 30*time.Second, func() (bool, string) {
		c := readyz(pinnedAddr)
		return c == 200, fmt.Sprintf("the pinned relay's readyz = %d", c)
	})
	// every notification sent
	recs := map[string]state.Record{}
	allSent := func() (bool, string) {
		var pending []string
		for _, id := range ids {
			if recs[id].State == state.Sent {
				continue
			}
			r, _, err := ledger.Get(context.Background(), id)
			if err != nil || r.State != state.Sent {
				pending = append(pending, fmt.Sprintf("%s: %+v %v", id, r, err))
				continue
			}
			recs[id] = r
		}
		return len(pending) == 0, fmt.Sprintf("%d not sent: %s", len(pending), strings.Join(pending, "; "))
	}
	if why, ok := pollFor(60*time.Second, allSent); !ok {
		t.Logf("flush goroutines:\n%s", relayStacks("consumer.(*Flusher)"))
		held, _ := held.Info(context.Background(), jetstream.WithSubjectFilter(">"))
		if held != nil {
			t.Logf("%s subjects: %v", hold.Stream, held.State.Subjects)
		}
		if ci, err := flush.Info(context.Background()); err == nil {
			t.Logf("%s: %d pending, %d ack pending, %d redelivered, delivered %+v, ack floor %+v",
				hold.Consumer, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.Delivered, ci.AckFloor)
		}
		t.Fatalf("not all sent within 60s after the leader was killed: %s", why)
	}
	t.Logf("all sent %v after the leader was killed (new %s leader %v)", time.Since(killed).Round(time.Millisecond),
		hold.Stream, func() string {
			if l := cl.StreamLeader("$G", hold.Stream); l != nil {
				return l.Name()
			}
			return "none"
		}())
	// nothing left held, no window left to flush: the mails are all there
	// will be
	natstest.Eventually(t, 30*time.Second, func() (bool, string) {
		info, err := held.Info(context.Background(), jetstream.WithSubjectFilter(hold.ItemPrefix+">"))
		if err != nil {
			return false, err.Error()
		}
		ci, err := flush.Info(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return len(info.State.Subjects) == 0 && ci.NumPending == 0 && ci.NumAckPending == 0,
			fmt.Sprintf("%d recipients with held notifications; flush consumer %d pending, %d ack pending",
				len(info.State.Subjects), ci.NumPending, ci.NumAckPending)
	})

	mails := volMails(t, e.smtp.Messages())
	perUserMails := map[string][]string{}
	for _, m := range mails {
		u, _, _ := strings.Cut(m.To, "@")
		perUserMails[u] = append(perUserMails[u], m.MessageID)
	}
	dups := 0
	for u := range users {
		user := fmt.Sprintf("hl%02d", u)
		got := perUserMails[user]
		if len(got) != 1 {
			t.Errorf("%s: %d mails %v, want 1; its ledger history:\n%s", user, len(got), got, history(user+"-"))
			dups += max(0, len(got)-1)
			continue
		}
		for k := 1; k <= perUser; k++ {
			id := fmt.Sprintf("%s-n%d", user, k)
			r := recs[id]
			if r.MessageID != got[0] || r.Batch != perUser || r.Recipient != user {
				t.Errorf("%s: %+v, want sent to %s with batch %d and message_id %s", id, r, user, perUser, got[0])
			}
		}
	}
	if len(mails) != users {
		t.Errorf("%d mails, want exactly %d (one per recipient)", len(mails), users)
	}
	var distinct []string
	for _, m := range mails {
		if !slices.Contains(distinct, m.MessageID) {
			distinct = append(distinct, m.MessageID)
		}
	}
	t.Logf("leader of %s killed: %d mails for %d notifications, %d distinct Message-IDs, %d duplicates",
		hold.Stream, len(mails), len(ids), len(distinct), dups)
}

// withVars returns a copy of vars with the pairs kv ("KEY", "value", ...) set.
func withVars(vars map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(vars)+len(kv)/2)
	for k, v := range vars {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// pollFor calls cond every 20 ms until it reports true or timeout passes;
// it returns cond's last message and whether it was met.
func pollFor(timeout time.Duration, cond func() (bool, string)) (string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok || time.Now().After(deadline) {
			return why, ok
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// relayStacks is the stacks of this process's goroutines (the in-process
// relays run here) that mention any of substrs, for a test that finds work
// stuck.
func relayStacks(substrs ...string) string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, s := range substrs {
			if strings.Contains(g, s) {
				out = append(out, g)
				break
			}
		}
	}
	return strings.Join(out, "\n\n")
}

// watchLedger records every write to notify_email_state from now on;
// the function it returns lists those of keys with prefix, in order.
func watchLedger(t *testing.T, e *env) func(prefix string) string {
	t.Helper()
	kv, err := e.js.KeyValue(context.Background(), state.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(context.Background(), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	var mu sync.Mutex
	var lines []string
	go func() {
		for en := range w.Updates() {
			if en == nil {
				continue
			}
			mu.Lock()
			lines = append(lines, fmt.Sprintf("%s rev %d %s: %s", time.Now().Format("15:04:05.000"), en.Revision(), en.Key(), en.Value()))
			mu.Unlock()
		}
	}()
	return func(prefix string) string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, l := range lines {
			if _, rest, _ := strings.Cut(l, ": "); strings.Contains(l, " "+prefix) && rest != "" {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
}

// TestHeldFlushLateStartNoDuplicate: no crash and no node loss. Two relays
// serve mailrelay_flush: one with MAILRELAY_CONCURRENCY=1, one with 8;
// MAILRELAY_ACK_WAIT=3s, EMAIL_TIMEOUT=1.5 (no configuration warning) and
// an SMTP server that takes 1.4 s a mail. Sixteen windows (two
// notifications each) close together. The relay with one slot holds
// several due messages from its pull while it sends one mail at a time;
// those waiting (in the pull buffer, or for the slot: not kept alive) pass
// AckWait and JetStream redelivers them, and when the waiting first
// delivery finally flushes and claims the window, a later delivery on the
// idle relay takes the fresh claim over as if the first had crashed, and
// mails the window a second time. A window must be mailed once: two live
// relays never both send it (issue 14: "Flushing a window claims it (so
// two relays never both send it)"). On failure the ledger history of the
// recipient shows both claims (delivery 1, then 3, of one flush_seq) and
// both sent records.
func TestHeldFlushLateStartNoDuplicate(t *testing.T) {
	const users = 16
	e := newEnv(t)
	// AckWait is twice EMAIL_TIMEOUT, as the relay asks (no warning): each
	// send fits well inside AckWait; only the wait for a slot does not.
	vars := map[string]string{"MAILRELAY_BATCH_WINDOW": "1s", "MAILRELAY_CONCURRENCY": "1", "MAILRELAY_ACK_WAIT": "3s",
		"EMAIL_TIMEOUT": "1.5"}
	e.startRelay(vars)
	e.startRelay(withVars(vars, "MAILRELAY_CONCURRENCY", "8"))
	e.smtp.SetLatency(1400 * time.Millisecond)
	history := watchLedger(t, e)
	var ids []string
	for u := range users {
		e.optIn(fmt.Sprintf("lt%02d", u), event.TaskAssigned)
	}
	for u := range users {
		user := fmt.Sprintf("lt%02d", u)
		for k := 1; k <= 2; k++ {
			id := fmt.Sprintf("%s-n%d", user, k)
			ids = append(ids, id)
			e.publish(newEvent(id, event.TaskAssigned, user), id)
		}
	}
	for _, id := range ids {
		e.waitState(id, state.Sent, 60*time.Second)
	}
	time.Sleep(4 * time.Second) // a late copy would be accepted by now
	perUser := map[string][]string{}
	for _, m := range volMails(t, e.smtp.Messages()) {
		u, _, _ := strings.Cut(m.To, "@")
		perUser[u] = append(perUser[u], m.MessageID)
	}
	for u := range users {
		user := fmt.Sprintf("lt%02d", u)
		if got := perUser[user]; len(got) != 1 {
			t.Errorf("%s: %d mails %v for one window, want 1; its ledger history:\n%s", user, len(got), got, history(user+"-"))
		}
	}
}
