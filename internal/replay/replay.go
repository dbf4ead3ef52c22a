// Package replay re-drives notifications that fell back to the inbox (or
// were skipped because no transport was configured) once the cause is
// fixed: it finds them in the ledger, resets their record with a
// compare-and-set, and republishes the original message from the NOTIFY
// stream under a fresh Nats-Msg-Id. The relay then handles the copy like
// any notification: preferences and staleness apply, and a notification
// that is sent is never selected.
package replay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/nats-io/nats.go/jetstream"
)

// Replayable lists the states replay accepts.
var Replayable = []state.State{state.InboxOnly, state.SkippedNotConfigured}

// Filter selects what to replay.
type Filter struct {
	State state.State   // inbox_only by default
	Since time.Duration // only records updated within this long; 0: all
	User  string        // only this recipient; "": all

	// MaxEventBytes is the event size limit the relays run with
	// (MAILRELAY_MAX_EVENT_BYTES; 0: event.DefaultMaxBytes). The stored
	// message is checked against it, so that every event the relays accept
	// can be replayed.
	MaxEventBytes int
}

// Candidate is one notification replay would re-drive, or skip and why.
type Candidate struct {
	ID     string
	Record state.Record
	Skip   string // why it cannot be replayed; "" when it can

	rev     uint64
	subject string
	data    []byte
}

// Stream reads messages of NOTIFY by sequence.
type Stream interface {
	GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error)
}

// Plan lists the candidates in the ledger, oldest first.
func Plan(ctx context.Context, stream Stream, ledger jetstream.KeyValue, f Filter, now time.Time) ([]Candidate, error) {
	if f.State == "" {
		f.State = state.InboxOnly
	}
	ok := false
	for _, s := range Replayable {
		ok = ok || s == f.State
	}
	if !ok {
		return nil, fmt.Errorf("state %q cannot be replayed (accepted: %v)", f.State, Replayable)
	}
	// Ids never hold a dot (event.ValidID), so the single-token pattern
	// leaves the seq.<n> records, which can never be replayed, on the server.
	entries, err := state.New(ledger).Records(ctx, "*")
	if err != nil {
		return nil, err
	}
	var out []Candidate
	for _, e := range entries {
		rec := e.Record
		if !event.ValidID(e.Key) || rec.State != f.State || (f.User != "" && rec.Recipient != f.User) ||
			(f.Since > 0 && now.Sub(rec.UpdatedAt) > f.Since) {
			continue
		}
		c := Candidate{ID: e.Key, Record: rec, rev: e.Rev}
		if c.Skip, err = c.source(ctx, stream, f.MaxEventBytes); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Candidate) int {
		if n := a.Record.UpdatedAt.Compare(b.Record.UpdatedAt); n != 0 {
			return n
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// source reads the message the record names from the stream and keeps it
// when it is this notification and still valid. It returns why the
// candidate cannot be replayed, or "".
func (c *Candidate) source(ctx context.Context, stream Stream, maxBytes int) (string, error) {
	if c.Record.StreamSeq == 0 {
		return "the record does not name its stream message", nil
	}
	raw, err := stream.GetMsg(ctx, c.Record.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "the message is no longer in the stream (older than its max age)", nil
	}
	if err != nil {
		return "", fmt.Errorf("get message %d: %w", c.Record.StreamSeq, err)
	}
	ev, err := event.Decode(raw.Subject, raw.Data, maxBytes)
	switch {
	case ev == nil || ev.ID != c.ID:
		return "the stream message at its sequence is not this notification", nil
	case err != nil:
		// e.g. larger than MAILRELAY_MAX_EVENT_BYTES: the relays would not send it
		return "the stream message is rejected: " + err.Error(), nil
	}
	c.subject, c.data = raw.Subject, raw.Data
	return "", nil
}

// Result says what became of one candidate.
type Result struct {
	ID       string
	Replayed bool
	Seq      uint64 // the stream sequence of the republished copy
	Why      string // why not, when not replayed
}

// Run re-drives the candidates that can be replayed. The record is reset
// (to retrying, attempts 0) only if it is unchanged since Plan, so a
// notification that got mailed in between is left alone.
func Run(ctx context.Context, js jetstream.JetStream, ledger jetstream.KeyValue, cands []Candidate, now time.Time) []Result {
	store := state.New(ledger)
	res := make([]Result, 0, len(cands))
	for _, c := range cands {
		r := Result{ID: c.ID, Why: c.Skip}
		if c.Skip != "" {
			res = append(res, r)
			continue
		}
		next := c.Record
		next.State, next.Attempts, next.UpdatedAt = state.Retrying, 0, now
		next.Error = fmt.Sprintf("replayed from %s (was: %s)", c.Record.State, c.Record.Error)
		if _, err := store.Swap(ctx, c.ID, next, c.rev); err != nil {
			r.Why = "its state changed since it was listed: " + err.Error()
			res = append(res, r)
			continue
		}
		msgID := c.ID + ".replay." + strconv.FormatInt(now.UnixNano(), 36)
		ack, err := event.PublishRaw(ctx, js, c.subject, msgID, c.data)
		if err != nil {
			// put the record back so nothing is left half done
			_ = store.Put(context.WithoutCancel(ctx), c.ID, c.Record)
			r.Why = "publish failed: " + err.Error()
			res = append(res, r)
			continue
		}
		r.Replayed, r.Seq = true, ack.Sequence
		res = append(res, r)
	}
	return res
}
