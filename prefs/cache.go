package prefs

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cache answers Email and EmailEnabled from memory, kept current by a watch
// on the bucket (KeyValue.WatchAll: the latest value of every key first,
// then every change), so that deciding a notification costs no round trip
// to the server. It has the semantics of Store.Email: a missing user, a missing
// type, a deleted or purged key, or a broken value means off (a value that
// is not a JSON object with an "email" object for every type, an entry that
// is not a boolean for its type alone).
//
// Only "on" is answered from memory, with the optional fields (TimeZone,
// Quiet, Batch, Ignored) exactly as Store.Email gives them; "off" is
// confirmed with a direct read, so that a user who has just turned Email on
// never misses a mail because the update was still on its way down the
// watch.
//
// It answers from memory only while the watch is healthy: after it has
// delivered every initial value, and while the NATS connection has stayed
// up since. Before that, while disconnected, and after a reconnect until a
// new watch has caught up, it asks the bucket directly (Store.EmailEnabled),
// so an answer is never older than what a direct read would give, except
// for the time an update takes to travel down the watch.
//
// Run keeps the watch going; without Run every call is a direct read.
type Cache struct {
	store *Store
	kv    jetstream.KeyValue
	nc    *nats.Conn

	// live is the map answers come from; nil while the watch is not
	// healthy.
	live atomic.Pointer[view]
	// gen is the connection's reconnect count when live was filled; a
	// different count means the watch may have missed changes.
	gen atomic.Uint64
}

// view maps a user to the registered types the user turned Email on for;
// a user with none is absent.
type view struct {
	mu sync.RWMutex
	m  map[string]cached
}

// cached is what memory holds of one user: the types that are on, and what
// goes with an answer that is on (the optional fields, by value).
type cached struct {
	on  []event.Type
	opt optional
}

// answer is the answer for a type that is on, as Store.Email gives it.
func (u *cached) answer() Answer {
	return Answer{On: true, TimeZone: u.opt.tz, Quiet: u.opt.quietHours(), Batch: u.opt.batch, Ignored: u.opt.ignored}
}

// NewCache returns a cache over an opened notify_prefs bucket. nc is the
// connection the bucket uses: while it is not connected, and after each
// reconnect until the watch has caught up again, answers come from direct
// reads. nc may be nil (then only the watch's own end is noticed).
func NewCache(kv jetstream.KeyValue, nc *nats.Conn) *Cache {
	return &Cache{store: New(kv), kv: kv, nc: nc}
}

// Ready reports whether answers currently come from memory.
func (c *Cache) Ready() bool { return c.current() != nil }

func (c *Cache) current() *view {
	v := c.live.Load()
	if v == nil {
		return nil
	}
	if c.nc != nil && (!c.nc.IsConnected() || c.nc.Stats().Reconnects != c.gen.Load()) {
		return nil
	}
	return v
}

// EmailEnabled reports whether user turned Email on for t, like
// Store.EmailEnabled. Only a failed direct read is an error.
func (c *Cache) EmailEnabled(ctx context.Context, user string, t event.Type) (bool, error) {
	a, err := c.Email(ctx, user, t)
	return a.On, err
}

// Email returns user's preference for t, like Store.Email. "On" comes from
// memory when the watch is healthy; "off", and with it the Problem of a
// broken value, always comes from a direct read. Only a failed direct read
// is an error.
func (c *Cache) Email(ctx context.Context, user string, t event.Type) (Answer, error) {
	v := c.current()
	if v == nil {
		return c.store.Email(ctx, user, t)
	}
	if !t.Valid() {
		return Answer{}, nil
	}
	v.mu.RLock()
	u := v.m[user]
	v.mu.RUnlock()
	if slices.Contains(u.on, t) {
		return u.answer(), nil
	}
	// "Off" is confirmed with a direct read: an update on its way down the
	// watch must not make a user who just turned Email on miss a mail.
	// Mail is sent on the common path (on) without a round trip; a user who
	// just turned Email off may still get mail for as long as the update
	// takes to arrive (milliseconds).
	return c.store.Email(ctx, user, t)
}

// Run watches the bucket until ctx ends, rebuilding the watch after the
// connection comes back or the watch ends. It returns nil when ctx ends.
func (c *Cache) Run(ctx context.Context) error {
	var status chan nats.Status
	if c.nc != nil {
		status = c.nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
		defer c.nc.RemoveStatusListener(status)
	}
	defer c.live.Store(nil)
	pause := 100 * time.Millisecond
	for {
		healthy := c.watch(ctx, status)
		c.live.Store(nil)
		if ctx.Err() != nil {
			return nil
		}
		if healthy {
			pause = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// watch runs one watch until it ends, ctx ends or the connection drops or
// comes back. It reports whether the watch got as far as its initial values.
func (c *Cache) watch(ctx context.Context, status <-chan nats.Status) (healthy bool) {
	// Drain connection events that happened before this watch started.
	for drained := false; !drained; {
		select {
		case <-status:
		default:
			drained = true
		}
	}
	var gen uint64
	if c.nc != nil {
		if !c.nc.IsConnected() {
			return c.waitConnected(ctx, status)
		}
		gen = c.nc.Stats().Reconnects
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := c.kv.WatchAll(wctx)
	if err != nil {
		return false
	}
	defer func() { _ = w.Stop() }()

	v := &view{m: make(map[string]cached)}
	loading := true
	for {
		select {
		case <-ctx.Done():
			return !loading
		case <-status:
			// Disconnected, reconnected or closed: changes made meanwhile
			// may be missing, so start over with a new watch.
			return !loading
		case e, ok := <-w.Updates():
			if !ok {
				return !loading
			}
			if e == nil {
				if loading {
					loading = false
					c.gen.Store(gen)
					c.live.Store(v)
				}
				continue
			}
			v.apply(e, !loading)
		}
	}
}

// waitConnected waits until the connection reports a status change or
// ctx ends (the caller starts a new watch then).
func (c *Cache) waitConnected(ctx context.Context, status <-chan nats.Status) bool {
	select {
	case <-ctx.Done():
	case <-status:
	case <-time.After(time.Second):
	}
	return true
}

// apply records one entry; lock is false while the view is not shared yet.
func (v *view) apply(e jetstream.KeyValueEntry, lock bool) {
	if lock {
		v.mu.Lock()
		defer v.mu.Unlock()
	}
	switch e.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		delete(v.m, e.Key())
		return
	}
	u := parseCached(e.Key(), e.Value())
	if len(u.on) == 0 {
		delete(v.m, e.Key()) // absent is off: keep only users with something on
		return
	}
	v.m[e.Key()] = u
}

// parseCached reads user's stored value as Store.Email does: the registered
// types that are on, with the optional fields; a broken value is all off, a
// broken entry off for its type. A type registered after the value arrived
// reads as off here, and so is confirmed by a direct read.
func parseCached(user string, b []byte) cached {
	v := parse(user, b)
	if v.problem != "" {
		return cached{}
	}
	var set []event.Type
	for t, on := range v.prefs.Email {
		if d, ok := event.Lookup(t); on && ok {
			set = append(set, d.Type) // the registry's string: the decoded key is not kept
		}
	}
	if set == nil {
		return cached{}
	}
	return cached{on: set, opt: v.opt}
}
