package consumer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// minPullBatch is the smallest number of messages a pull asks for: it
// hides the pull's round trip when the concurrency is small.
const minPullBatch = 16

// pullExpiry is how long one pull request lives on the server. nats.go
// resets a pull after two missed idle heartbeats (at half of it), so it
// also bounds how long a pull that went silent stalls the relay
// (cf. nats-io/nats.go#1622).
const pullExpiry = 5 * time.Second

// Runner pulls deliveries from the durable consumer and moves them through
// three stages: Concurrency preparers (decide up to the send, start the
// claim's write), Concurrency senders (wait for the claim, send), and a
// finisher that acts on each delivery once its ledger write is stored. At
// most 2×Concurrency deliveries are between the pull and the end of their
// send, and at most Concurrency mails are being sent or sent and not yet
// recorded (the duplicate bound after a crash, docs/delivery.md).
type Runner struct {
	cons            jetstream.Consumer
	h               *Handler
	concurrency     int
	shutdownTimeout time.Duration
	log             *zap.Logger
	bound           atomic.Bool
}

// NewRunner returns a Runner over cons. Zero concurrency and shutdown
// timeout take the defaults.
func NewRunner(cons jetstream.Consumer, h *Handler, concurrency int, shutdownTimeout time.Duration) *Runner {
	concurrency, shutdownTimeout = orDefaults(concurrency, shutdownTimeout)
	return &Runner{cons: cons, h: h, concurrency: concurrency, shutdownTimeout: shutdownTimeout, log: h.log}
}

// orDefaults gives a zero concurrency and shutdown timeout their defaults.
func orDefaults(concurrency int, shutdownTimeout time.Duration) (int, time.Duration) {
	if concurrency <= 0 {
		concurrency = policy.DefaultConcurrency
	}
	if shutdownTimeout <= 0 {
		shutdownTimeout = policy.DefaultShutdownTimeout
	}
	return concurrency, shutdownTimeout
}

// Bound reports whether the runner is pulling from the consumer.
func (r *Runner) Bound() bool { return r.bound.Load() }

// Run consumes until ctx ends, then stops pulling and finishes the
// deliveries it already holds (those in flight and those the pull had
// buffered) within the shutdown timeout: releasing them would cost each
// one of its MaxDeliver deliveries, and a few rolling restarts during a
// backlog could then end notifications inbox_only without an attempt.
// When the timeout runs out, sends still running are cancelled and every
// delivery not finished is released (nak, for immediate redelivery
// elsewhere). It returns nil after a clean stop, or the error that ended
// consuming.
func (r *Runner) Run(ctx context.Context) error {
	// The pull batch is never smaller than the 2×K deliveries the stages
	// hold: with a smaller one, nats.go's iterator went silent now and
	// then (cf. nats-io/nats.go#1622).
	it, err := r.cons.Messages(jetstream.PullMaxMessages(max(2*r.concurrency, minPullBatch)), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		return fmt.Errorf("consume %s: %w", "mailrelay", err)
	}
	r.bound.Store(true)
	defer r.bound.Store(false)

	// work lives past ctx so that in-flight sends can finish after a stop;
	// the shutdown timeout cancels it.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	timeout := newShutdownTimer(r.shutdownTimeout, cancelWork)
	defer timeout.stop()
	stopDrain := context.AfterFunc(ctx, func() { it.Drain(); timeout.start() })
	defer stopDrain()

	s := r.startStages(work)
	runErr := r.pull(ctx, it, s, timeout)
	s.stopPulling()

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

	timeout.start()
	if !s.wait(timeout.expired) {
		r.log.Warn("shutdown timeout: cancelled the sends in flight", zap.Duration("timeout", r.shutdownTimeout))
		s.wait(nil)
	}
	s.fin.close() // every decision is carried out before Run returns
	return runErr
}

// pull feeds the stages from the iterator until consuming ends: ctx ended
// and the drained iterator is empty, the iterator failed for good, or the
// shutdown timeout ran out.
func (r *Runner) pull(ctx context.Context, it jetstream.MessagesContext, s *stages, timeout *shutdownTimer) error {
	pe := pullErrors{name: "consumer", log: r.log, healer: r.h.healer}
	for {
		// Take a slot before the next delivery: the iterator is read only
		// when there is room for what it gives.
		if !s.takeSlot(timeout.expired) {
			return nil
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
			s.releaseSlot()
			if ctx.Err() != nil {
				return nil // stopping, and nothing more to finish (or the drained iterator closed)
			}
			if err := pe.failed(ctx, it, err); err != nil {
				return err
			}
			continue
		}
		pe.ok()
		if !s.add(msg, timeout.expired) {
			s.releaseSlot()
			_ = msg.Nak()
			return nil
		}
	}
}

// stages are the preparers, the senders and the finisher of one Run.
type stages struct {
	r    *Runner
	work context.Context
	fin  *finisher
	// slots bounds the deliveries between the pull and the end of their
	// send: Concurrency sending and as many being prepared or claimed, so
	// that a claim is written only for a delivery a sender takes soon.
	slots chan struct{}
	// unrecorded bounds the mails being sent, or sent and not yet
	// recorded, to Concurrency: a crash duplicates no more than that many.
	unrecorded chan struct{}
	prep       chan jetstream.Msg
	jobs       chan *job

	preparers, senders sync.WaitGroup
	done               chan struct{} // closed once every preparer and sender ended
}

func (r *Runner) startStages(work context.Context) *stages {
	k := r.concurrency
	s := &stages{r: r, work: work, fin: newFinisher(max(2*k, minPullBatch), r.log),
		slots: make(chan struct{}, 2*k), unrecorded: make(chan struct{}, k),
		prep: make(chan jetstream.Msg), jobs: make(chan *job, 2*k), done: make(chan struct{})}
	for range k {
		s.preparers.Add(1)
		go func() {
			defer s.preparers.Done()
			for msg := range s.prep {
				if j, ok := s.prepare(msg); ok {
					s.jobs <- j
				} else {
					s.releaseSlot()
				}
			}
		}()
		s.senders.Add(1)
		go func() {
			defer s.senders.Done()
			for j := range s.jobs {
				s.send(j)
				s.releaseSlot()
			}
		}()
	}
	go func() { s.preparers.Wait(); close(s.jobs); s.senders.Wait(); close(s.done) }()
	return s
}

func (s *stages) takeSlot(expired <-chan struct{}) bool {
	select {
	case <-expired:
		return false
	default:
	}
	select {
	case s.slots <- struct{}{}:
		return true
	case <-expired:
		return false
	}
}

func (s *stages) releaseSlot() { <-s.slots }

// add hands msg to a preparer; false when the shutdown timeout ran out first.
func (s *stages) add(msg jetstream.Msg, expired <-chan struct{}) bool {
	select {
	case s.prep <- msg:
		return true
	case <-expired:
		return false
	}
}

// stopPulling tells the preparers no more deliveries come.
func (s *stages) stopPulling() { close(s.prep) }

// wait waits for the preparers and senders to end; false when expired
// was closed first.
func (s *stages) wait(expired <-chan struct{}) bool {
	select {
	case <-s.done:
		return true
	case <-expired:
		return false
	}
}

// prepare is the first stage: it decides a delivery up to the send. A
// delivery that is not to be sent goes to the finisher and prepare reports
// false; otherwise its claim's write is started and the job returned. The
// delivery is kept from redelivery (InProgress) until it is acted on.
func (s *stages) prepare(raw jetstream.Msg) (*job, bool) {
	h := s.r.h
	h.obs.InFlight(1)
	j := h.newJob(keptAlive(raw, h.policy.KeepAliveInterval()))
	d, ok := h.prepare(s.work, j)
	if ok {
		return j, true
	}
	h.obs.InFlight(-1)
	s.finish(j, d, func() {})
	return nil, false
}

// send is the second stage: it waits for the claim, sends, and hands the
// decision to the finisher. A send holds a token of unrecorded until its
// decision is carried out. The keepalive runs until then: a ledger write
// stalled by a leader election must not let AckWait run out, or another
// relay would take the claim over and mail it a second time.
func (s *stages) send(j *job) {
	h := s.r.h
	d, ok := h.claimed(s.work, j)
	recorded := func() {}
	if ok {
		s.unrecorded <- struct{}{}
		recorded = func() { <-s.unrecorded }
		d = h.deliver(s.work, j)
	}
	h.obs.InFlight(-1)
	s.finish(j, d, recorded)
}

// finish starts carrying d out; the finisher completes it. done runs once
// d is carried out.
func (s *stages) finish(j *job, d Decision, done func()) {
	ref := j.ref()
	p, err := s.r.h.act.start(j.msg, ref, d)
	if err != nil {
		logActFailure(s.r.log, ref, err)
	}
	if p == nil {
		done()
		return
	}
	p.done = done
	s.fin.add(p)
}

// shutdownTimer is the shutdown timeout: started once (at the stop, or
// when consuming ends for another reason), it cancels the work and then
// closes expired when it runs out (so whoever sees expired sees the work
// cancelled).
type shutdownTimer struct {
	d       time.Duration
	t       *time.Timer
	once    sync.Once
	expired chan struct{}
}

func newShutdownTimer(d time.Duration, cancel func()) *shutdownTimer {
	st := &shutdownTimer{d: d, expired: make(chan struct{})}
	st.t = time.AfterFunc(d, func() { cancel(); close(st.expired) })
	st.t.Stop()
	return st
}

func (st *shutdownTimer) start() { st.once.Do(func() { st.t.Reset(st.d) }) }
func (st *shutdownTimer) stop()  { st.t.Stop() }
