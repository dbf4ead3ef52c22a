package consumer

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/state"
	"go.uber.org/zap"
)

// asyncLedger is a memLedger whose PutAsync writes only when released,
// and fails (without writing) when fail is set.
type asyncLedger struct {
	*memLedger
	release chan struct{}
	fail    atomic.Bool
	async   atomic.Int32 // PutAsync calls
}

type pendingFunc func() error

func (p pendingFunc) Wait() error { return p() }

func (l *asyncLedger) PutAsync(key string, rec state.Record) (state.Pending, error) {
	l.async.Add(1)
	return pendingFunc(func() error {
		<-l.release
		if l.fail.Load() {
			return errors.New("async write lost")
		}
		return l.Put(context.Background(), key, rec)
	}), nil
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
			if out.Action != Ack || out.Record == nil || out.Record.State != state.Sent {
				t.Fatalf("outcome %+v", out)
			}
			pa, err := h.startApply(msg, out)
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

func TestStartApplyKeepsCreateOnlySynchronous(t *testing.T) {
	ledger := &asyncLedger{memLedger: newMemLedger(), release: make(chan struct{})}
	close(ledger.release)
	_ = ledger.Put(context.Background(), "n1", state.Record{State: state.Sent, Attempts: 1})
	h := NewHandler(Config{Configured: true}, &fakeSender{}, memPrefs{}, ledger, simpleCompose, WithClock(func() time.Time { return testNow }))
	subject, data := testEvent(func(e map[string]any) { e["occurred_at"] = "yesterday" })
	msg := &fakeMsg{subject: subject, data: data, seq: 7, delivered: 1}
	out := h.Handle(context.Background(), msg)
	pa, err := h.startApply(msg, out)
	if err != nil || pa != nil {
		t.Fatalf("startApply = %v, %v; want it applied at once", pa, err)
	}
	if ledger.async.Load() != 0 || msg.last() != "term" {
		t.Fatalf("async writes %d, action %q", ledger.async.Load(), msg.last())
	}
	if rec, _ := ledger.get("seq.7"); rec.State != state.Invalid {
		t.Fatalf("invalid record under seq.7: %+v", rec)
	}
	if rec, _ := ledger.get("n1"); rec.State != state.Sent {
		t.Fatalf("existing state overwritten: %+v", rec)
	}
}
