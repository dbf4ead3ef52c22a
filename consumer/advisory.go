package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// MaxDeliveriesAdvisory is the JSON payload of
// $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>.
type MaxDeliveriesAdvisory struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// StreamGetter fetches a message of the NOTIFY stream by sequence.
type StreamGetter interface {
	GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error)
}

// Advisories moves notifications whose deliveries ran out to inbox_only.
type Advisories struct {
	cons     jetstream.Consumer
	stream   StreamGetter
	ledger   Ledger
	maxBytes int
	now      func() time.Time
	log      *zap.Logger
	obs      Observer
	healer   Healer
}

// NewAdvisories returns the advisory processor. It shares the handler's
// ledger, clock, logger and observer.
func NewAdvisories(cons jetstream.Consumer, stream StreamGetter, h *Handler) *Advisories {
	return &Advisories{cons: cons, stream: stream, ledger: h.ledger, maxBytes: h.cfg.MaxEventBytes,
		now: h.now, log: h.log, obs: h.obs, healer: h.healer}
}

// Run processes advisories until ctx ends.
func (a *Advisories) Run(ctx context.Context) error {
	it, err := a.cons.Messages(jetstream.PullMaxMessages(16), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		return fmt.Errorf("consume advisories: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	pe := pullErrors{name: "advisory consumer", log: a.log, healer: a.healer}
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if err := pe.failed(ctx, it, err); err != nil {
				return err
			}
			continue
		}
		pe.ok()
		if err := a.Handle(ctx, msg.Data()); err != nil {
			a.log.Warn("advisory not handled, will retry", zap.Error(err))
			_ = msg.NakWithDelay(time.Second)
			continue
		}
		_ = msg.Ack()
	}
}

// Handle applies one max-deliveries advisory: the notification it names
// becomes inbox_only unless its state is already final. An error means
// "try again later"; an advisory that cannot be understood is dropped.
func (a *Advisories) Handle(ctx context.Context, data []byte) error {
	var adv MaxDeliveriesAdvisory
	if err := json.Unmarshal(data, &adv); err != nil || adv.StreamSeq == 0 {
		a.log.Warn("advisory ignored: not a max-deliveries advisory")
		a.obs.Advisory("ignored")
		return nil
	}
	log := a.log.With(zap.Uint64("stream_seq", adv.StreamSeq), zap.Uint64("deliveries", adv.Deliveries))
	raw, err := a.stream.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		log.Warn("advisory for a message no longer in the stream")
		a.obs.Advisory("gone")
		return nil
	}
	if err != nil {
		return fmt.Errorf("get message %d: %w", adv.StreamSeq, err)
	}
	ev, err := event.Decode(raw.Subject, raw.Data, a.maxBytes)
	key := state.SeqKey(adv.StreamSeq)
	rec := state.Record{State: state.InboxOnly, Attempts: int(adv.Deliveries), StreamSeq: adv.StreamSeq,
		Error: fmt.Sprintf("max deliveries (%d) reached", adv.Deliveries)}
	if err == nil {
		key, rec.Type, rec.Recipient = ev.ID, string(ev.Type), ev.Recipient.ID
	} else if ev != nil && event.ValidID(ev.ID) {
		key = ev.ID
	}
	for range 5 {
		cur, rev, err := a.ledger.Get(ctx, key)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return err
		}
		if cur.State.Final() {
			log.Info("advisory: state already final", zap.String("event_id", key), zap.String("state", string(cur.State)))
			a.obs.Advisory("already_final")
			return nil
		}
		next := rec
		if rev != 0 {
			// keep what the deliveries learnt: the attempts made and the last error
			next.Attempts, next.MessageID = cur.Attempts, cur.MessageID
			if cur.Error != "" {
				next.Error += "; last error: " + cur.Error
			}
		}
		next.UpdatedAt = a.now()
		if _, err := a.ledger.Swap(ctx, key, next, rev); errors.Is(err, state.ErrConflict) {
			continue
		} else if err != nil {
			return err
		}
		log.Warn("notification moved to inbox_only", zap.String("event_id", key), zap.Int("attempts", next.Attempts))
		a.obs.Advisory("inbox_only")
		a.obs.Recorded(next.Type, state.InboxOnly)
		return nil
	}
	return fmt.Errorf("advisory for %q: state kept changing", key)
}
