package consumer

import (
	"slices"
	"testing"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/config"
)

// The package's own defaults (for a zero Policy, or NewRunner with zeros)
// are the documented defaults of the environment variables, so that a
// library user gets what an operator gets.
func TestDefaultsMatchConfig(t *testing.T) {
	cfg, err := config.Load(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	c := Policy{}.WithDefaults()
	if !slices.Equal(c.RetryDelays, cfg.Relay.RetryDelays) {
		t.Errorf("RetryDelays %v, MAILRELAY_RETRY_DELAYS default %v", c.RetryDelays, cfg.Relay.RetryDelays)
	}
	if c.AckWait != cfg.JetStream.AckWait {
		t.Errorf("AckWait %s, MAILRELAY_ACK_WAIT default %s", c.AckWait, cfg.JetStream.AckWait)
	}
	if event.DefaultMaxBytes != cfg.Relay.MaxEventBytes { // what MaxEventBytes 0 means
		t.Errorf("event size limit %d, MAILRELAY_MAX_EVENT_BYTES default %d", event.DefaultMaxBytes, cfg.Relay.MaxEventBytes)
	}
	r := NewRunner(nil, NewHandler(Config{}, nil, nil, nil, nil), 0, 0)
	if r.concurrency != cfg.Relay.Concurrency || r.shutdownTimeout != cfg.Relay.ShutdownTimeout {
		t.Errorf("runner concurrency %d, shutdown %s; defaults %d, %s", r.concurrency, r.shutdownTimeout,
			cfg.Relay.Concurrency, cfg.Relay.ShutdownTimeout)
	}
}
