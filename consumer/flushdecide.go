package consumer

import (
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/state"
)

// ItemFacts is what is known about one held notification when its window
// flushes (docs/volume.md): its event, when it is due, its ledger record,
// the recipient's preferences read again, the suppression list, whether
// the recipient saw it in the app, and which flush is deciding.
type ItemFacts struct {
	Event     *event.Event
	Due       time.Time
	Record    state.Record
	Rev       uint64
	RecordErr error

	Prefs       PrefsFacts
	Suppression SuppressionFacts
	Seen        bool
	SeenErr     error
	Configured  bool

	Now time.Time
	// FiredAt is when the window's schedule fired, by the server's clock
	// (the due message's timestamp): what was due then is due, whatever
	// this relay's clock says.
	FiredAt time.Time
	// FlushSeq and Delivery name the due message being flushed (its
	// NOTIFY_HELD sequence and delivery number).
	FlushSeq uint64
	Delivery int
}

// Verdict is what a flush does with one held notification.
type Verdict int

// The verdicts.
const (
	// Include: it goes out in this window's mail.
	Include Verdict = iota
	// Skip: a rule keeps it from being mailed; State is recorded and it
	// is removed from NOTIFY_HELD.
	Skip
	// Drop: it was decided already (its record is final); removed,
	// nothing written.
	Drop
	// Wait: it stays held; the next window closes at Until.
	Wait
	// Stale: a later delivery of this due message owns the window; this
	// flush stops and does nothing more.
	Stale
)

func (v Verdict) String() string {
	return [...]string{"include", "skip", "drop", "wait", "stale"}[v]
}

// ItemDecision is the verdict on one held notification.
type ItemDecision struct {
	Verdict Verdict
	State   state.State // for Skip
	Reason  string
	Error   string    // for Skip: the record's error (broken preferences)
	Until   time.Time // for Wait
}

// DecideItem applies the rules at the moment a window flushes (contract
// §9.2): a final record stands; a claim of another live sender is left to
// it; what is not due yet waits; then the preferences read again (off:
// skipped_opted_out), the suppression list, the transport, the quiet hours
// (waits until they end), seen in the app (skipped_seen), staleness
// (skipped_stale); else it goes out. It does no I/O and reads no clock.
func DecideItem(f ItemFacts, p policy.Policy) ItemDecision {
	r := f.Record
	retry := f.Now.Add(p.LedgerRetryDelay)
	switch {
	case f.RecordErr != nil:
		return wait(retry, "ledger unavailable: "+f.RecordErr.Error())
	case r.State.Final():
		return ItemDecision{Verdict: Drop, Reason: "already " + string(r.State)}
	case r.State == state.Sending && r.FlushSeq == f.FlushSeq && r.Delivery > f.Delivery:
		return ItemDecision{Verdict: Stale, Reason: "a later delivery of this window's flush owns it"}
	case r.State == state.Sending && r.FlushSeq == f.FlushSeq && r.Delivery < f.Delivery && f.Now.Sub(r.UpdatedAt) < p.AckWait/2:
		// An earlier delivery of this due message claimed it moments ago:
		// that flush is alive (it was redelivered while it waited to
		// start), not dead. A dead one's claim is older: its keepalive
		// renewed the due message every AckWait/3 until it died, and the
		// redelivery comes AckWait after the last renewal.
		return wait(r.UpdatedAt.Add(p.ClaimTTL()), "an earlier delivery of this window's flush is sending it")
	case r.State == state.Sending && r.FlushSeq != f.FlushSeq && f.Now.Sub(r.UpdatedAt) < p.ClaimTTL():
		// Another flush (or a direct delivery) is sending it now; its
		// claim is respected until it expires.
		return wait(r.UpdatedAt.Add(p.ClaimTTL()), "being sent by another delivery")
	case f.Due.After(firedAt(f)):
		return wait(f.Due, "not due yet")
	case f.Prefs.Err != nil:
		return wait(retry, "preferences unavailable: "+f.Prefs.Err.Error())
	case !f.Prefs.On && f.Prefs.Problem != "":
		return ItemDecision{Verdict: Skip, State: state.SkippedOptedOut,
			Reason: "email is off: the preferences are not valid: " + f.Prefs.Problem,
			Error:  "preferences not valid: " + f.Prefs.Problem}
	case !f.Prefs.On:
		return ItemDecision{Verdict: Skip, State: state.SkippedOptedOut, Reason: "email is off for this user and type"}
	case f.Suppression.Err != nil:
		return wait(retry, "suppression list unavailable: "+f.Suppression.Err.Error())
	case f.Suppression.Suppressed:
		return ItemDecision{Verdict: Skip, State: state.SkippedSuppressed, Reason: "the address is on the suppression list"}
	case !f.Configured:
		return ItemDecision{Verdict: Skip, State: state.SkippedNotConfigured, Reason: "no mail transport is configured"}
	}
	if q := f.Prefs.Quiet; q != nil {
		if end, inside := q.Until(f.Now, f.Prefs.TimeZone); inside {
			return wait(end, "quiet hours")
		}
	}
	switch {
	case f.SeenErr != nil:
		return wait(retry, "notify_seen unavailable: "+f.SeenErr.Error())
	case f.Seen:
		return ItemDecision{Verdict: Skip, State: state.SkippedSeen, Reason: "the recipient saw it in the app"}
	case p.Stale(f.Event.OccurredAt, f.Now):
		return ItemDecision{Verdict: Skip, State: state.SkippedStale, Reason: p.StaleReason()}
	}
	return ItemDecision{Verdict: Include, Reason: "due"}
}

// firedAt is the moment a flush judges "due" by: when the window fired by
// the server's clock (the relay's clock when that is unknown). Not the
// relay's clock: one that runs ahead would send a later window's
// notification early; one that lags is harmless (what is due was due when
// the window fired). A notification due after it waits for its own window.
func firedAt(f ItemFacts) time.Time {
	if f.FiredAt.IsZero() {
		return f.Now
	}
	return f.FiredAt
}

func wait(until time.Time, reason string) ItemDecision {
	return ItemDecision{Verdict: Wait, Until: until, Reason: reason}
}
