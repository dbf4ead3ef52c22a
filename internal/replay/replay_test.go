package replay_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/replay"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/nats-io/nats.go/jetstream"
)

type env struct {
	js     jetstream.JetStream
	h      *provision.Handles
	ledger *state.Store
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, js, h := natstest.StartProvisioned(t)
	return &env{js: js, h: h, ledger: state.New(h.State)}
}

// publish stores a task.comment event for u1 whose comment body has
// bodyBytes bytes and returns the encoded event and its stream sequence.
func (e *env) publish(t *testing.T, id string, bodyBytes int) ([]byte, uint64) {
	t.Helper()
	ev := &event.Event{ID: id, Type: event.TaskComment, OccurredAt: time.Now().UTC(),
		Recipient: event.Recipient{ID: "u1", Email: "ann@example.com"}, Task: event.Task{ID: "t1", Title: "T"},
		Comment: &event.Comment{ID: "c1", Body: strings.Repeat("x", bodyBytes)}}
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := event.PublishRaw(natstest.Ctx(t), e.js, ev.Type.Subject(), id, data)
	if err != nil {
		t.Fatal(err)
	}
	return data, ack.Sequence
}

func (e *env) put(t *testing.T, key string, rec state.Record) {
	t.Helper()
	if err := e.ledger.Put(natstest.Ctx(t), key, rec); err != nil {
		t.Fatal(err)
	}
}

func inboxOnly(seq uint64, at time.Time) state.Record {
	return state.Record{State: state.InboxOnly, Type: string(event.TaskComment), Recipient: "u1", Attempts: 3,
		Error: "550 5.7.1 relay denied", StreamSeq: seq, UpdatedAt: at}
}

// TestPlanMaxEventBytes: an event larger than the 64 KiB default but within
// the configured limit (MAILRELAY_MAX_EVENT_BYTES) is replayed; with the
// default limit it is skipped, and the reason says why.
func TestPlanMaxEventBytes(t *testing.T) {
	e := newEnv(t)
	ctx := natstest.Ctx(t)
	data, seq := e.publish(t, "big", 100<<10)
	if len(data) <= event.DefaultMaxBytes {
		t.Fatalf("event is %d bytes, want more than %d", len(data), event.DefaultMaxBytes)
	}
	e.put(t, "big", inboxOnly(seq, time.Now().UTC()))

	plan, err := replay.Plan(ctx, e.h.Stream, e.h.State, replay.Filter{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || plan[0].ID != "big" || !strings.Contains(plan[0].Skip, "over the limit of 65536") {
		t.Fatalf("plan with the default limit = %+v, want big skipped as over the limit", plan)
	}

	plan, err = replay.Plan(ctx, e.h.Stream, e.h.State, replay.Filter{MaxEventBytes: 256 << 10}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || plan[0].ID != "big" || plan[0].Skip != "" {
		t.Fatalf("plan with a 256 KiB limit = %+v, want big replayable", plan)
	}
	res := replay.Run(ctx, e.js, e.h.State, plan, time.Now())
	if len(res) != 1 || !res[0].Replayed {
		t.Fatalf("run = %+v", res)
	}
	cp, err := e.h.Stream.GetMsg(ctx, res[0].Seq)
	if err != nil || string(cp.Data) != string(data) || !strings.HasPrefix(cp.Header.Get("Nats-Msg-Id"), "big.replay.") {
		t.Fatalf("republished copy: %v", err)
	}
	if rec, _, _ := e.ledger.Get(ctx, "big"); rec.State != state.Retrying || rec.Attempts != 0 {
		t.Fatalf("record after replay: %+v", rec)
	}
}

// countingKV is the real bucket, counting the Gets made through it.
type countingKV struct {
	jetstream.KeyValue
	gets atomic.Int64
}

func (k *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	k.gets.Add(1)
	return k.KeyValue.Get(ctx, key)
}

// TestPlanReadsLedgerOnce: Plan reads the ledger in one pass (no Get per
// key), leaves out keys that cannot be notification ids (seq.<n>), deleted
// and unreadable records, lists oldest first, and keeps revisions exact for
// Run's compare-and-set.
func TestPlanReadsLedgerOnce(t *testing.T) {
	e := newEnv(t)
	ctx := natstest.Ctx(t)
	now := time.Now().UTC()
	_, seqA := e.publish(t, "a", 10)
	_, seqB := e.publish(t, "b", 10)
	_, seqC := e.publish(t, "c", 10)
	e.put(t, "a", inboxOnly(seqA, now.Add(-time.Minute)))
	e.put(t, "a", inboxOnly(seqA, now.Add(-time.Minute))) // revision 2 of a
	e.put(t, "b", inboxOnly(seqB, now.Add(-2*time.Minute)))
	e.put(t, "c", inboxOnly(seqC, now))
	e.put(t, state.SeqKey(seqA), inboxOnly(seqA, now))
	e.put(t, "x=y", inboxOnly(seqA, now)) // a KV key, not an id
	e.put(t, "gone", inboxOnly(seqA, now))
	if err := e.h.State.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.State.Put(ctx, "junk", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	e.put(t, "sent", state.Record{State: state.Sent, Recipient: "u1", StreamSeq: seqA, UpdatedAt: now})

	kv := &countingKV{KeyValue: e.h.State}
	plan, err := replay.Plan(ctx, e.h.Stream, kv, replay.Filter{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n := kv.gets.Load(); n != 0 {
		t.Errorf("Plan made %d Gets, want none", n)
	}
	var ids []string
	for _, c := range plan {
		if c.Skip != "" {
			t.Errorf("%s skipped: %s", c.ID, c.Skip)
		}
		ids = append(ids, c.ID)
	}
	if got := strings.Join(ids, ","); got != "b,a,c" {
		t.Fatalf("plan = %s, want b,a,c (oldest first)", got)
	}

	// c changes after Plan: its compare-and-set fails, a and b go through
	e.put(t, "c", state.Record{State: state.Sent, Recipient: "u1", StreamSeq: seqC, UpdatedAt: now})
	res := replay.Run(ctx, e.js, e.h.State, plan, time.Now())
	if len(res) != 3 {
		t.Fatalf("%d results, want one per candidate (3): %+v", len(res), res)
	}
	for _, r := range res {
		switch r.ID {
		case "a", "b":
			if !r.Replayed {
				t.Errorf("%s not replayed: %s", r.ID, r.Why)
			}
		case "c":
			if r.Replayed || !strings.Contains(r.Why, "changed since it was listed") {
				t.Errorf("c: %+v, want a conflict", r)
			}
		}
	}
	if rec, _, _ := e.ledger.Get(ctx, "c"); rec.State != state.Sent {
		t.Errorf("c overwritten: %+v", rec)
	}

	// an empty selection ends too (the watch's end marker with nothing pending)
	plan, err = replay.Plan(ctx, e.h.Stream, e.h.State, replay.Filter{State: state.SkippedNotConfigured}, time.Now())
	if err != nil || len(plan) != 0 {
		t.Fatalf("plan of skipped_not_configured = %+v, %v", plan, err)
	}
}

// TestPlanEmptyLedger: a bucket with no record at all gives an empty plan.
func TestPlanEmptyLedger(t *testing.T) {
	e := newEnv(t)
	plan, err := replay.Plan(natstest.Ctx(t), e.h.Stream, e.h.State, replay.Filter{}, time.Now())
	if err != nil || len(plan) != 0 {
		t.Fatalf("plan = %+v, %v", plan, err)
	}
}
