package consumer

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/prefs"
)

// Facts is what is known about one delivery when it is decided. A stage
// fills in what Decide asks for (Decision.Step) and decides again, so the
// rules run in the contract's order (docs/contract.md §4) while
// nothing is read that an earlier rule makes unnecessary.
type Facts struct {
	Seq      uint64 // stream sequence
	Delivery int    // delivery number, 1 to policy.MaxDeliver
	// NotDelivery is set when the message carries no JetStream metadata.
	NotDelivery error
	// Event is the decoded event; with Invalid, whatever could be decoded
	// (nil, or an event with a usable ID).
	Event *event.Event
	// Invalid is why the event breaks the contract (decoding, composing, or
	// a panic while preparing it).
	Invalid error

	Now        time.Time     // the clock when this relay began deciding
	Held       time.Duration // how long this relay has held the delivery
	Stopping   bool          // the shutdown timeout ran out: release what is not claimed
	Configured bool          // a mail transport is configured
	CanHold    bool          // NOTIFY_HELD is at hand: notifications may be held (§9.3)

	Ledger      LedgerFacts
	Prefs       PrefsFacts
	Suppression SuppressionFacts
	MessageID   string // of the composed mail; "" until composed
	Hold        HoldFacts
	Claim       ClaimFacts
	Sent        *SendResult // the send's result; nil until sent
}

// HoldFacts is what became of holding the notification (§9.3): stored in
// NOTIFY_HELD, due at Until, its deferred record written.
type HoldFacts struct {
	Done  bool
	Until time.Time
	Err   error // holding it or writing its record failed
}

// LedgerFacts is the ledger record of the notification, as read.
type LedgerFacts struct {
	Read   bool         // the ledger was read (a first delivery is decided without)
	Record state.Record // zero when there is none
	Rev    uint64       // 0 when there is none
	Err    error        // the read failed
}

// PrefsFacts is the recipient's Email preference for the event's type.
type PrefsFacts struct {
	Read     bool
	On       bool
	Problem  string         // why a broken preference reads as off; "" when valid
	TimeZone *time.Location // the user's time_zone, for the times in the mail; nil: UTC
	Quiet    *prefs.QuietHours
	Batch    prefs.Batch // the user's batching window, when set
	Err      error       // the lookup failed
}

// SuppressionFacts says whether the recipient's address is on the
// suppression list.
type SuppressionFacts struct {
	Read       bool
	Suppressed bool
	Err        error // the lookup failed
}

// ClaimFacts is the state of this delivery's "sending" claim.
type ClaimFacts struct {
	Stored    bool   // the claim is the stored record
	Rev       uint64 // its revision
	Err       error  // the last claim write failed (not a conflict)
	Conflicts int    // compare-and-set conflicts met so far
	// Checked: the record was read again just before sending (a delivery
	// held long); CurrentRev is the revision found, CheckErr the failure.
	Checked    bool
	CurrentRev uint64
	CheckErr   error
}

// SendResult is what became of the send.
type SendResult struct {
	Err       error     // nil: the backend accepted the mail
	NotTried  bool      // shutting down before the mail went to the backend
	WentStale bool      // it went stale waiting (slow-down pauses): nothing sent
	Stopping  bool      // the shutdown timeout ran out during the send
	At        time.Time // the clock after the send
}

// Step is what a delivery needs next.
type Step int

// The steps. Act ends the decision; the others ask the stage for a fact or
// for the claim or the send.
const (
	Act             Step = iota // carry out Action after writing Write
	ReadLedger                  // read the notification's ledger record
	ReadPrefs                   // look up the recipient's preference
	ReadSuppression             // look the address up in the suppression list
	Compose                     // compose the mail
	Claim                       // write the "sending" claim (Write, a compare-and-set)
	CheckClaim                  // read the record again: is the claim still ours?
	Send                        // hand the mail to the backend
	Hold                        // hold it in NOTIFY_HELD (Decision.Hold), then write its deferred record
)

func (s Step) String() string {
	return [...]string{"act", "read ledger", "read prefs", "read suppression", "compose", "claim", "check claim", "send", "hold"}[s]
}

// Action is what happens to a delivery once its record is written.
type Action int

// The ways a delivery ends.
const (
	Ack  Action = iota // done: never delivered again
	Nak                // delivered again after Decision.Delay
	Term               // not delivered again; the ledger holds why
	// Leave does nothing to the delivery: JetStream has redelivered the
	// message and a later delivery owns it (acking or naking would act on
	// that one's behalf).
	Leave
)

func (a Action) String() string {
	switch a {
	case Ack:
		return "ack"
	case Nak:
		return "nak"
	case Term:
		return "term"
	case Leave:
		return "leave"
	}
	return "unknown"
}

// WriteMode is how a record is written.
type WriteMode int

// The write modes.
const (
	// Put writes unconditionally.
	Put WriteMode = iota
	// Create writes only if the key has no record. If it has one, the
	// record goes under Write.Fallback (an invalid message never
	// overwrites a state) or, without a fallback, nothing is written and
	// the delivery is released for an immediate redelivery that decides
	// again with the record.
	Create
	// Swap writes only if the key is still at Write.Rev (0: has no record).
	Swap
)

// Write is a ledger write.
type Write struct {
	Mode     WriteMode
	Key      string
	Record   state.Record
	Rev      uint64 // for Swap
	Fallback string // for Create
}

// Decision is what to do next with a delivery and why: with Step Act, the
// record to write (if any) and the action that follows; otherwise the fact
// or work the stage must supply before deciding again.
type Decision struct {
	Step   Step
	Action Action
	Delay  time.Duration // before the next delivery, for Nak
	Reason string        // logged; the term reason
	Write  *Write
	// Suppress, after a permanent rejection of the recipient, puts the
	// address on the suppression list (with the record written).
	Suppress *Suppression
	// Hold, with Step Hold: the window the notification would open, and
	// its own earliest time.
	Hold *HoldRequest
}

// HoldRequest is when a held notification may go out: at WindowEnd if it
// opens a window, else when the open window closes, but never before
// NotBefore (its seen delay or quiet hours).
type HoldRequest struct {
	WindowEnd, NotBefore time.Time
}

// Suppression is an address to put on the suppression list, and why.
type Suppression struct {
	Address, Reason, Code string
}

// Reasons that tests and operators match on.
const (
	reasonShutdown     = "shutdown before sending"
	reasonRecordExists = "a record exists: decided again with it on redelivery"
	reasonWriteFailed  = "ledger write failed"
)

// Decide applies the rules to what is known of a delivery. It does no I/O
// and reads no clock: the same facts always give the same decision.
//
// The order, first match wins: not a delivery; invalid; shutting down
// (before the claim); a claim write that failed or kept conflicting; the
// ledger (read on a redelivery, or after a conflict): already sent or
// inbox_only; stale; opted out; no address; not configured; then compose,
// the claim rules (a later delivery's claim, another copy being sent), the
// claim, the ownership check of a delivery held long, the send, and what
// its result means.
func Decide(f Facts, p policy.Policy) Decision {
	switch {
	case f.NotDelivery != nil:
		return act(Term, 0, "not a JetStream delivery: "+f.NotDelivery.Error())
	case f.Invalid != nil:
		return invalid(f)
	}
	if err := f.Event.TooFarAhead(f.Now); err != nil {
		// A clock far ahead would keep it from ever going stale.
		f.Invalid = err
		return invalid(f)
	}
	if !f.Claim.Stored {
		if d, ok := beforeClaim(f, p); ok {
			return d
		}
		return Decision{Step: Claim, Write: &Write{Mode: Swap, Key: f.Event.ID, Record: claimRecord(f), Rev: f.Ledger.Rev}}
	}
	if f.Sent == nil {
		if p.HeldTooLong(f.Held) && f.Claim.Rev != 0 && !f.Claim.Checked {
			return Decision{Step: CheckClaim}
		}
		if f.Claim.Checked && f.Claim.CheckErr == nil && f.Claim.CurrentRev != f.Claim.Rev {
			return act(Leave, 0, "its claim was taken over by a later delivery of this message")
		}
		return Decision{Step: Send}
	}
	return afterSend(f, p)
}

// beforeClaim is every rule up to the claim; ok false means "claim now".
func beforeClaim(f Facts, p policy.Policy) (Decision, bool) {
	l := f.Ledger
	switch {
	case f.Stopping:
		return act(Nak, 0, reasonShutdown), true
	case f.Claim.Err != nil:
		return unavailable(f, p, "ledger unavailable: "+f.Claim.Err.Error()), true
	case f.Claim.Conflicts >= policy.ClaimConflicts:
		return act(Nak, p.RetryDelay(1), "another delivery of this notification keeps changing its state"), true
	case !l.Read && (f.Delivery > 1 || f.Claim.Conflicts > 0):
		// A first delivery almost never has a record: on the path that
		// sends, the claim's compare-and-set doubles as the read, and a
		// skip's create-only write does too.
		return Decision{Step: ReadLedger}, true
	case l.Err != nil:
		return unavailable(f, p, "ledger unavailable: "+l.Err.Error()), true
	case l.Record.State.Done():
		return act(Ack, 0, "already "+string(l.Record.State)), true
	case l.Record.State == state.Sending && l.Record.FlushSeq != 0:
		// Held, and the flush of its window has claimed it: the flush
		// finishes the job (a flush that died is taken over by its own
		// redelivery).
		return act(Ack, 0, "held: the flush of its window is sending it"), true
	case l.Record.State.Final() && l.Record.State != state.Invalid && l.Record.StreamSeq != 0 && l.Record.StreamSeq != f.Seq:
		// Another copy of this notification (republished under another
		// Nats-Msg-Id) was decided already: its outcome stands, and the
		// record stays the original's. Replay re-drives a notification by
		// first setting its record back to retrying. An invalid record is
		// not an outcome of this content: a corrected copy is decided.
		return act(Ack, 0, "duplicate: another copy of this notification was "+string(l.Record.State)), true
	case p.Stale(f.Event.OccurredAt, f.Now):
		return skip(f, state.SkippedStale, p.StaleReason()), true
	case !f.Prefs.Read:
		return Decision{Step: ReadPrefs}, true
	case f.Prefs.Err != nil:
		return unavailable(f, p, "preferences unavailable: "+f.Prefs.Err.Error()), true
	case !f.Prefs.On && f.Prefs.Problem != "":
		// Off, as the contract says, but "broken" is told apart from "off".
		d := skip(f, state.SkippedOptedOut, "email is off: the preferences are not valid: "+f.Prefs.Problem)
		d.Write.Record.Error = "preferences not valid: " + f.Prefs.Problem
		return d, true
	case !f.Prefs.On:
		return skip(f, state.SkippedOptedOut, "email is off for this user and type"), true
	case !f.Event.HasEmail():
		return skip(f, state.SkippedNoEmail, "recipient has no email address"), true
	case !f.Suppression.Read:
		return Decision{Step: ReadSuppression}, true
	case f.Suppression.Err != nil:
		return unavailable(f, p, "suppression list unavailable: "+f.Suppression.Err.Error()), true
	case f.Suppression.Suppressed:
		return skip(f, state.SkippedSuppressed, "the address is on the suppression list"), true
	case !f.Configured:
		return skip(f, state.SkippedNotConfigured, "no mail transport is configured"), true
	case f.Hold.Err != nil && f.Delivery < policy.MaxDeliver:
		return unavailable(f, p, "could not hold it: "+f.Hold.Err.Error()), true
	case f.Hold.Done:
		return act(Ack, 0, "deferred until "+f.Hold.Until.UTC().Format(time.RFC3339)), true
	}
	// The last delivery that could not hold it sends it at once, un-batched,
	// rather than give up on the mail.
	if f.CanHold && f.Hold.Err == nil {
		if windowEnd, notBefore, held := holdTimes(f, p); held {
			return Decision{Step: Hold, Hold: &HoldRequest{WindowEnd: windowEnd, NotBefore: notBefore}}, true
		}
	}
	switch {
	case f.MessageID == "":
		return Decision{Step: Compose}, true
	}
	r := l.Record
	if l.Read && r.State == state.Sending {
		switch {
		case r.StreamSeq == f.Seq && r.Delivery > f.Delivery:
			// A later delivery of this very message claimed it: this one
			// is stale (it waited past AckWait, say, and JetStream
			// redelivered the message elsewhere). The later one owns it.
			return act(Leave, 0, "a later delivery of this message owns it"), true
		case r.StreamSeq != f.Seq && f.Now.Sub(r.UpdatedAt) < p.ClaimTTL():
			// Another copy of this notification (published twice under
			// different Nats-Msg-Ids) is being sent right now. That copy
			// stays unacked until its outcome is recorded, and its own
			// redeliveries finish the job: this one is a duplicate.
			return act(Ack, 0, "duplicate: another copy of this notification is being sent"), true
		}
	}
	// Anything else is taken over: no record, a retrying one, the claim of
	// an earlier delivery of this message (a crash after claiming), or an
	// expired claim of another copy.
	return Decision{}, false
}

// holdTimes says whether the notification waits (§9.3) and until when:
// the user's batching window or else the relay's, the quiet hours the
// clock is in, the seen delay.
func holdTimes(f Facts, p policy.Policy) (windowEnd, notBefore time.Time, held bool) {
	window := p.BatchWindow
	if f.Prefs.Batch.Set {
		window = f.Prefs.Batch.Window
	}
	var quietEnd time.Time
	if q := f.Prefs.Quiet; q != nil {
		if end, inside := q.Until(f.Now, f.Prefs.TimeZone); inside {
			quietEnd = end
		}
	}
	return p.Hold(f.Event.OccurredAt, f.Now, window, quietEnd)
}

// deferredRecord is the record of a notification held until until.
func deferredRecord(f Facts, until time.Time) state.Record {
	r := f.Ledger.Record
	return state.Record{State: state.Deferred, Type: string(f.Event.Type), Recipient: f.Event.Recipient.ID,
		Attempts: r.Attempts, Error: r.Error, MessageID: r.MessageID, StreamSeq: f.Seq, UpdatedAt: f.Now, Until: until.UTC()}
}

// unavailable releases a delivery that could not read or write what it
// needs, for a retry after LedgerRetryDelay. The last delivery records why
// instead: it ends inbox_only with the real reason, where a release would
// leave only the max-deliveries advisory's "max deliveries reached". A
// record it cannot have read is written only if the id has none.
func unavailable(f Facts, p policy.Policy, reason string) Decision {
	if f.Delivery < policy.MaxDeliver {
		return act(Nak, p.LedgerRetryDelay, reason)
	}
	r, mode := f.Ledger.Record, Put
	if !f.Ledger.Read || f.Ledger.Err != nil {
		mode = Create
	}
	return Decision{Step: Act, Action: Term, Reason: reason, Write: &Write{Mode: mode, Key: f.Event.ID,
		Record: state.Record{State: state.InboxOnly, Type: string(f.Event.Type), Recipient: f.Event.Recipient.ID,
			Attempts: r.Attempts, MessageID: r.MessageID, StreamSeq: f.Seq, UpdatedAt: f.Now,
			Error: fmt.Sprintf("%s (on delivery %d of %d)", reason, f.Delivery, policy.MaxDeliver)}}}
}

// claimRecord is the "sending" claim of this delivery.
func claimRecord(f Facts) state.Record {
	r := f.Ledger.Record
	return state.Record{State: state.Sending, Type: string(f.Event.Type), Recipient: f.Event.Recipient.ID,
		Attempts: r.Attempts + 1, MessageID: f.MessageID, Error: r.Error, StreamSeq: f.Seq, Delivery: f.Delivery,
		UpdatedAt: f.Now}
}

// afterSend decides from the send's result; the record written replaces
// the claim.
func afterSend(f Facts, p policy.Policy) Decision {
	s, prior := f.Sent, f.Ledger.Record
	rec := claimRecord(f)
	why := failure(s.Err)
	d := Decision{Step: Act, Write: &Write{Mode: Put, Key: f.Event.ID}}
	switch sendOutcomeOf(s, f.Delivery) {
	case outNotTried:
		// Released at once, and the claim's attempt is taken back.
		rec.State, rec.Attempts, rec.Error = state.Retrying, prior.Attempts, prior.Error
		d.Action, d.Reason = Nak, reasonShutdown
	case outStale:
		// No attempt was made.
		rec.State, rec.Error, rec.Attempts, rec.MessageID = state.SkippedStale, "", prior.Attempts, prior.MessageID
		rec.UpdatedAt = s.At
		d.Action, d.Reason = Ack, p.StaleReason()
	case outSent:
		rec.State, rec.Error = state.Sent, ""
		d.Action, d.Reason = Ack, "sent"
	case outStopped:
		// Interrupted mid-send: the attempt counts, the message comes back at once.
		rec.State, rec.Error = state.Retrying, "interrupted by shutdown: "+why
		d.Action, d.Reason = Nak, "shutdown"
	case outPermanent:
		rec.State, rec.Error = state.InboxOnly, why
		d.Action, d.Reason = Term, "permanent failure: "+why
		if policy.RecipientRejected(s.Err) {
			d.Suppress = &Suppression{Address: f.Event.Recipient.Email, Reason: why, Code: replyCode(s.Err)}
		}
	case outExhausted:
		rec.State, rec.Error = state.InboxOnly, why
		d.Action, d.Reason = Term, fmt.Sprintf("attempts exhausted (%d): %s", f.Delivery, why)
	default:
		rec.State, rec.Error = state.Retrying, why
		d.Action, d.Delay, d.Reason = Nak, p.RetryDelay(f.Delivery), "temporary failure: "+why
	}
	d.Write.Record = rec
	return d
}

// sendOutcome is what a send's result means for what the mail carried:
// the one order of these rules, for a single mail (afterSend) and a
// window's (the Flusher).
type sendOutcome int

const (
	outSent      sendOutcome = iota // the backend accepted it
	outNotTried                     // shutting down before it went out: the attempt is taken back
	outStale                        // it went stale waiting out slow-down pauses: nothing sent
	outStopped                      // the shutdown timeout interrupted the send: the attempt counts, again at once
	outPermanent                    // refused for good (or it cannot be composed)
	outExhausted                    // a temporary failure of the last attempt
	outRetry                        // a temporary failure: again after the retry delay
)

// sendOutcomeOf classifies s, the result of attempt n (1 to MaxDeliver).
func sendOutcomeOf(s *SendResult, n int) sendOutcome {
	switch {
	case s.NotTried:
		return outNotTried
	case s.WentStale:
		return outStale
	case s.Err == nil:
		return outSent
	case s.Stopping:
		return outStopped
	case policy.Permanent(s.Err) || errors.Is(s.Err, event.ErrInvalid):
		return outPermanent
	case n >= policy.MaxDeliver:
		return outExhausted
	}
	return outRetry
}

// skip records a rule that keeps the notification from being mailed. A
// first delivery has not read the ledger: its record is written only if
// the id has none, which doubles as the read (on a conflict the delivery
// comes back at once and is decided with the record).
func skip(f Facts, st state.State, reason string) Decision {
	r := f.Ledger.Record
	mode := Put
	if !f.Ledger.Read {
		mode = Create
	}
	return Decision{Step: Act, Action: Ack, Reason: reason, Write: &Write{Mode: mode, Key: f.Event.ID,
		Record: state.Record{State: st, Type: string(f.Event.Type), Recipient: f.Event.Recipient.ID,
			Attempts: r.Attempts, StreamSeq: f.Seq, UpdatedAt: f.Now, MessageID: r.MessageID}}}
}

// invalid records a contract violation under the event id when it is
// usable and has no state yet, else under seq.<n>; then terms.
func invalid(f Facts) Decision {
	reason := strings.TrimPrefix(f.Invalid.Error(), event.ErrInvalid.Error()+": ")
	w := &Write{Mode: Put, Key: state.SeqKey(f.Seq),
		Record: state.Record{State: state.Invalid, Error: reason, UpdatedAt: f.Now, StreamSeq: f.Seq}}
	if ev := f.Event; ev != nil && event.ValidID(ev.ID) {
		w.Mode, w.Key, w.Fallback = Create, ev.ID, state.SeqKey(f.Seq)
		if ev.Type.Valid() {
			w.Record.Type = string(ev.Type)
		}
		if event.ValidID(ev.Recipient.ID) {
			w.Record.Recipient = ev.Recipient.ID
		}
	}
	return Decision{Step: Act, Action: Term, Reason: "invalid: " + reason, Write: w}
}

// AfterWriteFailed is the decision once d's ledger write failed for good.
// A create that met a record releases the delivery at once, to be decided
// with it. Otherwise the delivery comes back after LedgerRetryDelay, except
// after an accepted send: the mail is out, so it is acked and the ledger
// keeps the claim, which a redelivery treats as a crash after sending.
func AfterWriteFailed(d Decision, recordExists bool, p policy.Policy) Decision {
	if recordExists {
		return act(Nak, 0, reasonRecordExists)
	}
	if d.Action == Ack && d.Write != nil && d.Write.Record.State == state.Sent {
		return d
	}
	d.Action, d.Delay, d.Reason = Nak, p.LedgerRetryDelay, reasonWriteFailed
	return d
}

// act is action a with nothing written.
func act(a Action, delay time.Duration, reason string) Decision {
	return Decision{Step: Act, Action: a, Delay: delay, Reason: reason}
}
