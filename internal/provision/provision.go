// Package provision creates or updates, idempotently, everything mailrelay
// needs on a JetStream server: the NOTIFY stream, the durable pull consumer
// "mailrelay", the stream that keeps max-deliveries advisories durable with
// its own consumer, and the notify_prefs and notify_email_state buckets
// (contract §2, §4).
package provision

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go/jetstream"
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
// relay starting beside a first changes nothing.
func Provision(ctx context.Context, js jetstream.JetStream, o Options) (*Handles, error) {
	o.defaults()
	var h Handles
	err := retry(ctx, o.RetryUntilTimeout, func() error {
		var err error
		if h.Stream, err = js.CreateOrUpdateStream(ctx, StreamConfig(o)); err != nil {
			return fmt.Errorf("stream %s: %w", Stream, err)
		}
		if h.Consumer, err = js.CreateOrUpdateConsumer(ctx, Stream, ConsumerConfig(o)); err != nil {
			return fmt.Errorf("consumer %s on %s: %w", Consumer, Stream, err)
		}
		if _, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        AdvisoryStream,
			Description: "max-deliveries advisories of the mailrelay consumer, kept until handled",
			Subjects:    []string{AdvisorySubject},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      o.MaxAge,
			Replicas:    o.Replicas,
		}); err != nil {
			return fmt.Errorf("stream %s: %w", AdvisoryStream, err)
		}
		if h.AdvisoryConsumer, err = js.CreateOrUpdateConsumer(ctx, AdvisoryStream, jetstream.ConsumerConfig{
			Durable:     AdvisoryConsumer,
			Description: "mailrelay: max-deliveries advisories to inbox_only",
			AckPolicy:   jetstream.AckExplicitPolicy,
			AckWait:     o.AckWait,
			MaxDeliver:  -1,
			Replicas:    o.Replicas,
		}); err != nil {
			return fmt.Errorf("consumer %s on %s: %w", AdvisoryConsumer, AdvisoryStream, err)
		}
		if h.Prefs, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      prefs.Bucket,
			Description: "per-user notification email preferences",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
		}); err != nil {
			return fmt.Errorf("bucket %s: %w", prefs.Bucket, err)
		}
		if h.State, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      state.Bucket,
			Description: "what became of each notification",
			History:     1,
			TTL:         o.StateTTL,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
		}); err != nil {
			return fmt.Errorf("bucket %s: %w", state.Bucket, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	return &h, nil
}

// retry repeats f while it fails with an error a young cluster gives
// ("no suitable peers", a meta leader not elected yet), as long as ctx lasts.
func retry(ctx context.Context, enabled bool, f func() error) error {
	for {
		err := f()
		if err == nil || !enabled || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// transient reports whether err is worth a retry on a young cluster: a
// NotReady answer, or no answer at all.
func transient(err error) bool {
	if _, ok := errors.AsType[*jetstream.APIError](err); ok {
		return NotReady(err)
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrNoStreamResponse)
}
