package relay_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/smtptest"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/nats-io/nats.go/jetstream"
)

// messageIDs counts the mails the SMTP server accepted, per Message-ID.
func messageIDs(msgs []smtptest.Message) map[string]int {
	ids := map[string]int{}
	for _, m := range msgs {
		for _, line := range strings.Split(string(m.Data), "\r\n") {
			if strings.HasPrefix(line, "Message-ID:") {
				ids[strings.TrimSpace(strings.TrimPrefix(line, "Message-ID:"))]++
				break
			}
		}
	}
	return ids
}

// TestClusterLeaderKilledMidBacklog: an R3 stream, consumer and buckets on a
// 3-node cluster, three relays sharing the durable consumer; the stream
// leader dies during a 2,000 notification backlog; every notification is
// still mailed, and none twice.
func TestClusterLeaderKilledMidBacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	cl := natstest.StartCluster(t, 3)
	e := &env{t: t, url: cl.URLs(), smtp: smtptest.Start(t)}
	e.nc, e.js = natstest.Connect(t, e.url)
	vars := map[string]string{"MAILRELAY_STREAM_REPLICAS": "3", "MAILRELAY_CONCURRENCY": "4", "MAILRELAY_ACK_WAIT": "5s",
		"MAILRELAY_RETRY_DELAYS": "500ms"}
	ctx := natstest.Ctx(t)
	// provision first and queue the whole backlog before the relays start
	if _, err := provision.Provision(ctx, e.js, provision.Options{Replicas: 3, AckWait: 5 * time.Second, RetryUntilTimeout: true}); err != nil {
		t.Fatal(err)
	}
	e.optIn("u1", event.TaskAssigned)
	const n = 2000
	for i := range n {
		id := fmt.Sprintf("c%d", i)
		e.publish(newEvent(id, event.TaskAssigned, "u1"), id)
	}
	e.smtp.SetLatency(2 * time.Millisecond)
	for range 3 {
		e.startRelay(vars)
	}
	info, err := e.js.Stream(ctx, provision.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if r := info.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("stream replicas = %d, want 3", r)
	}
	for _, b := range []string{"notify_prefs", "notify_email_state"} {
		kv, err := e.js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := kv.Status(ctx)
		if st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas != 3 {
			t.Fatalf("bucket %s is not R3", b)
		}
	}
	c, _ := e.js.Consumer(ctx, provision.Stream, provision.Consumer)
	if ci, _ := c.Info(ctx); ci.Config.Replicas != 3 && ci.Config.Replicas != 0 {
		t.Fatalf("consumer replicas = %d", ci.Config.Replicas)
	}

	natstest.Eventually(t, 60*time.Second, func() (bool, string) {
		return len(e.smtp.Messages()) >= 200, "waiting for 200 mails"
	})
	leader := cl.StreamLeader("$G", provision.Stream)
	if leader == nil {
		t.Fatal("no stream leader")
	}
	t.Logf("killing stream leader %s after %d mails", leader.Name(), len(e.smtp.Messages()))
	leader.Shutdown()

	natstest.Eventually(t, 120*time.Second, func() (bool, string) {
		got := len(messageIDs(e.smtp.Messages()))
		return got >= n, fmt.Sprintf("%d of %d notifications mailed", got, n)
	})
	ids := messageIDs(e.smtp.Messages())
	dups := 0
	for _, c := range ids {
		dups += c - 1
	}
	t.Logf("%d mails for %d notifications (%d duplicates)", len(e.smtp.Messages()), len(ids), dups)
	// Duplicates can only come from sends accepted just before the ledger
	// write failed over: at most the in-flight count of the three relays.
	if dups > 3*4 {
		t.Errorf("%d duplicates, more than the 12 in flight", dups)
	}
	kv, _ := e.js.KeyValue(context.Background(), state.Bucket)
	natstest.Eventually(t, 30*time.Second, func() (bool, string) {
		for i := range n {
			r, _, err := state.New(kv).Get(context.Background(), fmt.Sprintf("c%d", i))
			if err != nil || r.State != state.Sent {
				return false, fmt.Sprintf("c%d: %+v %v", i, r, err)
			}
		}
		return true, ""
	})
}
