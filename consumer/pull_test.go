package consumer

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// stopIter is a MessagesContext that only records Stop.
type stopIter struct{ stopped bool }

func (*stopIter) Next(...jetstream.NextOpt) (jetstream.Msg, error) { return nil, errors.New("unused") }
func (s *stopIter) Stop()                                          { s.stopped = true }
func (s *stopIter) Drain()                                         {}

type countHealer struct{ troubles int }

func (h *countHealer) Trouble(error)              { h.troubles++ }
func (h *countHealer) Wait(context.Context) error { return nil }

// A streak of pull failures is a warning once, the healer hears of each,
// the end of the streak is said; a closed iterator or a gone consumer ends
// the loop.
func TestPullErrors(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	hl := &countHealer{}
	pe := pullErrors{name: "consumer", log: zap.New(core), healer: hl}
	it := &stopIter{}
	ctx := context.Background()
	for range 3 {
		if err := pe.failed(ctx, it, errors.New("nats: no heartbeat received")); err != nil {
			t.Fatalf("a passing failure ended the loop: %v", err)
		}
	}
	if n := logs.FilterLevelExact(zapcore.WarnLevel).Len(); n != 1 || hl.troubles != 3 {
		t.Fatalf("%d warnings, %d troubles; want 1 and 3", n, hl.troubles)
	}
	pe.ok()
	if logs.FilterMessage("consumer pull recovered").Len() != 1 || pe.failures != 0 {
		t.Fatal("the end of the streak is not said")
	}
	if err := pe.failed(ctx, it, jetstream.ErrConsumerDeleted); err == nil || !strings.Contains(err.Error(), "consumer gone") || !it.stopped {
		t.Fatalf("deleted consumer: %v (iterator stopped: %v)", err, it.stopped)
	}
	if err := pe.failed(ctx, it, jetstream.ErrMsgIteratorClosed); err == nil || !strings.Contains(err.Error(), "consumer stopped") {
		t.Fatalf("closed iterator: %v", err)
	}
}
