package prefs_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go/jetstream"
)

// countingKV counts direct reads, to tell a cached answer from a read.
type countingKV struct {
	jetstream.KeyValue
	gets atomic.Int64
}

func (kv *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	kv.gets.Add(1)
	return kv.KeyValue.Get(ctx, key)
}

// TestCacheAnyNumberOfTypes: with more registered types than a byte has
// bits, every type that is on is answered from memory, and Set accepts them.
func TestCacheAnyNumberOfTypes(t *testing.T) {
	var extra []event.Type
	for i := range 5 { // 10 types in all
		typ := event.Type(fmt.Sprintf("test.extra%d", i))
		unregister, err := event.Register(event.Def{Type: typ, Label: "extra"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(unregister)
		extra = append(extra, typ)
	}
	e := newCacheEnv(t)
	kv := &countingKV{KeyValue: e.kv}
	e.c = prefs.NewCache(kv, nil)
	changes := map[event.Type]bool{event.TaskAssigned: true}
	for _, typ := range extra {
		changes[typ] = true
	}
	changes[extra[0]] = false
	if _, err := prefs.New(e.kv).Set(natstest.Ctx(t), "u1", changes); err != nil {
		t.Fatalf("Set: %v", err)
	}
	e.run()
	kv.gets.Store(0)
	for _, typ := range append([]event.Type{event.TaskAssigned}, extra[1:]...) {
		if !e.enabled("u1", typ) {
			t.Errorf("%s: want on", typ)
		}
	}
	if n := kv.gets.Load(); n != 0 {
		t.Errorf("%d direct reads for answers that are on, want none (from memory)", n)
	}
	if e.enabled("u1", extra[0]) || e.enabled("u1", event.Mention) {
		t.Error("want off")
	}
	if kv.gets.Load() != 2 {
		t.Errorf("%d direct reads for two answers that are off, want 2 (off is confirmed)", kv.gets.Load())
	}
}
