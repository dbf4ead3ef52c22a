package consumer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// gateSender holds every send until released (or its context ends) and
// counts what is in flight and what went out.
type gateSender struct {
	gate     chan struct{}
	once     sync.Once
	inFlight atomic.Int32
	mu       sync.Mutex
	sent     map[string]int // by Message-ID
}

func newGateSender() *gateSender {
	return &gateSender{gate: make(chan struct{}), sent: map[string]int{}}
}

// release lets every send through, now and later.
func (s *gateSender) release() { s.once.Do(func() { close(s.gate) }) }

func (s *gateSender) Send(ctx context.Context, m *compose.Message) error {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	select {
	case <-s.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	s.sent[m.MessageID]++
	s.mu.Unlock()
	return nil
}

func (s *gateSender) count() (mails, distinct int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.sent {
		mails += n
	}
	return mails, len(s.sent)
}

// runnerEnv is a provisioned JetStream server, the real ledger, and a
// runner over the durable consumer, with every recipient opted in.
type runnerEnv struct {
	js     jetstream.JetStream
	nc     *nats.Conn
	h      *provision.Handles
	ledger *state.Store
	sender *gateSender
	runner *Runner
	naks   atomic.Int32
}

func newRunnerEnv(t *testing.T, concurrency int, shutdown time.Duration) *runnerEnv {
	t.Helper()
	ns, js, h := natstest.StartProvisioned(t)
	nc, ajs := natstest.Connect(t, ns.URL())
	e := &runnerEnv{js: js, nc: nc, h: h, ledger: state.New(h.State).WithAsync(ajs), sender: newGateSender()}
	hd := NewHandler(Config{Configured: true}, e.sender, memPrefs{"u1": {event.TaskAssigned: true}}, e.ledger,
		func(ev *event.Event, now time.Time, _ compose.Options) (*compose.Message, error) {
			return &compose.Message{MessageID: "<n." + ev.ID + "@example.com>", Date: now, To: compose.Address{Email: ev.Recipient.Email}}, nil
		})
	e.runner = NewRunner(h.Consumer, hd, concurrency, shutdown)
	sub, err := nc.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED."+provision.Stream+"."+provision.Consumer,
		func(*nats.Msg) { e.naks.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *runnerEnv) publish(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("n%d", i)
		ev := &event.Event{ID: id, Type: event.TaskAssigned, OccurredAt: time.Now(),
			Recipient: event.Recipient{ID: "u1", Email: "ann@example.com"}, Task: event.Task{ID: "t1", Title: "T"}}
		if _, err := event.Publish(natstest.Ctx(t), e.js, ev); err != nil {
			t.Fatal(err)
		}
	}
}

// start runs the runner until the returned stop is called; stop returns
// what Run returned and how long the stop took.
func (e *runnerEnv) start(t *testing.T) (stop func() (error, time.Duration)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.runner.Run(ctx) }()
	natstest.Eventually(t, 5*time.Second, func() (bool, string) { return e.runner.Bound(), "not bound" })
	var once sync.Once
	stop = func() (err error, took time.Duration) {
		once.Do(func() {
			begin := time.Now()
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return within 30s of the stop")
			}
			took = time.Since(begin)
		})
		return err, took
	}
	t.Cleanup(func() { e.sender.release(); _, _ = stop() })
	return stop
}

func (e *runnerEnv) states(t *testing.T, n int) map[state.State]int {
	t.Helper()
	got := map[state.State]int{}
	for i := range n {
		rec, _, err := e.ledger.Get(context.Background(), fmt.Sprintf("n%d", i))
		if err != nil {
			got["none"]++
			continue
		}
		got[rec.State]++
	}
	return got
}

// The runner sends every notification once and acks it after its record
// is written; a stop with nothing in flight returns nil at once.
func TestRunnerSendsAndAcks(t *testing.T) {
	e := newRunnerEnv(t, 4, 0)
	e.sender.release()
	stop := e.start(t)
	const n = 40
	e.publish(t, n)
	natstest.Eventually(t, 20*time.Second, func() (bool, string) {
		ci, err := e.h.Consumer.Info(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return ci.AckFloor.Stream == n && ci.NumAckPending == 0, fmt.Sprintf("ack floor %d", ci.AckFloor.Stream)
	})
	if mails, distinct := e.sender.count(); mails != n || distinct != n {
		t.Fatalf("%d mails, %d distinct; want %d once each", mails, distinct, n)
	}
	if got := e.states(t, n); got[state.Sent] != n {
		t.Fatalf("states %v, want %d sent", got, n)
	}
	if err, took := stop(); err != nil || took > 5*time.Second {
		t.Fatalf("stop: %v after %s", err, took)
	}
}

// A stop finishes the deliveries already pulled instead of releasing them
// (a nak would cost each one of its three deliveries): none is naked, and
// every one it held ends sent.
func TestRunnerStopFinishesWhatItHolds(t *testing.T) {
	e := newRunnerEnv(t, 2, 20*time.Second)
	stop := e.start(t)
	const n = 10
	e.publish(t, n)
	natstest.Eventually(t, 10*time.Second, func() (bool, string) {
		return e.sender.inFlight.Load() == 2, fmt.Sprintf("%d sends in flight", e.sender.inFlight.Load())
	})
	stopped := make(chan struct{})
	var runErr error
	go func() { runErr, _ = stop(); close(stopped) }()
	time.Sleep(50 * time.Millisecond) // the stop is under way, the sends still held
	e.sender.release()
	<-stopped
	if runErr != nil {
		t.Fatalf("Run after a clean stop: %v", runErr)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // advisories are published asynchronously
	if k := e.naks.Load(); k != 0 {
		t.Errorf("the stopping runner released %d deliveries (nak) instead of finishing them", k)
	}
	mails, distinct := e.sender.count()
	got := e.states(t, n)
	if mails != distinct || got[state.Sent] != mails || mails < 2 {
		t.Fatalf("%d mails (%d distinct), states %v: want every held delivery mailed once and recorded sent", mails, distinct, got)
	}
}

// When the shutdown timeout runs out, the sends still running are
// cancelled (recorded retrying, the attempt counted) and every delivery
// not finished is released at once: Run returns soon after the timeout,
// and nothing unsent is acked.
func TestRunnerShutdownTimeoutReleasesTheRest(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e := newRunnerEnv(t, 2, timeout)
	stop := e.start(t)
	const n = 10
	e.publish(t, n)
	natstest.Eventually(t, 10*time.Second, func() (bool, string) {
		return e.sender.inFlight.Load() == 2, fmt.Sprintf("%d sends in flight", e.sender.inFlight.Load())
	})
	err, took := stop()
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took < timeout || took > timeout+5*time.Second {
		t.Fatalf("Run returned %s after the stop; want soon after the %s timeout", took, timeout)
	}
	if mails, _ := e.sender.count(); mails != 0 {
		t.Fatalf("%d mails went out through a closed gate", mails)
	}
	// The two cancelled sends count their attempt; deliveries claimed and
	// waiting for a send slot are recorded retrying with theirs taken back.
	interrupted := 0
	for i := range n {
		rec, _, err := e.ledger.Get(context.Background(), fmt.Sprintf("n%d", i))
		switch {
		case err != nil:
		case rec.State != state.Retrying:
			t.Errorf("n%d: %+v, want no record or retrying", i, rec)
		case rec.Attempts == 1:
			interrupted++
		case rec.Attempts != 0:
			t.Errorf("n%d: %+v, want 0 or 1 attempts", i, rec)
		}
	}
	if interrupted != 2 {
		t.Errorf("%d interrupted attempts recorded, want the 2 cancelled sends (states %v)", interrupted, e.states(t, n))
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		return e.naks.Load() >= 2, fmt.Sprintf("%d naks", e.naks.Load())
	})
	ci, err := e.h.Consumer.Info(context.Background())
	if err != nil || ci.AckFloor.Stream != 0 {
		t.Fatalf("consumer %+v, %v: want nothing acked", ci, err)
	}
}

// The shutdown timer starts once, at the first start, and cancels the
// work when it runs out.
func TestShutdownTimer(t *testing.T) {
	var cancelled atomic.Bool
	st := newShutdownTimer(20*time.Millisecond, func() { cancelled.Store(true) })
	select {
	case <-st.expired:
		t.Fatal("expired before it was started")
	case <-time.After(60 * time.Millisecond):
	}
	st.start()
	time.Sleep(10 * time.Millisecond)
	st.start() // a second start does not push the end back
	select {
	case <-st.expired:
	case <-time.After(time.Second):
		t.Fatal("not expired a second after the start")
	}
	if !cancelled.Load() {
		t.Fatal("expired without cancelling the work")
	}
}
