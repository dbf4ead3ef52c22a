package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// pullErrors is what the consumer and advisory loops do when their
// iterator fails: the first failure of a streak is a warning, the rest
// are debug lines ("pull recovered" ends the streak), the healer is told
// (the consumer may be gone with a server that came back empty), and a
// failure that is not final is waited out briefly.
type pullErrors struct {
	name     string // "consumer" or "advisory consumer", in the errors
	log      *zap.Logger
	healer   Healer
	failures int
}

// failed handles err, a failure of it.Next while ctx has not ended. It
// returns a non-nil error when the loop must end with it (the iterator was
// closed, the consumer is gone), else nil after a short pause.
func (p *pullErrors) failed(ctx context.Context, it jetstream.MessagesContext, err error) error {
	if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
		return fmt.Errorf("%s stopped: %w", p.name, err)
	}
	if p.failures == 0 {
		p.log.Warn(p.name+" pull failed", zap.Error(err))
	} else {
		p.log.Debug(p.name+" pull failed again", zap.Error(err), zap.Int("failures", p.failures+1))
	}
	p.failures++
	p.healer.Trouble(err)
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		it.Stop()
		return fmt.Errorf("%s gone: %w", p.name, err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
	return nil
}

// ok ends a streak of failures.
func (p *pullErrors) ok() {
	if p.failures > 0 {
		p.log.Info(p.name+" pull recovered", zap.Int("failures", p.failures))
		p.failures = 0
	}
}
