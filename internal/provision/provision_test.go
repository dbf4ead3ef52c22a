package provision_test

import (
	"context"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/nats-io/nats.go/jetstream"
)

func TestProvisionIdempotent(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns.URL())
	ctx := context.Background()
	o := provision.Options{AckWait: 45 * time.Second, MaxAge: 48 * time.Hour, StateTTL: time.Hour}
	first, err := provision.Provision(ctx, js, o)
	if err != nil {
		t.Fatal(err)
	}
	// a second relay starting beside the first changes nothing
	second, err := provision.Provision(ctx, js, o)
	if err != nil {
		t.Fatalf("second provision: %v", err)
	}
	s1, s2 := first.Stream.CachedInfo(), second.Stream.CachedInfo()
	if !s1.Created.Equal(s2.Created) {
		t.Fatal("the stream was re-created")
	}

	sc := s2.Config
	if sc.Name != "NOTIFY" || len(sc.Subjects) != 1 || sc.Subjects[0] != "notify.>" || sc.Storage != jetstream.FileStorage ||
		sc.Retention != jetstream.LimitsPolicy || sc.MaxAge != 48*time.Hour || sc.Duplicates <= 0 || sc.Replicas != 1 {
		t.Errorf("stream config %+v", sc)
	}
	cc := second.Consumer.CachedInfo().Config
	if cc.Durable != "mailrelay" || cc.FilterSubject != "notify.>" || cc.AckPolicy != jetstream.AckExplicitPolicy ||
		cc.MaxDeliver != 3 || cc.AckWait != 45*time.Second || cc.MaxAckPending != 1000 {
		t.Errorf("consumer config %+v", cc)
	}
	adv, err := js.Stream(ctx, provision.AdvisoryStream)
	if err != nil {
		t.Fatal(err)
	}
	if subj := adv.CachedInfo().Config.Subjects; len(subj) != 1 || subj[0] != "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.NOTIFY.mailrelay" {
		t.Errorf("advisory stream subjects %v", subj)
	}
	st, err := second.State.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// the state TTL is never less than the stream's max age
	if st.TTL() != 48*time.Hour {
		t.Errorf("state TTL %s, want raised to the stream max age 48h", st.TTL())
	}
	if _, err := js.KeyValue(ctx, "notify_prefs"); err != nil {
		t.Errorf("notify_prefs: %v", err)
	}

	// a changed setting is applied to the existing objects
	o.AckWait = 90 * time.Second
	third, err := provision.Provision(ctx, js, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := third.Consumer.CachedInfo().Config.AckWait; got != 90*time.Second {
		t.Errorf("AckWait after update = %s", got)
	}
}

// Zero Options give the documented defaults of the environment variables.
func TestDefaultsMatchConfig(t *testing.T) {
	cfg, err := config.Load(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	_, _, h := natstest.StartProvisioned(t) // zero Options
	ctx := context.Background()
	j := cfg.JetStream
	if sc := h.Stream.CachedInfo().Config; sc.MaxAge != j.MaxAge || sc.Duplicates != j.DuplicateWindow || sc.Replicas != j.Replicas {
		t.Errorf("stream max age %s, duplicate window %s, replicas %d; defaults %s, %s, %d",
			sc.MaxAge, sc.Duplicates, sc.Replicas, j.MaxAge, j.DuplicateWindow, j.Replicas)
	}
	if cc := h.Consumer.CachedInfo().Config; cc.AckWait != j.AckWait {
		t.Errorf("consumer AckWait %s, MAILRELAY_ACK_WAIT default %s", cc.AckWait, j.AckWait)
	}
	st, err := h.State.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != j.StateTTL {
		t.Errorf("state TTL %s, MAILRELAY_STATE_TTL default %s", st.TTL(), j.StateTTL)
	}
}
