// Package prefs owns the notify_prefs bucket: per user, which notification
// types the user wants by email (contract §4). Email is opt-in: a missing
// user, a missing type or an unreadable value means off.
package prefs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mailrelay/mailrelay/event"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the name of the KV bucket holding the preferences.
const Bucket = "notify_prefs"

// Prefs is the JSON value stored per user.
type Prefs struct {
	Email map[event.Type]bool `json:"email"`
}

// Enabled reports whether Email is on for t.
func (p Prefs) Enabled(t event.Type) bool { return p.Email[t] }

// ErrBadValue: the stored value is not valid preferences JSON (read as off).
var ErrBadValue = errors.New("preferences value is not valid JSON")

// Store reads and writes preferences. Reads go to the bucket every time, so
// a change takes effect on the next notification.
type Store struct {
	kv jetstream.KeyValue
}

// New wraps an opened notify_prefs bucket.
func New(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// Get returns the preferences of user and the entry's revision (0 when the
// user has none). A value that is not valid JSON yields empty preferences
// and an error wrapping ErrBadValue; other errors are lookup failures.
func (s *Store) Get(ctx context.Context, user string) (Prefs, uint64, error) {
	e, err := s.kv.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Prefs{}, 0, nil
	}
	if err != nil {
		return Prefs{}, 0, fmt.Errorf("prefs lookup %q: %w", user, err)
	}
	var p Prefs
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return Prefs{}, e.Revision(), fmt.Errorf("prefs %q: %w", user, ErrBadValue)
	}
	return p, e.Revision(), nil
}

// EmailEnabled reports whether user turned Email on for t. Only a failed
// lookup is an error; a bad value is off.
func (s *Store) EmailEnabled(ctx context.Context, user string, t event.Type) (bool, error) {
	p, _, err := s.Get(ctx, user)
	if errors.Is(err, ErrBadValue) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return p.Enabled(t), nil
}

// Set changes the given types for user and keeps the others, with a
// compare-and-set so concurrent writers do not lose each other's changes.
// A stored value that is not valid JSON is replaced.
func (s *Store) Set(ctx context.Context, user string, changes map[event.Type]bool) (Prefs, error) {
	if !event.ValidID(user) {
		return Prefs{}, event.CheckID(fmt.Sprintf("user id %q", user), user)
	}
	for t := range changes {
		if !t.Valid() {
			return Prefs{}, fmt.Errorf("unknown notification type %q", t)
		}
	}
	for range 5 {
		p, rev, err := s.Get(ctx, user)
		if err != nil && !errors.Is(err, ErrBadValue) {
			return Prefs{}, err
		}
		if p.Email == nil {
			p.Email = map[event.Type]bool{}
		}
		for t, on := range changes {
			p.Email[t] = on
		}
		b, err := json.Marshal(p)
		if err != nil {
			return Prefs{}, err
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, user, b)
		} else {
			_, err = s.kv.Update(ctx, user, b, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return Prefs{}, fmt.Errorf("prefs set %q: %w", user, err)
		}
		return p, nil
	}
	return Prefs{}, fmt.Errorf("prefs set %q: too many concurrent changes, try again", user)
}
