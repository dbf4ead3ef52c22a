package provision_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/nats-io/nats.go/jetstream"
)

// NotReady tells the answers of a forming cluster from real refusals by
// error code, however the answer is wrapped and worded.
func TestNotReady(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"no suitable peers", fmt.Errorf("stream NOTIFY: %w",
			&jetstream.APIError{ErrorCode: 10005, Code: 400, Description: "no suitable peers for placement, tags not matched ['x']"}), true},
		{"cluster not available", fmt.Errorf("consumer: %w",
			&jetstream.APIError{ErrorCode: 10008, Code: 503, Description: "JetStream system temporarily unavailable"}), true},
		{"other 503", &jetstream.APIError{ErrorCode: 10023, Code: 503, Description: "insufficient resources"}, true},
		{"jetstream not enabled", jetstream.ErrJetStreamNotEnabled, true},
		{"stream not found", fmt.Errorf("x: %w", jetstream.ErrStreamNotFound), false},
		{"bad request", &jetstream.APIError{ErrorCode: 10003, Code: 400, Description: "bad request"}, false},
		{"not an API error", context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := provision.NotReady(tt.err); got != tt.want {
				t.Errorf("NotReady(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
