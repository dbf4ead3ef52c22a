package prefs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type cacheEnv struct {
	t  *testing.T
	ns *natstest.Server
	kv jetstream.KeyValue
	c  *prefs.Cache
}

func newCacheEnv(t *testing.T) *cacheEnv {
	t.Helper()
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns.URL())
	kv, err := js.CreateOrUpdateKeyValue(natstest.Ctx(t), jetstream.KeyValueConfig{Bucket: prefs.Bucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &cacheEnv{t: t, ns: ns, kv: kv, c: prefs.NewCache(kv, nc)}
}

// run starts the watcher; it stops (and is waited for) at cleanup.
func (e *cacheEnv) run() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.c.Run(ctx); err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
	e.t.Cleanup(func() { cancel(); wg.Wait() })
	natstest.Eventually(e.t, 10*time.Second, func() (bool, string) { return e.c.Ready(), "cache not ready" })
}

func (e *cacheEnv) put(user, value string) {
	e.t.Helper()
	if _, err := e.kv.Put(natstest.Ctx(e.t), user, []byte(value)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *cacheEnv) enabled(user string, t event.Type) bool {
	e.t.Helper()
	on, err := e.c.EmailEnabled(natstest.Ctx(e.t), user, t)
	if err != nil {
		e.t.Fatalf("EmailEnabled(%s, %s): %v", user, t, err)
	}
	return on
}

// eventually waits until the cache answers want for user and t.
func (e *cacheEnv) eventually(user string, t event.Type, want bool) {
	e.t.Helper()
	natstest.Eventually(e.t, 5*time.Second, func() (bool, string) {
		on, err := e.c.EmailEnabled(context.Background(), user, t)
		return err == nil && on == want, "still " + map[bool]string{true: "on", false: "off"}[on]
	})
}

func TestCacheInitialLoad(t *testing.T) {
	e := newCacheEnv(t)
	e.put("u1", `{"email":{"task.assigned":true,"mention":false}}`)
	e.put("u2", `{"email":{"task.comment":true,"mention":true}}`)
	e.put("bad", `{"email":`)
	e.put("gone", `{"email":{"task.assigned":true}}`)
	if err := e.kv.Delete(natstest.Ctx(t), "gone"); err != nil {
		t.Fatal(err)
	}
	e.run()
	cases := []struct {
		user string
		t    event.Type
		want bool
	}{
		{"u1", event.TaskAssigned, true},
		{"u1", event.Mention, false},
		{"u1", event.TaskComment, false}, // missing type
		{"u2", event.TaskComment, true},
		{"u2", event.Mention, true},
		{"u2", event.TaskAssigned, false},
		{"bad", event.TaskAssigned, false},  // not JSON
		{"gone", event.TaskAssigned, false}, // deleted before the watch
		{"nobody", event.TaskAssigned, false},
		{"u1", event.Type("nope"), false},
	}
	for _, c := range cases {
		if got := e.enabled(c.user, c.t); got != c.want {
			t.Errorf("EmailEnabled(%s, %s) = %v, want %v", c.user, c.t, got, c.want)
		}
	}
}

func TestCacheEmptyBucketIsReady(t *testing.T) {
	e := newCacheEnv(t)
	e.run()
	if e.enabled("u1", event.TaskAssigned) {
		t.Fatal("empty bucket: want off")
	}
	e.put("u1", `{"email":{"task.assigned":true}}`)
	e.eventually("u1", event.TaskAssigned, true)
}

func TestCacheUpdates(t *testing.T) {
	e := newCacheEnv(t)
	e.put("u1", `{"email":{"task.assigned":true}}`)
	e.run()
	if !e.enabled("u1", event.TaskAssigned) {
		t.Fatal("want on")
	}

	// Turning Email off takes effect once the update arrives.
	store := prefs.New(e.kv)
	if _, err := store.Set(natstest.Ctx(t), "u1", map[event.Type]bool{event.TaskAssigned: false}); err != nil {
		t.Fatal(err)
	}
	e.eventually("u1", event.TaskAssigned, false)

	// And on again, with another type.
	e.put("u1", `{"email":{"task.assigned":true,"mention":true}}`)
	e.eventually("u1", event.Mention, true)
	e.eventually("u1", event.TaskAssigned, true)

	// A value that is not valid JSON means off.
	e.put("u1", `not json`)
	e.eventually("u1", event.TaskAssigned, false)
	e.put("u1", `{"email":{"task.assigned":true}}`)
	e.eventually("u1", event.TaskAssigned, true)

	// Delete and purge remove the user.
	if err := e.kv.Delete(natstest.Ctx(t), "u1"); err != nil {
		t.Fatal(err)
	}
	e.eventually("u1", event.TaskAssigned, false)
	e.put("u1", `{"email":{"task.assigned":true}}`)
	e.eventually("u1", event.TaskAssigned, true)
	if err := e.kv.Purge(natstest.Ctx(t), "u1"); err != nil {
		t.Fatal(err)
	}
	e.eventually("u1", event.TaskAssigned, false)
	if !e.c.Ready() {
		t.Fatal("cache should still answer from memory")
	}
}

// Before the watch has delivered its initial values (here: never started)
// the cache reads the bucket directly, with Store's semantics.
func TestCacheFallbackBeforeReady(t *testing.T) {
	e := newCacheEnv(t)
	if e.c.Ready() {
		t.Fatal("ready without Run")
	}
	e.put("u1", `{"email":{"task.assigned":true}}`)
	e.put("bad", `[`)
	if !e.enabled("u1", event.TaskAssigned) {
		t.Error("u1 task.assigned: want on (direct read)")
	}
	if e.enabled("u1", event.Mention) || e.enabled("bad", event.TaskAssigned) || e.enabled("nobody", event.Mention) {
		t.Error("want off")
	}
	e.put("u1", `{"email":{"task.assigned":false}}`)
	if e.enabled("u1", event.TaskAssigned) {
		t.Error("direct read must see the change at once")
	}
}

// While NATS is down the cache does not answer from memory: the direct read
// fails, so the caller retries later instead of using a stale answer. After
// the reconnect the watch is rebuilt, including changes made meanwhile.
func TestCacheDisconnected(t *testing.T) {
	e := newCacheEnv(t)
	e.put("u1", `{"email":{"task.assigned":true}}`)
	e.run()

	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	natstest.Eventually(t, 5*time.Second, func() (bool, string) { return !e.c.Ready(), "still ready while disconnected" })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := e.c.EmailEnabled(ctx, "u1", event.TaskAssigned)
	cancel()
	if err == nil {
		t.Fatal("want an error while disconnected (no answer from a possibly stale cache)")
	}

	e.ns.Restart()
	natstest.Eventually(t, 10*time.Second, func() (bool, string) { return e.c.Ready(), "not ready after reconnect" })
	if !e.enabled("u1", event.TaskAssigned) {
		t.Fatal("want on after reconnect")
	}
	e.put("u1", `{"email":{"task.assigned":false}}`)
	e.eventually("u1", event.TaskAssigned, false)
}

func TestCacheRunStops(t *testing.T) {
	e := newCacheEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.c.Run(ctx) }()
	natstest.Eventually(t, 10*time.Second, func() (bool, string) { return e.c.Ready(), "not ready" })
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if e.c.Ready() {
		t.Fatal("ready after Run returned")
	}
}
