// Package provision creates or updates, idempotently, everything mailrelay
// needs on a JetStream server: the NOTIFY stream, the durable pull consumer
// "mailrelay", the stream that keeps max-deliveries advisories durable with
// its own consumer, the NOTIFY_HELD stream that holds notifications for
// volume control with its consumer "mailrelay_flush" (package hold), and the
// notify_prefs, notify_email_state, notify_seen and notify_suppressed
// buckets (contract §2, §4, §9.2, §9.3).
package provision

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/suppress"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// Names fixed by the contract, and those of the advisory capture.
const (
	Stream   = "NOTIFY"
	Subjects = "notify.>"
	Consumer = "mailrelay"
	// MaxDeliver is the consumer's MaxDeliver: policy.MaxDeliver, named
	// here too because provisioning is where it is set.
	MaxDeliver = policy.MaxDeliver

	// AdvisorySubject is the max-deliveries advisory of the consumer.
	AdvisorySubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + Stream + "." + Consumer
	// AdvisoryStream captures AdvisorySubject so that advisories fired
	// while no relay runs are kept until one does.
	AdvisoryStream = "NOTIFY_ADVISORIES"
	// AdvisoryConsumer is the durable consumer relays share on AdvisoryStream.
	AdvisoryConsumer = "mailrelay_advisories"

	// SeenBucket is the notify_seen bucket (contract §9.2): the app writes
	// it, the relay creates it and only reads it. Key: notification id; a
	// key that exists means the recipient already saw that notification in
	// the app, so a held mail for it is skipped_seen. Its entries live as
	// long as NOTIFY keeps a notification (Options.MaxAge).
	SeenBucket = "notify_seen"
)

// HeldDuplicateWindow is the Nats-Msg-Id duplicate window of NOTIFY_HELD:
// long enough for a relay to retry a publish whose ack it lost. It is not
// configurable.
const HeldDuplicateWindow = 2 * time.Minute

// MaxAckPending is the consumer's MaxAckPending: at most this many messages
// are delivered and not yet acknowledged, over every relay together. It is
// not configurable.
const MaxAckPending = 1000

// Options are the tunables of the provisioned objects.
type Options struct {
	Replicas          int           // 1 by default
	MaxAge            time.Duration // NOTIFY retention; 7 days by default
	DuplicateWindow   time.Duration // Nats-Msg-Id window; 1 hour by default
	AckWait           time.Duration // consumer AckWait; policy.DefaultAckWait by default
	StateTTL          time.Duration // notify_email_state TTL; 30 days by default
	RetryUntilTimeout bool          // keep retrying "no suitable peers" while ctx lasts (clusters)
	// HoldingOptional: on a server without message schedules (older than
	// 2.12), provision everything but NOTIFY_HELD and mailrelay_flush and
	// say why in Handles.NoHolding, instead of failing. A relay with every
	// volume setting at its default then runs as v1 did.
	HoldingOptional bool
}

func (o *Options) defaults() {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 7 * 24 * time.Hour
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = time.Hour
	}
	if o.DuplicateWindow > o.MaxAge {
		o.DuplicateWindow = o.MaxAge
	}
	if o.AckWait <= 0 {
		o.AckWait = policy.DefaultAckWait
	}
	if o.StateTTL <= 0 {
		o.StateTTL = 30 * 24 * time.Hour
	}
	if o.StateTTL < o.MaxAge {
		o.StateTTL = o.MaxAge
	}
}

// Handles are the objects a relay works with after provisioning.
type Handles struct {
	Stream           jetstream.Stream
	Consumer         jetstream.Consumer
	AdvisoryConsumer jetstream.Consumer
	Prefs            jetstream.KeyValue
	State            jetstream.KeyValue
	Suppressed       jetstream.KeyValue // notify_suppressed
	Held             jetstream.Stream   // NOTIFY_HELD (hold.Stream), with message schedules
	Flush            jetstream.Consumer // mailrelay_flush (hold.Consumer) on NOTIFY_HELD
	Seen             jetstream.KeyValue // notify_seen (SeenBucket)
	// NoHolding, with Options.HoldingOptional, says why Held and Flush are
	// nil: the server has no message schedules (wraps ErrNoMsgSchedules).
	NoHolding error
}

// StreamConfig is the NOTIFY stream configuration for o.
func StreamConfig(o Options) jetstream.StreamConfig {
	o.defaults()
	return jetstream.StreamConfig{
		Name:        Stream,
		Description: "mailrelay notifications, one message per recipient",
		Subjects:    []string{Subjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      o.MaxAge,
		Duplicates:  o.DuplicateWindow,
		Replicas:    o.Replicas,
		AllowDirect: true,
	}
}

// ConsumerConfig is the durable "mailrelay" consumer configuration for o.
func ConsumerConfig(o Options) jetstream.ConsumerConfig {
	o.defaults()
	return jetstream.ConsumerConfig{
		Durable:       Consumer,
		Description:   "mailrelay: notifications to email",
		FilterSubject: Subjects,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    MaxDeliver,
		AckWait:       o.AckWait,
		MaxAckPending: MaxAckPending,
		Replicas:      o.Replicas,
	}
}

// HeldStreamConfig is the NOTIFY_HELD stream configuration for o (contract
// §9.3; the subjects are those of package hold). It holds the
// notifications that wait for a batching window, quiet hours or the seen
// delay, and one message schedule per recipient; a schedule fires into
// notify_held.due.<recipient>, inside the same stream. It needs
// nats-server ≥ 2.12 (AllowMsgSchedules).
//
//   - MaxAge 0: held mail never expires silently; the relay removes what
//     it sent (purge of a subject, delete of a message).
//   - AllowRollup: a schedule message rolls up its own subject (one
//     schedule per recipient), and the server requires it for schedules.
//   - AllowDirect: relays read held items with direct gets.
//   - Duplicates HeldDuplicateWindow, whatever Options.DuplicateWindow.
func HeldStreamConfig(o Options) jetstream.StreamConfig {
	o.defaults()
	return jetstream.StreamConfig{
		Name: hold.Stream,
		Description: "mailrelay: notifications held for a batching window, quiet hours or the seen delay, " +
			"and one message schedule per recipient; removed when sent, never expired",
		Subjects:          []string{hold.Subjects},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		MaxAge:            0,
		Duplicates:        HeldDuplicateWindow,
		Replicas:          o.Replicas,
		AllowMsgSchedules: true,
		AllowRollup:       true,
		// No direct gets: a direct get may be answered by a follower that
		// lags, and a flush listing a recipient's held notifications, or a
		// hold looking for the open window, must see what the leader has.
		AllowDirect: false,
	}
}

// FlushConsumerConfig is the durable "mailrelay_flush" consumer
// configuration for o: a pull consumer on NOTIFY_HELD, filtered to
// hold.DueSubjects (what the schedules publish when they fire), that every
// relay serves, so that any relay may send a window another relay opened.
// MaxDeliver is unlimited: the ledger's attempts bound the sends.
func FlushConsumerConfig(o Options) jetstream.ConsumerConfig {
	o.defaults()
	return jetstream.ConsumerConfig{
		Durable:       hold.Consumer,
		Description:   "mailrelay: held notifications that became due, to email",
		FilterSubject: hold.DueSubjects,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    -1,
		AckWait:       o.AckWait,
		MaxAckPending: MaxAckPending,
		Replicas:      o.Replicas,
	}
}

// Provision creates or updates every object. It is idempotent: a second
// relay starting beside a first changes nothing, and a changed setting is
// applied to the existing object.
//
// Why it looks first: nats.go's CreateOrUpdateStream (and
// CreateOrUpdateKeyValue) is UpdateStream, then CreateStream on "not
// found", so with relays starting together one relay's update of a new R3
// stream lands while another's create has no stream leader yet.
// nats-server answers a clustered stream update only from the stream
// leader and marks the assignment answered as it applies it; with no
// leader then, nobody answers, and the election that follows finds the
// assignment (the update's, which replaced the create's) already answered,
// so both callers wait out their whole deadline. A create of an existing
// stream with the same settings is answered at once; consumer creates and
// even info requests can still go unanswered while a new group elects
// (nats-server#8350). Hence: look, create only what is missing, update
// only what differs, give each request a few seconds and retry.
//
// Provision retries until ctx ends (or, when ctx has no deadline, for 30
// seconds) after a request that got no answer; with RetryUntilTimeout also
// while a forming cluster answers NotReady. A server without message
// schedules (older than 2.12) fails it with ErrNoMsgSchedules.
func Provision(ctx context.Context, js jetstream.JetStream, o Options) (*Handles, error) {
	o.defaults()
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var h Handles
	g, gctx := errgroup.WithContext(ctx)
	// each step looks, then creates or updates, with its own retries
	stream := func(cfg jetstream.StreamConfig) (s jetstream.Stream, err error) {
		err = attempts(gctx, o.RetryUntilTimeout, func(timeout time.Duration) (err error) {
			s, err = ensureStream(gctx, js, cfg, timeout)
			return err
		})
		return s, wrap("stream "+cfg.Name, err)
	}
	consumer := func(stream string, cfg jetstream.ConsumerConfig) (c jetstream.Consumer, err error) {
		err = attempts(gctx, o.RetryUntilTimeout, func(timeout time.Duration) (err error) {
			c, err = ensureConsumer(gctx, js, stream, cfg, o.Replicas, timeout)
			return err
		})
		return c, wrap(fmt.Sprintf("consumer %s on %s", cfg.Durable, stream), err)
	}
	bucket := func(cfg jetstream.KeyValueConfig) (kv jetstream.KeyValue, err error) {
		err = attempts(gctx, o.RetryUntilTimeout, func(timeout time.Duration) (err error) {
			kv, err = ensureBucket(gctx, js, cfg, timeout)
			return err
		})
		return kv, wrap("bucket "+cfg.Bucket, err)
	}
	g.Go(func() (err error) {
		if h.Stream, err = stream(StreamConfig(o)); err != nil {
			return err
		}
		h.Consumer, err = consumer(Stream, ConsumerConfig(o))
		return err
	})
	g.Go(func() (err error) {
		if _, err = stream(advisoryStreamConfig(o)); err != nil {
			return err
		}
		h.AdvisoryConsumer, err = consumer(AdvisoryStream, advisoryConsumerConfig(o))
		return err
	})
	g.Go(func() (err error) {
		s, err := stream(HeldStreamConfig(o))
		if err = noSchedules(js, s, err); err != nil {
			if o.HoldingOptional && errors.Is(err, ErrNoMsgSchedules) {
				h.NoHolding = err
				return nil
			}
			return err
		}
		h.Held = s
		h.Flush, err = consumer(hold.Stream, FlushConsumerConfig(o))
		return err
	})
	g.Go(func() (err error) { h.Prefs, err = bucket(prefsConfig(o)); return err })
	g.Go(func() (err error) { h.State, err = bucket(stateConfig(o)); return err })
	g.Go(func() (err error) { h.Suppressed, err = bucket(suppressedConfig(o)); return err })
	g.Go(func() (err error) { h.Seen, err = bucket(seenConfig(o)); return err })
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	if o.Replicas > 1 {
		if err := waitUsable(ctx, js, &h); err != nil {
			return nil, fmt.Errorf("provision: %w", err)
		}
	}
	return &h, nil
}

// waitUsable waits until what publishers and the app use right after
// provisioning answers: a new replicated stream takes a moment to elect its
// leader (until then a publish gets "no response from stream"), and a
// bucket's reads are direct gets, answered once a replica is current
// (until then "no responders").
func waitUsable(ctx context.Context, js jetstream.JetStream, h *Handles) error {
	for _, name := range []string{Stream, "KV_" + prefs.Bucket, "KV_" + SeenBucket} {
		err := poll(ctx, "stream "+name+": no leader elected", func(ctx context.Context) error {
			s, err := js.Stream(ctx, name)
			if err == nil && s.CachedInfo().Cluster != nil && s.CachedInfo().Cluster.Leader == "" {
				err = errors.New("no leader yet")
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	for _, kv := range []jetstream.KeyValue{h.Prefs, h.Seen} {
		err := poll(ctx, "bucket "+kv.Bucket()+": reads not answered", func(ctx context.Context) error {
			_, err := kv.Get(ctx, "mailrelay-provision-probe")
			if errors.Is(err, jetstream.ErrKeyNotFound) { // a missing key is an answer
				err = nil
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// poll tries try (each try gets a second) every 100 ms until it succeeds
// or ctx ends; then the error says what and the last failure.
func poll(ctx context.Context, what string, try func(context.Context) error) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		err := try(rctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func advisoryStreamConfig(o Options) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        AdvisoryStream,
		Description: "max-deliveries advisories of the mailrelay consumer, kept until handled",
		Subjects:    []string{AdvisorySubject},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      o.MaxAge,
		Replicas:    o.Replicas,
	}
}

func advisoryConsumerConfig(o Options) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:     AdvisoryConsumer,
		Description: "mailrelay: max-deliveries advisories to inbox_only",
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     o.AckWait,
		MaxDeliver:  -1,
		Replicas:    o.Replicas,
	}
}

// bucketConfig is a bucket of one value per key, on file, with o's
// replicas (ttl 0: no expiry).
func bucketConfig(o Options, name, description string, ttl time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: name, Description: description, History: 1, TTL: ttl,
		Storage: jetstream.FileStorage, Replicas: o.Replicas}
}

func prefsConfig(o Options) jetstream.KeyValueConfig {
	return bucketConfig(o, prefs.Bucket, "per-user notification email preferences", 0)
}

func suppressedConfig(o Options) jetstream.KeyValueConfig {
	return bucketConfig(o, suppress.Bucket, "addresses mail is not sent to (key: hex SHA-256 of the lower-cased address)", 0)
}

func stateConfig(o Options) jetstream.KeyValueConfig {
	return bucketConfig(o, state.Bucket, "what became of each notification", o.StateTTL)
}

// seenConfig is the notify_seen bucket: a seen mark only matters while its
// notification can still be mailed, so it lives as long as NOTIFY keeps
// the notification (o.MaxAge).
func seenConfig(o Options) jetstream.KeyValueConfig {
	return bucketConfig(o, SeenBucket, "notification ids the recipient saw in the app (written by the app); "+
		"kept for NOTIFY's max age, while a notification can still be mailed", o.MaxAge)
}
