package consumer

import (
	"context"
	"sync"
	"time"
)

// Throttle pauses sending for the whole process when the SMTP server says
// "slow down" (policy.SlowDown), with a delay
// that doubles on each further such answer and resets after a success. A
// delivery that hit the throttle keeps its message (InProgress keeps it
// from redelivery) and tries again after the pause, so a slow-down burns no
// delivery attempts.
type Throttle struct {
	min, max time.Duration

	mu    sync.Mutex
	until time.Time
	next  time.Duration
	now   func() time.Time
}

// NewThrottle returns a throttle whose pauses grow from min to max.
func NewThrottle(min, max time.Duration) *Throttle {
	return &Throttle{min: min, max: max, next: min, now: time.Now}
}

// Wait blocks while sending is paused.
func (t *Throttle) Wait(ctx context.Context) error {
	for {
		t.mu.Lock()
		d := t.until.Sub(t.now())
		t.mu.Unlock()
		if d <= 0 {
			return nil
		}
		timer := time.NewTimer(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// Trip pauses sending and returns the pause.
func (t *Throttle) Trip() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if t.until.After(now) {
		// already paused: another delivery reported the same slow-down
		return t.until.Sub(now)
	}
	d := t.next
	t.until = now.Add(d)
	t.next = min(2*t.next, t.max)
	return d
}

// Reset ends the growth after a success.
func (t *Throttle) Reset() {
	t.mu.Lock()
	t.next = t.min
	t.mu.Unlock()
}

// Paused reports whether sending is paused now.
func (t *Throttle) Paused() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.until.After(t.now())
}
