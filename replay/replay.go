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
	"sort"
	"strconv"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/state"
	"github.com/nats-io/nats.go/jetstream"
)

// Replayable lists the states replay accepts.
var Replayable = []state.State{state.InboxOnly, state.SkippedNotConfigured}

// Filter selects what to replay.
type Filter struct {
	State state.State   // inbox_only by default
	Since time.Duration // only records updated within this long; 0: all
	User  string        // only this recipient; "": all
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
	lister, err := ledger.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", state.Bucket, err)
	}
	defer func() { _ = lister.Stop() }()
	store := state.New(ledger)
	var out []Candidate
	for key := range lister.Keys() {
		rec, rev, err := store.Get(ctx, key)
		if errors.Is(err, state.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if rec.State != f.State || (f.User != "" && rec.Recipient != f.User) ||
			(f.Since > 0 && now.Sub(rec.UpdatedAt) > f.Since) || !event.ValidID(key) {
			continue
		}
		c := Candidate{ID: key, Record: rec, rev: rev}
		raw, err := stream.GetMsg(ctx, rec.StreamSeq)
		switch {
		case rec.StreamSeq == 0:
			c.Skip = "the record does not name its stream message"
		case errors.Is(err, jetstream.ErrMsgNotFound):
			c.Skip = "the message is no longer in the stream (older than its max age)"
		case err != nil:
			return nil, fmt.Errorf("get message %d: %w", rec.StreamSeq, err)
		default:
			ev, derr := event.Decode(raw.Subject, raw.Data, 0)
			if derr != nil || ev.ID != key {
				c.Skip = "the stream message at its sequence is not this notification"
			} else {
				c.subject, c.data = raw.Subject, raw.Data
			}
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Record.UpdatedAt.Before(out[j].Record.UpdatedAt) })
	return out, nil
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
