package consumer

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// actor is the one place that acts on a delivery: it writes the decision's
// record, then acks, naks, terms or leaves the delivery, logs once and
// tells the observer. The ack comes only after the ledger holds the
// outcome (AfterWriteFailed says what happens when it cannot).
type actor struct {
	ledger Ledger
	policy Policy
	log    *zap.Logger
	obs    Observer
	healer Healer
	supp   Suppressions
}

// errRecordExists: a create without a fallback key met a record.
var errRecordExists = errors.New("the notification already has a record")

// apply writes d's record synchronously, with retries, then acts.
func (a *actor) apply(m *delivery, ref Ref, d Decision) error {
	written := false
	if d.Write != nil {
		if err := a.write(*d.Write); err != nil {
			d = a.writeFailed(ref, d, err)
		} else {
			written = true
		}
	}
	return a.conclude(m, ref, d, written)
}

// start begins carrying d out. Its ledger write is started without
// waiting; the returned pending act finishes the work once the write is
// stored. Without a write, or when the write cannot be started that way,
// d is applied at once and start returns nil.
func (a *actor) start(m *delivery, ref Ref, d Decision) (*pendingAct, error) {
	if d.Write == nil {
		return nil, a.conclude(m, ref, d, false)
	}
	var p state.Pending
	var err error
	switch d.Write.Mode {
	case Create:
		// Any failure, a record or a delete marker under the key included,
		// takes the synchronous path, which tells them apart.
		p, err = a.ledger.CreateAsync(d.Write.Key, d.Write.Record)
	case Put:
		p, err = a.ledger.PutAsync(d.Write.Key, d.Write.Record)
	default:
		err = errors.New("a compare-and-set is never a final write")
	}
	if err != nil {
		return nil, a.apply(m, ref, d) // the synchronous path retries and reports
	}
	return &pendingAct{a: a, m: m, ref: ref, d: d, write: p, done: func() {}}, nil
}

// pendingAct is a decision whose ledger write is under way.
type pendingAct struct {
	a     *actor
	m     *delivery
	ref   Ref
	d     Decision
	write state.Pending
	done  func() // runs once the decision is carried out
}

// wait blocks until the write is stored or failed.
func (p *pendingAct) wait() error { return p.write.Wait() }

// finish acts after the write (werr nil), or applies the decision again
// synchronously, with retries, after the write failed: the ack still comes
// only after the ledger holds the outcome.
func (p *pendingAct) finish(werr error) error {
	if werr != nil {
		if p.d.Write.Mode != Create { // a create meeting a record is no failure
			p.a.log.Warn("ledger write failed, retrying", zap.String("event_id", p.ref.EventID), zap.Error(werr))
		}
		return p.a.apply(p.m, p.ref, p.d)
	}
	return p.a.conclude(p.m, p.ref, p.d, true)
}

// write stores w, trying policy.LedgerWriteTries times.
func (a *actor) write(w Write) error {
	var err error
	for try := range policy.LedgerWriteTries {
		time.Sleep(policy.LedgerWriteDelay(try))
		ctx, cancel := context.WithTimeout(context.Background(), policy.LedgerWriteTimeout)
		err = a.writeOnce(ctx, w)
		cancel()
		if err == nil || errors.Is(err, errRecordExists) {
			return err
		}
	}
	return err
}

func (a *actor) writeOnce(ctx context.Context, w Write) error {
	if w.Mode != Create {
		return a.ledger.Put(ctx, w.Key, w.Record)
	}
	_, err := a.ledger.Swap(ctx, w.Key, w.Record, 0)
	if !errors.Is(err, state.ErrConflict) {
		return err
	}
	if w.Fallback == "" {
		return errRecordExists
	}
	return a.ledger.Put(ctx, w.Fallback, w.Record)
}

// writeFailed is the decision after d's write failed for good.
func (a *actor) writeFailed(ref Ref, d Decision, err error) Decision {
	exists := errors.Is(err, errRecordExists)
	if !exists {
		a.log.Error("ledger write failed", zap.String("event_id", ref.EventID),
			zap.Uint64("stream_seq", ref.StreamSeq), zap.Error(err))
		a.obs.LedgerWriteFailed()
		a.healer.Trouble(err) // the bucket may be gone
	}
	return AfterWriteFailed(d, exists, a.policy)
}

// suppress puts an address a server rejected for good on the list. A
// failure is logged: the notification's own record already says why it
// ended, and the next rejection tries again.
func (a *actor) suppress(ref Ref, s Suppression) {
	var err error
	for try := range policy.LedgerWriteTries {
		time.Sleep(policy.LedgerWriteDelay(try))
		ctx, cancel := context.WithTimeout(context.Background(), policy.LedgerWriteTimeout)
		err = a.supp.Suppress(ctx, s.Address, s.Reason, s.Code)
		cancel()
		if err == nil {
			a.obs.Suppressed()
			a.log.Warn("address suppressed after a permanent rejection", zap.String("event_id", ref.EventID),
				zap.String("code", s.Code))
			return
		}
	}
	a.log.Error("could not add the address to the suppression list", zap.String("event_id", ref.EventID), zap.Error(err))
}

// conclude logs d and carries out its action; the ledger write is done
// (written: d's record is stored, and counted when it is an outcome).
func (a *actor) conclude(m *delivery, ref Ref, d Decision, written bool) error {
	if d.Suppress != nil {
		a.suppress(ref, *d.Suppress)
	}
	a.logDecision(ref, d)
	a.obs.Outcome(ref, d)
	if written && d.Write.Record.State.Final() {
		a.obs.Recorded(ref.Type, d.Write.Record.State)
	}
	return m.act(d)
}

func (a *actor) logDecision(ref Ref, d Decision) {
	fields := []zap.Field{
		zap.String("event_id", ref.EventID), zap.String("type", ref.Type),
		zap.Uint64("stream_seq", ref.StreamSeq), zap.Int("deliveries", ref.Delivery),
		zap.String("decision", d.Action.String()), zap.String("reason", d.Reason),
	}
	var st state.State
	if d.Write != nil {
		st = d.Write.Record.State
		fields = append(fields, zap.String("state", string(st)), zap.Int("attempts", d.Write.Record.Attempts))
	}
	if d.Action == Nak && d.Delay > 0 {
		fields = append(fields, zap.Duration("delay", d.Delay))
	}
	if st == state.Invalid || st == state.InboxOnly || d.Action == Nak {
		a.log.Warn("notification", fields...)
		return
	}
	a.log.Info("notification", fields...)
}

// delivery is a message held by this relay: an InProgress keepalive keeps
// JetStream from redelivering it until it is acted on, and stops then (not
// after: a late InProgress would turn a nak's delay into AckWait).
type delivery struct {
	jetstream.Msg
	stop func()
}

// held is msg without a keepalive (Handle and Apply, tests).
func held(msg jetstream.Msg) *delivery { return &delivery{Msg: msg, stop: func() {}} }

// keptAlive is msg kept from redelivery by an InProgress every interval.
func keptAlive(msg jetstream.Msg, interval time.Duration) *delivery {
	return &delivery{Msg: msg, stop: keepAlive(msg, interval)}
}

// act stops the keepalive and carries out d's action.
func (m *delivery) act(d Decision) error {
	m.stop()
	switch d.Action {
	case Leave:
		return nil
	case Ack:
		return m.Ack()
	case Term:
		return m.TermWithReason(d.Reason)
	default:
		if d.Delay > 0 {
			return m.NakWithDelay(d.Delay)
		}
		return m.Nak()
	}
}

// keepAlive sends InProgress every interval until stopped.
func keepAlive(msg jetstream.Msg, interval time.Duration) (stop func()) {
	if interval <= 0 {
		return func() {}
	}
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	tick := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = msg.InProgress()
		t.Reset(interval)
	}
	mu.Lock()
	t = time.AfterFunc(interval, tick)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// finisher carries out pending acts in the order they were started: it
// waits for each ledger write, then acts on the delivery. A failed write
// is applied again synchronously, with retries, in a goroutine of its own
// so that it does not hold up the others. Its queue is bounded: add blocks
// while it is full.
type finisher struct {
	q     chan *pendingAct
	log   *zap.Logger
	slow  sync.WaitGroup
	slots chan struct{}
	done  chan struct{}
}

func newFinisher(size int, log *zap.Logger) *finisher {
	f := &finisher{q: make(chan *pendingAct, size), log: log, slots: make(chan struct{}, size), done: make(chan struct{})}
	go f.run()
	return f
}

func (f *finisher) add(p *pendingAct) { f.q <- p }

func (f *finisher) run() {
	defer close(f.done)
	for p := range f.q {
		werr := p.wait()
		if werr == nil {
			f.finish(p, nil)
			continue
		}
		f.slots <- struct{}{}
		f.slow.Add(1)
		go func() {
			defer f.slow.Done()
			defer func() { <-f.slots }()
			f.finish(p, werr)
		}()
	}
	f.slow.Wait()
}

func (f *finisher) finish(p *pendingAct, werr error) {
	if err := p.finish(werr); err != nil {
		logActFailure(f.log, p.ref, err)
	}
	p.done()
}

// close waits until every pending act added before it is done.
func (f *finisher) close() {
	close(f.q)
	<-f.done
}

func logActFailure(log *zap.Logger, ref Ref, err error) {
	log.Warn("ack failed", zap.String("event_id", ref.EventID), zap.Uint64("stream_seq", ref.StreamSeq), zap.Error(err))
}

// Observer receives what the consumer does, for metrics.
type Observer interface {
	Outcome(ref Ref, d Decision)
	Sent(d time.Duration, err error)
	InFlight(delta int)
	Advisory(result string)
	LedgerWriteFailed() // a ledger write failed for good (after its retries)
	Failed(op string)   // a read or a claim failed (op: ledger_read, prefs_read, claim_write)
	PrefsInvalid()      // a stored preference is not valid (read as off)
	// Recorded: an outcome (a final state) was stored for a notification
	// of type typ ("" when unknown); counted once per record written, so
	// the counts follow the ledger.
	Recorded(typ string, st state.State)
	Suppressed() // an address was put on the suppression list
}

type nopObserver struct{}

func (nopObserver) Outcome(Ref, Decision)        {}
func (nopObserver) Sent(time.Duration, error)    {}
func (nopObserver) InFlight(int)                 {}
func (nopObserver) Advisory(string)              {}
func (nopObserver) LedgerWriteFailed()           {}
func (nopObserver) Failed(string)                {}
func (nopObserver) PrefsInvalid()                {}
func (nopObserver) Recorded(string, state.State) {}
func (nopObserver) Suppressed()                  {}
