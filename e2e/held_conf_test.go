package e2e

// The repository's nats.conf and the objects of volume control (contract
// §9.2, §9.3): the NOTIFY_HELD stream of held mail with its message
// schedules and its consumer mailrelay_flush, and the notify_seen bucket.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSConfHeld runs nats-server with the repository's nats.conf. The
// relay's identity provisions (twice: creating, then looking) and works
// NOTIFY_HELD as the relay does, without a single permission violation:
// publishes a held item and a message schedule (with JetStream acks), reads
// the last message of a subject (direct get, and the classic get), asks
// the stream info with a subject filter, pulls the fired schedule from
// mailrelay_flush and acks it, deletes a message and purges a subject; it
// reads notify_seen. The web app puts and deletes notify_seen keys, and can
// neither publish to notify_held.> nor read or change NOTIFY_HELD nor read
// notify_seen; the publisher can touch neither NOTIFY_HELD nor notify_seen.
// Nothing the two tried left a trace.
func TestNATSConfHeld(t *testing.T) {
	t.Parallel()
	ns := startConfNATS(t)
	relayNC, relayJS, relayV := connectAs(t, ns.URL(), confRelayUser, ns.relayPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// step bounds one request: a refused one gets no answer, only a
	// permissions violation, and must fail fast.
	step := func() context.Context {
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		t.Cleanup(scancel)
		return sctx
	}

	// --- The relay: provision, then everything it does with held mail.
	h, err := provision.Provision(step(), relayJS, provision.Options{})
	if err != nil {
		t.Fatalf("provision as %s: %v", confRelayUser, err)
	}
	if h, err = provision.Provision(step(), relayJS, provision.Options{}); err != nil { // look first: infos only
		t.Fatalf("second provision as %s: %v", confRelayUser, err)
	}
	if !h.Held.CachedInfo().Config.AllowMsgSchedules {
		t.Fatalf("NOTIFY_HELD without message schedules: %+v", h.Held.CachedInfo().Config)
	}

	publish := func(subject, id, body string, opts ...jetstream.PublishOpt) *jetstream.PubAck {
		t.Helper()
		msg := nats.NewMsg(subject)
		msg.Header.Set(jetstream.MsgIDHeader, id)
		msg.Data = []byte(body)
		ack, err := relayJS.PublishMsg(step(), msg, opts...)
		if err != nil {
			t.Fatalf("publish %s as %s: %v", subject, confRelayUser, err)
		}
		if ack.Stream != "NOTIFY_HELD" || ack.Duplicate {
			t.Fatalf("publish %s: ack %+v, want stored in NOTIFY_HELD", subject, ack)
		}
		return ack
	}
	// Two held items of u1, and the schedule of u1's window.
	first := publish("notify_held.item.u1", "held-1", `{"id":"held-1"}`)
	publish("notify_held.item.u1", "held-2", `{"id":"held-2"}`)
	publish("notify_held.item.u2", "held-3", `{"id":"held-3"}`)
	at := time.Now().Truncate(time.Second).Add(2 * time.Second) // "@at" has whole seconds
	publish("notify_held.window.u1", "window-u1", "u1", jetstream.WithScheduleAt(at),
		jetstream.WithScheduleTarget("notify_held.due.u1"))

	// The last item of a subject: direct get (subject in the API subject),
	// by sequence and the next by subject (direct get, request in the
	// body), and the classic get.
	if m, err := h.Held.GetLastMsgForSubject(step(), "notify_held.item.u1"); err != nil || string(m.Data) != `{"id":"held-2"}` {
		t.Errorf("last message of notify_held.item.u1 as %s: %v %v", confRelayUser, m, err)
	}
	if m, err := h.Held.GetMsg(step(), first.Sequence); err != nil || string(m.Data) != `{"id":"held-1"}` {
		t.Errorf("message %d of NOTIFY_HELD as %s: %v %v", first.Sequence, confRelayUser, m, err)
	}
	if m, err := h.Held.GetMsg(step(), 1, jetstream.WithGetMsgSubject("notify_held.item.>")); err != nil || string(m.Data) != `{"id":"held-1"}` {
		t.Errorf("first held item (next by subject) as %s: %v %v", confRelayUser, m, err)
	}
	resp, err := relayNC.RequestWithContext(step(), "$JS.API.STREAM.MSG.GET.NOTIFY_HELD", []byte(`{"last_by_subj":"notify_held.item.u2"}`))
	if err != nil || !strings.Contains(string(resp.Data), `"message"`) {
		t.Errorf("classic get on NOTIFY_HELD as %s: %v %v", confRelayUser, resp, err)
	}
	// Which subjects hold items: the stream info with a subject filter.
	subjects := func() map[string]uint64 {
		t.Helper()
		si, err := h.Held.Info(step(), jetstream.WithSubjectFilter("notify_held.item.>"))
		if err != nil {
			t.Fatalf("NOTIFY_HELD info with a subject filter as %s: %v", confRelayUser, err)
		}
		return si.State.Subjects
	}
	if got := subjects(); got["notify_held.item.u1"] != 2 || got["notify_held.item.u2"] != 1 || len(got) != 2 {
		t.Errorf("NOTIFY_HELD subjects %v, want notify_held.item.u1: 2, notify_held.item.u2: 1", got)
	}

	// The schedule fires into notify_held.due.u1: pulled from the durable
	// consumer (bound as a relay binds it) and acked.
	flush, err := relayJS.Consumer(step(), "NOTIFY_HELD", "mailrelay_flush")
	if err != nil {
		t.Fatalf("bind mailrelay_flush as %s: %v", confRelayUser, err)
	}
	var due jetstream.Msg
	eventually(t, 30*time.Second, func() (bool, string) {
		batch, err := flush.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return false, fmt.Sprintf("fetch from mailrelay_flush: %v", err)
		}
		for m := range batch.Messages() {
			due = m
		}
		return due != nil, fmt.Sprintf("nothing due yet (%v)", batch.Error())
	})
	if due.Subject() != "notify_held.due.u1" || string(due.Data()) != "u1" || due.Headers().Get("Nats-Scheduler") != "notify_held.window.u1" {
		t.Errorf("mailrelay_flush delivered %s %q %v, want u1's schedule", due.Subject(), due.Data(), due.Headers())
	}
	if err := due.DoubleAck(step()); err != nil {
		t.Errorf("ack on mailrelay_flush as %s: %v", confRelayUser, err)
	}
	if ci, err := flush.Info(step()); err != nil || ci.NumAckPending != 0 || ci.NumPending != 0 {
		t.Errorf("mailrelay_flush after the ack: %+v %v", ci, err)
	}

	// Sent: one message deleted, a subject purged.
	if err := h.Held.DeleteMsg(step(), first.Sequence); err != nil {
		t.Errorf("delete message %d of NOTIFY_HELD as %s: %v", first.Sequence, confRelayUser, err)
	}
	if err := h.Held.Purge(step(), jetstream.WithPurgeSubject("notify_held.item.u2")); err != nil {
		t.Errorf("purge notify_held.item.u2 as %s: %v", confRelayUser, err)
	}
	if got := subjects(); got["notify_held.item.u1"] != 1 || len(got) != 1 {
		t.Errorf("NOTIFY_HELD subjects after the delete and the purge: %v, want notify_held.item.u1: 1", got)
	}

	// --- The web app: puts and deletes notify_seen keys.
	webNC, webJS, webV := connectAs(t, ns.URL(), confWebAppUser, ns.webAppPassword)
	seenKV, err := webJS.KeyValue(step(), "notify_seen")
	if err != nil {
		t.Fatalf("open notify_seen as %s: %v", confWebAppUser, err)
	}
	for _, id := range []string{"n1", "n2"} {
		if _, err := seenKV.Put(step(), id, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
			t.Fatalf("put notify_seen %s as %s: %v", id, confWebAppUser, err)
		}
	}
	if err := seenKV.Delete(step(), "n2"); err != nil {
		t.Errorf("delete notify_seen n2 as %s: %v", confWebAppUser, err)
	}
	// The relay reads them.
	if _, err := h.Seen.Get(step(), "n1"); err != nil {
		t.Errorf("notify_seen n1 read by %s: %v", confRelayUser, err)
	}
	if _, err := h.Seen.Get(step(), "n2"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("notify_seen n2 read by %s after the web app deleted it: %v, want not found", confRelayUser, err)
	}
	webV.mu.Lock()
	if len(webV.errs) != 0 {
		t.Errorf("the web app's allowed work met errors: %v", webV.errs)
	}
	webV.mu.Unlock()

	// ... and cannot touch held mail, nor read notify_seen. High-level
	// calls fail (their first request is refused) ...
	calls := []refusedCall{
		{"publish a held item", "notify_held.item.x",
			func(ctx context.Context) error {
				_, err := webJS.Publish(ctx, "notify_held.item.x", []byte("{}"))
				return err
			}},
		{"open NOTIFY_HELD", "$JS.API.STREAM.INFO.NOTIFY_HELD",
			func(ctx context.Context) error { _, err := webJS.Stream(ctx, "NOTIFY_HELD"); return err }},
		{"bind mailrelay_flush", "$JS.API.CONSUMER.INFO.NOTIFY_HELD.mailrelay_flush",
			func(ctx context.Context) error {
				_, err := webJS.Consumer(ctx, "NOTIFY_HELD", "mailrelay_flush")
				return err
			}},
		{"read notify_seen", "$JS.API.DIRECT.GET.KV_notify_seen.$KV.notify_seen.n1",
			func(ctx context.Context) error { _, err := seenKV.Get(ctx, "n1"); return err }},
	}
	runRefused(t, ctx, confWebAppUser, webV, calls)
	// ... and so does every lower-level way in.
	heldWaysIn := []string{
		"notify_held.window.u1",
		"notify_held.due.u1",
		"$JS.API.DIRECT.GET.NOTIFY_HELD",
		"$JS.API.DIRECT.GET.NOTIFY_HELD.notify_held.item.u1",
		"$JS.API.STREAM.MSG.GET.NOTIFY_HELD",
		"$JS.API.STREAM.PURGE.NOTIFY_HELD",
		"$JS.API.STREAM.MSG.DELETE.NOTIFY_HELD",
		"$JS.API.STREAM.UPDATE.NOTIFY_HELD",
		"$JS.API.STREAM.DELETE.NOTIFY_HELD",
		"$JS.API.CONSUMER.CREATE.NOTIFY_HELD",
		"$JS.API.CONSUMER.CREATE.NOTIFY_HELD.mailrelay_flush.notify_held.due.>",
		"$JS.API.CONSUMER.MSG.NEXT.NOTIFY_HELD.mailrelay_flush",
		"$JS.ACK.NOTIFY_HELD.mailrelay_flush.1.1.1.1.1",
	}
	webV.refusePublish(t, webNC, append(heldWaysIn,
		"$JS.API.STREAM.MSG.GET.KV_notify_seen",
		"$JS.API.DIRECT.GET.KV_notify_seen",
		"$JS.API.STREAM.UPDATE.KV_notify_seen",
	)...)
	webV.refuseSubscribe(t, webNC, "the web app", "notify_held.>", "$KV.notify_seen.>")

	// --- The publisher: neither held mail nor notify_seen.
	pubNC, pubJS, pubV := connectAs(t, ns.URL(), confPublisherUser, ns.publisherPassword)
	runRefused(t, ctx, confPublisherUser, pubV, []refusedCall{
		{"publish a held item", "notify_held.item.x",
			func(ctx context.Context) error {
				_, err := pubJS.Publish(ctx, "notify_held.item.x", []byte("{}"))
				return err
			}},
		{"open NOTIFY_HELD", "$JS.API.STREAM.INFO.NOTIFY_HELD",
			func(ctx context.Context) error { _, err := pubJS.Stream(ctx, "NOTIFY_HELD"); return err }},
		{"open notify_seen", "$JS.API.STREAM.INFO.KV_notify_seen",
			func(ctx context.Context) error { _, err := pubJS.KeyValue(ctx, "notify_seen"); return err }},
	})
	pubV.refusePublish(t, pubNC, append(heldWaysIn,
		"$KV.notify_seen.x",
		"$JS.API.DIRECT.GET.KV_notify_seen.$KV.notify_seen.n1",
		"$JS.API.STREAM.MSG.GET.KV_notify_seen",
	)...)
	pubV.refuseSubscribe(t, pubNC, "the publisher", "notify_held.>", "$KV.notify_seen.>")

	// Nothing they tried left a trace: no item of x, u1's item still
	// held, no seen mark x, and the consumer has nothing new.
	if got := subjects(); got["notify_held.item.u1"] != 1 || len(got) != 1 {
		t.Errorf("NOTIFY_HELD subjects after the refused attempts: %v, want notify_held.item.u1: 1 only", got)
	}
	if _, err := h.Seen.Get(step(), "x"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("notify_seen x: %v, want not found", err)
	}
	if ci, err := flush.Info(step()); err != nil || ci.NumPending != 0 || ci.NumAckPending != 0 || ci.Delivered.Consumer != 1 {
		t.Errorf("mailrelay_flush after the refused attempts: %+v %v", ci, err)
	}

	// The relay never met a refusal.
	relayV.mu.Lock()
	if len(relayV.errs) != 0 {
		t.Errorf("the relay's identity met errors: %v", relayV.errs)
	}
	relayV.mu.Unlock()
	for _, line := range strings.Split(readFile(ns.logPath), "\n") {
		if strings.Contains(line, "Violation") && strings.Contains(line, "user:"+confRelayUser+`"`) {
			t.Errorf("nats-server refused the relay something it needs: %s", line)
		}
	}
	b, _ := json.Marshal(h.Held.CachedInfo().Config)
	t.Logf("NOTIFY_HELD: %s", b)
}

// refusedCall is a high-level call that the server must refuse: what it
// does, the subject of its first request, and the call.
type refusedCall struct {
	what, subject string
	f             func(ctx context.Context) error
}

// runRefused runs the calls at once, each with a short deadline, and
// requires that each failed and that the server reported a publish
// permissions violation for its subject on who's connection.
func runRefused(t *testing.T, ctx context.Context, who string, v *violations, calls []refusedCall) {
	t.Helper()
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() {
			cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
			defer ccancel()
			errs[i] = c.f(cctx)
		})
	}
	wg.Wait()
	for i, c := range calls {
		if errs[i] == nil {
			t.Errorf("%s could %s", who, c.what)
		}
		v.wait(t, "Publish", c.subject)
	}
}
