package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// errRaced marks a step that met another relay's change between its look
// and its create or update; the step is run again at once.
var errRaced = errors.New("changed meanwhile")

func raced(err error) error { return fmt.Errorf("%w: %w", errRaced, err) }

// ensureStream makes want's stream exist with want's settings: it looks
// first, creates the stream only when it is missing and updates it only
// when a setting differs. Each request gets timeout.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, timeout time.Duration) (jetstream.Stream, error) {
	s, err := request(ctx, timeout, func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, want.Name) })
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = request(ctx, timeout, func(ctx context.Context) (jetstream.Stream, error) { return js.CreateStream(ctx, want) })
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created meanwhile, with other settings
			return nil, raced(err)
		}
		return s, err
	case err != nil:
		return nil, err
	case !streamDiffers(s.CachedInfo().Config, want):
		return s, nil
	}
	s, err = request(ctx, timeout, func(ctx context.Context) (jetstream.Stream, error) { return js.UpdateStream(ctx, want) })
	if errors.Is(err, jetstream.ErrStreamNotFound) { // deleted meanwhile
		return nil, raced(err)
	}
	return s, err
}

// ensureConsumer does for a durable consumer on stream what ensureStream
// does for a stream. streamReplicas is the stream's replica count, which a
// consumer that inherits it may report as 0.
func ensureConsumer(ctx context.Context, js jetstream.JetStream, stream string, want jetstream.ConsumerConfig, streamReplicas int, timeout time.Duration) (jetstream.Consumer, error) {
	c, err := request(ctx, timeout, func(ctx context.Context) (jetstream.Consumer, error) { return js.Consumer(ctx, stream, want.Durable) })
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		c, err = request(ctx, timeout, func(ctx context.Context) (jetstream.Consumer, error) { return js.CreateConsumer(ctx, stream, want) })
		if errors.Is(err, jetstream.ErrConsumerExists) {
			return nil, raced(err)
		}
		return c, err
	case err != nil:
		return nil, err
	case !consumerDiffers(c.CachedInfo().Config, want, streamReplicas):
		return c, nil
	}
	c, err = request(ctx, timeout, func(ctx context.Context) (jetstream.Consumer, error) { return js.UpdateConsumer(ctx, stream, want) })
	if errors.Is(err, jetstream.ErrConsumerDoesNotExist) {
		return nil, raced(err)
	}
	return c, err
}

// ensureBucket does for a key-value bucket what ensureStream does for a
// stream.
func ensureBucket(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig, timeout time.Duration) (jetstream.KeyValue, error) {
	kv, err := request(ctx, timeout, func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, want.Bucket) })
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = request(ctx, timeout, func(ctx context.Context) (jetstream.KeyValue, error) { return js.CreateKeyValue(ctx, want) })
		if errors.Is(err, jetstream.ErrBucketExists) {
			return nil, raced(err)
		}
		return kv, err
	}
	if err != nil {
		return nil, err
	}
	st, err := request(ctx, timeout, kv.Status)
	if err != nil {
		return nil, err
	}
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && !bucketDiffers(bs.StreamInfo().Config, want) {
		return kv, nil
	}
	kv, err = request(ctx, timeout, func(ctx context.Context) (jetstream.KeyValue, error) { return js.UpdateKeyValue(ctx, want) })
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, raced(err)
	}
	return kv, err
}

// streamDiffers reports whether a stream configured as have lacks a setting
// of want. Only the settings Provision chooses are compared; a zero
// Duplicates is the server's default, and message schedules and roll-ups
// are compared only where Provision turns them on (the server refuses to
// turn schedules off again).
func streamDiffers(have, want jetstream.StreamConfig) bool {
	return have.Description != want.Description || !slices.Equal(have.Subjects, want.Subjects) ||
		have.Storage != want.Storage || have.Retention != want.Retention || have.MaxAge != want.MaxAge ||
		have.Replicas != want.Replicas || have.AllowDirect != want.AllowDirect ||
		(want.Duplicates > 0 && have.Duplicates != want.Duplicates) ||
		(want.AllowMsgSchedules && !have.AllowMsgSchedules) || (want.AllowRollup && !have.AllowRollup)
}

// consumerDiffers is streamDiffers for consumers; a zero MaxAckPending is
// the server's default.
func consumerDiffers(have, want jetstream.ConsumerConfig, streamReplicas int) bool {
	replicas := have.Replicas
	if replicas == 0 {
		replicas = streamReplicas
	}
	return have.Description != want.Description || have.FilterSubject != want.FilterSubject ||
		have.AckPolicy != want.AckPolicy || have.DeliverPolicy != want.DeliverPolicy ||
		have.MaxDeliver != want.MaxDeliver || have.AckWait != want.AckWait ||
		(want.MaxAckPending > 0 && have.MaxAckPending != want.MaxAckPending) || replicas != want.Replicas
}

// bucketDiffers is streamDiffers for the stream behind a bucket.
func bucketDiffers(have jetstream.StreamConfig, want jetstream.KeyValueConfig) bool {
	return have.Description != want.Description || have.MaxMsgsPerSubject != int64(max(want.History, 1)) ||
		have.MaxAge != want.TTL || have.Storage != want.Storage || have.Replicas != max(want.Replicas, 1)
}
