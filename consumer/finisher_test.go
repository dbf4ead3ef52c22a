package consumer

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/state"
	"go.uber.org/zap"
)

// asyncLedger is a memLedger whose asynchronous writes (PutAsync,
// CreateAsync) happen only when released, and fail (without writing) when
// fail is set.
type asyncLedger struct {
	*memLedger
	release chan struct{}
	fail    atomic.Bool
	async   atomic.Int32 // asynchronous writes started
}

// pendingFunc is a state.Pending that waits by calling itself.
type pendingFunc func() error

func (p pendingFunc) Wait() error { return p() }

func (l *asyncLedger) PutAsync(key string, rec state.Record) (state.Pending, error) {
	return l.later(func() error { return l.Put(context.Background(), key, rec) }), nil
}

func (l *asyncLedger) CreateAsync(key string, rec state.Record) (state.Pending, error) {
	return l.later(func() error { return l.create(key, rec) }), nil
}

// later counts a write started and runs it once released.
func (l *asyncLedger) later(write func() error) state.Pending {
	l.async.Add(1)
	return pendingFunc(func() error {
		<-l.release
		if l.fail.Load() {
			return errors.New("async write lost")
		}
		return write()
	})
}

func TestFinisherAcksOnlyAfterTheWrite(t *testing.T) {
	for _, fail := range []bool{false, true} {
		name := map[bool]string{false: "write stored", true: "write failed: redone synchronously"}[fail]
		t.Run(name, func(t *testing.T) {
			ledger := &asyncLedger{memLedger: newMemLedger(), release: make(chan struct{})}
			ledger.fail.Store(fail)
			h := NewHandler(Config{Configured: true}, &fakeSender{}, memPrefs{"u1": {event.TaskAssigned: true}}, ledger,
				simpleCompose, WithClock(func() time.Time { return testNow }))
			subject, data := testEvent(nil)
			msg := &fakeMsg{subject: subject, data: data, seq: 7, delivered: 1}
			out := h.Handle(context.Background(), msg)
			if out.Action != Ack || out.Write == nil || out.Write.Record.State != state.Sent {
				t.Fatalf("outcome %+v", out)
			}
			pa, err := h.act.start(held(msg), Ref{}, out)
			if err != nil || pa == nil {
				t.Fatalf("startApply = %v, %v; want a pending apply", pa, err)
			}
			if ledger.async.Load() != 1 {
				t.Fatalf("PutAsync calls = %d", ledger.async.Load())
			}
			f := newFinisher(4, zap.NewNop())
			f.add(pa)
			// the write is not stored yet: the claim is in the ledger, no ack
			if rec, _ := ledger.get("n1"); rec.State != state.Sending {
				t.Fatalf("before the write: state %q, want the sending claim", rec.State)
			}
			if got := msg.last(); got != "" {
				t.Fatalf("acted (%q) before the ledger write was stored", got)
			}
			close(ledger.release)
			f.close()
			if got := msg.last(); got != "ack" {
				t.Fatalf("action = %q, want ack", got)
			}
			if rec, _ := ledger.get("n1"); rec.State != state.Sent || rec.Attempts != 1 {
				t.Fatalf("after: %+v, want sent/1", rec)
			}
		})
	}
}

// A create-only write is never turned into a plain put: it goes out as an
// asynchronous create, and when the key has a record, the synchronous path
// puts an invalid record under seq.<n>; an existing state is never
// overwritten and the term comes after the write.
func TestStartApplyNeverPutsCreateOnly(t *testing.T) {
	ledger := &asyncLedger{memLedger: newMemLedger(), release: make(chan struct{})}
	close(ledger.release)
	_ = ledger.Put(context.Background(), "n1", state.Record{State: state.Sent, Attempts: 1})
	h := NewHandler(Config{Configured: true}, &fakeSender{}, memPrefs{}, ledger, simpleCompose, WithClock(func() time.Time { return testNow }))
	subject, data := testEvent(func(e map[string]any) { e["occurred_at"] = "yesterday" })
	msg := &fakeMsg{subject: subject, data: data, seq: 7, delivered: 1}
	out := h.Handle(context.Background(), msg)
	pa, err := h.act.start(held(msg), Ref{}, out)
	if err != nil || pa == nil {
		t.Fatalf("startApply = %v, %v; want the create under way", pa, err)
	}
	werr := pa.wait()
	if werr == nil {
		t.Fatal("a create over an existing record succeeded")
	}
	if msg.last() != "" {
		t.Fatalf("acted on (%q) before the write", msg.last())
	}
	if err := pa.finish(werr); err != nil {
		t.Fatal(err)
	}
	if ledger.async.Load() != 1 || msg.last() != "term" {
		t.Fatalf("async writes %d, action %q", ledger.async.Load(), msg.last())
	}
	if rec, _ := ledger.get("seq.7"); rec.State != state.Invalid {
		t.Fatalf("invalid record under seq.7: %+v", rec)
	}
	if rec, _ := ledger.get("n1"); rec.State != state.Sent {
		t.Fatalf("existing state overwritten: %+v", rec)
	}
}

// The InProgress keepalive of a delivery stops as it is acted on: no
// InProgress after a nak (it would turn the nak's delay into AckWait).
func TestKeepAliveStopsAtTheAct(t *testing.T) {
	raw := &fakeMsg{}
	m := keptAlive(raw, 2*time.Millisecond)
	for deadline := time.Now().Add(5 * time.Second); raw.last() != "progress" && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	if err := m.act(Decision{Action: Nak, Delay: time.Second}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	raw.mu.Lock()
	defer raw.mu.Unlock()
	if len(raw.acts) < 2 || raw.acts[0] != "progress" {
		t.Fatalf("acts %v: want InProgress while held", raw.acts)
	}
	if last := raw.acts[len(raw.acts)-1]; last != "nak" {
		t.Fatalf("acts %v: InProgress after the nak", raw.acts)
	}
}

// A send given up at shutdown before the mail went out is released at once
// and its claim's attempt is taken back.
func TestShutdownBeforeSendTakesTheAttemptBack(t *testing.T) {
	ledger := newMemLedger()
	sender := &fakeSender{}
	h := NewHandler(Config{Configured: true}, sender, memPrefs{"u1": {event.TaskAssigned: true}}, ledger, simpleCompose,
		WithClock(func() time.Time { return testNow }))
	subject, data := testEvent(nil)
	msg := &fakeMsg{subject: subject, data: data, seq: 1, delivered: 1}
	j := h.newJob(held(msg))
	if out, ok := h.prepare(context.Background(), j); !ok {
		t.Fatalf("not to be sent: %+v", out)
	}
	if out, ok := h.claimed(context.Background(), j); !ok {
		t.Fatalf("claim: %+v", out)
	}
	if rec, _ := ledger.get("n1"); rec.State != state.Sending || rec.Attempts != 1 {
		t.Fatalf("claim %+v", rec)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := h.deliver(ctx, j)
	if err := h.Apply(msg, out); err != nil {
		t.Fatal(err)
	}
	rec, _ := ledger.get("n1")
	if msg.last() != "nak" || msg.delay != 0 || len(sender.sent) != 0 || rec.State != state.Retrying || rec.Attempts != 0 {
		t.Fatalf("action %q after %s, %d sent, record %+v: want an immediate nak, nothing sent, retrying with no attempt",
			msg.last(), msg.delay, len(sender.sent), rec)
	}
}

// brokenLedger is a memLedger whose unconditional writes fail while broken.
type brokenLedger struct {
	*memLedger
	broken atomic.Bool
}

func (l *brokenLedger) Put(ctx context.Context, key string, rec state.Record) error {
	if l.broken.Load() {
		return errors.New("ledger down")
	}
	return l.memLedger.Put(ctx, key, rec)
}

// countObserver counts ledger write failures.
type countObserver struct {
	nopObserver
	failures atomic.Int32
}

func (o *countObserver) LedgerWriteFailed() { o.failures.Add(1) }

// A final write that fails after its retries: after an accepted send the
// delivery is acked anyway (mailing again would duplicate) and the record
// stays sending; otherwise it is released for a retry after
// LedgerRetryDelay. Either way the failure is counted.
func TestLedgerWriteFailedForGood(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prefs     memPrefs
		delivered uint64
		wantAct   string
		wantState state.State
	}{
		{"after the send", memPrefs{"u1": {event.TaskAssigned: true}}, 1, "ack", state.Sending},
		{"a skip", memPrefs{}, 2, "nak", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ledger := &brokenLedger{memLedger: newMemLedger()}
			obs := &countObserver{}
			sender := &fakeSender{}
			h := NewHandler(Config{Configured: true, Policy: Policy{LedgerRetryDelay: 7 * time.Second}}, sender, tc.prefs, ledger, simpleCompose,
				WithClock(func() time.Time { return testNow }), WithObserver(obs))
			subject, data := testEvent(nil)
			msg := &fakeMsg{subject: subject, data: data, seq: 1, delivered: tc.delivered}
			out := h.Handle(context.Background(), msg) // the claim (a swap) still works
			ledger.broken.Store(true)
			if err := h.Apply(msg, out); err != nil {
				t.Fatal(err)
			}
			if msg.last() != tc.wantAct || obs.failures.Load() != 1 {
				t.Fatalf("action %q, %d failures counted; want %q and 1", msg.last(), obs.failures.Load(), tc.wantAct)
			}
			if tc.wantAct == "nak" && msg.delay != 7*time.Second {
				t.Errorf("nak delay %s, want LedgerRetryDelay", msg.delay)
			}
			rec, _ := ledger.get("n1")
			if rec.State != tc.wantState {
				t.Errorf("record %+v, want state %q", rec, tc.wantState)
			}
		})
	}
}

// A delivery held long enough that JetStream may have redelivered it
// elsewhere checks, before it sends, that its claim is still the stored
// record: taken over, it sends nothing and leaves the delivery alone.
func TestHeldDeliveryChecksItsClaimBeforeSending(t *testing.T) {
	for _, takenOver := range []bool{false, true} {
		ledger := newMemLedger()
		sender := &fakeSender{}
		h := NewHandler(Config{Configured: true, Policy: Policy{AckWait: 30 * time.Millisecond}}, sender, memPrefs{"u1": {event.TaskAssigned: true}},
			ledger, simpleCompose, WithClock(func() time.Time { return testNow }))
		subject, data := testEvent(nil)
		msg := &fakeMsg{subject: subject, data: data, seq: 1, delivered: 1}
		j := h.newJob(held(msg))
		if out, ok := h.prepare(context.Background(), j); !ok {
			t.Fatalf("not to be sent: %+v", out)
		}
		if out, ok := h.claimed(context.Background(), j); !ok {
			t.Fatalf("claim: %+v", out)
		}
		time.Sleep(20 * time.Millisecond) // more than AckWait/3
		if takenOver {
			rec, _ := ledger.get("n1")
			rec.Delivery, rec.Attempts = 2, 2
			_ = ledger.Put(context.Background(), "n1", rec)
		}
		out := h.deliver(context.Background(), j)
		if err := h.Apply(msg, out); err != nil {
			t.Fatal(err)
		}
		rec, _ := ledger.get("n1")
		if takenOver {
			if len(sender.sent) != 0 || msg.last() != "" || out.Action != Leave || rec.Delivery != 2 {
				t.Errorf("taken over: %d sent, action %q (%s), record %+v; want nothing sent or done", len(sender.sent), msg.last(), out.Action, rec)
			}
		} else if len(sender.sent) != 1 || msg.last() != "ack" || rec.State != state.Sent {
			t.Errorf("still ours: %d sent, action %q, record %+v; want it sent", len(sender.sent), msg.last(), rec)
		}
	}
}
