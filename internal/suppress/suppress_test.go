package suppress_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/suppress"
)

// The key is the hex SHA-256 of the lower-cased address (contract §9.2).
func TestKey(t *testing.T) {
	if got := suppress.Key("Ann@Example.COM"); got != suppress.Key("ann@example.com") || len(got) != 64 {
		t.Fatalf("key %q: not the same for both cases, or not hex SHA-256", got)
	}
	sum := sha256.Sum256([]byte("ann@example.com"))
	if suppress.Key(" Ann@Example.COM ") != hex.EncodeToString(sum[:]) {
		t.Fatal("not the hex SHA-256 of the trimmed, lower-cased address")
	}
}

func TestStore(t *testing.T) {
	_, js, _ := natstest.StartProvisioned(t)
	ctx := natstest.Ctx(t)
	kv, err := js.KeyValue(ctx, suppress.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	s := suppress.New(kv)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	if err := s.Add(ctx, suppress.Entry{Address: "Ann <ann@example.com>"}); err == nil {
		t.Fatal("a display-name form was accepted")
	}
	if err := s.Add(ctx, suppress.Entry{Address: "Ann@Example.com", Reason: "550 no such user", Code: "550 5.1.1", Source: suppress.SourceSMTP}); err != nil {
		t.Fatal(err)
	}
	// stored under the key of the lower-cased address, readable by any client
	e, err := kv.Get(ctx, suppress.Key("ann@example.com"))
	if err != nil || len(e.Value()) == 0 {
		t.Fatalf("entry under the key: %v", err)
	}
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		on, err := s.Suppressed(ctx, "ANN@example.com")
		return on && err == nil, "not suppressed"
	})
	got, err := s.Get(ctx, "ann@example.com")
	if err != nil || got.Address != "Ann@Example.com" || got.Code != "550 5.1.1" || got.At.IsZero() {
		t.Fatalf("entry %+v, %v", got, err)
	}
	// a delete by another client reaches the watch
	if err := kv.Delete(ctx, suppress.Key("ann@example.com")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		on, _ := s.Suppressed(ctx, "ann@example.com")
		return !on, "still suppressed after the delete"
	})
	if err := s.Remove(ctx, "ann@example.com"); !errors.Is(err, suppress.ErrNotFound) {
		t.Fatalf("remove of an address not suppressed: %v", err)
	}
	for _, a := range []string{"b@example.com", "a@example.com"} {
		if err := s.Add(ctx, suppress.Entry{Address: a, Reason: "x", Source: suppress.SourceOperator}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].Address != "a@example.com" {
		t.Fatalf("list %+v, %v", list, err)
	}
	if err := s.Remove(ctx, "A@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "a@example.com"); !errors.Is(err, suppress.ErrNotFound) {
		t.Fatalf("get after remove: %v", err)
	}
}
