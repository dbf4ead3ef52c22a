// Package policy is the one home of delivery policy: how many times a
// notification is delivered, how long to wait between attempts, how long a
// claim is respected, when a notification is stale, which failures are
// permanent or mean "slow down", and how ledger writes are retried. Every
// default is defined here once; config parses the environment into a
// Policy, provision reads MaxDeliver and AckWait from it, and the consumer
// decides with it.
package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailrelay/mailrelay/internal/transport"
	"github.com/mailrelay/mailrelay/prefs"
)

// MaxDeliver is how many times JetStream delivers one notification (contract
// §2). It is not configurable: the contract fixes it.
const MaxDeliver = 3

// Defaults of the tunable values (each is also the documented default of its
// environment variable; config derives the variable table's defaults from
// Default()).
const (
	DefaultAckWait          = 60 * time.Second
	DefaultStaleAfter       = 24 * time.Hour
	DefaultSlowDownBudget   = 5 * time.Minute
	DefaultSlowDownMin      = time.Second
	DefaultSlowDownMax      = time.Minute
	DefaultLedgerRetryDelay = 5 * time.Second
	DefaultConcurrency      = 8
	DefaultShutdownTimeout  = 25 * time.Second

	// LedgerWriteTimeout bounds one ledger write, synchronous or not.
	LedgerWriteTimeout = 5 * time.Second
	// LedgerWriteTries is how many times a final ledger write is tried
	// before the delivery gives up on it.
	LedgerWriteTries = 3
	// LedgerWriteBackoff is the pause before the second try; the n-th
	// retry waits n times as long.
	LedgerWriteBackoff = 200 * time.Millisecond
	// ClaimConflicts is how many compare-and-set conflicts one delivery
	// meets on its claim before it gives up for a retry delay.
	ClaimConflicts = 3
	// HealWait is how long a delivery that met a lost connection or a
	// missing bucket waits (kept from redelivery) for the relay to heal
	// before it is released, spending one of its deliveries.
	HealWait = time.Minute
)

// DefaultRetryDelays are the delays before attempt 2 and attempt 3.
func DefaultRetryDelays() []time.Duration { return []time.Duration{30 * time.Second, 2 * time.Minute} }

// Policy is the delivery policy of one relay. The zero value is not usable:
// start from Default() and change what the configuration sets.
type Policy struct {
	// RetryDelays are the delays before attempt 2 and attempt 3 after a
	// temporary failure; one value serves both.
	RetryDelays []time.Duration
	// AckWait of the consumer: how long a delivery may go unacknowledged
	// before JetStream redelivers it.
	AckWait time.Duration
	// SendTimeout bounds one send to the backend; 0 means none beyond the
	// caller's context.
	SendTimeout time.Duration
	// StaleAfter: a notification older than this when it would be sent is
	// skipped_stale; 0 disables.
	StaleAfter time.Duration
	// SlowDownBudget is how long one delivery keeps waiting out "slow
	// down" answers before it counts as a temporary failure.
	SlowDownBudget time.Duration
	// SlowDownMin and SlowDownMax bound the process-wide pause after a
	// "slow down" answer; it doubles on each further one.
	SlowDownMin, SlowDownMax time.Duration
	// LedgerRetryDelay is the delay before redelivery when the ledger or
	// the preferences cannot be read, or a ledger write failed for good.
	LedgerRetryDelay time.Duration
	// BatchWindow (MAILRELAY_BATCH_WINDOW) is how long a recipient's first
	// notification waits for others to go out with it as one mail; 0: off
	// (one mail per notification, as in v1). A user's "batch" preference
	// overrides it.
	BatchWindow time.Duration
	// SeenDelay (MAILRELAY_SEEN_DELAY): no mail goes out earlier than this
	// after occurred_at, so that what the recipient saw in the app by then
	// is not mailed; 0: off.
	SeenDelay time.Duration
}

// MaxBatchWindow bounds MAILRELAY_BATCH_WINDOW and MAILRELAY_SEEN_DELAY,
// as it bounds the "batch" preference.
const MaxBatchWindow = prefs.MaxBatchWindow

// Hold says whether a notification that occurred at occurred, decided at
// now, waits before its mail goes out (contract §9.3), and until when at
// the least: window is the batching window in force (the user's, else
// BatchWindow; 0: none), quietEnd the end of the quiet hours now falls in
// (zero: not in quiet hours). notBefore is the notification's own earliest
// time (quiet hours, seen delay); windowEnd adds the window it would open.
// With every setting at its default nothing is held.
func (p Policy) Hold(occurred, now time.Time, window time.Duration, quietEnd time.Time) (windowEnd, notBefore time.Time, held bool) {
	notBefore = now
	if p.SeenDelay > 0 {
		if seen := occurred.Add(p.SeenDelay); seen.After(notBefore) {
			notBefore = seen
		}
	}
	if quietEnd.After(notBefore) {
		notBefore = quietEnd
	}
	windowEnd = notBefore
	if window > 0 && now.Add(window).After(windowEnd) {
		windowEnd = now.Add(window)
	}
	return windowEnd, notBefore, window > 0 || notBefore.After(now)
}

// Default is the policy an operator gets with no variable set.
func Default() Policy {
	return Policy{
		RetryDelays:      DefaultRetryDelays(),
		AckWait:          DefaultAckWait,
		StaleAfter:       DefaultStaleAfter,
		SlowDownBudget:   DefaultSlowDownBudget,
		SlowDownMin:      DefaultSlowDownMin,
		SlowDownMax:      DefaultSlowDownMax,
		LedgerRetryDelay: DefaultLedgerRetryDelay,
	}
}

// WithDefaults fills the zero fields of p from Default(), except
// StaleAfter and SendTimeout, where 0 means "none".
func (p Policy) WithDefaults() Policy {
	d := Default()
	if len(p.RetryDelays) == 0 {
		p.RetryDelays = d.RetryDelays
	}
	for _, f := range []struct{ v, def *time.Duration }{{&p.AckWait, &d.AckWait}, {&p.SlowDownBudget, &d.SlowDownBudget},
		{&p.SlowDownMin, &d.SlowDownMin}, {&p.SlowDownMax, &d.SlowDownMax}, {&p.LedgerRetryDelay, &d.LedgerRetryDelay}} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	return p
}

// Validate reports what makes p unusable, naming the field.
func (p Policy) Validate() error {
	var errs []error
	if len(p.RetryDelays) < 1 || len(p.RetryDelays) > MaxDeliver-1 {
		errs = append(errs, fmt.Errorf("RetryDelays: %d values, want 1 to %d", len(p.RetryDelays), MaxDeliver-1))
	}
	for _, d := range p.RetryDelays {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("RetryDelays: %s is not positive", d))
		}
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"AckWait", p.AckWait}, {"SlowDownBudget", p.SlowDownBudget}, {"SlowDownMin", p.SlowDownMin},
		{"SlowDownMax", p.SlowDownMax}, {"LedgerRetryDelay", p.LedgerRetryDelay}} {
		if f.d <= 0 {
			errs = append(errs, fmt.Errorf("%s: %s is not positive", f.name, f.d))
		}
	}
	if p.StaleAfter < 0 || p.SendTimeout < 0 {
		errs = append(errs, errors.New("StaleAfter and SendTimeout may not be negative"))
	}
	if p.BatchWindow < 0 || p.BatchWindow > MaxBatchWindow || p.SeenDelay < 0 || p.SeenDelay > MaxBatchWindow {
		errs = append(errs, fmt.Errorf("BatchWindow and SeenDelay must be between 0 and %s", MaxBatchWindow))
	}
	return errors.Join(errs...)
}

// RetryDelay is the delay after a temporary failure of attempt n (1-based).
func (p Policy) RetryDelay(n int) time.Duration {
	d := p.RetryDelays
	if len(d) == 0 {
		d = DefaultRetryDelays()
	}
	return d[min(max(n-1, 0), len(d)-1)]
}

// ClaimTTL is how long a "sending" claim of another copy of a notification
// is respected: the longest a live delivery can take (waiting out slow-down
// pauses, then sending), plus AckWait. An older claim belongs to a delivery
// that died and is taken over.
func (p Policy) ClaimTTL() time.Duration { return p.AckWait + p.SlowDownBudget + p.SendTimeout }

// HeldTooLong reports whether a delivery held for d may have been
// redelivered elsewhere (its InProgress lost in a leader election, say), so
// that it must check its claim is still the stored record before it sends.
func (p Policy) HeldTooLong(d time.Duration) bool { return d >= p.AckWait/3 }

// KeepAliveInterval is how often a held delivery says InProgress.
func (p Policy) KeepAliveInterval() time.Duration { return p.AckWait / 3 }

// Stale reports whether a notification that occurred at occurred is older
// than StaleAfter at now (contract §4: "older than MAILRELAY_STALE_AFTER
// when it would be sent").
func (p Policy) Stale(occurred, now time.Time) bool {
	return p.StaleAfter > 0 && now.Sub(occurred) > p.StaleAfter
}

// StaleReason is the reason recorded for a stale notification.
func (p Policy) StaleReason() string { return fmt.Sprintf("older than %s", p.StaleAfter) }

// Permanent reports whether a send failure is one that retrying the same
// message cannot fix: a 5xx rejection of the message during the mail
// transaction, or a message that cannot be rendered (the transport's
// classification, see transport.Error). Every other failure is temporary,
// a dropped connection (no reply code, the mail may or may not be out)
// included.
func Permanent(err error) bool { return transport.IsPermanent(err) }

// SlowDown reports whether err is an SMTP answer that means "slow down":
// 421 (service not available, closing), 454 (temporary failure, often
// throttling), or 451 with an enhanced status 4.7.x (policy: rate limited).
// A slow-down pauses every send of the process and burns no attempt.
func SlowDown(err error) bool {
	var te *transport.Error
	if !errors.As(err, &te) {
		return false
	}
	switch te.Code {
	case 421, 454:
		return true
	case 451:
		return strings.HasPrefix(te.Enhanced, "4.7.")
	}
	return false
}

// RecipientRejected reports whether a permanent failure says the
// recipient's address itself is refused for good, so that later mail to it
// is suppressed (contract §9.2): a 5xx reply to RCPT, or an enhanced status
// 5.1.x (bad destination mailbox) at any step. A 5xx about the message or
// the sender is not: 5.7.x (policy), 5.3.x (size, system), 5.5.x (syntax,
// protocol), 5.1.7 and 5.1.8 (the sender's address).
func RecipientRejected(err error) bool {
	var e *transport.Error
	if !errors.As(err, &e) || e.Temporary || e.Code/100 != 5 {
		return false
	}
	switch enh := e.Enhanced; {
	case enh == "5.1.7" || enh == "5.1.8":
		return false
	case strings.HasPrefix(enh, "5.1."):
		return true
	case e.Step != transport.StepRcpt:
		return false
	case strings.HasPrefix(enh, "5.7.") || strings.HasPrefix(enh, "5.3.") || strings.HasPrefix(enh, "5.5."):
		return false
	}
	return true
}

// LedgerWriteDelay is the pause before try n (0-based) of a ledger write.
func LedgerWriteDelay(try int) time.Duration { return time.Duration(try) * LedgerWriteBackoff }
