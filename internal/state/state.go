// Package state owns the delivery ledger: the notify_email_state bucket that
// records what became of each notification (contract §4), keyed by
// notification id, or by "seq.<stream sequence>" for a message whose id is
// unusable.
package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the name of the KV bucket holding the ledger.
const Bucket = "notify_email_state"

// State is what became of a notification.
type State string

// The states of the contract (§4), plus two working states that a record
// passes through while a send is under way. Sending and Retrying are not
// final: a later delivery of the same notification acts on them.
const (
	Sent                 State = "sent"
	SkippedOptedOut      State = "skipped_opted_out"
	SkippedNoEmail       State = "skipped_no_email"
	SkippedNotConfigured State = "skipped_not_configured"
	InboxOnly            State = "inbox_only"
	Invalid              State = "invalid"
	SkippedStale         State = "skipped_stale"
	// SkippedSuppressed: the address is on the suppression list (§9.2).
	SkippedSuppressed State = "skipped_suppressed"
	// SkippedSeen: the recipient saw the notification in the app before
	// its mail was due (§9.2, MAILRELAY_SEEN_DELAY).
	SkippedSeen State = "skipped_seen"
	// SkippedUnchanged: a date change that a later change in the same
	// batch undid (the date ends where it started), so the batch leaves it
	// out (an extension to the contract's table, docs/volume.md).
	SkippedUnchanged State = "skipped_unchanged"

	// Deferred marks a notification held in NOTIFY_HELD for a batching
	// window, quiet hours or the seen delay (§9.2); Until says until when.
	// It is a working state: the flush of the window decides it.
	Deferred State = "deferred"

	// Sending marks a notification claimed by one delivery that is talking
	// to the mail backend now (an extension to the contract's table).
	Sending State = "sending"
	// Retrying marks a notification whose last attempt failed temporarily
	// and that waits for its next delivery (an extension to the contract's table).
	Retrying State = "retrying"
)

// Done reports whether the state is settled for good: no delivery of the
// notification may mail it. Only sent and inbox_only are (contract §4); the
// skipped states are re-evaluated when the message is delivered again.
func (s State) Done() bool { return s == Sent || s == InboxOnly }

// Final reports whether the state is an outcome rather than a working state.
// The max-deliveries advisory does not overwrite a final state.
func (s State) Final() bool { return s != Sending && s != Retrying && s != Deferred && s != "" }

// Record is the JSON value stored per notification.
type Record struct {
	State     State     `json:"state"`
	Type      string    `json:"type,omitempty"`
	Recipient string    `json:"recipient,omitempty"`
	Attempts  int       `json:"attempts"`
	Error     string    `json:"error,omitempty"`
	MessageID string    `json:"message_id,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	// StreamSeq is the stream sequence of the delivery that wrote the
	// record; it tells a redelivery of the same message from a second
	// copy of the same notification.
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	// Delivery is the delivery number (1 to MaxDeliver) of the message at
	// StreamSeq that wrote a "sending" claim: a redelivery takes over only
	// the claim of an earlier delivery, and a delivery that meets the claim
	// of a later one is stale (JetStream redelivered it elsewhere).
	Delivery int `json:"delivery,omitempty"`
	// Until is when a deferred notification is due to go out (§9.2).
	Until time.Time `json:"until,omitzero"`
	// Batch is how many notifications the mail that carried this one
	// carried (§9.2), on the records a flush writes: its "sending" claim
	// and the outcome.
	Batch int `json:"batch,omitempty"`
	// FlushSeq is the NOTIFY_HELD sequence of the window's due message
	// whose flush wrote a "sending" claim (Delivery is then that message's
	// delivery number): a redelivery of the same due message takes the
	// claim over after a crash; any other delivery leaves it to its owner.
	FlushSeq uint64 `json:"flush_seq,omitempty"`
}

// Errors returned by Store.
var (
	// ErrNotFound: the ledger has no record under that key.
	ErrNotFound = errors.New("no state recorded")
	// ErrConflict: a compare-and-set write lost against a concurrent writer.
	ErrConflict = errors.New("state changed concurrently")
)

// validKey reports whether key is a KV key (the rule of KV clients): one or
// more of A-Z a-z 0-9 - / _ = . and no dot at either end.
func validKey(key string) bool {
	if key == "" || key[0] == '.' || key[len(key)-1] == '.' {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-/_=.", c) >= 0) {
			return false
		}
	}
	return true
}

// SeqKey is the key of a record kept under a stream sequence.
func SeqKey(seq uint64) string { return "seq." + strconv.FormatUint(seq, 10) }

// Store is the ledger over a JetStream KV bucket.
type Store struct {
	kv     jetstream.KeyValue
	js     jetstream.JetStream // for PutAsync; nil: synchronous writes only
	prefix string              // subject prefix of the bucket's keys, for the async writes
}

// New wraps an opened notify_email_state bucket.
func New(kv jetstream.KeyValue) *Store { return &Store{kv: kv, prefix: kvPrefix(kv.Bucket())} }

// WithAsync lets the store start writes without waiting for them (PutAsync)
// through js, which should be created with jetstream.WithPublishAsyncTimeout
// so that every pending write ends.
func (s *Store) WithAsync(js jetstream.JetStream) *Store {
	s.js = js
	return s
}

// kvPrefix is the subject prefix under which KV clients put the keys of
// bucket: its stream captures "$KV.<bucket>.>". The asynchronous writes
// publish there themselves because the KV client has no asynchronous put,
// and nats.go keeps its prefix unexported. This is the prefix of a bucket
// that is not a mirror, reached without a JetStream domain or API prefix:
// how provision creates notify_email_state and the relay connects.
// TestSubjectIsTheBucketStream holds it to the stream's subjects.
func kvPrefix(bucket string) string { return "$KV." + bucket + "." }

// subject is the bucket's subject for key, where KV clients publish a put.
func (s *Store) subject(key string) string { return s.prefix + key }

// Pending is a write started by PutAsync or CreateAsync.
type Pending interface {
	// Wait blocks until the server stored the write (nil) or it failed or
	// timed out (after the JetStream context's async publish timeout).
	Wait() error
}

type pendingPut struct {
	op, key string
	f       jetstream.PubAckFuture
}

func (p pendingPut) Wait() error {
	select {
	case <-p.f.Ok():
		return nil
	case err := <-p.f.Err():
		return fmt.Errorf("state %s %q: %w", p.op, p.key, err)
	}
}

// PutAsync starts writing rec under key unconditionally and returns without
// waiting for the server: many writes then share one network write and one
// wake-up of the stream on the server. It is a KV Put (the value is
// published to the bucket's subject for key, as KV clients do); the record
// counts as written only once Wait returned nil.
func (s *Store) PutAsync(key string, rec Record) (Pending, error) {
	return s.writeAsync("put", key, rec, nil)
}

// CreateAsync starts writing rec under key only if key has no message yet
// (a publish expecting last subject sequence 0) and returns without
// waiting. Wait fails when key has a record, when it has a delete marker
// (which a KV Create would write over), and when the write failed: Swap
// with revision 0 tells them apart. There is no fallback inside Wait, so
// it never blocks for longer than the async publish timeout.
func (s *Store) CreateAsync(key string, rec Record) (Pending, error) {
	var none uint64
	return s.writeAsync("create", key, rec, &none)
}

// writeAsync starts PutAsync (expect nil) or a write conditional on key's
// last subject sequence being *expect.
func (s *Store) writeAsync(op, key string, rec Record, expect *uint64) (Pending, error) {
	if s.js == nil {
		return nil, errors.New("state: asynchronous writes not enabled")
	}
	if !validKey(key) {
		return nil, fmt.Errorf("state %s %q: %w", op, key, jetstream.ErrInvalidKey)
	}
	b, err := encode(rec)
	if err != nil {
		return nil, fmt.Errorf("state encode %q: %w", key, err)
	}
	f, err := s.publishAsync(key, b, expect)
	if err != nil {
		return nil, fmt.Errorf("state %s %q: %w", op, key, err)
	}
	return pendingPut{op: op, key: key, f: f}, nil
}

// publishAsync publishes b to key's subject, as KV clients write a value;
// with expect, only if key's last subject sequence is *expect.
func (s *Store) publishAsync(key string, b []byte, expect *uint64) (jetstream.PubAckFuture, error) {
	m := nats.NewMsg(s.subject(key))
	m.Data = b
	if expect != nil {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(*expect, 10))
	}
	return s.js.PublishMsgAsync(m)
}

// Get returns the record under key and its revision. It returns ErrNotFound
// when there is none.
func (s *Store) Get(ctx context.Context, key string) (Record, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, 0, ErrNotFound
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("state get %q: %w", key, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		// A record we cannot read is treated as absent, never as sent.
		return Record{}, e.Revision(), nil
	}
	return r, e.Revision(), nil
}

// Entry is a record of the ledger, its key and its revision.
type Entry struct {
	Key    string
	Record Record
	Rev    uint64
}

// Records reads the current record of every key matching pattern (a KV
// key pattern: "*" is every key of one token) in one pass over the
// bucket: a watch delivers the last value of each key, then nil, so there
// is no Get per key. A record that cannot be read is left out (Get treats
// it as absent), and so is a key deleted while reading.
func (s *Store) Records(ctx context.Context, pattern string) ([]Entry, error) {
	w, err := s.kv.Watch(ctx, pattern)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", Bucket, err)
	}
	defer func() { _ = w.Stop() }()
	latest := make(map[string]jetstream.KeyValueEntry)
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read %s: %w", Bucket, ctx.Err())
		case e, open := <-w.Updates():
			switch {
			case !open:
				return nil, fmt.Errorf("read %s: the watch ended before all records were read", Bucket)
			case e == nil: // every current record read
				out := make([]Entry, 0, len(latest))
				for key, e := range latest {
					var r Record
					if json.Unmarshal(e.Value(), &r) == nil {
						out = append(out, Entry{Key: key, Record: r, Rev: e.Revision()})
					}
				}
				return out, nil
			case e.Operation() == jetstream.KeyValuePut:
				latest[e.Key()] = e // a key written again while reading: the later value wins
			default:
				delete(latest, e.Key()) // deleted or purged
			}
		}
	}
}

// encode writes rec as JSON without HTML escaping, so that a Message-ID
// reads "<…>" in `nats kv get`, not "\u003c…\u003e".
func encode(rec Record) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rec); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Put writes rec under key unconditionally.
func (s *Store) Put(ctx context.Context, key string, rec Record) error {
	b, err := encode(rec)
	if err != nil {
		return fmt.Errorf("state encode %q: %w", key, err)
	}
	if _, err := s.kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("state put %q: %w", key, err)
	}
	return nil
}

// Swap writes rec under key only if the key is still at revision rev (0:
// only if the key has no record). It returns the new revision, or
// ErrConflict when another writer got there first.
func (s *Store) Swap(ctx context.Context, key string, rec Record, rev uint64) (uint64, error) {
	return s.SwapAsync(ctx, key, rec, rev)()
}

// SwapAsync starts Swap and returns a function that waits for it and gives
// what Swap gives. With WithAsync the write goes out at once as a publish
// with the condition "expected last subject sequence rev": the publish path
// that writes in flight share, far cheaper for the client and the server
// than a request per write. On any failure of it (a record exists, a delete
// marker is in the way, a timeout) the wait falls back to the KV client's
// Create or Update, which tell those apart; a write that did land meanwhile
// then conflicts with itself, which callers resolve by reading the record,
// as for any conflict.
func (s *Store) SwapAsync(ctx context.Context, key string, rec Record, rev uint64) func() (uint64, error) {
	b, err := encode(rec)
	if err != nil {
		return func() (uint64, error) { return 0, fmt.Errorf("state encode %q: %w", key, err) }
	}
	var f jetstream.PubAckFuture
	if s.js != nil && validKey(key) {
		f, _ = s.publishAsync(key, b, &rev) // on error f is nil: the wait takes the KV client
	}
	return func() (uint64, error) {
		if f != nil {
			select {
			case ack := <-f.Ok():
				return ack.Sequence, nil
			case <-f.Err():
			case <-ctx.Done():
				select { // stored already: say so, whatever ctx says
				case ack := <-f.Ok():
					return ack.Sequence, nil
				default:
				}
			}
		}
		return s.swapKV(ctx, key, b, rev)
	}
}

// swapKV is Swap through the KV client.
func (s *Store) swapKV(ctx context.Context, key string, b []byte, rev uint64) (uint64, error) {
	var (
		n   uint64
		err error
	)
	if rev == 0 {
		n, err = s.kv.Create(ctx, key, b)
	} else {
		n, err = s.kv.Update(ctx, key, b, rev)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return 0, fmt.Errorf("state swap %q: %w", key, ErrConflict)
	case err != nil:
		return 0, fmt.Errorf("state swap %q: %w", key, err)
	}
	return n, nil
}
