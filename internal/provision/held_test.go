package provision_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// checkHeld fails t unless h holds NOTIFY_HELD, mailrelay_flush and
// notify_seen as Provision promises for o (replicas as given).
func checkHeld(t *testing.T, ctx context.Context, h *provision.Handles, replicas int, maxAge, ackWait time.Duration) {
	t.Helper()
	if h.Held == nil || h.Flush == nil || h.Seen == nil {
		t.Fatalf("missing handles: held %v, flush %v, seen %v", h.Held, h.Flush, h.Seen)
	}
	sc := h.Held.CachedInfo().Config
	if sc.Name != "NOTIFY_HELD" || len(sc.Subjects) != 1 || sc.Subjects[0] != "notify_held.>" ||
		sc.Storage != jetstream.FileStorage || sc.Retention != jetstream.LimitsPolicy || sc.MaxAge != 0 ||
		sc.Replicas != replicas || !sc.AllowMsgSchedules || !sc.AllowRollup || sc.AllowDirect || sc.DenyPurge ||
		sc.Duplicates != 2*time.Minute || sc.Description == "" {
		t.Errorf("NOTIFY_HELD config %+v", sc)
	}
	cc := h.Flush.CachedInfo().Config
	ccReplicas := cc.Replicas
	if ccReplicas == 0 {
		ccReplicas = sc.Replicas
	}
	if cc.Durable != "mailrelay_flush" || cc.FilterSubject != "notify_held.due.>" || cc.AckPolicy != jetstream.AckExplicitPolicy ||
		cc.DeliverPolicy != jetstream.DeliverAllPolicy || cc.MaxDeliver != -1 || cc.AckWait != ackWait ||
		cc.MaxAckPending != 1000 || ccReplicas != replicas || cc.Description == "" {
		t.Errorf("mailrelay_flush config %+v", cc)
	}
	if h.Flush.CachedInfo().Stream != "NOTIFY_HELD" {
		t.Errorf("mailrelay_flush is on %s", h.Flush.CachedInfo().Stream)
	}
	st, err := h.Seen.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bs := st.(*jetstream.KeyValueBucketStatus)
	if st.Bucket() != "notify_seen" || st.History() != 1 || st.TTL() != maxAge || bs.StreamInfo().Config.Storage != jetstream.FileStorage ||
		bs.StreamInfo().Config.Replicas != replicas || !strings.Contains(bs.StreamInfo().Config.Description, "max age") {
		t.Errorf("notify_seen: history %d, ttl %s, config %+v", st.History(), st.TTL(), bs.StreamInfo().Config)
	}
}

// TestProvisionHeld: NOTIFY_HELD, mailrelay_flush and notify_seen are made
// with the contract's settings, a second run changes none of them, and a
// NOTIFY_HELD that someone changed (max age, no schedules) is put right in
// place, keeping what it holds.
func TestProvisionHeld(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns.URL())
	ctx := natstest.Ctx(t)
	o := provision.Options{AckWait: 45 * time.Second, MaxAge: 48 * time.Hour}
	first, err := provision.Provision(ctx, js, o)
	if err != nil {
		t.Fatal(err)
	}
	checkHeld(t, ctx, first, 1, 48*time.Hour, 45*time.Second)
	if cfg := provision.HeldStreamConfig(o); cfg.Name != hold.Stream || cfg.Subjects[0] != hold.Subjects {
		t.Errorf("HeldStreamConfig %+v", cfg)
	}
	if cfg := provision.FlushConsumerConfig(o); cfg.Durable != hold.Consumer || cfg.FilterSubject != hold.DueSubjects {
		t.Errorf("FlushConsumerConfig %+v", cfg)
	}
	if _, err := js.Publish(ctx, hold.ItemSubject("u1"), []byte("held")); err != nil {
		t.Fatal(err)
	}

	second, err := provision.Provision(ctx, js, o)
	if err != nil {
		t.Fatalf("second provision: %v", err)
	}
	checkHeld(t, ctx, second, 1, 48*time.Hour, 45*time.Second)
	if a, b := first.Held.CachedInfo().Created, second.Held.CachedInfo().Created; !a.Equal(b) {
		t.Errorf("NOTIFY_HELD was re-created (%s, then %s)", a, b)
	}
	if a, b := first.Flush.CachedInfo().Created, second.Flush.CachedInfo().Created; !a.Equal(b) {
		t.Errorf("mailrelay_flush was re-created (%s, then %s)", a, b)
	}

	// Someone gives the held stream a max age: held mail would expire
	// silently. Provision puts it back, and the held item is still there.
	cfg := provision.HeldStreamConfig(o)
	cfg.MaxAge = time.Hour
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	third, err := provision.Provision(ctx, js, o)
	if err != nil {
		t.Fatalf("third provision: %v", err)
	}
	checkHeld(t, ctx, third, 1, 48*time.Hour, 45*time.Second)
	if m, err := third.Held.GetLastMsgForSubject(ctx, hold.ItemSubject("u1")); err != nil || string(m.Data) != "held" {
		t.Errorf("held item after the update: %v %v", m, err)
	}
}

// TestProvisionHeldTurnsOnSchedules: a NOTIFY_HELD made by hand without
// message schedules (or roll-ups) gets them from Provision, in place.
func TestProvisionHeldTurnsOnSchedules(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns.URL())
	ctx := natstest.Ctx(t)
	cfg := provision.HeldStreamConfig(provision.Options{})
	cfg.AllowMsgSchedules, cfg.AllowRollup = false, false
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	h, err := provision.Provision(ctx, js, provision.Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkHeld(t, ctx, h, 1, 7*24*time.Hour, policy.DefaultAckWait)
}

// scheduleAt is a time about two seconds ahead, in the whole seconds that
// "@at" schedules have.
func scheduleAt() time.Time { return time.Now().Truncate(time.Second).Add(2 * time.Second) }

// scheduleFires publishes a message schedule on notify_held.window.<user>
// that fires into notify_held.due.<user> in about two seconds, waits
// until mailrelay_flush delivers it, then acks it.
func scheduleFires(t *testing.T, ctx context.Context, js jetstream.JetStream, flush jetstream.Consumer, user, body string) {
	t.Helper()
	at := scheduleAt()
	msg := nats.NewMsg(hold.WindowSubject(user))
	msg.Data = []byte(body)
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(hold.DueSubject(user)))
	if err != nil {
		t.Fatalf("publish the schedule of %s: %v", user, err)
	}
	if ack.Stream != hold.Stream {
		t.Fatalf("schedule stored in %s", ack.Stream)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		batch, err := flush.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Logf("fetch: %v", err)
			continue
		}
		for m := range batch.Messages() {
			if m.Subject() != hold.DueSubject(user) || string(m.Data()) != body || m.Headers().Get("Nats-Scheduler") != hold.WindowSubject(user) {
				t.Fatalf("mailrelay_flush delivered %s %q %v, want %s %q from the schedule", m.Subject(), m.Data(), m.Headers(), hold.DueSubject(user), body)
			}
			if time.Now().Before(at) {
				t.Errorf("the schedule fired early")
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := batch.Error(); err != nil {
			t.Logf("fetch: %v", err)
		}
	}
	t.Fatalf("the schedule of %s did not fire into mailrelay_flush within 30s", user)
}

// TestProvisionHeldSchedules: on the provisioned NOTIFY_HELD a message
// schedule on a window subject fires into the due subject, and the durable
// consumer mailrelay_flush delivers it.
func TestProvisionHeldSchedules(t *testing.T) {
	_, js, h := natstest.StartProvisioned(t)
	scheduleFires(t, natstest.Ctx(t), js, h.Flush, "u1", "window of u1")
}

// TestProvisionHeldOnCluster: on a three-node cluster NOTIFY_HELD,
// mailrelay_flush and notify_seen are R3, a second run changes nothing, a
// schedule fires into mailrelay_flush, and a schedule pending when the
// stream leader dies still fires, from the new leader.
func TestProvisionHeldOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	cl := natstest.StartCluster(t, 3)
	_, js := natstest.Connect(t, cl.URLs())
	ctx := natstest.Ctx(t)
	o := provision.Options{Replicas: 3, RetryUntilTimeout: true}
	h, err := provision.Provision(ctx, js, o)
	if err != nil {
		t.Fatal(err)
	}
	checkHeld(t, ctx, h, 3, 7*24*time.Hour, policy.DefaultAckWait)
	again, err := provision.Provision(ctx, js, o)
	if err != nil {
		t.Fatalf("second provision: %v", err)
	}
	if a, b := h.Held.CachedInfo().Created, again.Held.CachedInfo().Created; !a.Equal(b) {
		t.Errorf("NOTIFY_HELD was re-created (%s, then %s)", a, b)
	}
	scheduleFires(t, ctx, js, h.Flush, "u1", "window of u1")

	// A schedule pending while the stream leader goes away.
	at := scheduleAt().Add(time.Second)
	msg := nats.NewMsg(hold.WindowSubject("u2"))
	msg.Data = []byte("window of u2")
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(hold.DueSubject("u2"))); err != nil {
		t.Fatal(err)
	}
	leader := cl.StreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, hold.Stream)
	if leader == nil {
		t.Fatal("NOTIFY_HELD has no leader")
	}
	t.Logf("stopping %s, the leader of NOTIFY_HELD", leader.Name())
	leader.Shutdown()
	leader.WaitForShutdown()
	natstest.Eventually(t, 30*time.Second, func() (bool, string) {
		l := cl.StreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, hold.Stream)
		return l != nil && l != leader, "no new leader of NOTIFY_HELD"
	})
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		batch, err := h.Flush.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Logf("fetch: %v", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		for m := range batch.Messages() {
			if m.Subject() != hold.DueSubject("u2") || string(m.Data()) != "window of u2" {
				t.Fatalf("mailrelay_flush delivered %s %q, want the schedule of u2", m.Subject(), m.Data())
			}
			if time.Now().Before(at) {
				t.Errorf("the schedule of u2 fired early")
			}
			t.Logf("the schedule of u2 fired %s after its time, with the leader gone", time.Since(at).Round(time.Millisecond))
			return
		}
	}
	t.Fatal("the schedule pending when the leader died never fired")
}

// fakeJetStream answers NOTIFY_HELD's info (not found) and create
// requests, as create says, on a NATS server without JetStream; every
// other JetStream request goes unanswered (it has a responder, so the
// client waits for a reply that never comes).
func fakeJetStream(t *testing.T, create func(cfg map[string]any) any) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	reply := func(m *nats.Msg, v any) {
		b, _ := json.Marshal(v)
		_ = m.Respond(b)
	}
	if _, err := nc.Subscribe("$JS.API.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("$JS.API.STREAM.INFO."+hold.Stream, func(m *nats.Msg) {
		reply(m, map[string]any{"error": map[string]any{"code": 404, "err_code": 10059, "description": "stream not found"}})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("$JS.API.STREAM.CREATE."+hold.Stream, func(m *nats.Msg) {
		var cfg map[string]any
		if err := json.Unmarshal(m.Data, &cfg); err != nil {
			t.Error(err)
		}
		reply(m, create(cfg))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s.ClientURL()
}

// TestProvisionNoMsgSchedules: a server without message schedules (older
// than 2.12) makes Provision fail at once, saying that NOTIFY_HELD needs
// nats-server ≥ 2.12, with an error that is no "not now" (no retry):
// whether it refuses the field (strict 2.11), refuses schedules (10188),
// or drops the field silently and creates the stream without them.
func TestProvisionNoMsgSchedules(t *testing.T) {
	apiErr := func(code, errCode int, desc string) func(map[string]any) any {
		return func(map[string]any) any {
			return map[string]any{"error": map[string]any{"code": code, "err_code": errCode, "description": desc}}
		}
	}
	cases := []struct {
		name   string
		create func(cfg map[string]any) any
	}{
		{"unknown field", apiErr(400, 10025, `invalid JSON: json: unknown field "allow_msg_schedules"`)},
		{"schedules disabled", apiErr(400, 10188, "message schedules is disabled")},
		{"dropped silently", func(cfg map[string]any) any {
			delete(cfg, "allow_msg_schedules")
			return map[string]any{"type": "io.nats.jetstream.api.v1.stream_create_response", "config": cfg,
				"created": time.Now().UTC(), "state": map[string]any{}}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var seen atomic.Bool
			url := fakeJetStream(t, func(cfg map[string]any) any {
				seen.Store(cfg["allow_msg_schedules"] == true)
				return tc.create(cfg)
			})
			_, js := natstest.Connect(t, url)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			_, err := provision.Provision(ctx, js, provision.Options{RetryUntilTimeout: true})
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Provision took %s, want a prompt failure", took)
			}
			if !seen.Load() {
				t.Error("the create request did not ask for allow_msg_schedules")
			}
			if !errors.Is(err, provision.ErrNoMsgSchedules) ||
				!strings.Contains(fmt.Sprint(err), "NOTIFY_HELD needs nats-server ≥ 2.12 for message schedules") {
				t.Fatalf("Provision: %v, want ErrNoMsgSchedules", err)
			}
			// a real refusal, as callers that retry "not now" tell it
			if _, isAPI := errors.AsType[*jetstream.APIError](err); !isAPI || provision.NotReady(err) {
				t.Errorf("Provision: %v is no final refusal (API error %v, NotReady %v)", err, isAPI, provision.NotReady(err))
			}
			t.Logf("%v", err)
		})
	}
}
