// Package provision creates or updates, idempotently, everything mailrelay
// needs on a JetStream server: the NOTIFY stream, the durable pull consumer
// "mailrelay", the stream that keeps max-deliveries advisories durable with
// its own consumer, and the notify_prefs and notify_email_state buckets
// (contract §2, §4).
package provision

import (
	"context"
	"fmt"
	"time"

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
)

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
// while a forming cluster answers NotReady.
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
	g.Go(func() (err error) { h.Prefs, err = bucket(prefsConfig(o)); return err })
	g.Go(func() (err error) { h.State, err = bucket(stateConfig(o)); return err })
	g.Go(func() (err error) { h.Suppressed, err = bucket(suppressedConfig(o)); return err })
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	return &h, nil
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

func prefsConfig(o Options) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      prefs.Bucket,
		Description: "per-user notification email preferences",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}
}

func suppressedConfig(o Options) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      suppress.Bucket,
		Description: "addresses mail is not sent to (key: hex SHA-256 of the lower-cased address)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}
}

func stateConfig(o Options) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      state.Bucket,
		Description: "what became of each notification",
		History:     1,
		TTL:         o.StateTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}
}
