package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/state"
	"go.uber.org/zap"
)

// memHolder is an in-memory Holder: the flush's side of NOTIFY_HELD.
type memHolder struct {
	mu       sync.Mutex
	items    map[string][]hold.Item
	seq      uint64
	schedule map[string]time.Time
}

func newMemHolder() *memHolder {
	return &memHolder{items: map[string][]hold.Item{}, schedule: map[string]time.Time{}}
}

func (m *memHolder) Hold(_ context.Context, r string, it hold.Item, windowEnd, _ time.Time) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	it.Seq, it.Due = m.seq, windowEnd
	m.items[r] = append(m.items[r], it)
	return windowEnd, nil
}

func (m *memHolder) Items(_ context.Context, r string, max int) ([]hold.Item, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	its := m.items[r]
	if len(its) > max {
		return append([]hold.Item(nil), its[:max]...), true, nil
	}
	return append([]hold.Item(nil), its...), false, nil
}

func (m *memHolder) Remove(_ context.Context, r string, seqs []uint64, _ bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	gone := map[uint64]bool{}
	for _, q := range seqs {
		gone[q] = true
	}
	var kept []hold.Item
	for _, it := range m.items[r] {
		if !gone[it.Seq] {
			kept = append(kept, it)
		}
	}
	m.items[r] = kept
	return nil
}

func (m *memHolder) Schedule(_ context.Context, r string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.schedule[r] = at
	return nil
}

func (m *memHolder) Done(context.Context, uint64) {}

// lateHoldLedger is a memLedger on which the NOTIFY delivery's deferred
// record of one notification lands right after the flush has read it, as
// it does when a hold stores its item and the window closes before the
// hold writes its record.
type lateHoldLedger struct {
	*memLedger
	key  string
	once sync.Once
}

func (l *lateHoldLedger) Get(ctx context.Context, key string) (state.Record, uint64, error) {
	r, rev, err := l.memLedger.Get(ctx, key)
	if key == l.key {
		l.once.Do(func() {
			_ = l.memLedger.Put(ctx, key, state.Record{State: state.Deferred, Type: string(event.TaskAssigned), Recipient: "u1"})
		})
	}
	return r, rev, err
}

type flushEnv struct {
	holder *memHolder
	ledger Ledger
	mem    *memLedger
	sender *fakeSender
	fl     *Flusher
}

func newFlushEnv(t *testing.T, ledger func(*memLedger) Ledger) *flushEnv {
	t.Helper()
	e := &flushEnv{holder: newMemHolder(), mem: newMemLedger(), sender: &fakeSender{}}
	e.ledger = ledger(e.mem)
	batch := func(sections []compose.Section, now time.Time, _ compose.Options) (*compose.Message, error) {
		var ids []string
		for _, s := range sections {
			for _, ev := range s.Events {
				ids = append(ids, ev.ID)
			}
		}
		return &compose.Message{MessageID: fmt.Sprintf("<batch.%v@example.com>", ids), Date: now}, nil
	}
	h := NewHandler(Config{Configured: true}, e.sender, memPrefs{"u1": {event.TaskAssigned: true}}, e.ledger,
		nil, WithHolding(e.holder, nil, batch), WithClock(func() time.Time { return testNow }))
	e.fl = NewFlusher(nil, h, 4, 0)
	return e
}

// hold stores n notifications for u1, due at testNow.
func (e *flushEnv) hold(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("h%d", i+1)
		ev := &event.Event{ID: id, Type: event.TaskAssigned, OccurredAt: testNow.Add(-time.Minute),
			Recipient: event.Recipient{ID: "u1", Email: "ann@example.com"}, Task: event.Task{ID: "t1", Title: "T"}}
		data, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.holder.Hold(context.Background(), "u1", hold.Item{Subject: ev.Type.Subject(), Data: data, StreamSeq: uint64(i + 1)}, testNow, testNow); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func (e *flushEnv) flush(t *testing.T) {
	t.Helper()
	out, err := e.fl.flush(context.Background(), "u1", 99, 1, testNow, zap.NewNop())
	if err != nil || out != flushDone {
		t.Fatalf("flush: %v, %v", out, err)
	}
}

// TestFlushOneMailForTheWindow: a window's notifications go out as one
// mail, each recorded sent with its Message-ID and batch, and nothing
// stays held or scheduled.
func TestFlushOneMailForTheWindow(t *testing.T) {
	e := newFlushEnv(t, func(m *memLedger) Ledger { return m })
	ids := e.hold(t, 3)
	e.flush(t)
	if len(e.sender.sent) != 1 {
		t.Fatalf("%d mails, want 1", len(e.sender.sent))
	}
	for _, id := range ids {
		r, _ := e.mem.get(id)
		if r.State != state.Sent || r.Batch != 3 || r.MessageID != e.sender.sent[0].MessageID || r.Attempts != 1 {
			t.Fatalf("%s: %+v", id, r)
		}
	}
	if its, _, _ := e.holder.Items(context.Background(), "u1", 10); len(its) != 0 {
		t.Fatalf("still held: %+v", its)
	}
	if at, ok := e.holder.schedule["u1"]; ok {
		t.Fatalf("a window was scheduled at %v with nothing held", at)
	}
}

// TestFlushClaimsAgainALateHoldRecord: the deferred record of the second
// notification lands between the flush's read and its claim (the hold
// writes it after storing the item). The flush claims it again at the new
// revision: one mail carries all three, the window is not split.
func TestFlushClaimsAgainALateHoldRecord(t *testing.T) {
	for _, key := range []string{"h1", "h2"} { // the window's lock, and one of the rest
		t.Run(key, func(t *testing.T) {
			e := newFlushEnv(t, func(m *memLedger) Ledger { return &lateHoldLedger{memLedger: m, key: key} })
			ids := e.hold(t, 3)
			e.flush(t)
			if len(e.sender.sent) != 1 {
				t.Fatalf("%d mails, want 1", len(e.sender.sent))
			}
			var batches []int
			for _, id := range ids {
				r, _ := e.mem.get(id)
				if r.State != state.Sent {
					t.Fatalf("%s: %+v, want sent", id, r)
				}
				batches = append(batches, r.Batch)
			}
			sort.Ints(batches)
			if batches[0] != 3 || batches[2] != 3 {
				t.Fatalf("batches %v, want all 3", batches)
			}
		})
	}
}

// TestFlushLeavesAnotherFlushsClaim: a notification claimed a moment ago
// by another flush (another due message) is neither mailed nor removed;
// the window is scheduled again for when that claim expires.
func TestFlushLeavesAnotherFlushsClaim(t *testing.T) {
	e := newFlushEnv(t, func(m *memLedger) Ledger { return m })
	e.hold(t, 2)
	claim := state.Record{State: state.Sending, FlushSeq: 7, Delivery: 1, UpdatedAt: testNow, Recipient: "u1"}
	if err := e.mem.Put(context.Background(), "h2", claim); err != nil {
		t.Fatal(err)
	}
	e.flush(t)
	if len(e.sender.sent) != 1 {
		t.Fatalf("%d mails, want 1 (h1 alone)", len(e.sender.sent))
	}
	if r, _ := e.mem.get("h1"); r.State != state.Sent || r.Batch != 1 {
		t.Fatalf("h1: %+v", r)
	}
	if r, _ := e.mem.get("h2"); r.State != state.Sending || r.FlushSeq != 7 {
		t.Fatalf("h2's claim was taken: %+v", r)
	}
	its, _, _ := e.holder.Items(context.Background(), "u1", 10)
	if len(its) != 1 {
		t.Fatalf("held after the flush: %d, want h2 alone", len(its))
	}
	if at := e.holder.schedule["u1"]; !at.Equal(testNow.Add(e.fl.h.policy.ClaimTTL())) {
		t.Fatalf("next window %v, want when the other claim expires (%v)", at, testNow.Add(e.fl.h.policy.ClaimTTL()))
	}
}
