package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Holder keeps held notifications in NOTIFY_HELD (internal/hold.Store).
type Holder interface {
	Hold(ctx context.Context, recipient string, it hold.Item, windowEnd, notBefore time.Time) (time.Time, error)
	Items(ctx context.Context, recipient string, max int) ([]hold.Item, bool, error)
	Remove(ctx context.Context, recipient string, seqs []uint64, prefix bool) error
	Schedule(ctx context.Context, recipient string, at time.Time) error
	Done(ctx context.Context, seq uint64)
}

// Seen answers whether the recipient saw a notification in the app
// (a key in notify_seen).
type Seen interface {
	Seen(ctx context.Context, id string) (bool, error)
}

// BatchComposeFunc composes one mail carrying sections;
// compose.Composer's ComposeBatch is one.
type BatchComposeFunc func(sections []compose.Section, now time.Time, o compose.Options) (*compose.Message, error)

// MaxBatch is the most notifications one mail carries; a window holding
// more goes out as several mails, one after the other.
const MaxBatch = 50

// maxListed bounds what one flush reads of a recipient's held
// notifications, and so the memory a flush holds: at most twice a mail's
// worth (what is seen, opted out or not due yet is left out of the mail),
// each at most MAILRELAY_MAX_EVENT_BYTES.
const maxListed = 2 * MaxBatch

// Flusher sends the windows that close: it consumes mailrelay_flush (the
// fired schedules of NOTIFY_HELD) and, for each, decides every held
// notification of the recipient again (DecideItem), claims those due,
// sends them as one mail, records each, and removes what is decided. What
// stays held gets the next window. At most Concurrency windows are in
// flight: after a crash, at most those are mailed twice.
type Flusher struct {
	cons            jetstream.Consumer
	h               *Handler
	concurrency     int
	shutdownTimeout time.Duration
	log             *zap.Logger
}

// NewFlusher returns a Flusher over cons sharing h's sender, ledger,
// preferences, suppression list, policy and holding (WithHolding).
func NewFlusher(cons jetstream.Consumer, h *Handler, concurrency int, shutdownTimeout time.Duration) *Flusher {
	concurrency, shutdownTimeout = orDefaults(concurrency, shutdownTimeout)
	return &Flusher{cons: cons, h: h, concurrency: concurrency, shutdownTimeout: shutdownTimeout, log: h.log}
}

// Run flushes windows until ctx ends; then it stops pulling and lets the
// flushes under way finish within the shutdown timeout (after it, they are
// cancelled: a flush that did not send releases its window at once).
func (fl *Flusher) Run(ctx context.Context) error {
	if fl.h.holder == nil {
		return errors.New("flusher: no holder (WithHolding)")
	}
	it, err := fl.cons.Messages(jetstream.PullMaxMessages(max(fl.concurrency, minPullBatch)), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		return fmt.Errorf("consume %s: %w", hold.Consumer, err)
	}
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() {
		it.Drain()
		time.AfterFunc(fl.shutdownTimeout, cancelWork)
	})
	defer stop()
	slots := make(chan struct{}, fl.concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	pe := pullErrors{name: "flush consumer", log: fl.log, healer: fl.h.healer}
	for {
		// Take a slot before the next due message: one must not wait for a
		// slot unkept (past AckWait it is redelivered while it waits).
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		msg, err := it.Next()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			if err := pe.failed(ctx, it, err); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			continue
		}
		pe.ok()
		if ctx.Err() != nil {
			<-slots
			_ = msg.Nak() // buffered by the pull: another relay takes it now
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			// It may have waited in the pull's buffer: AckWait starts again now.
			_ = msg.InProgress()
			fl.flushDue(work, keptAlive(msg, fl.h.policy.KeepAliveInterval()))
		}()
	}
}

// heldNote is one held notification on its way through a flush.
type heldNote struct {
	item     hold.Item
	ev       *event.Event
	f        ItemFacts
	d        ItemDecision
	recorded bool // its outcome is written
}

// flushDue flushes the window of one due message and acts on it: ack
// after the window is decided (what stays held has its next window), leave
// when a later delivery owns it, nak with a delay when NOTIFY_HELD cannot
// be read.
func (fl *Flusher) flushDue(ctx context.Context, m *delivery) {
	h := fl.h
	meta, err := m.Metadata()
	if err != nil {
		_ = m.act(act(Term, 0, "not a JetStream delivery"))
		return
	}
	recipient := strings.TrimPrefix(m.Subject(), hold.DuePrefix)
	log := fl.log.With(zap.String("recipient", recipient), zap.Uint64("window_seq", meta.Sequence.Stream),
		zap.Uint64("window_delivery", meta.NumDelivered))
	if !event.ValidID(recipient) {
		log.Warn("window of an invalid recipient id: dropped")
		_ = m.act(act(Term, 0, "invalid recipient id"))
		return
	}
	out, err := fl.flush(ctx, recipient, meta.Sequence.Stream, int(meta.NumDelivered), meta.Timestamp, log)
	switch {
	case err != nil && ctx.Err() != nil:
		_ = m.act(act(Nak, 0, "shutdown"))
	case err != nil:
		log.Warn("window not flushed, will retry", zap.Error(err))
		h.healer.Trouble(err)
		_ = m.act(act(Nak, h.policy.LedgerRetryDelay, err.Error()))
	case out == flushLeave:
		log.Info("window: a later delivery of its flush owns it")
		_ = m.act(act(Leave, 0, ""))
	default:
		if err := m.act(act(Ack, 0, "")); err == nil {
			h.holder.Done(context.WithoutCancel(ctx), meta.Sequence.Stream)
		}
	}
}

type flushOutcome int

const (
	flushDone flushOutcome = iota
	flushLeave
)

// flush does the work of Flush.
func (fl *Flusher) flush(ctx context.Context, recipient string, seq uint64, delivery int, firedAt time.Time, log *zap.Logger) (flushOutcome, error) {
	h := fl.h
	items, more, err := h.holder.Items(ctx, recipient, maxListed)
	if err != nil {
		return flushDone, err
	}
	if len(items) == 0 {
		return flushDone, nil
	}
	now := h.now()
	notes, dups := fl.decode(items, log)
	if err := fl.facts(ctx, recipient, notes, seq, delivery, now, firedAt); err != nil {
		return flushDone, err
	}
	var include []*heldNote
	for _, n := range notes {
		n.d = DecideItem(n.f, h.policy)
		switch n.d.Verdict {
		case Stale:
			return flushLeave, nil
		case Include:
			if len(include) < MaxBatch {
				include = append(include, n)
			} else {
				n.d = wait(now, "more than one mail's worth: the next mail")
			}
		}
	}
	if len(include) > 0 {
		fl.send(ctx, recipient, include, seq, delivery, now, log)
	}
	var skipped []*heldNote
	var recs []state.Record
	for _, n := range notes {
		if n.d.Verdict == Skip && !n.recorded {
			skipped, recs = append(skipped, n), append(recs, skipRecord(n, now))
		}
	}
	fl.recordAll(skipped, recs, log)
	return flushDone, fl.settle(ctx, recipient, items, notes, dups, more, now)
}

// decode reads each held item's event. A duplicate of a notification
// (held twice: a redelivery, a copy) and an item that no longer decodes
// are removed with the rest; dups lists their sequences.
func (fl *Flusher) decode(items []hold.Item, log *zap.Logger) (notes []*heldNote, dups []uint64) {
	seen := make(map[string]bool, len(items))
	for i := range items {
		it := items[i]
		ev, err := event.Decode(it.Subject, it.Data, fl.h.cfg.MaxEventBytes)
		// Decoded: the raw event is not kept, and a long comment only as
		// far as a mail can show it (a flush's memory stays small however
		// large MAILRELAY_MAX_EVENT_BYTES is).
		items[i].Data, it.Data = nil, nil
		if ev != nil && ev.Comment != nil {
			ev.Comment.Body = clip(ev.Comment.Body, maxHeldBody)
		}
		if err != nil {
			log.Error("held notification no longer decodes: removed", zap.Uint64("held_seq", it.Seq), zap.Error(err))
			dups = append(dups, it.Seq)
			continue
		}
		if seen[ev.ID] {
			dups = append(dups, it.Seq)
			continue
		}
		seen[ev.ID] = true
		notes = append(notes, &heldNote{item: it, ev: ev})
	}
	return notes, dups
}

// maxHeldBody is how much of a held comment a flush keeps: far more than
// the longest snippet a mail shows (MAILRELAY_SNIPPET_MAX is at most 500
// characters), after whitespace is folded.
const maxHeldBody = 8 << 10

// clip is s cut to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// facts reads what DecideItem needs: the preferences (once per type;
// mostly from memory), the ledger record and notify_seen entry of each
// (read in parallel: a flush of 50 must not cost 100 round trips one
// after another), the suppression list (once). A failure to read is a
// fact (the notification waits), not an error.
func (fl *Flusher) facts(ctx context.Context, recipient string, notes []*heldNote, seq uint64, delivery int, now, firedAt time.Time) error {
	h := fl.h
	answers := map[event.Type]PrefsFacts{}
	var supp *SuppressionFacts
	for _, n := range notes {
		f := &n.f
		f.Event, f.Due, f.Now, f.FiredAt, f.FlushSeq, f.Delivery, f.Configured = n.ev, n.item.Due, now, firedAt, seq, delivery, h.cfg.Configured
		pf, ok := answers[n.ev.Type]
		if !ok {
			a, err := h.prefs.Email(ctx, recipient, n.ev.Type)
			if err != nil {
				h.obs.Failed("prefs_read")
			}
			pf = PrefsFacts{Read: true, On: a.On, Problem: a.Problem, TimeZone: a.TimeZone, Quiet: a.Quiet, Batch: a.Batch, Err: err}
			answers[n.ev.Type] = pf
		}
		f.Prefs = pf
		if pf.On && supp == nil {
			on, err := h.supp.Suppressed(ctx, n.ev.Recipient.Email)
			if err != nil {
				h.obs.Failed("suppression_read")
			}
			supp = &SuppressionFacts{Read: true, Suppressed: on, Err: err}
		}
		if supp != nil {
			f.Suppression = *supp
		}
	}
	sem := make(chan struct{}, flushReaders)
	var wg sync.WaitGroup
	for _, n := range notes {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f := &n.f
			f.Record, f.Rev, f.RecordErr = h.ledger.Get(ctx, n.ev.ID)
			if errors.Is(f.RecordErr, state.ErrNotFound) {
				f.RecordErr = nil
			}
			if f.RecordErr != nil {
				h.obs.Failed("ledger_read")
			}
			if h.seen != nil && f.Prefs.On && f.RecordErr == nil && !f.Record.State.Final() {
				f.Seen, f.SeenErr = h.seen.Seen(ctx, n.ev.ID)
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// flushReaders bounds the reads one flush has in flight.
const flushReaders = 16

// send claims the notifications to include, composes one mail of those
// claimed, sends it and records each outcome; each note's verdict then
// says what became of it (Skip for a recorded outcome that removes it,
// Wait for what stays held).
func (fl *Flusher) send(ctx context.Context, recipient string, include []*heldNote, seq uint64, delivery int, now time.Time, log *zap.Logger) {
	h := fl.h
	// The first claim is made alone: it locks the window against another
	// delivery of the same due message flushing at the same moment (with
	// all claims at once, the two would split the window between them and
	// each mail its share). The rest are started at once.
	first := include[0]
	_, err := h.ledger.Swap(ctx, first.ev.ID, flushClaim(first, seq, delivery, len(include), now), first.f.Rev)
	if errors.Is(err, state.ErrConflict) {
		err = fl.claimAgain(ctx, first, seq, delivery, len(include), now)
	}
	if err != nil {
		d := wait(now, "another flush of this window claimed it first: decided again at the next window")
		if !errors.Is(err, state.ErrConflict) {
			h.obs.Failed("claim_write")
			d = wait(now.Add(h.policy.LedgerRetryDelay), "ledger unavailable: "+err.Error())
		}
		for _, n := range include {
			n.d = d
		}
		return
	}
	claimed := []*heldNote{first}
	rest := include[1:]
	waits := make([]func() (uint64, error), len(rest))
	for i, n := range rest {
		waits[i] = h.ledger.SwapAsync(ctx, n.ev.ID, flushClaim(n, seq, delivery, len(include), now), n.f.Rev)
	}
	for i, n := range rest {
		_, err := waits[i]()
		switch {
		case err == nil:
			claimed = append(claimed, n)
		case errors.Is(err, state.ErrConflict):
			if err := fl.claimAgain(ctx, n, seq, delivery, len(include), now); err == nil {
				claimed = append(claimed, n)
				continue
			}
			n.d = wait(now, "its record changed meanwhile: decided again at the next window")
		default:
			h.obs.Failed("claim_write")
			n.d = wait(now.Add(h.policy.LedgerRetryDelay), "ledger unavailable: "+err.Error())
		}
	}
	if len(claimed) == 0 {
		return
	}
	byID := make(map[string]*heldNote, len(claimed))
	evs := make([]*event.Event, len(claimed))
	for i, n := range claimed {
		evs[i], byID[n.ev.ID] = n.ev, n
	}
	sections, unchanged := compose.PlanBatch(evs)
	for _, ev := range unchanged {
		n := byID[ev.ID]
		n.d = ItemDecision{Verdict: Skip, State: state.SkippedUnchanged,
			Reason: "a later change in the same mail undid it: the date ends where it started"}
	}
	if len(sections) == 0 {
		return
	}
	var carried []*heldNote
	latest := time.Time{}
	for _, s := range sections {
		for _, ev := range s.Events {
			carried = append(carried, byID[ev.ID])
			if ev.OccurredAt.After(latest) {
				latest = ev.OccurredAt
			}
		}
	}
	mail, err := h.batch(sections, now, compose.Options{TimeZone: carried[0].f.Prefs.TimeZone})
	var res SendResult
	if err != nil {
		res = SendResult{Err: fmt.Errorf("%w: compose: %v", event.ErrInvalid, err), At: h.now()}
		log.Error("window's mail cannot be composed", zap.Error(err))
	} else {
		h.obs.InFlight(1)
		res = h.sendRecovered(ctx, mail, latest, zap.String("message_id", mail.MessageID))
		h.obs.InFlight(-1)
	}
	fl.outcome(ctx, carried, mail, res, log)
}

// claimAgain retries n's claim after a conflict, as long as the record
// that won is only its hold's deferred record (or the retrying record of
// an earlier window): the NOTIFY delivery that stored n writes that record
// after storing it, and may land just after this flush read it. Anything
// else (another flush's claim, an outcome) is left to the next window:
// ErrConflict.
func (fl *Flusher) claimAgain(ctx context.Context, n *heldNote, seq uint64, delivery, batch int, now time.Time) error {
	h := fl.h
	for range policy.ClaimConflicts {
		r, rev, err := h.ledger.Get(ctx, n.ev.ID)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return err
		}
		if r.State != state.Deferred && r.State != state.Retrying && r.State != "" {
			return state.ErrConflict
		}
		n.f.Record, n.f.Rev = r, rev
		_, err = h.ledger.Swap(ctx, n.ev.ID, flushClaim(n, seq, delivery, batch, now), rev)
		if !errors.Is(err, state.ErrConflict) {
			return err
		}
	}
	return state.ErrConflict
}

// outcome records what the send of a window's mail means for each
// notification it carried, as afterSend does for one.
func (fl *Flusher) outcome(ctx context.Context, carried []*heldNote, mail *compose.Message, res SendResult, log *zap.Logger) {
	h := fl.h
	why := failure(res.Err)
	var supp *Suppression
	recs := make([]state.Record, len(carried))
	for i, n := range carried {
		rec := n.f.Record
		rec.Attempts++
		rec.State, rec.Error, rec.UpdatedAt, rec.FlushSeq, rec.Delivery = "", "", res.At, 0, 0
		rec.Type, rec.Recipient, rec.StreamSeq, rec.Until = string(n.ev.Type), n.ev.Recipient.ID, n.item.StreamSeq, time.Time{}
		if mail != nil {
			rec.MessageID = mail.MessageID
		}
		rec.Batch = len(carried)
		d := ItemDecision{Verdict: Skip}
		switch sendOutcomeOf(&res, rec.Attempts) {
		case outNotTried:
			// Nothing went out: back to deferred, the attempt taken back.
			rec.State, rec.Attempts, rec.Until, rec.Batch = state.Deferred, n.f.Record.Attempts, n.item.Due, 0
			rec.Error, rec.MessageID = n.f.Record.Error, n.f.Record.MessageID
			d = wait(h.now(), reasonShutdown)
		case outStale:
			rec.State, rec.Attempts, rec.Batch = state.SkippedStale, n.f.Record.Attempts, 0
			d.Reason = h.policy.StaleReason()
		case outSent:
			rec.State = state.Sent
			d.Reason = fmt.Sprintf("sent in a mail of %d", len(carried))
		case outStopped:
			// Interrupted mid-send: the attempt counts; the window comes back at once.
			rec.State, rec.Error = state.Retrying, "interrupted by shutdown: "+why
			d = wait(h.now(), "shutdown")
		case outPermanent:
			rec.State, rec.Error = state.InboxOnly, why
			d.Reason = "permanent failure: " + why
			if policy.RecipientRejected(res.Err) {
				supp = &Suppression{Address: n.ev.Recipient.Email, Reason: why, Code: replyCode(res.Err)}
			}
		case outExhausted:
			rec.State, rec.Error = state.InboxOnly, why
			d.Reason = fmt.Sprintf("attempts exhausted (%d): %s", rec.Attempts, why)
		default:
			rec.State, rec.Error = state.Retrying, why
			d = wait(res.At.Add(h.policy.RetryDelay(rec.Attempts)), "temporary failure: "+why)
		}
		d.State = rec.State
		n.d, recs[i] = d, rec
	}
	fl.recordAll(carried, recs, log)
	if supp != nil {
		h.act.suppress(Ref{EventID: carried[0].ev.ID, Type: string(carried[0].ev.Type)}, *supp)
	}
}

// recordAll writes the records of notes together (started at once, then
// waited for); any that fails is written again synchronously, with the
// actor's retries.
func (fl *Flusher) recordAll(notes []*heldNote, recs []state.Record, log *zap.Logger) {
	pending := make([]state.Pending, len(notes))
	for i, n := range notes {
		p, err := fl.h.ledger.PutAsync(n.ev.ID, recs[i])
		if err == nil {
			pending[i] = p
		}
	}
	for i, n := range notes {
		if p := pending[i]; p != nil && p.Wait() == nil {
			fl.recorded(n, recs[i])
			continue
		}
		fl.record(n, recs[i], log)
	}
}

// record writes a held notification's record (with the actor's retries),
// logs it and counts an outcome. A write that fails for good keeps the
// notification held (it is decided again at the next window).
func (fl *Flusher) record(n *heldNote, rec state.Record, log *zap.Logger) {
	h := fl.h
	ref := Ref{EventID: n.ev.ID, Type: string(n.ev.Type), StreamSeq: n.item.StreamSeq}
	d := Decision{Step: Act, Action: Ack, Reason: n.d.Reason, Write: &Write{Mode: Put, Key: n.ev.ID, Record: rec}}
	if err := h.act.write(*d.Write); err != nil {
		h.act.writeFailed(ref, d, err)
		n.d = wait(h.now().Add(h.policy.LedgerRetryDelay), "ledger write failed")
		return
	}
	fl.recorded(n, rec)
}

// recorded logs a held notification's record once stored, and counts an outcome.
func (fl *Flusher) recorded(n *heldNote, rec state.Record) {
	n.recorded = true
	ref := Ref{EventID: n.ev.ID, Type: string(n.ev.Type), StreamSeq: n.item.StreamSeq}
	fl.h.act.logDecision(ref, Decision{Step: Act, Action: Ack, Reason: n.d.Reason, Write: &Write{Mode: Put, Key: n.ev.ID, Record: rec}})
	if rec.State.Final() {
		fl.h.obs.Recorded(ref.Type, rec.State)
	}
}

// settle removes what is decided from NOTIFY_HELD and gives what stays
// held its next window: at the earliest time one of them waits for, at
// once when the listing stopped short.
func (fl *Flusher) settle(ctx context.Context, recipient string, items []hold.Item, notes []*heldNote, dups []uint64, more bool, now time.Time) error {
	h := fl.h
	removed := make(map[uint64]bool, len(items))
	for _, q := range dups {
		removed[q] = true
	}
	var next time.Time
	for _, n := range notes {
		switch n.d.Verdict {
		case Wait:
			if next.IsZero() || n.d.Until.Before(next) {
				next = n.d.Until
			}
		default:
			removed[n.item.Seq] = true
		}
	}
	// prefix: every removed item comes before every kept one, so that
	// one purge of the subject up to the last removes them
	var seqs []uint64
	prefix, kept := true, false
	for _, it := range items {
		switch {
		case !removed[it.Seq]:
			kept = true
		case kept:
			prefix = false
			fallthrough
		default:
			seqs = append(seqs, it.Seq)
		}
	}
	if more && len(seqs) > 0 {
		// The listing stopped short and this flush made progress: the
		// rest at once. (Without progress, the next window is when the
		// first of those listed is due: the ones after them arrived later.)
		next = now
	}
	bg := context.WithoutCancel(ctx)
	if err := h.holder.Remove(bg, recipient, seqs, prefix); err != nil {
		// The records are written: what is not removed is dropped by the
		// next window (its record is final).
		fl.log.Warn("held notifications not removed", zap.String("recipient", recipient), zap.Error(err))
		if next.IsZero() {
			next = now.Add(h.policy.LedgerRetryDelay)
		}
	}
	if next.IsZero() {
		return nil
	}
	if next.Before(now) {
		next = now
	}
	return h.holder.Schedule(bg, recipient, next)
}

// flushClaim is the "sending" claim a flush writes for n.
func flushClaim(n *heldNote, seq uint64, delivery, batch int, now time.Time) state.Record {
	r := n.f.Record
	return state.Record{State: state.Sending, Type: string(n.ev.Type), Recipient: n.ev.Recipient.ID,
		Attempts: r.Attempts + 1, Error: r.Error, MessageID: r.MessageID, StreamSeq: n.item.StreamSeq,
		FlushSeq: seq, Delivery: delivery, Batch: batch, UpdatedAt: now}
}

// skipRecord is the record of a notification a rule kept from a window's mail.
func skipRecord(n *heldNote, now time.Time) state.Record {
	r := n.f.Record
	return state.Record{State: n.d.State, Type: string(n.ev.Type), Recipient: n.ev.Recipient.ID,
		Attempts: r.Attempts, Error: n.d.Error, MessageID: r.MessageID, StreamSeq: n.item.StreamSeq, UpdatedAt: now}
}
