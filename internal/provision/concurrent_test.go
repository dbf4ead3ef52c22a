package provision_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/nats-io/nats.go/jetstream"
)

// TestProvisionConcurrentOnCluster: three relays provisioning the same R3
// objects (NOTIFY_HELD, mailrelay_flush and notify_seen among them) at the
// same instant on a fresh three-node cluster are all done
// within 10 s of the cluster having a meta leader, ten times in a row
// (concurrent create-or-update used to wait out the whole deadline).
func TestProvisionConcurrentOnCluster(t *testing.T) {
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
		took = append(took, provisionRound(t, round, relays, bound))
	}
	slices.Sort(took)
	t.Logf("all %d relays provisioned in: min %s, median %s, max %s (bound %s)",
		relays, took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), bound)
}

// provisionRound starts a cluster, waits for its meta leader, starts relays
// Provision calls at once, each followed by a pull on the consumer as the
// relay's runner starts it, and returns the time from the meta leader to
// the last of them.
func provisionRound(t *testing.T, round, relays int, bound time.Duration) time.Duration {
	t.Helper()
	var took time.Duration
	t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
		cl := natstest.StartCluster(t, 3)
		var jss []jetstream.JetStream
		for range relays {
			_, js := natstest.Connect(t, cl.URLs())
			jss = append(jss, js)
		}
		natstest.Eventually(t, 30*time.Second, func() (bool, string) { return cl.Leader() != nil, "no meta leader" })
		start := time.Now()
		// a deadline well past the bound, so that a hang shows as a slow round
		ctx, cancel := context.WithTimeout(context.Background(), 3*bound)
		defer cancel()
		o := provision.Options{Replicas: 3, RetryUntilTimeout: true}
		errs := make([]error, relays)
		hs := make([]*provision.Handles, relays)
		var wg sync.WaitGroup
		for i, js := range jss {
			wg.Go(func() {
				if hs[i], errs[i] = provision.Provision(ctx, js, o); errs[i] == nil {
					// bound as a relay's runner binds: a pull started
					var it jetstream.MessagesContext
					if it, errs[i] = hs[i].Consumer.Messages(); errs[i] == nil {
						it.Stop()
					}
				}
			})
		}
		wg.Wait()
		took = time.Since(start)
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d relay %d: %v", round, i, err)
			}
		}
		t.Logf("round %d: %d relays provisioned %s after the meta leader", round, relays, took.Round(time.Millisecond))
		if took >= bound {
			t.Errorf("round %d took %s, bound %s", round, took, bound)
		}
		// every relay holds R3 objects, and the stream was created once
		created := hs[0].Stream.CachedInfo().Created
		for i, h := range hs {
			if si := h.Stream.CachedInfo(); si.Config.Replicas != 3 || !si.Created.Equal(created) {
				t.Errorf("relay %d: stream replicas %d, created %s (relay 0: %s)", i, si.Config.Replicas, si.Created, created)
			}
			if h.Consumer == nil || h.AdvisoryConsumer == nil || h.Prefs == nil || h.State == nil || h.Suppressed == nil ||
				h.Held == nil || h.Flush == nil || h.Seen == nil {
				t.Errorf("relay %d: missing handles %+v", i, h)
				continue
			}
			if si := h.Held.CachedInfo(); si.Config.Replicas != 3 || !si.Config.AllowMsgSchedules {
				t.Errorf("relay %d: NOTIFY_HELD replicas %d, message schedules %v", i, si.Config.Replicas, si.Config.AllowMsgSchedules)
			}
		}
	})
	return took
}
