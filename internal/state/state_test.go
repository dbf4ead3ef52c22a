package state_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/nats-io/nats.go/jetstream"
)

func TestLedger(t *testing.T) {
	_, _, h := natstest.StartProvisioned(t)
	ctx := context.Background()
	l := state.New(h.State)

	if _, _, err := l.Get(ctx, "n1"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("Get of a missing key: %v", err)
	}
	rec := state.Record{State: state.Sending, Type: "task.assigned", Recipient: "u1", Attempts: 1,
		MessageID: "<notify.n1@example.com>", UpdatedAt: time.Now().UTC(), StreamSeq: 7}
	rev, err := l.Swap(ctx, "n1", rec, 0)
	if err != nil {
		t.Fatal(err)
	}
	// create-only loses against an existing record; a stale revision loses too
	if _, err := l.Swap(ctx, "n1", rec, 0); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}
	rec.State = state.Sent
	if _, err := l.Swap(ctx, "n1", rec, rev+100); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("stale revision: %v, want ErrConflict", err)
	}
	if _, err := l.Swap(ctx, "n1", rec, rev); err != nil {
		t.Fatalf("swap at the current revision: %v", err)
	}
	got, _, err := l.Get(ctx, "n1")
	if err != nil || got.State != state.Sent || got.MessageID != rec.MessageID || got.StreamSeq != 7 {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	// the stored JSON is what `nats kv get` shows: field names of the contract, no \u003c escapes
	e, _ := h.State.Get(ctx, "n1")
	raw := string(e.Value())
	for _, want := range []string{`"state":"sent"`, `"type":"task.assigned"`, `"recipient":"u1"`, `"attempts":1`,
		`"message_id":"<notify.n1@example.com>"`, `"updated_at":"`} {
		if !strings.Contains(raw, want) {
			t.Errorf("stored value %s lacks %s", raw, want)
		}
	}
	// a value that is not a record reads as absent, never as sent
	if _, err := h.State.Put(ctx, "n2", []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	got, rev2, err := l.Get(ctx, "n2")
	if err != nil || got.State != "" || rev2 == 0 {
		t.Fatalf("garbage record: %+v rev %d %v", got, rev2, err)
	}
	if state.SeqKey(42) != "seq.42" {
		t.Errorf("SeqKey = %q", state.SeqKey(42))
	}
}

func TestStates(t *testing.T) {
	for _, s := range []state.State{state.Sent, state.InboxOnly} {
		if !s.Done() || !s.Final() {
			t.Errorf("%s: Done %v Final %v", s, s.Done(), s.Final())
		}
	}
	for _, s := range []state.State{state.SkippedOptedOut, state.SkippedNoEmail, state.SkippedNotConfigured, state.SkippedStale, state.Invalid} {
		if s.Done() || !s.Final() {
			t.Errorf("%s: Done %v Final %v", s, s.Done(), s.Final())
		}
	}
	for _, s := range []state.State{state.Sending, state.Retrying, ""} {
		if s.Done() || s.Final() {
			t.Errorf("%q: Done %v Final %v", s, s.Done(), s.Final())
		}
	}
}

func TestPutAsync(t *testing.T) {
	ns, js, h := natstest.StartProvisioned(t)
	ctx := context.Background()
	rec := state.Record{State: state.Sent, Type: "task.comment", Recipient: "u1", Attempts: 1,
		MessageID: "<notify.a1@example.com>", UpdatedAt: time.Now().UTC(), StreamSeq: 3}

	if _, err := state.New(h.State).PutAsync("a1", rec); err == nil {
		t.Fatal("PutAsync without WithAsync succeeded")
	}
	l := state.New(h.State).WithAsync(js)
	for _, key := range []string{"", ".a", "a.", "a b", "a*", "a>", "a\r\nb"} {
		if _, err := l.PutAsync(key, rec); err == nil {
			t.Errorf("PutAsync(%q) accepted a key KV refuses", key)
		}
	}
	// many writes in flight at once; each is stored, and reads back through KV
	var pending []state.Pending
	for i := range 50 {
		r := rec
		r.Attempts = i
		p, err := l.PutAsync(fmt.Sprintf("a%d", i), r)
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	for i, p := range pending {
		if err := p.Wait(); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for i := range 50 {
		got, _, err := l.Get(ctx, fmt.Sprintf("a%d", i))
		if err != nil || got.State != state.Sent || got.Attempts != i || got.MessageID != rec.MessageID {
			t.Fatalf("a%d = %+v, %v", i, got, err)
		}
	}
	// an overwrite through PutAsync replaces the record (history 1)
	r := rec
	r.State = state.InboxOnly
	p, err := l.PutAsync("a7", r)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := l.Get(ctx, "a7"); got.State != state.InboxOnly {
		t.Fatalf("a7 after overwrite = %+v", got)
	}
	// a write the server cannot store fails in Wait (the server is gone,
	// and the async publish timeout of the context ends the wait)
	nc2, _ := natstest.Connect(t, ns.URL())
	js2, err := jetstream.New(nc2, jetstream.WithPublishAsyncTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	l2 := state.New(h.State).WithAsync(js2)
	ns.Shutdown()
	p, err = l2.PutAsync("a8", rec)
	if err == nil {
		err = p.Wait()
	}
	if err == nil {
		t.Fatal("a write with the server down reported success")
	}
}

// Swap(rev 0) on an async store takes the asynchronous create and falls
// back to the KV client's Create, with the same results as the sync store.
func TestSwapCreateAsync(t *testing.T) {
	_, js, h := natstest.StartProvisioned(t)
	ctx := context.Background()
	l := state.New(h.State).WithAsync(js)
	rec := state.Record{State: state.Sending, Attempts: 1, StreamSeq: 9, UpdatedAt: time.Now().UTC()}

	rev, err := l.Swap(ctx, "c1", rec, 0)
	if err != nil || rev == 0 {
		t.Fatalf("create: rev %d, %v", rev, err)
	}
	if e, err := h.State.Get(ctx, "c1"); err != nil || e.Revision() != rev {
		t.Fatalf("stored revision %v, %v; Swap said %d", e, err, rev)
	}
	if _, err := l.Swap(ctx, "c1", rec, 0); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}
	// a deleted key (an operator's `nats kv del`) can be created again
	if err := h.State.Delete(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	rec.Attempts = 2
	if _, err := l.Swap(ctx, "c1", rec, 0); err != nil {
		t.Fatalf("create over a delete marker: %v", err)
	}
	if got, _, err := l.Get(ctx, "c1"); err != nil || got.Attempts != 2 {
		t.Fatalf("after re-create: %+v, %v", got, err)
	}
	// an update at the current revision lands; at a stale one it conflicts
	e, _ := h.State.Get(ctx, "c1")
	rec.Attempts = 3
	rev3, err := l.Swap(ctx, "c1", rec, e.Revision())
	if err != nil || rev3 <= e.Revision() {
		t.Fatalf("update at the current revision: %d, %v", rev3, err)
	}
	if _, err := l.Swap(ctx, "c1", rec, e.Revision()); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("update at a stale revision: %v, want ErrConflict", err)
	}
	// SwapAsync starts the write before the wait
	wait := l.SwapAsync(ctx, "c2", rec, 0)
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		_, err := h.State.Get(ctx, "c2")
		return err == nil, fmt.Sprint("c2 not written before the wait: ", err)
	})
	if _, err := wait(); err != nil {
		t.Fatal(err)
	}
	// many creates of distinct keys in flight at once all land
	errs := make(chan error, 40)
	for i := range 40 {
		go func() {
			_, err := l.Swap(ctx, fmt.Sprintf("p%d", i), rec, 0)
			errs <- err
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// racing creates of one key: exactly one wins
	wins := make(chan error, 10)
	for range 10 {
		go func() { _, err := l.Swap(ctx, "race", rec, 0); wins <- err }()
	}
	won := 0
	for range 10 {
		switch err := <-wins; {
		case err == nil:
			won++
		case !errors.Is(err, state.ErrConflict):
			t.Fatalf("racing create: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d racing creates won, want 1", won)
	}
}

// CreateAsync writes only under a key with no message: it fails, without
// writing and without a fallback of its own, on a record and on a delete
// marker; Swap at revision 0 then tells them apart.
func TestCreateAsync(t *testing.T) {
	_, js, h := natstest.StartProvisioned(t)
	ctx := context.Background()
	l := state.New(h.State).WithAsync(js)
	rec := state.Record{State: state.SkippedOptedOut, StreamSeq: 3, UpdatedAt: time.Now().UTC()}

	p, err := l.CreateAsync("k1", rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("create of a new key: %v", err)
	}
	if got, _, err := l.Get(ctx, "k1"); err != nil || got.State != state.SkippedOptedOut {
		t.Fatalf("after the create: %+v, %v", got, err)
	}
	other := rec
	other.State = state.Sent
	if p, err = l.CreateAsync("k1", other); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err == nil {
		t.Fatal("a create over a record succeeded")
	}
	if got, _, _ := l.Get(ctx, "k1"); got.State != state.SkippedOptedOut {
		t.Fatalf("the record was overwritten: %+v", got)
	}
	// over a delete marker the async create fails; the KV create succeeds
	if err := h.State.Delete(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if p, err = l.CreateAsync("k1", other); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err == nil {
		t.Fatal("an async create over a delete marker succeeded")
	}
	if _, err := l.Swap(ctx, "k1", other, 0); err != nil {
		t.Fatalf("create over a delete marker: %v", err)
	}
	if _, err := state.New(h.State).CreateAsync("k2", rec); err == nil {
		t.Fatal("CreateAsync without WithAsync succeeded")
	}
}

// The asynchronous writes publish where the KV client puts: under the
// subjects the bucket's stream captures.
func TestSubjectIsTheBucketStream(t *testing.T) {
	_, _, h := natstest.StartProvisioned(t)
	st, err := h.State.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		t.Fatalf("bucket status is a %T", st)
	}
	got := state.New(h.State).Subject("k1")
	subjects := bs.StreamInfo().Config.Subjects
	if len(subjects) != 1 || got != strings.TrimSuffix(subjects[0], ">")+"k1" {
		t.Errorf("subject %q, bucket stream subjects %q", got, subjects)
	}
}
