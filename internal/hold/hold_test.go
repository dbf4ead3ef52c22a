package hold_test

import (
	"context"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/nats-io/nats.go/jetstream"
)

func start(t *testing.T) (*hold.Store, jetstream.Stream, jetstream.JetStream) {
	t.Helper()
	_, js, h := natstest.StartProvisioned(t)
	return hold.New(js, h.Held), h.Held, js
}

func item(n int) hold.Item {
	return hold.Item{Subject: "notify.task.assigned", Data: []byte{'{', byte('0' + n), '}'}, StreamSeq: uint64(100 + n)}
}

// TestHoldJoinsTheOpenWindow: the first notification opens a window, the
// next joins it (due when it closes), both are listed in order, and the
// window fires on the due subject, where mailrelay_flush sees it.
func TestHoldJoinsTheOpenWindow(t *testing.T) {
	s, stream, _ := start(t)
	ctx := natstest.Ctx(t)
	now := time.Now()
	end := now.Add(2 * time.Second)
	due1, err := s.Hold(ctx, "u1", item(1), end, now)
	if err != nil {
		t.Fatal(err)
	}
	if due1.Before(end) || due1.After(end.Add(time.Second)) || due1.Nanosecond() != 0 {
		t.Fatalf("due %v: want the window's end %v rounded up to a second", due1, end)
	}
	at, ok, err := s.Window(ctx, "u1")
	if err != nil || !ok || !at.Equal(due1) {
		t.Fatalf("window %v %v %v, want %v", at, ok, err, due1)
	}
	// A later notification with a longer window of its own joins the open one.
	due2, err := s.Hold(ctx, "u1", item(2), now.Add(time.Hour), now)
	if err != nil || !due2.Equal(due1) {
		t.Fatalf("joined at %v (%v), want %v", due2, err, due1)
	}
	// One that may not go out before later keeps its own time.
	due3, err := s.Hold(ctx, "u1", item(3), now, now.Add(time.Minute))
	if err != nil || due3.Before(now.Add(time.Minute)) {
		t.Fatalf("not before: %v (%v)", due3, err)
	}
	items, more, err := s.Items(ctx, "u1", 10)
	if err != nil || more || len(items) != 3 {
		t.Fatalf("items %d more %v err %v", len(items), more, err)
	}
	for i, it := range items {
		if it.StreamSeq != uint64(101+i) || it.Subject != "notify.task.assigned" || string(it.Data) != string(item(i+1).Data) {
			t.Fatalf("item %d: %+v", i, it)
		}
	}
	if !items[0].Due.Equal(due1) || !items[2].Due.Equal(due3) {
		t.Fatalf("dues %v %v", items[0].Due, items[2].Due)
	}
	if _, more, _ := s.Items(ctx, "u1", 2); !more {
		t.Fatal("a listing cut short must say there is more")
	}
	// The window fires into the stream, for the flush consumer.
	cons, err := stream.Consumer(ctx, hold.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, m.Subject())
		if time.Now().Before(due1) {
			t.Errorf("fired at %v, before %v", time.Now(), due1)
		}
		_ = m.Ack()
	}
	if len(got) != 1 || got[0] != hold.DueSubject("u1") {
		t.Fatalf("fired: %v", got)
	}
	if _, ok, _ := s.Window(ctx, "u1"); ok {
		t.Fatal("a fired window is no longer pending")
	}
	// Removing the first two (a prefix) leaves the third.
	if err := s.Remove(ctx, "u1", []uint64{items[0].Seq, items[1].Seq}, true); err != nil {
		t.Fatal(err)
	}
	left, _, _ := s.Items(ctx, "u1", 10)
	if len(left) != 1 || left[0].Seq != items[2].Seq {
		t.Fatalf("left %+v", left)
	}
	// Removing one that is not a prefix deletes it alone.
	if _, err := s.Hold(ctx, "u1", item(4), now, now); err != nil {
		t.Fatal(err)
	}
	left, _, _ = s.Items(ctx, "u1", 10)
	if err := s.Remove(ctx, "u1", []uint64{left[1].Seq}, false); err != nil {
		t.Fatal(err)
	}
	left, _, _ = s.Items(ctx, "u1", 10)
	if len(left) != 1 || left[0].Seq != items[2].Seq {
		t.Fatalf("after delete: %+v", left)
	}
}

// TestHoldAfterTheWindowFired: once a window fired, the next hold opens a
// new one rather than joining the fired one.
func TestHoldAfterTheWindowFired(t *testing.T) {
	s, _, _ := start(t)
	ctx := natstest.Ctx(t)
	now := time.Now()
	if _, err := s.Hold(ctx, "u4", item(1), now, now); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		_, ok, err := s.Window(ctx, "u4")
		return !ok && err == nil, "the window did not fire"
	})
	later := time.Now().Add(time.Minute)
	due, err := s.Hold(ctx, "u4", item(2), later, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	at, ok, err := s.Window(ctx, "u4")
	if err != nil || !ok || !at.Equal(due) || due.Before(later) {
		t.Fatalf("new window %v %v %v, due %v", at, ok, err, due)
	}
}

// TestScheduleKeepsTheEarlier: a schedule moves a window earlier, never later.
func TestScheduleKeepsTheEarlier(t *testing.T) {
	s, _, _ := start(t)
	ctx := natstest.Ctx(t)
	now := time.Now().Truncate(time.Second)
	if err := s.Schedule(ctx, "u2", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Schedule(ctx, "u2", now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if at, _, _ := s.Window(ctx, "u2"); !at.Equal(now.Add(time.Hour)) {
		t.Fatalf("a later schedule replaced an earlier one: %v", at)
	}
	if err := s.Schedule(ctx, "u2", now.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if at, _, _ := s.Window(ctx, "u2"); !at.Equal(now.Add(30 * time.Minute)) {
		t.Fatalf("an earlier schedule did not win: %v", at)
	}
}

// TestSweepFindsOrphans: held notifications with no window pending or
// fired are given one that closes now; the figures count what is held.
func TestSweepFindsOrphans(t *testing.T) {
	s, stream, js := start(t)
	ctx := natstest.Ctx(t)
	now := time.Now()
	if _, err := s.Hold(ctx, "u1", item(1), now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Hold(ctx, "u1", item(2), now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	// An orphan: stored by a relay that died before opening its window.
	if _, err := js.Publish(ctx, hold.ItemSubject("u3"), []byte("{}"), jetstream.WithExpectStream(hold.Stream)); err != nil {
		t.Fatal(err)
	}
	st, orphans, err := s.Sweep(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if st.Notifications != 3 || st.Recipients != 2 || st.Oldest.IsZero() || orphans != 1 {
		t.Fatalf("stats %+v orphans %d", st, orphans)
	}
	cons, _ := stream.Consumer(ctx, hold.Consumer)
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		n++
		if m.Subject() != hold.DueSubject("u3") {
			t.Fatalf("fired %s, want the orphan's", m.Subject())
		}
	}
	if n != 1 {
		t.Fatal("the orphan's window did not fire")
	}
	// The sweep is idempotent: a fired window waiting for its flush is no orphan.
	if _, orphans, _ := s.Sweep(ctx, now); orphans != 0 {
		t.Fatalf("orphans again: %d", orphans)
	}
}

// TestSeen: a key in notify_seen means seen; a deleted key does not.
func TestSeen(t *testing.T) {
	_, js, h := natstest.StartProvisioned(t)
	_ = js
	seen := hold.NewSeen(h.Seen)
	ctx := context.Background()
	if ok, err := seen.Seen(ctx, "n1"); ok || err != nil {
		t.Fatalf("unseen: %v %v", ok, err)
	}
	if _, err := h.Seen.Put(ctx, "n1", []byte("2026-12-06T10:00:00Z")); err != nil {
		t.Fatal(err)
	}
	if ok, err := seen.Seen(ctx, "n1"); !ok || err != nil {
		t.Fatalf("seen: %v %v", ok, err)
	}
	if err := h.Seen.Delete(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := seen.Seen(ctx, "n1"); ok {
		t.Fatal("a deleted key reads as seen")
	}
	_ = provision.SeenBucket
}
