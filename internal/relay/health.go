package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/suppress"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// The sources of unreadiness, in the order /readyz reports them.
const (
	srcNATS      = iota // the connection: connecting, lost, refused
	srcProvision        // the streams, consumers and buckets: being provisioned, missing
	srcConsumer         // the runner: not bound to the durable consumer
	nSources
)

// problem is why the relay cannot do its work: code is a short label for
// the mailrelay_ready metric, text what /readyz and the log say.
type problem struct{ code, text string }

// health is what the relay knows of its own readiness. Each source sets
// its problem (or clears it); /readyz, the mailrelay_ready gauge and the
// log follow the first one. The log says what and why once per change, and
// again only with a growing pause while the state lasts.
type health struct {
	log      *zap.Logger
	setGauge func(reason string)
	probe    func() problem // polled: the consumer source

	mu       sync.Mutex
	stopping bool // the relay is stopping: its own close is no news
	p        [nSources]problem
	last     problem
	lastLog  time.Time
	logEvery time.Duration
	whole    chan struct{} // closed while the connection and the objects are fine
}

const (
	firstRelog = 30 * time.Second
	maxRelog   = 10 * time.Minute
)

func newHealth(log *zap.Logger, setGauge func(string)) *health {
	hl := &health{log: log, setGauge: setGauge, probe: func() problem { return problem{} },
		last: problem{code: "starting"}, whole: make(chan struct{})}
	hl.p[srcNATS] = problem{"nats_connecting", "connecting to NATS"}
	hl.p[srcProvision] = problem{"provisioning", "provisioning the streams, consumers and buckets"}
	return hl
}

// stop ends reporting: the relay is closing its own connection.
func (hl *health) stop() {
	hl.mu.Lock()
	hl.stopping = true
	hl.mu.Unlock()
}

// set records the problem of source src (a zero problem clears it).
func (hl *health) set(src int, p problem) {
	hl.mu.Lock()
	hl.p[src] = p
	wasWhole := isClosed(hl.whole)
	switch whole := hl.p[srcNATS] == (problem{}) && hl.p[srcProvision] == (problem{}); {
	case whole && !wasWhole:
		close(hl.whole)
	case !whole && wasWhole:
		hl.whole = make(chan struct{})
	}
	hl.mu.Unlock()
	hl.Ready()
}

func (hl *health) get(src int) problem {
	hl.mu.Lock()
	defer hl.mu.Unlock()
	return hl.p[src]
}

// setProbe sets the polled source.
func (hl *health) setProbe(f func() problem) {
	hl.mu.Lock()
	hl.probe = f
	hl.mu.Unlock()
}

// Ready reports whether the relay can do its work, and if not, why.
func (hl *health) Ready() (bool, string) {
	hl.mu.Lock()
	probe := hl.probe
	hl.mu.Unlock()
	cur := probe()
	hl.mu.Lock()
	for _, p := range hl.p {
		if p != (problem{}) {
			cur = p
			break
		}
	}
	hl.report(cur)
	hl.mu.Unlock()
	return cur == problem{}, cur.text
}

// report logs and exports cur when it differs from the last state, and
// repeats a lasting problem with a growing pause. hl.mu is held.
func (hl *health) report(cur problem) {
	if hl.stopping {
		return
	}
	now := time.Now()
	if cur.code == hl.last.code {
		hl.last = cur // the same state in other words (another dial error, say): no news
		if cur != (problem{}) && now.Sub(hl.lastLog) >= hl.logEvery {
			hl.log.Warn("still not ready", zap.String("reason", cur.text), zap.Duration("for", now.Sub(hl.lastLog)))
			hl.lastLog, hl.logEvery = now, min(2*hl.logEvery, maxRelog)
		}
		return
	}
	hl.last, hl.lastLog, hl.logEvery = cur, now, firstRelog
	hl.setGauge(cur.code)
	if cur == (problem{}) {
		hl.log.Info("ready")
		return
	}
	if startingUp[cur.code] {
		hl.log.Info("not ready yet", zap.String("reason", cur.text), zap.String("code", cur.code))
		return
	}
	hl.log.Warn("not ready", zap.String("reason", cur.text), zap.String("code", cur.code))
}

// startingUp are the states every start passes through: no warning.
var startingUp = map[string]bool{"nats_connecting": true, "provisioning": true, "not_bound": true, "checking": true}

// run re-evaluates readiness every second (the probe has no events).
func (hl *health) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			hl.Ready()
		}
	}
}

// wait blocks until the connection and the objects are fine, or ctx ends.
func (hl *health) wait(ctx context.Context) error {
	hl.mu.Lock()
	ch := hl.whole
	hl.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// connHooks feed the NATS source from the connection's callbacks.
func (hl *health) connHooks(cfg config.NATS, onConnect func()) connHooks {
	url := cfg.Redacted()
	return connHooks{
		connected: func() {
			hl.set(srcNATS, problem{})
			onConnect()
		},
		lost: func(err error) {
			text := "NATS connection lost"
			if err != nil {
				text += ": " + err.Error()
			}
			hl.set(srcNATS, problem{"nats_disconnected", text})
		},
		failed: func(err error) {
			if refused(err) {
				hl.set(srcNATS, problem{"nats_refused", refusedText(cfg)})
				return
			}
			hl.set(srcNATS, problem{"nats_unreachable", fmt.Sprintf("NATS unreachable at %s: %v", url, err)})
		},
		closed: func() { hl.set(srcNATS, problem{"nats_closed", "NATS connection closed"}) },
	}
}

// refused reports whether err is the server refusing the credentials.
func refused(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || strings.Contains(strings.ToLower(err.Error()), "authorization violation")
}

// refusedText names the credentials NATS refused, never their value.
func refusedText(c config.NATS) string {
	switch {
	case c.Creds != "":
		return "NATS refused the credentials in NATS_CREDS"
	case c.NKey != "":
		return "NATS refused the NKey seed in NATS_NKEY"
	case c.User != "":
		return "NATS refused the credentials from NATS_USER/NATS_PASSWORD"
	case c.Token.IsSet():
		return "NATS refused the token in NATS_TOKEN"
	}
	return "NATS requires credentials and none are set (NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or NATS_NKEY)"
}

// healer checks the streams, consumers and buckets when a read, a write or
// a pull fails, and after every reconnect (a server can come back empty),
// provisions again what is missing, and restarts the loops bound to them.
// It implements consumer.Healer.
type healer struct {
	ready   atomic.Bool // provisioned once: a reconnect is checked before the relay says ready
	hl      *health
	js      jetstream.JetStream
	po      provision.Options
	log     *zap.Logger
	kick    chan struct{}
	restart func() // rebinds the consumer and advisory loops
	// noHolding: the server has no message schedules, so NOTIFY_HELD and
	// mailrelay_flush were not provisioned and are not missed.
	noHolding atomic.Bool
}

func newHealer(hl *health, po provision.Options, log *zap.Logger) *healer {
	return &healer{hl: hl, po: po, log: log, kick: make(chan struct{}, 1), restart: func() {}}
}

// Trouble asks for a check; checks coalesce.
func (x *healer) Trouble(error) { x.check() }

// connected is told of every (re)connect: until the check is done the
// relay does not say it is ready, as a server can come back empty.
func (x *healer) connected() {
	if x.ready.Load() {
		x.hl.set(srcProvision, problem{"checking", "checking the streams, consumers and buckets after a reconnect"})
	}
	x.check()
}

func (x *healer) check() {
	select {
	case x.kick <- struct{}{}:
	default:
	}
}

// Wait blocks until the connection and the objects are fine.
func (x *healer) Wait(ctx context.Context) error { return x.hl.wait(ctx) }

// checkEvery is how often the healer looks for missing objects when
// nothing asked it to: a bucket deleted while no notification flows.
const checkEvery = 10 * time.Second

// run serves checks until ctx ends.
func (x *healer) run(ctx context.Context) {
	t := time.NewTicker(checkEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-x.kick:
		case <-t.C:
		}
		x.heal(ctx)
	}
}

// heal looks for missing objects and provisions again when one is.
func (x *healer) heal(ctx context.Context) {
	missing, err := x.missing(ctx)
	if err != nil {
		x.log.Debug("health check failed", zap.Error(err)) // the connection's own state says why
		if x.hl.get(srcProvision).code == "checking" {
			time.AfterFunc(time.Second, x.check) // not done yet: try again soon
		}
		return
	}
	if len(missing) == 0 {
		if code := x.hl.get(srcProvision).code; code == "checking" || code == "object_missing" {
			x.hl.set(srcProvision, problem{})
		}
		return
	}
	x.hl.set(srcProvision, problem{"object_missing", "missing on the server: " + strings.Join(missing, ", ") + "; provisioning again"})
	if _, err := provisionUntil(ctx, x.js, x.po, x.log, x.hl); err != nil {
		return // ctx ended, or a real refusal (logged by provisionUntil)
	}
	x.hl.set(srcProvision, problem{})
	x.log.Info("provisioned again", zap.Strings("recreated", missing))
	x.restart()
}

// missing lists the objects the server does not have: every stream,
// consumer and bucket Provision makes, NOTIFY_HELD, mailrelay_flush and
// notify_seen included.
func (x *healer) missing(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out []string
	streams := []string{provision.Stream, provision.AdvisoryStream, hold.Stream}
	consumers := [][2]string{{provision.Stream, provision.Consumer}, {provision.AdvisoryStream, provision.AdvisoryConsumer},
		{hold.Stream, hold.Consumer}}
	if x.noHolding.Load() {
		streams, consumers = streams[:2], consumers[:2]
	}
	for _, s := range streams {
		if _, err := x.js.Stream(ctx, s); errors.Is(err, jetstream.ErrStreamNotFound) {
			out = append(out, "stream "+s)
		} else if err != nil {
			return nil, err
		}
	}
	for _, c := range consumers {
		if _, err := x.js.Consumer(ctx, c[0], c[1]); errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			out = append(out, "consumer "+c[1])
		} else if err != nil {
			return nil, err
		}
	}
	for _, b := range []string{prefs.Bucket, state.Bucket, suppress.Bucket, provision.SeenBucket} {
		if _, err := x.js.KeyValue(ctx, b); errors.Is(err, jetstream.ErrBucketNotFound) {
			out = append(out, "bucket "+b)
		} else if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// loop runs f again whenever it ends, like keepRunning, and can be made to
// end its current run so that it starts over (after re-provisioning).
type loop struct {
	mu     sync.Mutex
	cancel context.CancelFunc
}

func (l *loop) run(ctx context.Context, name string, log *zap.Logger, f func(context.Context) error) error {
	return keepRunning(ctx, name, log, func(ctx context.Context) error {
		ictx, cancel := context.WithCancel(ctx)
		l.mu.Lock()
		l.cancel = cancel
		l.mu.Unlock()
		defer cancel()
		err := f(ictx)
		if err == nil && ctx.Err() == nil {
			return errRestarted
		}
		return err
	})
}

// restart ends the current run; run starts it again.
func (l *loop) restart() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cancel != nil {
		l.cancel()
	}
}

var errRestarted = errors.New("restarted to bind to re-provisioned objects")
