// Package prefs owns the notify_prefs bucket: per user, which notification
// types the user wants by email (contract §4), and the optional time_zone,
// quiet_hours and batch (§9.2). Email is opt-in: a missing user, a missing
// type or an unreadable value means off. Each entry of "email" stands on
// its own: one that is not a boolean is off for its type alone, and the
// lookup says why (Answer.Problem). Each optional field stands on its own
// too: one that is malformed is ignored, never turns Email off, and the
// lookup says so (Answer.Ignored).
package prefs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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

// Answer is a user's preference for one type.
type Answer struct {
	// On is true when the user turned Email on for the type.
	On bool
	// Problem is "" when the stored value is valid for the type (or there
	// is none), else why it is off although the user may have meant on,
	// e.g. `notify_prefs["u1"].email["mention"] is "yes", not a boolean`.
	// It is short and never holds the whole value.
	Problem string
	// TimeZone is the user's time_zone (an IANA zone), nil when none or
	// not a zone this machine knows: then times are shown in UTC.
	TimeZone *time.Location
	// Quiet are the user's quiet_hours, read in TimeZone (QuietHours.Until);
	// nil when none. Each answer has its own copy.
	Quiet *QuietHours
	// Batch is the user's batch: Set false when the user chose none.
	Batch Batch
	// Ignored is "" when the optional fields (time_zone, quiet_hours,
	// batch) are absent or valid, else which were ignored and why, e.g.
	// `notify_prefs["u1"].quiet_hours.start is "25:00", not HH:MM`
	// (several are joined with "; "). An ignored field reads as absent;
	// it never turns Email off and never sets Problem.
	Ignored string
}

// ErrBadValue: the stored value is not a JSON object with an "email"
// object, so every type reads as off.
var ErrBadValue = errors.New("preferences value is not valid")

// Store reads and writes preferences. Reads go to the bucket every time, so
// a change takes effect on the next notification.
type Store struct {
	kv jetstream.KeyValue
}

// New wraps an opened notify_prefs bucket.
func New(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// Get returns the preferences of user and the entry's revision (0 when the
// user has none). A value that is not a JSON object with an "email" object
// yields empty preferences and an error wrapping ErrBadValue that says what
// is wrong; an entry of "email" that is not a boolean is left out (it reads
// as off) without an error. Other errors are lookup failures.
func (s *Store) Get(ctx context.Context, user string) (Prefs, uint64, error) {
	e, err := s.kv.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Prefs{}, 0, nil
	}
	if err != nil {
		return Prefs{}, 0, fmt.Errorf("prefs lookup %q: %w", user, err)
	}
	v := parse(user, e.Value())
	if v.problem != "" {
		return Prefs{}, e.Revision(), fmt.Errorf("%w: %s", ErrBadValue, v.problem)
	}
	return v.prefs, e.Revision(), nil
}

// Email returns user's preference for t, with the reason when a broken
// value turns it off. Only a failed lookup is an error.
func (s *Store) Email(ctx context.Context, user string, t event.Type) (Answer, error) {
	e, err := s.kv.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Answer{}, nil
	}
	if err != nil {
		return Answer{}, fmt.Errorf("prefs lookup %q: %w", user, err)
	}
	v := parse(user, e.Value())
	return v.answer(t), nil
}

// EmailEnabled reports whether user turned Email on for t. Only a failed
// lookup is an error; a bad value is off.
func (s *Store) EmailEnabled(ctx context.Context, user string, t event.Type) (bool, error) {
	a, err := s.Email(ctx, user, t)
	return a.On, err
}

// value is a stored preference read entry by entry.
type value struct {
	prefs Prefs // the entries of "email" that are booleans
	// problem says why the whole value is unusable; "" when it is usable.
	problem string
	// broken says, per key of "email" whose value is not a boolean, why.
	broken map[event.Type]string
	opt    optional // time_zone, quiet_hours and batch
}

// answer is the preference for t.
func (v *value) answer(t event.Type) Answer {
	a := v.email(t)
	a.TimeZone, a.Quiet, a.Batch, a.Ignored = v.opt.tz, v.opt.quietHours(), v.opt.batch, v.opt.ignored
	return a
}

func (v *value) email(t event.Type) Answer {
	if v.problem != "" {
		return Answer{Problem: v.problem}
	}
	if p, ok := v.broken[t]; ok {
		return Answer{Problem: p}
	}
	return Answer{On: v.prefs.Enabled(t)}
}

// parse reads a stored value. The "email" key matches as encoding/json
// matches Prefs' field; null, for "email" or for one of its entries, means
// the same as absent (off, no problem).
func parse(user string, b []byte) value {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil || top == nil {
		if !json.Valid(b) {
			return value{problem: where(user) + " is not valid JSON"}
		}
		return value{problem: fmt.Sprintf("%s is %s, not a JSON object", where(user), describe(b))}
	}
	v := parseEmail(user, top)
	v.opt = parseOptional(user, top)
	return v
}

// where names user's value in a problem text; built only for a problem, as
// preferences are read at every notification.
func where(user string) string { return fmt.Sprintf("notify_prefs[%q]", user) }

// parseEmail reads the "email" object of user's stored object.
func parseEmail(user string, top map[string]json.RawMessage) value {
	// Keys are exact: encoding/json would take "Email" or "EMAIL" for
	// "email", and another reader of the bucket would not.
	email, ok := top["email"]
	for k := range top {
		if k != "email" && strings.EqualFold(k, "email") {
			return value{problem: fmt.Sprintf("%s has the key %s; the key is \"email\" (exact case)", where(user), strconv.QuoteToASCII(k))}
		}
	}
	if !ok && hasOther(top) {
		// A flat shape ({"task.comment": true}) or another mistake: off,
		// and said, rather than silently off.
		return value{problem: fmt.Sprintf("%s has no \"email\" object (its keys: %s)", where(user), keyList(top))}
	}
	if len(email) == 0 || string(email) == "null" {
		return value{}
	}
	var entries map[event.Type]json.RawMessage
	if err := json.Unmarshal(email, &entries); err != nil || entries == nil {
		return value{problem: fmt.Sprintf("%s.email is %s, not an object", where(user), describe(email))}
	}
	v := value{prefs: Prefs{Email: make(map[event.Type]bool, len(entries))}}
	for t, r := range entries {
		var on bool
		switch {
		case string(r) == "null":
		case json.Unmarshal(r, &on) == nil:
			v.prefs.Email[t] = on
		default:
			if v.broken == nil {
				v.broken = map[event.Type]string{}
			}
			v.broken[t] = fmt.Sprintf("%s.email[%s] is %s, not a boolean", where(user), strconv.QuoteToASCII(string(t)), describe(r))
		}
	}
	return v
}

// optionalKeys are the fields of a stored value besides "email" (contract
// §9.2): a value with only these has Email off, and nothing is wrong.
var optionalKeys = map[string]bool{"time_zone": true, "quiet_hours": true, "batch": true}

// hasOther reports whether top has a key that is not an optional field.
func hasOther(top map[string]json.RawMessage) bool {
	for k := range top {
		if !optionalKeys[k] {
			return true
		}
	}
	return false
}

// keyList names at most a few keys of a stored object, ASCII-quoted.
func keyList(m map[string]json.RawMessage) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, strconv.QuoteToASCII(k))
	}
	sort.Strings(keys)
	if len(keys) > 5 {
		keys = append(keys[:5], "…")
	}
	return strings.Join(keys, ", ")
}

// describe names a JSON value for a problem text: a short string or
// number as itself (ASCII-quoted, so the text stays printable), anything
// else by its kind, so that a problem never repeats a long value.
func describe(r []byte) string {
	r = bytes.TrimSpace(r)
	if len(r) == 0 {
		return "empty"
	}
	switch r[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 'n':
		return "null"
	case '"':
		var s string
		if json.Unmarshal(r, &s) != nil || utf8.RuneCountInString(s) > 32 {
			return "a string"
		}
		return strconv.QuoteToASCII(s)
	case 't', 'f':
		return "a boolean"
	}
	if len(r) > 32 {
		return "a number"
	}
	return string(r)
}

// Set changes the given types for user and keeps the others, with a
// compare-and-set so concurrent writers do not lose each other's changes.
// The other fields of a stored object (time_zone, quiet_hours, batch, and
// any the app adds) are kept as stored. A stored value that is not a JSON
// object is replaced, as is an "email" that is not an object (or a key that
// differs from "email" only by case), and entries of "email" that are not
// booleans are dropped: all of these read as off already.
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
		var stored []byte
		var rev uint64
		e, err := s.kv.Get(ctx, user)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return Prefs{}, fmt.Errorf("prefs lookup %q: %w", user, err)
		default:
			stored, rev = e.Value(), e.Revision()
		}
		var p Prefs
		if v := parse(user, stored); stored != nil && v.problem == "" {
			p = v.prefs
		}
		if p.Email == nil {
			p.Email = map[event.Type]bool{}
		}
		for t, on := range changes {
			p.Email[t] = on
		}
		b, err := withEmail(stored, p)
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

// withEmail returns the stored value with its "email" replaced by p's,
// every other key kept; a stored value that is not a JSON object becomes
// {"email": …}.
func withEmail(stored []byte, p Prefs) ([]byte, error) {
	var top map[string]json.RawMessage
	if json.Unmarshal(stored, &top) != nil || top == nil {
		return json.Marshal(p)
	}
	for k := range top {
		if strings.EqualFold(k, "email") {
			delete(top, k)
		}
	}
	email, err := json.Marshal(p.Email)
	if err != nil {
		return nil, err
	}
	top["email"] = email
	return json.Marshal(top)
}
