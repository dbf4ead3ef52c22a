package relay_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/relay"
	"github.com/mailrelay/mailrelay/internal/smtptest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// TestClusterRelaysStartTogether: three relays started at the same instant
// against a fresh three-node cluster with MAILRELAY_STREAM_REPLICAS=3 all
// answer /readyz 200 within 10 s of the cluster having a meta leader, ten
// times in a row (concurrent provisioning used to wait out its 30 s
// deadline at every object).
func TestClusterRelaysStartTogether(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	const (
		rounds = 10
		relays = 3
		bound  = 10 * time.Second
	)
	var took []time.Duration
	for round := range rounds {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			d := startRelaysTogether(t, relays, bound)
			t.Logf("round %d: %d relays ready %s after the meta leader", round, relays, d.Round(time.Millisecond))
			if d >= bound {
				t.Errorf("round %d: relays ready after %s, bound %s", round, d, bound)
			}
			took = append(took, d)
		})
	}
	if len(took) == rounds {
		slices.Sort(took)
		t.Logf("%d relays ready in: min %s, median %s, max %s (bound %s)", relays,
			took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), bound)
	}
}

// startRelaysTogether starts a cluster and, once it has a meta leader, n
// relays at once; it returns the time until the last one was ready, and
// stops them when the test ends.
func startRelaysTogether(t *testing.T, n int, bound time.Duration) time.Duration {
	t.Helper()
	cl := natstest.StartCluster(t, 3)
	host, port := smtptest.Start(t).Addr()
	var addrs []string
	var cfgs []*config.Config
	for range n {
		addr := freeAddr(t)
		vars := map[string]string{
			"NATS_URL":                  cl.URLs(),
			"EMAIL_HOST":                host,
			"EMAIL_PORT":                strconv.Itoa(port),
			"DEFAULT_FROM_EMAIL":        "Acme <notify@example.com>",
			"FRONTEND_BASE_URL":         "https://app.example.com",
			"MAILRELAY_HTTP_ADDR":       addr,
			"MAILRELAY_STREAM_REPLICAS": "3",
		}
		cfg, err := config.Load(func(k string) string { return vars[k] })
		if err != nil {
			t.Fatalf("config: %v", err)
		}
		addrs, cfgs = append(addrs, addr), append(cfgs, cfg)
	}
	natstest.Eventually(t, 30*time.Second, func() (bool, string) { return cl.Leader() != nil, "no meta leader" })

	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, n)
	for _, cfg := range cfgs {
		go func() {
			done <- relay.Run(ctx, cfg, relay.Options{Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), Version: "test"})
		}()
	}
	t.Cleanup(func() {
		cancel()
		for range n {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("relay: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("a relay did not stop within 30s")
				return
			}
		}
	})
	ready := make([]bool, n)
	natstest.Eventually(t, 3*bound, func() (bool, string) {
		for i, addr := range addrs {
			ready[i] = ready[i] || readyz(addr) == http.StatusOK
		}
		return !slices.Contains(ready, false), fmt.Sprintf("ready: %v", ready)
	})
	return time.Since(start)
}
