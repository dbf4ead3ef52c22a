package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/transport"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// fakeMsg is a jetstream.Msg that records what was done to it.
type fakeMsg struct {
	subject   string
	data      []byte
	seq       uint64
	delivered uint64

	mu     sync.Mutex
	acts   []string
	delay  time.Duration
	reason string
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq, Consumer: m.seq},
		NumDelivered: m.delivered, Stream: "NOTIFY", Consumer: "mailrelay"}, nil
}
func (m *fakeMsg) Data() []byte         { return m.data }
func (m *fakeMsg) Headers() nats.Header { return nats.Header{} }
func (m *fakeMsg) Subject() string      { return m.subject }
func (m *fakeMsg) Reply() string        { return "" }
func (m *fakeMsg) record(a string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.acts = append(m.acts, a)
	return nil
}
func (m *fakeMsg) Ack() error                         { return m.record("ack") }
func (m *fakeMsg) DoubleAck(context.Context) error    { return m.record("ack") }
func (m *fakeMsg) Nak() error                         { return m.record("nak") }
func (m *fakeMsg) NakWithDelay(d time.Duration) error { m.delay = d; return m.record("nak") }
func (m *fakeMsg) InProgress() error                  { return m.record("progress") }
func (m *fakeMsg) Term() error                        { return m.record("term") }
func (m *fakeMsg) TermWithReason(r string) error      { m.reason = r; return m.record("term") }
func (m *fakeMsg) last() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.acts) == 0 {
		return ""
	}
	return m.acts[len(m.acts)-1]
}

// memLedger is an in-memory Ledger with revisions.
type memLedger struct {
	mu   sync.Mutex
	recs map[string]state.Record
	revs map[string]uint64
	rev  uint64
}

func newMemLedger() *memLedger {
	return &memLedger{recs: map[string]state.Record{}, revs: map[string]uint64{}}
}
func (l *memLedger) Get(_ context.Context, key string) (state.Record, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.recs[key]
	if !ok {
		return state.Record{}, 0, state.ErrNotFound
	}
	return r, l.revs[key], nil
}
func (l *memLedger) Put(_ context.Context, key string, rec state.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rev++
	l.recs[key], l.revs[key] = rec, l.rev
	return nil
}
func (l *memLedger) Swap(_ context.Context, key string, rec state.Record, rev uint64) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.revs[key] != rev {
		return 0, state.ErrConflict
	}
	l.rev++
	l.recs[key], l.revs[key] = rec, l.rev
	return l.rev, nil
}

// create writes rec under key only if key has no record (CreateAsync's rule).
func (l *memLedger) create(key string, rec state.Record) error {
	_, err := l.Swap(context.Background(), key, rec, 0)
	return err
}

// The asynchronous writes of memLedger are stored at once; a swap runs
// when waited for.
func (l *memLedger) SwapAsync(ctx context.Context, key string, rec state.Record, rev uint64) func() (uint64, error) {
	return func() (uint64, error) { return l.Swap(ctx, key, rec, rev) }
}

func (l *memLedger) PutAsync(key string, rec state.Record) (state.Pending, error) {
	err := l.Put(context.Background(), key, rec)
	return pendingFunc(func() error { return err }), nil
}

func (l *memLedger) CreateAsync(key string, rec state.Record) (state.Pending, error) {
	err := l.create(key, rec)
	return pendingFunc(func() error { return err }), nil
}

// syncLedger is a memLedger that cannot start writes asynchronously (as
// state.Store without WithAsync): every final write takes the synchronous path.
type syncLedger struct{ *memLedger }

var errNoAsync = errors.New("asynchronous writes not enabled")

func (syncLedger) PutAsync(string, state.Record) (state.Pending, error)    { return nil, errNoAsync }
func (syncLedger) CreateAsync(string, state.Record) (state.Pending, error) { return nil, errNoAsync }

// testStages are the runner's stages without the pull: a delivery goes
// through prepare, send and the finisher, as Run moves it.
func testStages(h *Handler) *stages {
	r := NewRunner(nil, h, 1, 0)
	return &stages{r: r, work: context.Background(), fin: newFinisher(2, zap.NewNop()),
		slots: make(chan struct{}, 2), unrecorded: make(chan struct{}, 1)}
}

// runStages moves msg through the stages and waits until it is acted on.
func runStages(h *Handler, msg *fakeMsg) {
	s := testStages(h)
	if j, ok := s.prepare(msg); ok {
		s.send(j)
	}
	s.fin.close()
}

func (l *memLedger) get(key string) (state.Record, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.recs[key]
	return r, ok
}

type memPrefs map[string]map[event.Type]bool

func (p memPrefs) Email(_ context.Context, user string, t event.Type) (prefs.Answer, error) {
	return prefs.Answer{On: p[user][t]}, nil
}

type fakeSender struct {
	mu   sync.Mutex
	err  error
	sent []*compose.Message
}

// errPanic makes fakeSender panic instead of returning an error.
var errPanic = errors.New("panic")

func (s *fakeSender) Send(_ context.Context, m *compose.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == errPanic {
		panic("backend exploded")
	}
	if s.err != nil {
		return s.err
	}
	s.sent = append(s.sent, m)
	return nil
}

var testNow = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func simpleCompose(ev *event.Event, now time.Time, _ compose.Options) (*compose.Message, error) {
	if strings.Contains(ev.Task.Title, "PANIC") {
		panic("template exploded")
	}
	return &compose.Message{MessageID: "<n." + ev.ID + "@example.com>", Subject: ev.Task.Title, Date: now,
		To: compose.Address{Email: ev.Recipient.Email}}, nil
}

func testEvent(mut func(map[string]any)) (string, []byte) {
	ev := map[string]any{
		"id": "n1", "type": "task.assigned", "occurred_at": testNow.Add(-time.Minute).Format(time.RFC3339),
		"recipient": map[string]any{"id": "u1", "email": "ann@example.com", "name": "Ann"},
		"actor":     map[string]any{"id": "u2", "name": "Bob"},
		"task":      map[string]any{"id": "t1", "title": "Pour foundation"},
	}
	if mut != nil {
		mut(ev)
	}
	b, _ := json.Marshal(ev)
	return "notify." + fmt.Sprint(ev["type"]), b
}

func TestDecisionTable(t *testing.T) {
	temp := &transport.Error{Temporary: true, Code: 451, Enhanced: "4.3.0", Step: "data", Err: errors.New("try later")}
	perm := &transport.Error{Temporary: false, Code: 550, Enhanced: "5.1.1", Step: "rcpt", Err: errors.New("no such user")}
	optedIn := memPrefs{"u1": {event.TaskAssigned: true}}

	cases := []struct {
		name       string
		mut        func(map[string]any)
		subject    string // overrides the event's subject
		raw        []byte // overrides the event's data
		delivered  uint64
		prior      *state.Record
		prefs      memPrefs
		sendErr    error
		configured *bool
		stale      time.Duration

		wantAct   string
		wantDelay time.Duration
		wantKey   string
		wantState state.State // "" = no record under wantKey
		wantAtt   int
		wantMails int
	}{
		{name: "bad JSON", raw: []byte(`{"id":`), wantAct: "term", wantKey: "seq.7", wantState: state.Invalid},
		{name: "missing task title, usable id", mut: func(e map[string]any) { e["task"] = map[string]any{"id": "t1"} },
			wantAct: "term", wantKey: "n1", wantState: state.Invalid},
		{name: "bad id", mut: func(e map[string]any) { e["id"] = "no spaces allowed" }, wantAct: "term", wantKey: "seq.7", wantState: state.Invalid},
		{name: "type differs from subject", subject: "notify.mention", wantAct: "term", wantKey: "n1", wantState: state.Invalid},
		{name: "too large", mut: func(e map[string]any) { e["task"] = map[string]any{"id": "t1", "title": strings.Repeat("x", 70<<10)} },
			wantAct: "term", wantKey: "n1", wantState: state.Invalid},
		{name: "bad recipient email", mut: func(e map[string]any) { e["recipient"] = map[string]any{"id": "u1", "email": "not-an-address"} },
			wantAct: "term", wantKey: "n1", wantState: state.Invalid},
		{name: "invalid never overwrites an existing state", mut: func(e map[string]any) { e["occurred_at"] = "yesterday" },
			prior: &state.Record{State: state.Sent, Attempts: 1}, wantAct: "term", wantKey: "seq.7", wantState: state.Invalid},
		{name: "already sent", prefs: optedIn, prior: &state.Record{State: state.Sent, Attempts: 1},
			wantAct: "ack", wantKey: "n1", wantState: state.Sent, wantAtt: 1},
		{name: "already inbox_only", prefs: optedIn, prior: &state.Record{State: state.InboxOnly, Attempts: 3},
			wantAct: "ack", wantKey: "n1", wantState: state.InboxOnly, wantAtt: 3},
		// A first delivery reads no ledger before a skip: its create-only
		// skip record meets the record, writes nothing, and the delivery
		// comes back at once to be decided with it.
		{name: "already sent wins over opted out", prefs: memPrefs{}, prior: &state.Record{State: state.Sent, Attempts: 1},
			wantAct: "nak", wantDelay: 0, wantKey: "n1", wantState: state.Sent, wantAtt: 1},
		{name: "already sent wins over opted out, redelivered", prefs: memPrefs{}, delivered: 2, prior: &state.Record{State: state.Sent, Attempts: 1},
			wantAct: "ack", wantKey: "n1", wantState: state.Sent, wantAtt: 1},
		{name: "already sent, redelivered", prefs: optedIn, delivered: 2, prior: &state.Record{State: state.Sent, Attempts: 1},
			wantAct: "ack", wantKey: "n1", wantState: state.Sent, wantAtt: 1},
		{name: "retrying keeps its attempts when skipped", prefs: memPrefs{}, delivered: 2, prior: &state.Record{State: state.Retrying, Attempts: 1},
			wantAct: "ack", wantKey: "n1", wantState: state.SkippedOptedOut, wantAtt: 1},
		{name: "stale", prefs: optedIn, stale: 30 * time.Second, wantAct: "ack", wantKey: "n1", wantState: state.SkippedStale},
		{name: "no prefs at all", prefs: memPrefs{}, wantAct: "ack", wantKey: "n1", wantState: state.SkippedOptedOut},
		{name: "email off for this type", prefs: memPrefs{"u1": {event.Mention: true, event.TaskAssigned: false}},
			wantAct: "ack", wantKey: "n1", wantState: state.SkippedOptedOut},
		{name: "no recipient email", prefs: optedIn, mut: func(e map[string]any) { e["recipient"] = map[string]any{"id": "u1"} },
			wantAct: "ack", wantKey: "n1", wantState: state.SkippedNoEmail},
		{name: "not configured", prefs: optedIn, configured: new(bool), wantAct: "ack", wantKey: "n1", wantState: state.SkippedNotConfigured},
		{name: "sent", prefs: optedIn, wantAct: "ack", wantKey: "n1", wantState: state.Sent, wantAtt: 1, wantMails: 1},
		{name: "451 on attempt 1", prefs: optedIn, sendErr: temp, delivered: 1,
			wantAct: "nak", wantDelay: 30 * time.Second, wantKey: "n1", wantState: state.Retrying, wantAtt: 1},
		{name: "451 on attempt 2", prefs: optedIn, sendErr: temp, delivered: 2, prior: &state.Record{State: state.Retrying, Attempts: 1},
			wantAct: "nak", wantDelay: 2 * time.Minute, wantKey: "n1", wantState: state.Retrying, wantAtt: 2},
		{name: "451 on attempt 3", prefs: optedIn, sendErr: temp, delivered: 3, prior: &state.Record{State: state.Retrying, Attempts: 2},
			wantAct: "term", wantKey: "n1", wantState: state.InboxOnly, wantAtt: 3},
		{name: "connection refused is temporary", prefs: optedIn, sendErr: &transport.Error{Temporary: true, Step: "connect", Err: errors.New("refused")},
			delivered: 1, wantAct: "nak", wantDelay: 30 * time.Second, wantKey: "n1", wantState: state.Retrying, wantAtt: 1},
		{name: "unclassified error is temporary", prefs: optedIn, sendErr: errors.New("boom"),
			delivered: 1, wantAct: "nak", wantDelay: 30 * time.Second, wantKey: "n1", wantState: state.Retrying, wantAtt: 1},
		{name: "550 is permanent", prefs: optedIn, sendErr: perm, wantAct: "term", wantKey: "n1", wantState: state.InboxOnly, wantAtt: 1},
		{name: "another copy is sending: this one is a duplicate", prefs: optedIn, prior: &state.Record{State: state.Sending, Attempts: 1, StreamSeq: 3, UpdatedAt: testNow.Add(-time.Second)},
			wantAct: "ack", wantKey: "n1", wantState: state.Sending, wantAtt: 1},
		{name: "a stale claim of another copy is taken over", prefs: optedIn, prior: &state.Record{State: state.Sending, Attempts: 1, StreamSeq: 3, UpdatedAt: testNow.Add(-time.Hour)},
			wantAct: "ack", wantKey: "n1", wantState: state.Sent, wantAtt: 2, wantMails: 1},
		{name: "own claim from a crashed delivery is taken over", prefs: optedIn, delivered: 2,
			prior:   &state.Record{State: state.Sending, Attempts: 1, StreamSeq: 7, UpdatedAt: testNow.Add(-2 * time.Minute)},
			wantAct: "ack", wantKey: "n1", wantState: state.Sent, wantAtt: 2, wantMails: 1},
		{name: "the claim of an earlier delivery of this message is taken over", prefs: optedIn, delivered: 2,
			prior:   &state.Record{State: state.Sending, Attempts: 1, StreamSeq: 7, Delivery: 1, UpdatedAt: testNow.Add(-time.Second)},
			wantAct: "ack", wantKey: "n1", wantState: state.Sent, wantAtt: 2, wantMails: 1},
		// JetStream redelivered the message while this delivery waited:
		// the later delivery owns it, and this one is left alone (no ack,
		// no nak: either would act on the later one's behalf).
		{name: "a stale delivery meets the claim of a later one", prefs: optedIn, delivered: 1,
			prior:   &state.Record{State: state.Sending, Attempts: 1, StreamSeq: 7, Delivery: 2, UpdatedAt: testNow.Add(-time.Second)},
			wantAct: "", wantKey: "n1", wantState: state.Sending, wantAtt: 1},
		{name: "a stale redelivery meets the claim of a later one", prefs: optedIn, delivered: 2,
			prior:   &state.Record{State: state.Sending, Attempts: 2, StreamSeq: 7, Delivery: 3, UpdatedAt: testNow.Add(-time.Second)},
			wantAct: "", wantKey: "n1", wantState: state.Sending, wantAtt: 2},
		{name: "the backend panics: a temporary failure, recorded under the id", prefs: optedIn, sendErr: errPanic, delivered: 1,
			wantAct: "nak", wantDelay: 30 * time.Second, wantKey: "n1", wantState: state.Retrying, wantAtt: 1},
		{name: "poison: compose panics", prefs: optedIn, mut: func(e map[string]any) { e["task"] = map[string]any{"id": "t1", "title": "PANIC"} },
			wantAct: "term", wantKey: "n1", wantState: state.Invalid},
	}
	for _, tc := range cases {
		for _, mode := range []string{"Handle+Apply", "runner stages", "runner stages, synchronous writes"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				subject, data := testEvent(tc.mut)
				if tc.subject != "" {
					subject = tc.subject
				}
				if tc.raw != nil {
					data = tc.raw
				}
				if tc.delivered == 0 {
					tc.delivered = 1
				}
				msg := &fakeMsg{subject: subject, data: data, seq: 7, delivered: tc.delivered}
				ledger := newMemLedger()
				if tc.prior != nil {
					_ = ledger.Put(context.Background(), "n1", *tc.prior)
				}
				sender := &fakeSender{err: tc.sendErr}
				cfg := Config{Configured: true, Policy: Policy{StaleAfter: tc.stale}}
				if tc.configured != nil {
					cfg.Configured = *tc.configured
				}
				prefs := tc.prefs
				if prefs == nil {
					prefs = memPrefs{}
				}
				var out Decision
				clock := WithClock(func() time.Time { return testNow })
				switch mode {
				case "Handle+Apply":
					h := NewHandler(cfg, sender, prefs, ledger, simpleCompose, clock)
					out = h.Handle(context.Background(), msg)
					if err := h.Apply(msg, out); err != nil {
						t.Fatalf("apply: %v", err)
					}
				case "runner stages":
					runStages(NewHandler(cfg, sender, prefs, ledger, simpleCompose, clock), msg)
					out.Reason = msg.reason
				default:
					runStages(NewHandler(cfg, sender, prefs, syncLedger{ledger}, simpleCompose, clock), msg)
					out.Reason = msg.reason
				}
				if got := msg.last(); got != tc.wantAct {
					t.Errorf("action = %q, want %q (reason %q)", got, tc.wantAct, out.Reason)
				}
				if tc.wantAct == "nak" && msg.delay != tc.wantDelay {
					t.Errorf("nak delay = %s, want %s", msg.delay, tc.wantDelay)
				}
				if tc.wantAct == "term" && msg.reason == "" {
					t.Errorf("term without a reason")
				}
				rec, ok := ledger.get(tc.wantKey)
				if tc.wantState == "" {
					if ok {
						t.Errorf("unexpected record under %s: %+v", tc.wantKey, rec)
					}
				} else {
					if !ok {
						t.Fatalf("no record under %s", tc.wantKey)
					}
					if rec.State != tc.wantState {
						t.Errorf("state = %q, want %q (error %q)", rec.State, tc.wantState, rec.Error)
					}
					if rec.Attempts != tc.wantAtt {
						t.Errorf("attempts = %d, want %d", rec.Attempts, tc.wantAtt)
					}
					if rec.State == state.Invalid && rec.Error == "" {
						t.Errorf("invalid record without a reason")
					}
					if rec.State == state.InboxOnly && tc.sendErr != nil && !strings.Contains(rec.Error, fmt.Sprint(tc.sendErr.(*transport.Error).Code)) {
						t.Errorf("inbox_only error %q does not carry the SMTP code", rec.Error)
					}
					if tc.wantMails > 0 && rec.MessageID != "<n.n1@example.com>" {
						t.Errorf("sent record message_id = %q", rec.MessageID)
					}
				}
				if tc.prior != nil && tc.wantKey != "n1" {
					if prior, _ := ledger.get("n1"); prior.State != tc.prior.State {
						t.Errorf("prior state overwritten: %q", prior.State)
					}
				}
				if len(sender.sent) != tc.wantMails {
					t.Errorf("mails sent = %d, want %d", len(sender.sent), tc.wantMails)
				}
			})
		}
	}
}

type fakeStream map[uint64]*jetstream.RawStreamMsg

func (f fakeStream) GetMsg(_ context.Context, seq uint64, _ ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	if m, ok := f[seq]; ok {
		return m, nil
	}
	return nil, jetstream.ErrMsgNotFound
}

func TestAdvisory(t *testing.T) {
	subject, data := testEvent(nil)
	stream := fakeStream{5: {Subject: subject, Data: data, Sequence: 5}}
	adv := []byte(`{"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"NOTIFY","consumer":"mailrelay","stream_seq":5,"deliveries":3}`)
	cases := []struct {
		name      string
		prior     *state.Record
		data      []byte
		wantState state.State
		wantAtt   int
	}{
		{name: "no record: inbox_only", wantState: state.InboxOnly, wantAtt: 3},
		{name: "sending (relay died mid-attempt): inbox_only, attempts kept", prior: &state.Record{State: state.Sending, Attempts: 3},
			wantState: state.InboxOnly, wantAtt: 3},
		{name: "retrying: inbox_only", prior: &state.Record{State: state.Retrying, Attempts: 2, Error: "451"}, wantState: state.InboxOnly, wantAtt: 2},
		{name: "sent stays sent", prior: &state.Record{State: state.Sent, Attempts: 1}, wantState: state.Sent, wantAtt: 1},
		{name: "opted out stays", prior: &state.Record{State: state.SkippedOptedOut}, wantState: state.SkippedOptedOut},
		{name: "garbage advisory ignored", data: []byte("nope"), wantState: ""},
		{name: "message gone from stream", data: []byte(`{"stream_seq":99,"deliveries":3}`), wantState: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ledger := newMemLedger()
			if tc.prior != nil {
				_ = ledger.Put(context.Background(), "n1", *tc.prior)
			}
			h := NewHandler(Config{Configured: true}, &fakeSender{}, memPrefs{}, ledger, simpleCompose, WithClock(func() time.Time { return testNow }))
			a := NewAdvisories(nil, stream, h)
			d := adv
			if tc.data != nil {
				d = tc.data
			}
			if err := a.Handle(context.Background(), d); err != nil {
				t.Fatal(err)
			}
			rec, ok := ledger.get("n1")
			if tc.wantState == "" {
				if ok {
					t.Fatalf("unexpected record %+v", rec)
				}
				return
			}
			if rec.State != tc.wantState || rec.Attempts != tc.wantAtt {
				t.Errorf("got %s/%d, want %s/%d", rec.State, rec.Attempts, tc.wantState, tc.wantAtt)
			}
		})
	}
}
