package provision

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Timing of provisioning requests.
const (
	// firstRequestTimeout bounds one JetStream API request. A reply can be
	// lost (see Provision), so no request may use the caller's whole
	// deadline; a step whose request timed out is run again, looking
	// first, each time with twice the timeout, up to maxRequestTimeout.
	firstRequestTimeout = 2 * time.Second
	maxRequestTimeout   = 5 * time.Second
	// defaultTimeout bounds Provision when ctx has no deadline.
	defaultTimeout = 30 * time.Second
	// notReadyPause is the pause before asking a forming cluster again.
	notReadyPause = 250 * time.Millisecond
)

// attempts runs step until it succeeds, fails for good, or ctx ends. step
// gets the timeout each of its requests should use (see request). It is
// run again at once after a lost reply (a request that timed out while ctx
// lasts) or a race with another relay, and after a pause when a forming
// cluster says "not now" and retryNotReady is set.
func attempts(ctx context.Context, retryNotReady bool, step func(timeout time.Duration) error) error {
	timeout := firstRequestTimeout
	for {
		err := step(timeout)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return errors.Join(err, ctx.Err())
		case errors.Is(err, errRaced):
			continue
		case lostReply(err):
			timeout = min(2*timeout, maxRequestTimeout)
			continue
		case !retryNotReady || !transient(err):
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(notReadyPause):
		}
	}
}

// request calls f with a context that ends after timeout (or with ctx).
func request[T any](ctx context.Context, timeout time.Duration, f func(context.Context) (T, error)) (T, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return f(rctx)
}

// lostReply reports whether err says that a request got no answer in time.
func lostReply(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}

// transient reports whether err is worth a retry on a young cluster: a
// NotReady answer, or no JetStream answering at all.
func transient(err error) bool {
	if _, ok := errors.AsType[*jetstream.APIError](err); ok {
		return NotReady(err)
	}
	return errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// withDefaultTimeout bounds ctx by defaultTimeout when it has no deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, defaultTimeout)
}

// wrap names the object a step was about.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
