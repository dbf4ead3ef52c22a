package consumer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/transport"
)

// scriptSender fails with the given errors in turn, then accepts.
type scriptSender struct {
	mu    sync.Mutex
	errs  []error
	calls []time.Time
	sent  int
}

func (s *scriptSender) Send(context.Context, *compose.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, time.Now())
	if len(s.errs) > 0 {
		err := s.errs[0]
		s.errs = s.errs[1:]
		return err
	}
	s.sent++
	return nil
}

func TestSlowDownPausesWithoutBurningAttempts(t *testing.T) {
	slow := &transport.Error{Temporary: true, Code: 421, Err: errors.New("too many connections, slow down")}
	sender := &scriptSender{errs: []error{slow, slow}}
	ledger := newMemLedger()
	th := NewThrottle(20*time.Millisecond, 80*time.Millisecond)
	h := NewHandler(Config{Configured: true}, sender, memPrefs{"u1": {event.TaskAssigned: true}}, ledger, simpleCompose,
		WithClock(func() time.Time { return testNow }), WithThrottle(th))
	subject, data := testEvent(nil)
	msg := &fakeMsg{subject: subject, data: data, seq: 1, delivered: 1}
	out := h.Handle(context.Background(), msg)
	if err := h.Apply(msg, out); err != nil {
		t.Fatal(err)
	}
	if msg.last() != "ack" || sender.sent != 1 {
		t.Fatalf("action %q, sent %d: want ack and one mail", msg.last(), sender.sent)
	}
	rec, _ := ledger.get("n1")
	if rec.State != state.Sent || rec.Attempts != 1 {
		t.Fatalf("record %+v, want sent after 1 attempt", rec)
	}
	// the pauses grew: ≥ 20ms, then ≥ 40ms
	if gap1, gap2 := sender.calls[1].Sub(sender.calls[0]), sender.calls[2].Sub(sender.calls[1]); gap1 < 20*time.Millisecond || gap2 < 40*time.Millisecond {
		t.Fatalf("pauses %s, %s: want ≥ 20ms then ≥ 40ms", gap1, gap2)
	}
}

func TestSlowDownPausesEveryone(t *testing.T) {
	th := NewThrottle(200*time.Millisecond, time.Second)
	th.Trip()
	if !th.Paused() {
		t.Fatal("not paused after Trip")
	}
	start := time.Now()
	if err := th.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 150*time.Millisecond {
		t.Fatalf("Wait returned after %s during a 200ms pause", time.Since(start))
	}
	ctx, cancel := context.WithCancel(context.Background())
	th.Trip()
	cancel()
	if err := th.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context = %v", err)
	}
}

// A notification that goes stale while sends are paused for a slow-down
// is skipped_stale when its turn comes, not mailed late (contract: "older
// than MAILRELAY_STALE_AFTER when it would be sent").
func TestStaleAfterSlowDownPause(t *testing.T) {
	slow := &transport.Error{Temporary: true, Code: 421, Err: errors.New("slow down")}
	sender := &scriptSender{errs: []error{slow}}
	clock := func() time.Time {
		sender.mu.Lock()
		defer sender.mu.Unlock()
		if len(sender.calls) > 0 { // the pause outlasted the notification's freshness
			return testNow.Add(2 * time.Hour)
		}
		return testNow
	}
	ledger := newMemLedger()
	h := NewHandler(Config{Configured: true, Policy: Policy{StaleAfter: time.Hour}}, sender, memPrefs{"u1": {event.TaskAssigned: true}}, ledger,
		simpleCompose, WithClock(clock), WithThrottle(NewThrottle(10*time.Millisecond, 20*time.Millisecond)))
	subject, data := testEvent(nil)
	msg := &fakeMsg{subject: subject, data: data, seq: 1, delivered: 1}
	out := h.Handle(context.Background(), msg)
	if err := h.Apply(msg, out); err != nil {
		t.Fatal(err)
	}
	if msg.last() != "ack" || sender.sent != 0 || len(sender.calls) != 1 {
		t.Fatalf("action %q, %d tries, %d sent: want ack after one try and no mail", msg.last(), len(sender.calls), sender.sent)
	}
	rec, _ := ledger.get("n1")
	if rec.State != state.SkippedStale || rec.Attempts != 0 {
		t.Fatalf("record %+v, want skipped_stale with no attempt counted", rec)
	}
}
