package event

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MsgIDHeader is the JetStream de-duplication header; publishers set it to
// the notification id.
const MsgIDHeader = jetstream.MsgIDHeader

// Publish validates ev and publishes it on its subject with Nats-Msg-Id set
// to its id, waiting for the JetStream acknowledgement. A duplicate within
// the stream's window is not an error: the returned ack says Duplicate.
func Publish(ctx context.Context, js jetstream.JetStream, ev *Event) (*jetstream.PubAck, error) {
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event %q: %w", ev.ID, err)
	}
	return PublishRaw(ctx, js, ev.Type.Subject(), ev.ID, data)
}

// PublishRaw publishes an already encoded event. It does not validate.
func PublishRaw(ctx context.Context, js jetstream.JetStream, subject, id string, data []byte) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(MsgIDHeader, id)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("publish %q on %s: %w", id, subject, err)
	}
	return ack, nil
}
