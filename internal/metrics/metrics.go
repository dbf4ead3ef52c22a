// Package metrics owns mailrelay's Prometheus metrics: it implements the
// consumer's Observer and polls the durable consumer's figures.
package metrics

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/mailrelay/mailrelay/consumer"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/transport"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the registry and every collector.
type Metrics struct {
	Registry *prometheus.Registry

	notifications  *prometheus.CounterVec
	decisions      *prometheus.CounterVec
	sendSeconds    prometheus.Histogram
	smtpErrors     *prometheus.CounterVec
	inFlight       prometheus.Gauge
	retries        prometheus.Counter
	advisories     *prometheus.CounterVec
	ledgerFailures prometheus.Counter
	readFailures   *prometheus.CounterVec
	prefsInvalid   prometheus.Counter
	suppressed     prometheus.Counter
	ready          *prometheus.GaugeVec
	pending        prometheus.Gauge
	ackPending     prometheus.Gauge
	redelivered    prometheus.Gauge
	deferred       prometheus.Gauge
	deferredRcpts  prometheus.Gauge
	deferredOldest prometheus.Gauge

	mu       sync.Mutex
	lastSend LastSend
	info     ConsumerFigures
	held     Held
}

// Held is what NOTIFY_HELD holds (§9.3), as the last look found it.
type Held struct {
	Notifications int       `json:"notifications"`
	Recipients    int       `json:"recipients"`
	Oldest        time.Time `json:"oldest,omitzero"` // when the oldest held notification was stored
	Error         string    `json:"error,omitempty"`
}

// LastSend is the time and result of the most recent send.
type LastSend struct {
	At     time.Time `json:"at"`
	Result string    `json:"result"`
}

// ConsumerFigures are the durable consumer's live counts. When the last
// poll failed they are zero and Error says why (never figures from before).
type ConsumerFigures struct {
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	Error       string `json:"consumer_error,omitempty"`
}

// New registers every metric on a fresh registry, with build info.
func New(version string) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailrelay_notifications_total",
			Help: "Outcomes stored in notify_email_state, by type and state: one per record written, so a copy or a redelivery that writes nothing is not counted again."}, []string{"type", "state"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailrelay_decisions_total",
			Help: "Deliveries ended, by action (ack, nak, term; leave: a later delivery of the message owns it)."}, []string{"decision"}),
		sendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mailrelay_smtp_send_seconds",
			Help: "Time to hand one message to the mail backend.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		smtpErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailrelay_smtp_errors_total",
			Help: "Failed sends, by class (temporary, permanent) and SMTP code (0: none)."}, []string{"class", "code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mailrelay_in_flight",
			Help: "Notifications being handled now."}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "mailrelay_retries_total",
			Help: "Deliveries released for a later retry."}),
		advisories: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailrelay_advisories_total",
			Help: "Max-deliveries advisories handled, by result."}, []string{"result"}),
		ledgerFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "mailrelay_ledger_write_failures_total",
			Help: "Ledger writes (notify_email_state) that failed after their retries: the delivery was released for a retry, or, after a send, acked with its record left sending."}),
		readFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailrelay_read_failures_total",
			Help: "Reads and writes that failed: op ledger_read, claim_write, ledger_write (notify_email_state), prefs_read (notify_prefs), suppression_read (notify_suppressed) or hold (NOTIFY_HELD). Each is tried again once the relay has healed."}, []string{"op"}),
		prefsInvalid: prometheus.NewCounter(prometheus.CounterOpts{Name: "mailrelay_prefs_invalid_total",
			Help: "Preference lookups that met a stored value that is not valid (read as off; the record's error says why)."}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{Name: "mailrelay_suppressed_total",
			Help: "Addresses the relay put on the suppression list (notify_suppressed) after a permanent rejection of the recipient."}),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mailrelay_ready",
			Help: "1 when the relay can do its work (what /readyz answers), else 0; reason says why not (one series at a time)."}, []string{"reason"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mailrelay_consumer_pending",
			Help: "Messages of NOTIFY not yet delivered to the mailrelay consumer."}),
		ackPending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mailrelay_consumer_ack_pending",
			Help: "Deliveries waiting for an ack."}),
		redelivered: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mailrelay_consumer_redelivered",
			Help: "Deliveries that were redelivered and are not yet acked."}),
		deferred: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mailrelay_deferred",
			Help: "Notifications held in NOTIFY_HELD (state deferred) for a batching window, quiet hours or the seen delay."}),
		deferredRcpts: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mailrelay_deferred_recipients",
			Help: "Recipients with notifications held in NOTIFY_HELD."}),
		deferredOldest: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mailrelay_deferred_oldest_seconds",
			Help: "Age of the oldest notification held in NOTIFY_HELD (0: none)."}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "mailrelay_build_info",
		Help: "Build information.", ConstLabels: prometheus.Labels{"version": version}})
	build.Set(1)
	m.initSeries()
	r.MustRegister(m.notifications, m.decisions, m.sendSeconds, m.smtpErrors, m.inFlight, m.retries,
		m.advisories, m.ledgerFailures, m.readFailures, m.prefsInvalid, m.suppressed, m.ready, m.pending, m.ackPending, m.redelivered,
		m.deferred, m.deferredRcpts, m.deferredOldest, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// initSeries creates the known label combinations at zero, so that every
// family is exported from the start and rate() and absent() work before the
// first event of a kind.
func (m *Metrics) initSeries() {
	for _, t := range event.Types {
		for _, st := range []state.State{state.Sent, state.SkippedOptedOut, state.SkippedNoEmail,
			state.SkippedNotConfigured, state.InboxOnly, state.Invalid, state.SkippedStale, state.SkippedSuppressed,
			state.SkippedSeen, state.SkippedUnchanged} {
			m.notifications.WithLabelValues(string(t), string(st))
		}
	}
	for _, a := range []consumer.Action{consumer.Ack, consumer.Nak, consumer.Term, consumer.Leave} {
		m.decisions.WithLabelValues(a.String())
	}
	for _, class := range []string{"temporary", "permanent"} {
		m.smtpErrors.WithLabelValues(class, "0")
	}
	for _, result := range []string{"inbox_only", "already_final", "gone", "ignored"} {
		m.advisories.WithLabelValues(result)
	}
	for _, op := range []string{"ledger_read", "prefs_read", "suppression_read", "claim_write", "hold", "ledger_write"} {
		m.readFailures.WithLabelValues(op)
	}
	m.SetReady("starting")
}

// Outcome implements consumer.Observer.
func (m *Metrics) Outcome(ref consumer.Ref, d consumer.Decision) {
	m.decisions.WithLabelValues(d.Action.String()).Inc()
	if d.Action == consumer.Nak {
		m.retries.Inc()
	}
}

// Recorded implements consumer.Observer: one count per outcome stored in
// the ledger, so that the counts follow it.
func (m *Metrics) Recorded(typ string, st state.State) {
	if typ == "" {
		typ = "unknown"
	}
	m.notifications.WithLabelValues(typ, string(st)).Inc()
}

// Sent implements consumer.Observer.
func (m *Metrics) Sent(d time.Duration, err error) {
	m.sendSeconds.Observe(d.Seconds())
	result := "ok"
	if err != nil {
		class, code := "temporary", 0
		var te *transport.Error
		if errors.As(err, &te) {
			code = te.Code
			if !te.Temporary {
				class = "permanent"
			}
		}
		m.smtpErrors.WithLabelValues(class, strconv.Itoa(code)).Inc()
		result = class + " failure"
		if code != 0 {
			result += " " + strconv.Itoa(code)
		}
	}
	m.mu.Lock()
	m.lastSend = LastSend{At: time.Now().UTC(), Result: result}
	m.mu.Unlock()
}

// InFlight implements consumer.Observer.
func (m *Metrics) InFlight(delta int) { m.inFlight.Add(float64(delta)) }

// Advisory implements consumer.Observer.
func (m *Metrics) Advisory(result string) { m.advisories.WithLabelValues(result).Inc() }

// Failed implements consumer.Observer.
func (m *Metrics) Failed(op string) { m.readFailures.WithLabelValues(op).Inc() }

// Suppressed implements consumer.Observer.
func (m *Metrics) Suppressed() { m.suppressed.Inc() }

// PrefsInvalid implements consumer.Observer.
func (m *Metrics) PrefsInvalid() { m.prefsInvalid.Inc() }

// SetReady sets mailrelay_ready: reason "" is ready (1), any other reason
// not ready (0). Only the current reason has a series.
func (m *Metrics) SetReady(reason string) {
	m.ready.Reset()
	if reason == "" {
		m.ready.WithLabelValues("").Set(1)
		return
	}
	m.ready.WithLabelValues(reason).Set(0)
}

// LedgerWriteFailed implements consumer.Observer.
func (m *Metrics) LedgerWriteFailed() { m.ledgerFailures.Inc() }

// Last returns the most recent send, zero when none.
func (m *Metrics) Last() LastSend {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastSend
}

// Figures returns the consumer figures last polled.
// SetHeld records what NOTIFY_HELD holds, at now.
func (m *Metrics) SetHeld(h Held, now time.Time) {
	m.deferred.Set(float64(h.Notifications))
	m.deferredRcpts.Set(float64(h.Recipients))
	age := 0.0
	if !h.Oldest.IsZero() {
		age = max(now.Sub(h.Oldest).Seconds(), 0)
	}
	m.deferredOldest.Set(age)
	m.mu.Lock()
	m.held = h
	m.mu.Unlock()
}

// HeldFigures is what SetHeld last recorded.
func (m *Metrics) HeldFigures() Held {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.held
}

func (m *Metrics) Figures() ConsumerFigures {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.info
}

// PollConsumer refreshes the consumer gauges every interval until ctx ends.
func (m *Metrics) PollConsumer(ctx context.Context, c jetstream.Consumer, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, interval)
		info, err := c.Info(ictx)
		cancel()
		var f ConsumerFigures
		if err == nil {
			f = ConsumerFigures{Pending: info.NumPending, AckPending: info.NumAckPending, Redelivered: info.NumRedelivered}
		} else {
			f.Error = err.Error()
		}
		m.pending.Set(float64(f.Pending))
		m.ackPending.Set(float64(f.AckPending))
		m.redelivered.Set(float64(f.Redelivered))
		m.mu.Lock()
		m.info = f
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
