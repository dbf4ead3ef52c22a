// Package suppress owns the notify_suppressed bucket (contract §9.2): the
// addresses mail is no longer sent to because their server rejected them
// for good, or because an operator said so. The key is the lower-case hex
// SHA-256 of the lower-cased address, so the bucket's keys name no address;
// the value says which address, why, and since when.
package suppress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the name of the KV bucket of suppressed addresses.
const Bucket = "notify_suppressed"

// Sources of an entry.
const (
	SourceSMTP     = "smtp"     // the relay, on a permanent rejection of the recipient
	SourceOperator = "operator" // mailrelay suppress add, or POST /v1/suppressions
)

// Entry is the JSON value stored per suppressed address.
type Entry struct {
	Address string    `json:"address"`
	Reason  string    `json:"reason"`
	Code    string    `json:"code,omitempty"` // the SMTP reply code and enhanced status, e.g. "550 5.1.1"
	Source  string    `json:"source"`
	At      time.Time `json:"at"`
}

// ErrNotFound: the address is not suppressed.
var ErrNotFound = errors.New("address not suppressed")

// Key is the bucket key of an address: the hex SHA-256 of its lower-cased
// form (contract §9.2).
func Key(address string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(address))))
	return hex.EncodeToString(sum[:])
}

// CheckAddress accepts one bare address, as an operator would type it.
func CheckAddress(address string) error {
	a, err := mail.ParseAddress(address)
	if err != nil || a.Name != "" || a.Address != strings.TrimSpace(address) {
		return fmt.Errorf("%q is not an email address (a bare address like ann@example.com)", address)
	}
	return nil
}

// Store reads and writes the bucket. It answers Suppressed from memory
// while its watch (Run) is healthy, and from the bucket otherwise.
type Store struct {
	kv   jetstream.KeyValue
	live atomic.Pointer[set]
}

type set struct {
	mu   sync.RWMutex
	keys map[string]struct{}
}

// New wraps an opened notify_suppressed bucket.
func New(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// Suppressed reports whether mail to address is suppressed. "Not
// suppressed", the common answer, comes from memory while the watch is
// healthy; "suppressed" is confirmed by a read of the bucket, so that an
// address just removed never misses a mail while the removal travels down
// the watch. Only that read fails.
func (s *Store) Suppressed(ctx context.Context, address string) (bool, error) {
	key := Key(address)
	if v := s.live.Load(); v != nil {
		v.mu.RLock()
		_, ok := v.keys[key]
		v.mu.RUnlock()
		if !ok {
			return false, nil
		}
	}
	_, err := s.kv.Get(ctx, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return false, fmt.Errorf("suppression lookup: %w", err)
}

// Get returns the entry of address, or ErrNotFound.
func (s *Store) Get(ctx context.Context, address string) (Entry, error) {
	e, err := s.kv.Get(ctx, Key(address))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("suppression get: %w", err)
	}
	var en Entry
	if err := json.Unmarshal(e.Value(), &en); err != nil {
		return Entry{}, fmt.Errorf("suppression entry %s is not valid JSON", e.Key())
	}
	return en, nil
}

// Add suppresses e.Address (an existing entry is replaced: the latest
// reason wins).
func (s *Store) Add(ctx context.Context, e Entry) error {
	if err := CheckAddress(e.Address); err != nil {
		return err
	}
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, Key(e.Address), b); err != nil {
		return fmt.Errorf("suppress %s: %w", e.Address, err)
	}
	s.remember(Key(e.Address), true)
	return nil
}

// Suppress adds address after a permanent rejection by its server
// (consumer.Suppressions).
func (s *Store) Suppress(ctx context.Context, address, reason, code string) error {
	return s.Add(ctx, Entry{Address: address, Reason: reason, Code: code, Source: SourceSMTP})
}

// Remove lets mail flow to address again. It returns ErrNotFound when the
// address was not suppressed.
func (s *Store) Remove(ctx context.Context, address string) error {
	key := Key(address)
	if _, err := s.kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
		return ErrNotFound
	} else if err != nil {
		return fmt.Errorf("suppression get: %w", err)
	}
	if err := s.kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("unsuppress %s: %w", address, err)
	}
	s.remember(key, false)
	return nil
}

// List returns every entry, by address.
func (s *Store) List(ctx context.Context) ([]Entry, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", Bucket, err)
	}
	defer func() { _ = lister.Stop() }()
	var out []Entry
	for key := range lister.Keys() {
		e, err := s.kv.Get(ctx, key)
		if err != nil {
			continue // deleted meanwhile
		}
		var en Entry
		if json.Unmarshal(e.Value(), &en) == nil {
			out = append(out, en)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, nil
}

func (s *Store) remember(key string, on bool) {
	v := s.live.Load()
	if v == nil {
		return
	}
	v.mu.Lock()
	if on {
		v.keys[key] = struct{}{}
	} else {
		delete(v.keys, key)
	}
	v.mu.Unlock()
}

// Run keeps the in-memory set current with a watch until ctx ends,
// starting over (with a pause) when the watch ends. Answers come from the
// bucket while the set is being (re)built.
func (s *Store) Run(ctx context.Context) error {
	defer s.live.Store(nil)
	pause := 100 * time.Millisecond
	for {
		s.watch(ctx)
		s.live.Store(nil)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

func (s *Store) watch(ctx context.Context) {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return
	}
	defer func() { _ = w.Stop() }()
	v := &set{keys: map[string]struct{}{}}
	loading := true
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				if loading {
					loading = false
					s.live.Store(v)
				}
				continue
			}
			v.mu.Lock()
			if e.Operation() == jetstream.KeyValuePut {
				v.keys[e.Key()] = struct{}{}
			} else {
				delete(v.keys, e.Key())
			}
			v.mu.Unlock()
		}
	}
}
