package transport

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/mailrelay/mailrelay/compose"
)

// Dummy is the dummy backend (EMAIL_BACKEND=dummy): it accepts every message
// and discards it, counting them. It does not render the message.
type Dummy struct {
	n atomic.Int64
}

// NewDummy returns a dummy backend.
func NewDummy() *Dummy { return &Dummy{} }

// Send counts m and discards it. It fails only for a nil message or an
// ended context.
func (d *Dummy) Send(ctx context.Context, m *compose.Message) error {
	if err := ctx.Err(); err != nil {
		return &Error{Temporary: true, Step: StepWrite, Err: err}
	}
	if m == nil {
		return &Error{Step: StepRender, Err: errors.New("render: nil message")}
	}
	d.n.Add(1)
	return nil
}

// Count returns how many messages Send accepted.
func (d *Dummy) Count() int64 { return d.n.Load() }

// Close does nothing.
func (d *Dummy) Close() error { return nil }
