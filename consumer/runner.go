package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// minPullBatch is the smallest number of messages a pull asks for.
const minPullBatch = 16

// pullExpiry is how long one pull request lives on the server. nats.go
// asks for idle heartbeats at half of it and resets the pull after two
// missed ones, so it also bounds how long a pull that went silent (no
// request waiting on the server, none sent by the client; seen in make
// bench, cf. nats-io/nats.go#1622) stalls the relay: 5 s instead of the
// default's 30 s. An idle relay renews its pull every 5 s; that is all
// it costs.
const pullExpiry = 5 * time.Second

// Runner pulls deliveries from the durable consumer and sends up to
// Concurrency of them at once. It never holds more than 2×Concurrency
// deliveries being prepared or sent, the finisher's queue and one pull
// batch, so memory stays flat however long the backlog.
type Runner struct {
	cons            jetstream.Consumer
	h               *Handler
	concurrency     int
	shutdownTimeout time.Duration
	log             *zap.Logger
	bound           atomic.Bool
}

// NewRunner returns a Runner over cons.
func NewRunner(cons jetstream.Consumer, h *Handler, concurrency int, shutdownTimeout time.Duration) *Runner {
	if concurrency <= 0 {
		concurrency = 8
	}
	if shutdownTimeout <= 0 {
		shutdownTimeout = 25 * time.Second
	}
	return &Runner{cons: cons, h: h, concurrency: concurrency, shutdownTimeout: shutdownTimeout, log: h.log}
}

// Bound reports whether the runner is pulling from the consumer.
func (r *Runner) Bound() bool { return r.bound.Load() }

// Run consumes until ctx ends, then stops pulling and finishes the
// deliveries it already holds (those in flight and those the pull had
// buffered) within the shutdown timeout; after it, sends still running are
// cancelled and every delivery not finished is released (nak, for
// immediate redelivery elsewhere). It returns nil after a clean stop, or
// the error that ended consuming.
//
// Three stages: Concurrency preparers take deliveries from the pull, decide
// each up to the send (decode, ledger rules, preferences, compose; skips
// end here) and start the write of its "sending" claim; Concurrency senders
// wait for the claim (usually stored by then) and send; the final ledger
// write is started asynchronously and a finisher acks (or naks, or terms)
// each delivery once its write is stored. Claims and final writes of many
// deliveries so share network writes and wake-ups, and a sender's slot is
// spent on the send. At most 2×Concurrency deliveries are between the pull
// and the end of their send.
func (r *Runner) Run(ctx context.Context) error {
	// A pull batch of at least 16 hides the pull round trip when the
	// concurrency is small (K = 1: +30% mails/s in make bench). It is never
	// smaller than the 2×K deliveries the stages hold: with K = 16 and a
	// batch of 16, nats.go's Messages iterator went silent now and then
	// (no pull waiting on the server, none sent by the client) until its
	// missed-heartbeat reset 30 s later, in about one drain in four of make
	// bench; with the batch at 2×K, in none of 40 drains since (K = 1 to 16;
	// cf. nats-io/nats.go#1622).
	it, err := r.cons.Messages(jetstream.PullMaxMessages(max(2*r.concurrency, minPullBatch)), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		return fmt.Errorf("consume %s: %w", "mailrelay", err)
	}
	r.bound.Store(true)
	defer r.bound.Store(false)

	// work lives past ctx so that in-flight sends can finish after a stop.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	// After a stop, the deliveries already pulled (the iterator's buffer)
	// are still sent, within the shutdown timeout: releasing them would
	// cost each one of its MaxDeliver deliveries, and a few rolling
	// restarts during a backlog could then end notifications inbox_only
	// without a single attempt. The timeout starts at the stop (or when
	// consuming ends for another reason); when it runs out, expired is
	// closed and the sends still running are cancelled.
	expired := make(chan struct{})
	expiry := time.AfterFunc(r.shutdownTimeout, func() { close(expired); cancelWork() })
	expiry.Stop() // started by expire
	defer expiry.Stop()
	var expiryOnce sync.Once
	expire := func() { expiryOnce.Do(func() { expiry.Reset(r.shutdownTimeout) }) }
	stopDrain := context.AfterFunc(ctx, func() { it.Drain(); expire() })
	defer stopDrain()
	fin := newFinisher(max(2*r.concurrency, minPullBatch), r.log)
	// slots bounds the deliveries between the pull and the end of their
	// send: Concurrency sending and as many being prepared or claimed, so
	// that a claim is written only for a delivery a sender takes soon.
	slots := make(chan struct{}, 2*r.concurrency)
	// unrecorded bounds the mails being sent or sent and not yet recorded
	// to Concurrency: a crash duplicates no more than that many.
	unrecorded := make(chan struct{}, r.concurrency)
	prep := make(chan jetstream.Msg)
	jobs := make(chan job, 2*r.concurrency)
	var preparers, senders sync.WaitGroup
	for range r.concurrency {
		preparers.Add(1)
		go func() {
			defer preparers.Done()
			for msg := range prep {
				if j, ok := r.dispatch(work, msg, fin); ok {
					jobs <- j
				} else {
					<-slots
				}
			}
		}()
		senders.Add(1)
		go func() {
			defer senders.Done()
			for j := range jobs {
				r.send(work, j, fin, unrecorded)
				<-slots
			}
		}()
	}
	var runErr error

loop:
	for {
		// Take a slot before the next delivery: the iterator is read only
		// when there is room for what it gives.
		select {
		case <-expired:
			break loop
		default:
		}
		select {
		case slots <- struct{}{}:
		case <-expired:
			break loop
		}
		var msg jetstream.Msg
		var err error
		if ctx.Err() == nil {
			msg, err = it.Next()
		} else {
			// Stopping: the drained iterator gives what it buffers, then
			// ErrMsgIteratorClosed.
			msg, err = it.Next(jetstream.NextMaxWait(time.Second))
		}
		if err != nil {
			<-slots
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				if ctx.Err() == nil {
					runErr = fmt.Errorf("consumer stopped: %w", err)
				}
				break loop
			}
			if ctx.Err() != nil {
				break loop // stopping, and nothing more to finish
			}
			r.log.Warn("pull failed", zap.Error(err))
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				runErr = fmt.Errorf("consumer gone: %w", err)
				it.Stop()
				break loop
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case prep <- msg:
		case <-expired:
			<-slots
			_ = msg.Nak()
			break loop
		}
	}
	close(prep)
	go func() { preparers.Wait(); close(jobs) }()

	// Release whatever the iterator still buffers (after the shutdown
	// timeout, or when consuming ended for another reason).
	it.Drain()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(50 * time.Millisecond))
		if err != nil {
			break
		}
		_ = msg.Nak()
	}

	done := make(chan struct{})
	go func() { preparers.Wait(); senders.Wait(); close(done) }()
	expire()
	select {
	case <-done:
	case <-expired: // sends still running are cancelled
		r.log.Warn("shutdown timeout: cancelled the sends in flight", zap.Duration("timeout", r.shutdownTimeout))
		<-done
	}
	fin.close() // every outcome is recorded and acted on before Run returns
	return runErr
}

// job is a delivery whose claim is under way.
type job struct {
	msg *keptMsg
	sj  *sendJob
}

// dispatch decides a delivery up to the send. A delivery that is not to be
// sent is applied (its outcome handed to the finisher) and dispatch reports
// false; otherwise its claim is started and the job returned. The delivery
// is kept from redelivery (InProgress) until it is acked, naked or termed.
func (r *Runner) dispatch(ctx context.Context, raw jetstream.Msg, fin *finisher) (job, bool) {
	r.h.obs.InFlight(1)
	msg := &keptMsg{Msg: raw, stop: keepAlive(raw, r.h.cfg.AckWait/3)}
	out, sj := r.h.prepare(ctx, msg)
	if sj != nil {
		var ok bool
		if out, ok = r.h.startClaim(ctx, sj); ok {
			return job{msg: msg, sj: sj}, true
		}
	}
	r.h.obs.InFlight(-1)
	r.apply(msg, out, fin, func() {})
	return job{}, false
}

// keptMsg is a delivery kept from redelivery by an InProgress keepalive,
// which stops as the delivery is acked, naked or termed (not after: a late
// InProgress would turn a nak's delay into AckWait).
type keptMsg struct {
	jetstream.Msg
	stop func()
}

func (m *keptMsg) Ack() error { m.stop(); return m.Msg.Ack() }
func (m *keptMsg) leave()     { m.stop() } // Leave: nothing is done to the delivery
func (m *keptMsg) DoubleAck(ctx context.Context) error {
	m.stop()
	return m.Msg.DoubleAck(ctx)
}
func (m *keptMsg) Nak() error { m.stop(); return m.Msg.Nak() }
func (m *keptMsg) NakWithDelay(d time.Duration) error {
	m.stop()
	return m.Msg.NakWithDelay(d)
}
func (m *keptMsg) Term() error { m.stop(); return m.Msg.Term() }
func (m *keptMsg) TermWithReason(reason string) error {
	m.stop()
	return m.Msg.TermWithReason(reason)
}

// send finishes the claim of a dispatched delivery, sends it and hands the
// outcome to the finisher. A send takes a token of unrecorded, given back
// once its outcome is written. The InProgress keepalive runs until the
// delivery is acted on: a ledger write stalled by a leader election must
// not let AckWait run out, or another relay would take the claim over and
// mail it a second time.
func (r *Runner) send(ctx context.Context, j job, fin *finisher, unrecorded chan struct{}) {
	out, ok := r.h.claim(ctx, j.sj)
	recorded := func() {}
	if ok {
		unrecorded <- struct{}{}
		recorded = func() { <-unrecorded }
		out = r.h.deliver(ctx, j.sj)
	}
	r.h.obs.InFlight(-1)
	r.apply(j.msg, out, fin, recorded)
}

// apply starts applying out; the finisher completes it. done runs once
// out is applied.
func (r *Runner) apply(msg jetstream.Msg, out Outcome, fin *finisher, done func()) {
	pa, err := r.h.startApply(msg, out)
	if err != nil {
		logAckFailure(r.log, out, err)
	}
	if pa == nil {
		done()
		return
	}
	pa.done = done
	fin.add(pa)
}

func logAckFailure(log *zap.Logger, out Outcome, err error) {
	log.Warn("ack failed", zap.String("event_id", out.EventID), zap.Uint64("stream_seq", out.StreamSeq), zap.Error(err))
}

// finisher completes pending applies in the order they were started: it
// waits for each ledger write, then acts on the delivery. A failed write is
// applied again synchronously, with retries, in a goroutine of its own so
// that it does not hold up the others. Its queue is bounded: a worker
// blocks in add while it is full.
type finisher struct {
	q     chan *pendingApply
	log   *zap.Logger
	slow  sync.WaitGroup
	slots chan struct{}
	done  chan struct{}
}

func newFinisher(size int, log *zap.Logger) *finisher {
	f := &finisher{q: make(chan *pendingApply, size), log: log, slots: make(chan struct{}, size), done: make(chan struct{})}
	go f.run()
	return f
}

func (f *finisher) add(pa *pendingApply) { f.q <- pa }

func (f *finisher) run() {
	defer close(f.done)
	for pa := range f.q {
		werr := pa.wait()
		if werr == nil {
			if err := pa.finish(nil); err != nil {
				logAckFailure(f.log, pa.out, err)
			}
			pa.done()
			continue
		}
		f.slots <- struct{}{}
		f.slow.Add(1)
		go func() {
			defer f.slow.Done()
			defer func() { <-f.slots }()
			if err := pa.finish(werr); err != nil {
				logAckFailure(f.log, pa.out, err)
			}
			pa.done()
		}()
	}
	f.slow.Wait()
}

// close waits until every pending apply added before it is done.
func (f *finisher) close() {
	close(f.q)
	<-f.done
}

// keepAlive sends InProgress every interval until stopped.
func keepAlive(msg jetstream.Msg, interval time.Duration) (stop func()) {
	if interval <= 0 {
		return func() {}
	}
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	var tick func()
	tick = func() {
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
