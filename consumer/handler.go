// Package consumer turns deliveries of the NOTIFY stream into mail.
//
// Decide (decide.go) is the pure decision: from what is known of a delivery
// (its event or why it is invalid, its ledger record, the recipient's
// preference, its delivery number and age, the clock, the policy) to what
// to write and what to do with it. The Handler gathers those facts, asking
// Decide what it needs next, and does the claim and the send. The actor
// (act.go) is the one place that acts: it writes the ledger, then acks,
// naks, terms or leaves the delivery. The Runner only moves deliveries
// between stages (prepare, send, finish) with bounded concurrency.
// Advisories turns max-deliveries advisories into inbox_only records.
//
// See docs/delivery.md for the guarantees and docs/architecture.md for the
// path of one delivery.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Sender hands one composed message to the mail backend. It returns nil only
// when the backend accepted the message. A *transport.Error with Temporary
// false is a permanent rejection; every other error is temporary.
type Sender interface {
	Send(ctx context.Context, m *compose.Message) error
}

// Prefs answers whether a user wants email for a notification type, and
// when the stored preference is broken, why it reads as off.
type Prefs interface {
	Email(ctx context.Context, user string, t event.Type) (prefs.Answer, error)
}

// Ledger is the per-notification state store (notify_email_state). Writes
// can be started without waiting for them, so that the writes of many
// deliveries share round trips; a write that cannot be started that way
// (an error from PutAsync or CreateAsync) is done synchronously instead.
type Ledger interface {
	Get(ctx context.Context, key string) (state.Record, uint64, error)
	Put(ctx context.Context, key string, rec state.Record) error
	// Swap writes rec only if key is still at revision rev (0: has no
	// record) and returns the new revision, or state.ErrConflict.
	Swap(ctx context.Context, key string, rec state.Record, rev uint64) (uint64, error)
	// SwapAsync starts Swap; the returned function waits and gives what
	// Swap would.
	SwapAsync(ctx context.Context, key string, rec state.Record, rev uint64) func() (uint64, error)
	// PutAsync starts an unconditional write.
	PutAsync(key string, rec state.Record) (state.Pending, error)
	// CreateAsync starts a write that fails when key has a record (or a
	// delete marker); Swap with revision 0 tells those apart.
	CreateAsync(key string, rec state.Record) (state.Pending, error)
}

// Suppressions is the list of addresses mail is not sent to (a permanent
// rejection of the recipient puts the address there).
type Suppressions interface {
	Suppressed(ctx context.Context, address string) (bool, error)
	Suppress(ctx context.Context, address, reason, code string) error
}

type noSuppressions struct{}

func (noSuppressions) Suppressed(context.Context, string) (bool, error)       { return false, nil }
func (noSuppressions) Suppress(context.Context, string, string, string) error { return nil }

// Healer is told when a read or a write of the relay's streams and buckets
// fails (a lost connection, a bucket deleted at runtime) and checks them,
// provisioning again what is missing; Wait blocks until the relay is whole
// again or ctx ends. A delivery that meets such a failure waits for the
// heal, kept from redelivery, instead of spending one of its deliveries.
type Healer interface {
	Trouble(err error)
	Wait(ctx context.Context) error
}

// errNoHealer: without a Healer, a failed read is decided at once.
var errNoHealer = errors.New("no healer")

type nopHealer struct{}

func (nopHealer) Trouble(error)              {}
func (nopHealer) Wait(context.Context) error { return errNoHealer }

// ComposeFunc composes the mail of an event at a given time, for a
// recipient whose preferences give o (the time zone the mail's times are
// shown in); compose.Composer's ComposeFor is one.
type ComposeFunc func(ev *event.Event, now time.Time, o compose.Options) (*compose.Message, error)

// Limiter paces sends (MAILRELAY_MAX_RATE).
type Limiter interface {
	Wait(ctx context.Context) error
}

// Policy is the delivery policy: retry delays, AckWait, staleness, claim
// lifetime, slow-down pauses. Zero fields take the defaults, except
// StaleAfter and SendTimeout, where 0 means "none".
type Policy = policy.Policy

// DefaultPolicy is the policy of an operator who sets no variable.
func DefaultPolicy() Policy { return policy.Default() }

// Config tunes the handler.
type Config struct {
	Policy Policy
	// MaxEventBytes is the event size limit (0: event.DefaultMaxBytes).
	MaxEventBytes int
	// Configured is false when no transport is configured (smtp without host).
	Configured bool
}

// Handler decides what becomes of each delivery and does its claim and
// send. It is safe for concurrent use.
type Handler struct {
	cfg      Config
	policy   Policy
	sender   Sender
	prefs    Prefs
	ledger   Ledger
	compose  ComposeFunc
	now      func() time.Time
	log      *zap.Logger
	obs      Observer
	limiter  Limiter
	throttle *Throttle
	healer   Healer
	supp     Suppressions
	holder   Holder
	seen     Seen
	batch    BatchComposeFunc
	act      *actor
	// brokenPrefs says a user's broken preferences once in a while, not
	// at every notification.
	brokenPrefs onceEvery
}

// onceEvery lets a key through at most once per period. It forgets
// everything when it holds too many keys: a burst of distinct broken
// preferences then logs a few lines more, never holds unbounded memory.
type onceEvery struct {
	mu   sync.Mutex
	last map[string]time.Time
}

const (
	brokenPrefsEvery = 10 * time.Minute
	brokenPrefsKeys  = 10000
)

func (o *onceEvery) first(key string, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if t, ok := o.last[key]; ok && now.Sub(t) < brokenPrefsEvery {
		return false
	}
	if o.last == nil || len(o.last) >= brokenPrefsKeys {
		o.last = make(map[string]time.Time)
	}
	o.last[key] = now
	return true
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

// WithSuppressions looks addresses up in the suppression list and adds
// those a server rejected for good.
func WithSuppressions(s Suppressions) Option { return func(h *Handler) { h.supp = s } }

// WithHealer lets deliveries that meet a lost connection or a missing
// bucket wait for the relay to heal.
func WithHealer(hl Healer) Option { return func(h *Handler) { h.healer = hl } }

// WithHolding lets notifications wait in NOTIFY_HELD for a batching
// window, quiet hours or the seen delay (§9.3): holder stores them, seen
// answers notify_seen, batch composes a window's mail. Without it nothing
// is held (and the Flusher cannot run).
func WithHolding(holder Holder, seen Seen, batch BatchComposeFunc) Option {
	return func(h *Handler) { h.holder, h.seen, h.batch = holder, seen, batch }
}

// WithThrottle replaces the default back-pressure (the policy's slow-down pauses).
func WithThrottle(t *Throttle) Option { return func(h *Handler) { h.throttle = t } }

// NewHandler returns a Handler. sender may be nil when cfg.Configured is false.
func NewHandler(cfg Config, sender Sender, prefs Prefs, ledger Ledger, compose ComposeFunc, opts ...Option) *Handler {
	cfg.Policy = cfg.Policy.WithDefaults()
	h := &Handler{cfg: cfg, policy: cfg.Policy, sender: sender, prefs: prefs, ledger: ledger, compose: compose,
		now: time.Now, log: zap.NewNop(), obs: nopObserver{}, healer: nopHealer{}, supp: noSuppressions{}}
	for _, o := range opts {
		o(h)
	}
	if h.throttle == nil {
		h.throttle = NewThrottle(h.policy.SlowDownMin, h.policy.SlowDownMax)
	}
	h.act = &actor{ledger: ledger, policy: h.policy, log: h.log, obs: h.obs, healer: h.healer, supp: h.supp}
	return h
}

// Ref names a delivery in logs and metrics.
type Ref struct {
	EventID   string // "" when the event has no usable id
	Type      string // "" when the event has no valid type
	StreamSeq uint64
	Delivery  int
}

// job is one delivery on its way through the stages: what is known of it,
// and the work under way.
type job struct {
	msg     *delivery
	f       Facts
	mail    *compose.Message
	claim   func() (uint64, error) // the claim's write, once started
	started time.Time              // when this relay began preparing it (the process's clock)
	healBy  time.Time              // how long it may still wait for the relay to heal
}

// ref names j's delivery.
func (j *job) ref() Ref {
	r := Ref{StreamSeq: j.f.Seq, Delivery: j.f.Delivery}
	if ev := j.f.Event; ev != nil {
		if event.ValidID(ev.ID) {
			r.EventID = ev.ID
		}
		if ev.Type.Valid() {
			r.Type = string(ev.Type)
		}
	}
	return r
}

// newJob reads the delivery's metadata and decodes its event.
func (h *Handler) newJob(msg *delivery) *job {
	j := &job{msg: msg, started: time.Now()}
	j.f.Now, j.f.Configured, j.f.CanHold = h.now(), h.cfg.Configured, h.holder != nil
	meta, err := msg.Metadata()
	if err != nil {
		j.f.NotDelivery = err
		return j
	}
	j.f.Seq, j.f.Delivery = meta.Sequence.Stream, int(meta.NumDelivered)
	j.f.Event, j.f.Invalid = event.Decode(msg.Subject(), msg.Data(), h.cfg.MaxEventBytes)
	return j
}

// prepare decides j up to its claim and starts the claim's write. It
// returns the final decision and false when the delivery is not to be
// mailed, else true with the claim under way. A panic (a poison message
// that breaks a template, say) is contained: the event is invalid.
func (h *Handler) prepare(ctx context.Context, j *job) (d Decision, claimed bool) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("panic while handling a notification", zap.Uint64("stream_seq", j.f.Seq), zap.Any("panic", p), zap.Stack("stack"))
			j.f.Invalid = fmt.Errorf("%w: processing panicked: %v", event.ErrInvalid, p)
			d, claimed = Decide(j.f, h.policy), false
		}
	}()
	d = h.advance(ctx, j, false)
	return d, d.Step == Claim
}

// advance decides j again and again, supplying the facts Decide asks for,
// until it asks for the claim or the send, or is final. A claim is
// started (not waited for) before it returns. The check of a claim held
// long is made only with check set, right before the send: it must come
// after any wait for a send slot.
func (h *Handler) advance(ctx context.Context, j *job, check bool) Decision {
	for {
		j.f.Stopping = ctx.Err() != nil
		j.f.Held = time.Since(j.started)
		d := Decide(j.f, h.policy)
		switch d.Step {
		case ReadLedger:
			var r state.Record
			var rev uint64
			err := h.healing(ctx, j, "ledger_read", func() (err error) {
				r, rev, err = h.ledger.Get(ctx, j.f.Event.ID)
				if errors.Is(err, state.ErrNotFound) {
					err = nil
				}
				return err
			})
			j.f.Ledger = LedgerFacts{Read: true, Record: r, Rev: rev, Err: err}
		case ReadPrefs:
			var a prefs.Answer
			err := h.healing(ctx, j, "prefs_read", func() (err error) {
				a, err = h.prefs.Email(ctx, j.f.Event.Recipient.ID, j.f.Event.Type)
				return err
			})
			j.f.Prefs = PrefsFacts{Read: true, On: a.On, Problem: a.Problem, TimeZone: a.TimeZone,
				Quiet: a.Quiet, Batch: a.Batch, Err: err}
			if a.Ignored != "" && h.brokenPrefs.first(j.f.Event.Recipient.ID+"\x00ignored", time.Now()) {
				h.log.Warn("preferences: an optional field is ignored", zap.String("user", j.f.Event.Recipient.ID),
					zap.String("problem", a.Ignored))
			}
			if a.Problem != "" {
				h.obs.PrefsInvalid()
				if h.brokenPrefs.first(j.f.Event.Recipient.ID, time.Now()) {
					h.log.Warn("preferences not valid: read as off", zap.String("user", j.f.Event.Recipient.ID),
						zap.String("problem", a.Problem))
				}
			}
		case ReadSuppression:
			var on bool
			err := h.healing(ctx, j, "suppression_read", func() (err error) {
				on, err = h.supp.Suppressed(ctx, j.f.Event.Recipient.Email)
				return err
			})
			j.f.Suppression = SuppressionFacts{Read: true, Suppressed: on, Err: err}
		case Compose:
			m, err := h.compose(j.f.Event, j.f.Now, compose.Options{TimeZone: j.f.Prefs.TimeZone})
			if err != nil {
				j.f.Invalid = fmt.Errorf("%w: compose: %v", event.ErrInvalid, err)
				continue
			}
			j.mail, j.f.MessageID = m, m.MessageID
		case Hold:
			h.hold(ctx, j, d.Hold)
		case CheckClaim:
			if !check {
				return d
			}
			_, rev, err := h.ledger.Get(ctx, j.f.Event.ID)
			j.f.Claim.Checked, j.f.Claim.CurrentRev, j.f.Claim.CheckErr = true, rev, err
		case Claim:
			w := d.Write
			j.claim = h.ledger.SwapAsync(ctx, w.Key, w.Record, w.Rev)
			return d
		default:
			return d
		}
	}
}

// hold stores j's notification in NOTIFY_HELD, then writes its deferred
// record with a compare-and-set at the revision read (none: it must have
// no record). Stored first: a crash before the record is written leaves a
// delivery that comes back and holds it again (the flush keeps one copy of
// each notification). A conflict means another writer got there first (a
// flush that already sent it, say): the record is read and the rules
// applied again.
func (h *Handler) hold(ctx context.Context, j *job, req *HoldRequest) {
	ev := j.f.Event
	var until time.Time
	err := h.healing(ctx, j, "hold", func() (err error) {
		until, err = h.holder.Hold(ctx, ev.Recipient.ID, hold.Item{Subject: j.msg.Subject(), Data: j.msg.Data(),
			StreamSeq: j.f.Seq}, req.WindowEnd, req.NotBefore)
		return err
	})
	if err != nil {
		j.f.Hold.Err = err
		return
	}
	_, err = h.ledger.Swap(ctx, ev.ID, deferredRecord(j.f, until), j.f.Ledger.Rev)
	switch {
	case err == nil:
		j.f.Hold = HoldFacts{Done: true, Until: until}
	case errors.Is(err, state.ErrConflict):
		j.f.Claim.Conflicts++
		j.f.Ledger = LedgerFacts{}
	default:
		h.obs.Failed("ledger_write")
		h.healer.Trouble(err)
		j.f.Hold.Err = err
	}
}

// healing runs read, and while it fails, reports the failure to the
// healer and waits for the heal; then it tries again. It returns the last
// failure when the heal did not come in time. Failures are counted.
func (h *Handler) healing(ctx context.Context, j *job, op string, read func() error) error {
	for {
		err := read()
		if err == nil || !h.healed(ctx, j, op, err) {
			return err
		}
	}
}

// healed reports a failure of op to the healer and waits for the relay to
// heal, within policy.HealWait for the whole delivery (it is kept from
// redelivery meanwhile), with a pause between tries. It reports whether
// to try again.
func (h *Handler) healed(ctx context.Context, j *job, op string, err error) bool {
	h.obs.Failed(op)
	if ctx.Err() != nil {
		return false
	}
	if j.healBy.IsZero() {
		j.healBy = time.Now().Add(policy.HealWait)
	}
	h.healer.Trouble(err)
	wctx, cancel := context.WithDeadline(ctx, j.healBy)
	defer cancel()
	if h.healer.Wait(wctx) != nil {
		return false
	}
	select { // a failure the heal did not cure is not retried in a tight loop
	case <-time.After(250 * time.Millisecond):
		return true
	case <-wctx.Done():
		return false
	}
}

// claimed waits for j's claim write and decides on: it returns the final
// decision and false when the delivery is not to be sent after all (a
// settled record, a later delivery's claim, a conflict that persists),
// else true once the claim is stored. A conflict means another writer got
// there first: the record is read and the rules applied again.
func (h *Handler) claimed(ctx context.Context, j *job) (Decision, bool) {
	for {
		rev, err := j.claim()
		j.claim = nil
		switch {
		case err == nil:
			j.f.Claim.Stored, j.f.Claim.Rev = true, rev
		case errors.Is(err, state.ErrConflict):
			j.f.Claim.Conflicts++
			j.f.Ledger = LedgerFacts{} // read it again
		case h.healed(ctx, j, "claim_write", err):
			j.f.Ledger = LedgerFacts{} // the bucket may have come back empty
		default:
			j.f.Claim.Err = err
		}
		d := h.advance(ctx, j, false)
		if d.Step != Claim {
			return d, d.Step == Send || d.Step == CheckClaim
		}
	}
}

// deliver sends j's claimed mail, once the claim is known to be still
// its own, and decides what follows from the result.
func (h *Handler) deliver(ctx context.Context, j *job) Decision {
	if d := h.advance(ctx, j, true); d.Step != Send {
		return d
	}
	res := h.sendRecovered(ctx, j.mail, j.f.Event.OccurredAt, zap.Uint64("stream_seq", j.f.Seq))
	j.f.Sent = &res
	return Decide(j.f, h.policy)
}

// Handle decides one delivery, claiming and sending it when the rules say
// so, and returns the final decision without carrying it out (Apply does).
// The Runner does the same work in stages.
func (h *Handler) Handle(ctx context.Context, msg jetstream.Msg) Decision {
	d, _ := h.handle(ctx, held(msg))
	return d
}

func (h *Handler) handle(ctx context.Context, msg *delivery) (Decision, Ref) {
	j := h.newJob(msg)
	d, ok := h.prepare(ctx, j)
	if ok {
		if d, ok = h.claimed(ctx, j); ok {
			d = h.deliver(ctx, j)
		}
	}
	return d, j.ref()
}

// Apply carries d out on msg: the ledger write first (synchronously), then
// the action. ref names the delivery in the log.
func (h *Handler) Apply(msg jetstream.Msg, d Decision) error {
	ref := Ref{}
	if meta, err := msg.Metadata(); err == nil {
		ref.StreamSeq, ref.Delivery = meta.Sequence.Stream, int(meta.NumDelivered)
	}
	if d.Write != nil && d.Write.Key != state.SeqKey(ref.StreamSeq) {
		ref.EventID, ref.Type = d.Write.Key, d.Write.Record.Type
	}
	return h.act.apply(held(msg), ref, d)
}
