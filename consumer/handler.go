// Package consumer turns deliveries of the NOTIFY stream into mail. The
// Handler decides what to do with one delivery (contract §4's rules, in
// order); Apply carries the decision out (ledger write, then ack, nak or
// term); Runner pulls from the durable consumer and runs a bounded number of
// deliveries at once (prepare and claim, send, then write and ack, in three
// stages); Advisories turns max-deliveries advisories into
// inbox_only records.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/transport"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Sender hands one composed message to the mail backend. It returns nil only
// when the backend accepted the message. A *transport.Error with Temporary
// false is a permanent rejection; every other error is temporary.
type Sender interface {
	Send(ctx context.Context, m *compose.Message) error
}

// Prefs answers whether a user wants email for a notification type.
type Prefs interface {
	EmailEnabled(ctx context.Context, user string, t event.Type) (bool, error)
}

// Ledger is the per-notification state store (notify_email_state).
type Ledger interface {
	Get(ctx context.Context, key string) (state.Record, uint64, error)
	Put(ctx context.Context, key string, rec state.Record) error
	Swap(ctx context.Context, key string, rec state.Record, rev uint64) (uint64, error)
}

// AsyncSwapper is a Ledger that can start a compare-and-set write without
// waiting for it; the returned function waits and gives what Swap would.
type AsyncSwapper interface {
	SwapAsync(ctx context.Context, key string, rec state.Record, rev uint64) func() (uint64, error)
}

// ComposeFunc composes the mail of an event at a given time.
type ComposeFunc func(ev *event.Event, now time.Time) (*compose.Message, error)

// Action is what happens to a delivery once its outcome is recorded.
type Action int

// The three ways a delivery ends.
const (
	Ack  Action = iota // done: never delivered again
	Nak                // delivered again after Outcome.Delay
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

// Outcome is the decision for one delivery: the ledger write (if any) and
// the action that follows it.
type Outcome struct {
	Action Action
	Delay  time.Duration // before the next delivery, for Nak
	Reason string        // why: logged, and the term reason

	Key    string        // ledger key; "" when nothing is written
	Record *state.Record // the record to write under Key
	// CreateOnly writes Record only if Key has no record yet. If it has
	// one, Record goes under FallbackKey (an invalid message never
	// overwrites a state), or, without a FallbackKey, nothing is written
	// and the delivery is naked for an immediate redelivery that decides
	// again with the record.
	CreateOnly  bool
	FallbackKey string

	EventID   string
	Type      string
	StreamSeq uint64
	Delivered int
}

// Config tunes the handler.
type Config struct {
	// RetryDelays are the delays before attempt 2 and attempt 3 after a
	// temporary failure; one value serves both. Default 30s, 2m.
	RetryDelays []time.Duration
	// AckWait of the consumer: a claim older than this (plus SendTimeout)
	// belongs to a delivery that died.
	AckWait time.Duration
	// SendTimeout bounds one send to the backend; 0 means none beyond ctx.
	SendTimeout time.Duration
	// StaleAfter: a notification older than this is skipped_stale; 0 disables.
	StaleAfter time.Duration
	// MaxEventBytes is the event size limit (0: event.DefaultMaxBytes).
	MaxEventBytes int
	// Configured is false when no transport is configured (smtp without host).
	Configured bool
	// LedgerRetryDelay is the delay before redelivery when the ledger or
	// the preferences cannot be read. Default 5s.
	LedgerRetryDelay time.Duration
	// SlowDownBudget is how long one delivery keeps waiting out "slow
	// down" answers before it counts as a temporary failure. Default 5m.
	SlowDownBudget time.Duration
}

func (c *Config) defaults() {
	if len(c.RetryDelays) == 0 {
		c.RetryDelays = []time.Duration{30 * time.Second, 2 * time.Minute}
	}
	if c.AckWait <= 0 {
		c.AckWait = 60 * time.Second
	}
	if c.LedgerRetryDelay <= 0 {
		c.LedgerRetryDelay = 5 * time.Second
	}
	if c.SlowDownBudget <= 0 {
		c.SlowDownBudget = 5 * time.Minute
	}
}

// Handler decides what becomes of each delivery. It is safe for concurrent use.
type Handler struct {
	cfg      Config
	sender   Sender
	prefs    Prefs
	ledger   Ledger
	compose  ComposeFunc
	now      func() time.Time
	log      *zap.Logger
	obs      Observer
	limiter  Limiter
	throttle *Throttle
}

// Limiter paces sends (MAILRELAY_MAX_RATE and back-pressure).
type Limiter interface {
	Wait(ctx context.Context) error
}

// Option configures a Handler.
type Option func(*Handler)

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(h *Handler) { h.now = now } }

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(h *Handler) { h.log = l } }

// WithObserver receives outcomes and send timings (metrics).
func WithObserver(o Observer) Option { return func(h *Handler) { h.obs = o } }

// WithLimiter paces sends.
func WithLimiter(l Limiter) Option { return func(h *Handler) { h.limiter = l } }

// WithThrottle replaces the default back-pressure (pauses from 1s to 1m).
func WithThrottle(t *Throttle) Option { return func(h *Handler) { h.throttle = t } }

// NewHandler returns a Handler. sender may be nil when cfg.Configured is false.
func NewHandler(cfg Config, sender Sender, prefs Prefs, ledger Ledger, compose ComposeFunc, opts ...Option) *Handler {
	cfg.defaults()
	h := &Handler{cfg: cfg, sender: sender, prefs: prefs, ledger: ledger, compose: compose,
		now: time.Now, log: zap.NewNop(), obs: nopObserver{}}
	for _, o := range opts {
		o(h)
	}
	if h.throttle == nil {
		h.throttle = NewThrottle(time.Second, time.Minute)
	}
	return h
}

// retryDelay is the delay after a temporary failure of attempt n (1-based).
func (h *Handler) retryDelay(n int) time.Duration {
	d := h.cfg.RetryDelays
	if n-1 < len(d) {
		return d[max(n-1, 0)]
	}
	return d[len(d)-1]
}

// claimTTL is how long a "sending" claim of another delivery is respected:
// the longest a live delivery can take (waiting out slow-down pauses, then
// sending), plus AckWait. An older claim is taken over.
func (h *Handler) claimTTL() time.Duration {
	return h.cfg.AckWait + h.cfg.SlowDownBudget + h.cfg.SendTimeout
}

// Handle makes the decision for one delivery. The only side effects before
// the returned Outcome is applied are the claim written just before a send
// and the send itself.
func (h *Handler) Handle(ctx context.Context, msg jetstream.Msg) Outcome {
	out, j := h.prepare(ctx, msg)
	if j == nil {
		return out
	}
	if out, ok := h.claim(ctx, j); !ok {
		return out
	}
	return h.deliver(ctx, j)
}

// sendJob is a delivery on its way to a send: what prepare learned, and
// the claim.
type sendJob struct {
	ev   *event.Event
	m    *compose.Message
	base Outcome
	seq  uint64
	n    int
	now  time.Time

	rec    state.Record // the ledger record as last read (zero if none)
	rev    uint64
	loaded bool
	load   func() error // reads rec, rev

	next     state.Record           // the claim being written
	pending  func() (uint64, error) // the claim's write, once started
	claimRev uint64                 // the claim's revision, once stored
	started  time.Time              // when prepare began (the process's clock)
}

// prepare applies the rules up to the send: it returns the final outcome
// and a nil job when the delivery is not to be mailed, else the job (with
// the mail composed) that claim and deliver take on.
func (h *Handler) prepare(ctx context.Context, msg jetstream.Msg) (out Outcome, job *sendJob) {
	meta, err := msg.Metadata()
	if err != nil {
		return Outcome{Action: Term, Reason: "not a JetStream delivery: " + err.Error()}, nil
	}
	seq, n := meta.Sequence.Stream, int(meta.NumDelivered)
	var ev *event.Event
	defer func() {
		// A poison message (one that panics composing, say) is contained:
		// recorded invalid, terminated, and the relay keeps running.
		if p := recover(); p != nil {
			h.log.Error("panic while handling a notification", zap.Uint64("stream_seq", seq), zap.Any("panic", p), zap.Stack("stack"))
			out, job = h.invalid(ev, seq, n, fmt.Errorf("%w: processing panicked: %v", event.ErrInvalid, p)), nil
		}
	}()

	ev, err = event.Decode(msg.Subject(), msg.Data(), h.cfg.MaxEventBytes)
	if err != nil {
		return h.invalid(ev, seq, n, err), nil
	}
	j := &sendJob{ev: ev, seq: seq, n: n, started: time.Now(),
		base: Outcome{EventID: ev.ID, Type: string(ev.Type), StreamSeq: seq, Delivered: n, Key: ev.ID}}
	base := j.base
	if ctx.Err() != nil { // past the shutdown timeout: release it untouched
		return base.later(0, reasonShutdown), nil
	}

	// The ledger is read up front only for a redelivery. A first delivery
	// almost never has a record, so on the path that sends, the claim's
	// compare-and-set ("create only if absent") doubles as the read: a
	// conflict means there is a record, and it is read then. Every rule
	// still applies in the contract's order.
	j.load = func() error {
		r, v, err := h.ledger.Get(ctx, ev.ID)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return err
		}
		j.rec, j.rev, j.loaded = r, v, true
		return nil
	}
	if n > 1 {
		if err := j.load(); err != nil {
			return base.later(h.cfg.LedgerRetryDelay, "ledger unavailable: "+err.Error()), nil
		}
		if o, ok := j.done(); ok {
			return o, nil
		}
	}

	j.now = h.now()
	skip, reason, err := h.skip(ctx, ev, j.now)
	if err != nil {
		return base.later(h.cfg.LedgerRetryDelay, "preferences unavailable: "+err.Error()), nil
	}
	if skip != "" {
		o := base.with(Ack, reason)
		o.Record = &state.Record{State: skip, Type: string(ev.Type), Recipient: ev.Recipient.ID, Attempts: j.rec.Attempts,
			StreamSeq: seq, UpdatedAt: j.now, MessageID: j.rec.MessageID}
		// A first delivery has not read the ledger: its skip record is
		// written only if the id has none ("create"), which doubles as the
		// read. On a conflict nothing is written and the delivery comes
		// back at once, to be decided with the record (the rules read the
		// ledger first on a redelivery).
		o.CreateOnly = !j.loaded
		return o, nil
	}

	j.m, err = h.compose(ev, j.now)
	if err != nil {
		return h.invalid(ev, seq, n, fmt.Errorf("%w: compose: %v", event.ErrInvalid, err)), nil
	}
	return Outcome{}, j
}

// done is the outcome when the record read says the notification is settled.
func (j *sendJob) done() (Outcome, bool) {
	if j.rec.State.Done() {
		return j.base.settle(Ack, "already "+string(j.rec.State)), true
	}
	return Outcome{}, false
}

// startClaim runs the checks before the claim and starts its write without
// waiting for it (asynchronously when the ledger can). It returns the final
// outcome and false when the delivery is not to be sent after all.
func (h *Handler) startClaim(ctx context.Context, j *sendJob) (Outcome, bool) {
	if ctx.Err() != nil {
		return j.base.later(0, reasonShutdown), false
	}
	if j.loaded {
		if o, ok := j.done(); ok {
			return o, false
		}
		if j.rec.State == state.Sending && j.rec.StreamSeq == j.seq && j.rec.Delivery > j.n {
			// A later delivery of this very message claimed it: this one
			// is stale (it waited past AckWait, say, and JetStream
			// redelivered the message elsewhere). The later one owns it.
			return j.base.settle(Leave, "a later delivery of this message owns it"), false
		}
		if j.rec.State == state.Sending && j.rec.StreamSeq != j.seq && j.now.Sub(j.rec.UpdatedAt) < h.claimTTL() {
			// Another copy of this notification (published twice under
			// different Nats-Msg-Ids) is being sent right now. That copy
			// stays unacked until its outcome is recorded, and its own
			// redeliveries finish the job: this one is a duplicate.
			return j.base.settle(Ack, "duplicate: another copy of this notification is being sent"), false
		}
	}
	j.next = state.Record{State: state.Sending, Type: string(j.ev.Type), Recipient: j.ev.Recipient.ID,
		Attempts: j.rec.Attempts + 1, MessageID: j.m.MessageID, Error: j.rec.Error, StreamSeq: j.seq, Delivery: j.n,
		UpdatedAt: j.now}
	if as, ok := h.ledger.(AsyncSwapper); ok {
		j.pending = as.SwapAsync(ctx, j.ev.ID, j.next, j.rev)
	} else {
		key, next, rev := j.ev.ID, j.next, j.rev
		j.pending = func() (uint64, error) { return h.ledger.Swap(ctx, key, next, rev) }
	}
	return Outcome{}, true
}

// claim writes the "sending" claim (or waits for the write startClaim
// began). A conflict means another writer got there first: the record is
// read and the checks run again. It returns the final outcome and false
// when the delivery is not to be sent.
func (h *Handler) claim(ctx context.Context, j *sendJob) (Outcome, bool) {
	for conflicts := 0; ; conflicts++ {
		if j.pending == nil {
			if o, ok := h.startClaim(ctx, j); !ok {
				return o, false
			}
		}
		rev, err := j.pending()
		j.pending = nil
		if err == nil {
			j.claimRev = rev
			return Outcome{}, true
		}
		if ctx.Err() != nil {
			return j.base.later(0, reasonShutdown), false
		}
		if !errors.Is(err, state.ErrConflict) {
			return j.base.later(h.cfg.LedgerRetryDelay, "ledger unavailable: "+err.Error()), false
		}
		if conflicts == 2 {
			return j.base.later(h.retryDelay(1), "another delivery of this notification keeps changing its state"), false
		}
		// Another writer got there first: read what it wrote and apply
		// the rules again (a settled state, a copy being sent, a later
		// delivery of this message).
		if err := j.load(); err != nil {
			return j.base.later(h.cfg.LedgerRetryDelay, "ledger unavailable: "+err.Error()), false
		}
	}
}

// deliver sends the claimed mail and decides what follows from the result.
func (h *Handler) deliver(ctx context.Context, j *sendJob) (out Outcome) {
	if o, ok := h.stillOwned(ctx, j); !ok {
		return o
	}
	next := j.next
	err := h.sendRecovered(ctx, j)
	why := failure(err)
	out = j.base
	out.Record = &next
	n := j.n
	switch {
	case errors.Is(err, errNotTried):
		// Shutting down before the mail went to the server: released at
		// once, and the claim's attempt is taken back.
		next.State, next.Attempts = state.Retrying, j.rec.Attempts
		next.Error = j.rec.Error
		out.Action, out.Reason = Nak, reasonShutdown
	case err == nil:
		next.State, next.Error = state.Sent, ""
		out.Action, out.Reason = Ack, "sent"
	case errors.Is(err, errStale):
		// It went stale waiting (slow-down pauses): no attempt was made.
		next.State, next.Error, next.Attempts, next.MessageID = state.SkippedStale, "", j.rec.Attempts, j.rec.MessageID
		next.UpdatedAt = h.now()
		out.Action, out.Reason = Ack, h.staleReason()
	case ctx.Err() != nil:
		// Shutting down mid-send: the attempt counts, the message comes back at once.
		next.State, next.Error = state.Retrying, "interrupted by shutdown: "+why
		out.Action, out.Reason = Nak, "shutdown"
	case transport.IsPermanent(err):
		next.State, next.Error = state.InboxOnly, why
		out.Action, out.Reason = Term, "permanent failure: "+why
	case n >= provision.MaxDeliver:
		next.State, next.Error = state.InboxOnly, why
		out.Action, out.Reason = Term, fmt.Sprintf("attempts exhausted (%d): %s", n, why)
	default:
		next.State, next.Error = state.Retrying, why
		out.Action, out.Delay, out.Reason = Nak, h.retryDelay(n), "temporary failure: "+why
	}
	return out
}

// stillOwned checks, for a delivery held long enough that JetStream may
// have redelivered its message elsewhere (its InProgress lost in a leader
// election, say), that its claim is still the stored record before it
// sends. A delivery held briefly is not checked: that costs no read.
func (h *Handler) stillOwned(ctx context.Context, j *sendJob) (Outcome, bool) {
	if j.claimRev == 0 || time.Since(j.started) < h.cfg.AckWait/3 {
		return Outcome{}, true
	}
	_, rev, err := h.ledger.Get(ctx, j.ev.ID)
	if err != nil || rev == j.claimRev {
		return Outcome{}, true // ours (or unknown: the claim was stored, send as before)
	}
	return j.base.settle(Leave, "its claim was taken over by a later delivery of this message"), false
}

// skip returns the state of the first rule after the ledger's that keeps
// the notification from being mailed (stale, opted out, no address, no
// transport), or "" when it is to be sent. Only reading the preferences fails.
func (h *Handler) skip(ctx context.Context, ev *event.Event, now time.Time) (state.State, string, error) {
	if h.stale(ev, now) {
		return state.SkippedStale, h.staleReason(), nil
	}
	on, err := h.prefs.EmailEnabled(ctx, ev.Recipient.ID, ev.Type)
	if err != nil {
		return "", "", err
	}
	switch {
	case !on:
		return state.SkippedOptedOut, "email is off for this user and type", nil
	case !ev.HasEmail():
		return state.SkippedNoEmail, "recipient has no email address", nil
	case !h.cfg.Configured:
		return state.SkippedNotConfigured, "no mail transport is configured", nil
	}
	return "", "", nil
}

// stale reports whether ev is older than StaleAfter at now (contract:
// "older than MAILRELAY_STALE_AFTER when it would be sent").
func (h *Handler) stale(ev *event.Event, now time.Time) bool {
	return h.cfg.StaleAfter > 0 && now.Sub(ev.OccurredAt) > h.cfg.StaleAfter
}

func (h *Handler) staleReason() string { return fmt.Sprintf("older than %s", h.cfg.StaleAfter) }

// errNotTried: the send was given up (shutdown) before the mail went to
// the backend.
var errNotTried = errors.New("not sent: shutting down")

// errStale: the notification went stale before it could be sent.
var errStale = errors.New("notification went stale before it could be sent")

// failure describes a send error for the ledger and the logs, leading with
// the SMTP reply code when there is one.
func failure(err error) string {
	if err == nil {
		return ""
	}
	text := err.Error()
	var te *transport.Error
	if errors.As(err, &te) && te.Code != 0 {
		code := strconv.Itoa(te.Code)
		if te.Enhanced != "" {
			code += " " + te.Enhanced
		}
		if !strings.Contains(text, code) {
			text = code + " " + text
		}
	}
	return text
}

// sendRecovered is send, with a panic of the backend turned into a
// temporary failure: the event is not at fault, the mail may or may not be
// out, and the outcome is recorded under the id like any other attempt's.
func (h *Handler) sendRecovered(ctx context.Context, j *sendJob) (err error) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("panic while sending a notification", zap.Uint64("stream_seq", j.seq), zap.Any("panic", p), zap.Stack("stack"))
			err = fmt.Errorf("send panicked: %v", p)
		}
	}()
	return h.send(ctx, j.ev, j.m)
}

// send hands m to the backend, waiting out process-wide slow-down pauses
// (within SlowDownBudget) and the rate limit. Staleness is judged again
// before each try, as a pause can outlast StaleAfter's margin: errStale
// means nothing was sent.
func (h *Handler) send(ctx context.Context, ev *event.Event, m *compose.Message) error {
	deadline := time.Now().Add(h.cfg.SlowDownBudget)
	var slowed error // the last slow-down answer
	for {
		// The throttle fails only when ctx ends: before each try, a
		// shutdown gives up, reporting the last slow-down answer when the
		// server was tried, else that nothing went out.
		if err := h.throttle.Wait(ctx); err != nil || ctx.Err() != nil {
			if slowed != nil {
				return slowed
			}
			return errNotTried
		}
		if h.stale(ev, h.now()) {
			return errStale
		}
		err := h.sendOnce(ctx, m)
		if err == nil {
			h.throttle.Reset()
			return nil
		}
		if !IsSlowDown(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		slowed = err
		pause := h.throttle.Trip()
		h.log.Warn("SMTP server asks to slow down: pausing sends", zap.Duration("pause", pause), zap.String("reply", failure(err)))
	}
}

func (h *Handler) sendOnce(ctx context.Context, m *compose.Message) error {
	if h.limiter != nil {
		if err := h.limiter.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return errNotTried
			}
			return err
		}
	}
	if h.cfg.SendTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.cfg.SendTimeout)
		defer cancel()
	}
	start := time.Now()
	err := h.sender.Send(ctx, m)
	h.obs.Sent(time.Since(start), err)
	return err
}

// invalid records a contract violation: under the event id when it is
// usable and has no state yet, else under seq.<n>; then term.
func (h *Handler) invalid(ev *event.Event, seq uint64, n int, err error) Outcome {
	reason := strings.TrimPrefix(err.Error(), event.ErrInvalid.Error()+": ")
	rec := &state.Record{State: state.Invalid, Error: reason, UpdatedAt: h.now(), StreamSeq: seq}
	o := Outcome{Action: Term, Reason: "invalid: " + reason, Record: rec, StreamSeq: seq, Delivered: n,
		Key: state.SeqKey(seq)}
	if ev != nil && event.ValidID(ev.ID) {
		o.EventID, o.Key, o.CreateOnly, o.FallbackKey = ev.ID, ev.ID, true, state.SeqKey(seq)
		if ev.Type.Valid() {
			rec.Type, o.Type = string(ev.Type), string(ev.Type)
		}
		if event.ValidID(ev.Recipient.ID) {
			rec.Recipient = ev.Recipient.ID
		}
	}
	return o
}

func (o Outcome) with(a Action, reason string) Outcome {
	o.Action, o.Reason = a, reason
	return o
}

// later is a nak after d with nothing written.
func (o Outcome) later(d time.Duration, reason string) Outcome {
	o = o.settle(Nak, reason)
	o.Delay = d
	return o
}

// settle is action a with nothing written.
func (o Outcome) settle(a Action, reason string) Outcome {
	o.Key, o.Record = "", nil
	return o.with(a, reason)
}

// reasonShutdown: released at once, before the mail went out, because the
// shutdown timeout ran out.
const reasonShutdown = "shutdown before sending"
