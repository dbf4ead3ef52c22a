package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// WriteTimeout bounds one ledger write while applying an outcome (the
// relay gives asynchronous writes the same bound). Outcomes
// are applied with a context of their own, so a shutdown never leaves a
// sent mail unrecorded.
const WriteTimeout = 5 * time.Second

// Apply carries out an outcome: the ledger write first, then the action.
// A failed write turns an ack or term into a nak (the delivery comes back
// and decides again), except after a send: the mail is out, so the delivery
// is acked and the ledger keeps the claim, which a redelivery treats as a
// crash after sending.
func (h *Handler) Apply(msg jetstream.Msg, out Outcome) error {
	if out.Record != nil && out.Key != "" {
		switch err := h.write(out); {
		case errors.Is(err, errRecordExists):
			out = out.later(0, "a record exists: decided again with it on redelivery")
		case err != nil:
			out = h.writeFailed(out, err)
		}
	}
	return h.conclude(msg, out)
}

// errRecordExists: a create-only write without a fallback key met a record.
var errRecordExists = errors.New("the notification already has a record")

// writeFailed is the outcome after the ledger write of out failed for good.
func (h *Handler) writeFailed(out Outcome, err error) Outcome {
	h.log.Error("ledger write failed", zap.String("event_id", out.EventID),
		zap.Uint64("stream_seq", out.StreamSeq), zap.Error(err))
	h.obs.LedgerWriteFailed()
	if !(out.Action == Ack && out.Record.State == state.Sent) {
		out.Action, out.Delay, out.Reason = Nak, h.cfg.LedgerRetryDelay, "ledger write failed"
	}
	return out
}

// AsyncLedger is a Ledger that can start writes without waiting for them,
// so that the writes of many deliveries share round trips: an
// unconditional put, and a create that fails (without a fallback of its
// own) when the key has a record or a delete marker.
type AsyncLedger interface {
	PutAsync(key string, rec state.Record) (state.Pending, error)
	CreateAsync(key string, rec state.Record) (state.Pending, error)
}

// startApply begins applying out. When its ledger write is a plain put and
// the ledger can write asynchronously, it starts the write and returns the
// rest of the work as a pending apply: the action follows once the write
// is stored. Otherwise it applies out at once and returns nil.
func (h *Handler) startApply(msg jetstream.Msg, out Outcome) (*pendingApply, error) {
	al, ok := h.ledger.(AsyncLedger)
	if !ok || out.Record == nil || out.Key == "" {
		return nil, h.Apply(msg, out)
	}
	var p state.Pending
	var err error
	if out.CreateOnly {
		// Any failure, a record or a delete marker under the key included,
		// takes the synchronous path (in a goroutine of the finisher's),
		// which tells them apart.
		p, err = al.CreateAsync(out.Key, *out.Record)
	} else {
		p, err = al.PutAsync(out.Key, *out.Record)
	}
	if err != nil {
		return nil, h.Apply(msg, out) // the synchronous path retries and reports
	}
	return &pendingApply{h: h, msg: msg, out: out, write: p, done: func() {}}, nil
}

// pendingApply is an outcome whose ledger write is under way.
type pendingApply struct {
	h     *Handler
	msg   jetstream.Msg
	out   Outcome
	write state.Pending
	done  func() // runs once the outcome is applied
}

// wait blocks until the write is stored or failed.
func (a *pendingApply) wait() error { return a.write.Wait() }

// finish carries out the action after the write (werr nil), or applies the
// outcome again synchronously, with retries, after the write failed: the
// ack still comes only after the ledger holds the outcome.
func (a *pendingApply) finish(werr error) error {
	if werr != nil {
		if !a.out.CreateOnly { // a create meeting a record is no failure
			a.h.log.Warn("ledger write failed, retrying", zap.String("event_id", a.out.EventID), zap.Error(werr))
		}
		return a.h.Apply(a.msg, a.out)
	}
	return a.h.conclude(a.msg, a.out)
}

// conclude logs out and carries out its action; the ledger write is done.
func (h *Handler) conclude(msg jetstream.Msg, out Outcome) error {
	h.logOutcome(out)
	h.obs.Outcome(out)
	switch out.Action {
	case Leave:
		if l, ok := msg.(interface{ leave() }); ok {
			l.leave()
		}
		return nil
	case Ack:
		return msg.Ack()
	case Term:
		return msg.TermWithReason(out.Reason)
	default:
		if out.Delay > 0 {
			return msg.NakWithDelay(out.Delay)
		}
		return msg.Nak()
	}
}

func (h *Handler) write(out Outcome) error {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), WriteTimeout)
		if out.CreateOnly {
			_, err = h.ledger.Swap(ctx, out.Key, *out.Record, 0)
			if errors.Is(err, state.ErrConflict) {
				if out.FallbackKey == "" {
					cancel()
					return errRecordExists
				}
				err = h.ledger.Put(ctx, out.FallbackKey, *out.Record)
			}
		} else {
			err = h.ledger.Put(ctx, out.Key, *out.Record)
		}
		cancel()
		if err == nil {
			return nil
		}
	}
	return err
}

func (h *Handler) logOutcome(out Outcome) {
	fields := []zap.Field{
		zap.String("event_id", out.EventID), zap.String("type", out.Type),
		zap.Uint64("stream_seq", out.StreamSeq), zap.Int("deliveries", out.Delivered),
		zap.String("decision", out.Action.String()), zap.String("reason", out.Reason),
	}
	if out.Record != nil {
		fields = append(fields, zap.String("state", string(out.Record.State)), zap.Int("attempts", out.Record.Attempts))
	}
	if out.Action == Nak && out.Delay > 0 {
		fields = append(fields, zap.Duration("delay", out.Delay))
	}
	switch {
	case out.Record != nil && (out.Record.State == state.Invalid || out.Record.State == state.InboxOnly):
		h.log.Warn("notification", fields...)
	case out.Action == Nak:
		h.log.Warn("notification", fields...)
	default:
		h.log.Info("notification", fields...)
	}
}

// Observer receives what the consumer does, for metrics.
type Observer interface {
	Outcome(out Outcome)
	Sent(d time.Duration, err error)
	InFlight(delta int)
	Advisory(result string)
	LedgerWriteFailed() // a ledger write failed for good (after its retries)
}

type nopObserver struct{}

func (nopObserver) Outcome(Outcome)           {}
func (nopObserver) Sent(time.Duration, error) {}
func (nopObserver) InFlight(int)              {}
func (nopObserver) Advisory(string)           {}
func (nopObserver) LedgerWriteFailed()        {}
