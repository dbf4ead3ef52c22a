package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/state"
)

// TestReplayCommand: --dry-run lists an inbox_only notification and
// changes nothing; the real run resets its record and republishes the
// stored message under a fresh Nats-Msg-Id for the relays to handle.
func TestReplayCommand(t *testing.T) {
	ns, js, h := natstest.StartProvisioned(t)
	ctx := context.Background()
	ev := &event.Event{ID: "n1", Type: event.TaskAssigned, OccurredAt: time.Now().UTC(),
		Recipient: event.Recipient{ID: "u1", Email: "ann@example.com"}, Task: event.Task{ID: "t1", Title: "T"}}
	data, _ := json.Marshal(ev)
	ack, err := event.PublishRaw(ctx, js, ev.Type.Subject(), ev.ID, data)
	if err != nil {
		t.Fatal(err)
	}
	ledger := state.New(h.State)
	_ = ledger.Put(ctx, "n1", state.Record{State: state.InboxOnly, Type: "task.assigned", Recipient: "u1", Attempts: 3,
		Error: "550 5.7.1 relay denied", StreamSeq: ack.Sequence, UpdatedAt: time.Now().UTC()})
	_ = ledger.Put(ctx, "n2", state.Record{State: state.Sent, Recipient: "u1", Attempts: 1, StreamSeq: ack.Sequence})
	env := envFrom(map[string]string{"NATS_URL": ns.URL()})

	out, _, err := runCLI(t, env, "replay", "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "replay  n1") || strings.Contains(out, "n2") || !strings.Contains(out, "dry run: 1 to replay") {
		t.Fatalf("dry run output:\n%s", out)
	}
	if r, _, _ := ledger.Get(ctx, "n1"); r.State != state.InboxOnly {
		t.Fatalf("dry run changed the state: %+v", r)
	}

	out, _, err = runCLI(t, env, "replay", "--since", "1h", "--user", "u1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "replayed n1 as stream sequence 2") || !strings.Contains(out, "replayed 1, not replayed 0") {
		t.Fatalf("replay output:\n%s", out)
	}
	r, _, _ := ledger.Get(ctx, "n1")
	if r.State != state.Retrying || r.Attempts != 0 {
		t.Fatalf("record after replay: %+v", r)
	}
	copyMsg, err := h.Stream.GetMsg(ctx, 2)
	if err != nil || string(copyMsg.Data) != string(data) || !strings.HasPrefix(copyMsg.Header.Get("Nats-Msg-Id"), "n1.replay.") {
		t.Fatalf("republished copy: %+v %v", copyMsg, err)
	}
	// nothing left to replay; a bad --state is refused by the parser
	out, _, _ = runCLI(t, env, "replay", "--dry-run")
	if !strings.Contains(out, "dry run: 0 to replay") {
		t.Fatalf("second dry run:\n%s", out)
	}
	if _, _, err := runCLI(t, env, "replay", "--state", "sent"); err == nil {
		t.Fatal("--state sent was accepted")
	}
}

// TestReplayCommandMaxEventBytes: replay decodes the stored message with
// MAILRELAY_MAX_EVENT_BYTES, so an event over the 64 KiB default that the
// relays accept under a raised limit is replayed, not skipped.
func TestReplayCommandMaxEventBytes(t *testing.T) {
	ns, js, h := natstest.StartProvisioned(t)
	ctx := context.Background()
	ev := &event.Event{ID: "big", Type: event.TaskComment, OccurredAt: time.Now().UTC(),
		Recipient: event.Recipient{ID: "u1", Email: "ann@example.com"}, Task: event.Task{ID: "t1", Title: "T"},
		Comment: &event.Comment{ID: "c1", Body: strings.Repeat("word ", 20<<10)}}
	data, _ := json.Marshal(ev)
	if len(data) <= event.DefaultMaxBytes {
		t.Fatalf("event is %d bytes, want more than %d", len(data), event.DefaultMaxBytes)
	}
	ack, err := event.PublishRaw(ctx, js, ev.Type.Subject(), ev.ID, data)
	if err != nil {
		t.Fatal(err)
	}
	ledger := state.New(h.State)
	if err := ledger.Put(ctx, "big", state.Record{State: state.InboxOnly, Type: "task.comment", Recipient: "u1", Attempts: 3,
		Error: "421 try later", StreamSeq: ack.Sequence, UpdatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	env := envFrom(map[string]string{"NATS_URL": ns.URL(), "MAILRELAY_MAX_EVENT_BYTES": "262144"})
	out, _, err := runCLI(t, env, "replay")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "replayed big as stream sequence 2") || !strings.Contains(out, "replayed 1, not replayed 0") {
		t.Fatalf("replay output:\n%s", out)
	}
	if cp, err := h.Stream.GetMsg(ctx, 2); err != nil || string(cp.Data) != string(data) {
		t.Fatalf("republished copy: %v", err)
	}
}
