package e2e

// The web app's identity in the repository's nats.conf (notify-webapp):
// publish notifications, read and write notify_prefs, write notify_seen,
// read notify_email_state, and nothing else.

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSConfWebApp runs nats-server with the repository's nats.conf. The
// relay's identity provisions everything with `mailrelay provision`
// (notify_seen and NOTIFY_HELD included), with no permission violation. As notify-webapp, with the nats.go clients and the nats CLI:
// preferences are put, read, updated with compare-and-set and watched; a
// notification is published with a JetStream ack, mailed by the relay, and
// its ledger record read and watched; a notification is marked seen. Then a
// sample of what it must not do is refused with a permissions violation:
// deleting or purging a stream, creating or changing a bucket, binding to,
// pulling from or creating a consumer on NOTIFY, reading notify_seen or any
// other bucket, writing the ledger, and listening on another identity's
// inbox or on the notifications themselves.
func TestNATSConfWebApp(t *testing.T) {
	t.Parallel()
	buildMailrelay(t)
	ns := startConfNATS(t)
	mp := startMailpit(t, mailpitOptions{})
	env := ns.relayEnv()
	for k, v := range map[string]string{
		"EMAIL_HOST": mp.SMTPHost(), "EMAIL_PORT": itoa(mp.SMTPPort()),
		"DEFAULT_FROM_EMAIL": "notify@example.com", "FRONTEND_BASE_URL": "https://app.example.com",
		"MAILRELAY_RETRY_DELAYS": "100ms",
	} {
		env[k] = v
	}

	// The deployment provisions with the relay's identity, before anything
	// else runs.
	res := runMailrelay(t, env, "", "provision")
	if res.ExitCode != 0 {
		t.Fatalf("mailrelay provision as %s: %+v", confRelayUser, res)
	}
	for _, want := range []string{"notify_email_state", "notify_seen", "NOTIFY_HELD", "mailrelay_flush on NOTIFY_HELD"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("mailrelay provision as %s does not list %s:\n%s", confRelayUser, want, res.Stdout)
		}
	}
	// provision as the publisher or the web app is refused, naming why.
	for _, who := range []struct{ user, password string }{
		{confPublisherUser, ns.publisherPassword}, {confWebAppUser, ns.webAppPassword},
	} {
		res := runMailrelay(t, map[string]string{"NATS_URL": ns.URL(), "NATS_USER": who.user, "NATS_PASSWORD": who.password,
			"NATS_INBOX_PREFIX": "_INBOX_mailrelay"}, "", "provision", "--timeout", "10s")
		if res.ExitCode != 1 || !strings.Contains(res.Stderr, "Permissions Violation") || strings.Contains(res.Stderr, who.password) {
			t.Errorf("mailrelay provision as %s: %+v, want exit 1 naming a permissions violation", who.user, res)
		}
	}
	_, relayJS, relayV := connectAs(t, ns.URL(), confRelayUser, ns.relayPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := startRelay(t, env)
	r.WaitReady(t, time.Minute)

	webNC, webJS, webV := connectAs(t, ns.URL(), confWebAppUser, ns.webAppPassword)

	// --- What it must do works.

	// notify_prefs: open, put, get, compare-and-set update, create, watch.
	prefsKV, err := webJS.KeyValue(ctx, "notify_prefs")
	if err != nil {
		t.Fatalf("open notify_prefs as the web app: %v", err)
	}
	watch, err := prefsKV.Watch(ctx, "u42")
	if err != nil {
		t.Fatalf("watch notify_prefs as the web app: %v", err)
	}
	defer watch.Stop()
	rev, err := prefsKV.Put(ctx, "u42", []byte(`{"email":{"task.assigned":false}}`))
	if err != nil {
		t.Fatalf("put notify_prefs u42 as the web app: %v", err)
	}
	if e, err := prefsKV.Get(ctx, "u42"); err != nil || e.Revision() != rev {
		t.Fatalf("get notify_prefs u42 as the web app: %v %v", e, err)
	}
	if _, err := prefsKV.Update(ctx, "u42", []byte(`{"email":{"task.assigned":true}}`), rev); err != nil {
		t.Fatalf("update notify_prefs u42 as the web app: %v", err)
	}
	if _, err := prefsKV.Update(ctx, "u42", []byte(`{"email":{}}`), rev); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("stale update of notify_prefs u42: %v, want a compare-and-set conflict", err)
	}
	if _, err := prefsKV.Create(ctx, "u43", []byte(`{"email":{"mention":true}}`)); err != nil {
		t.Fatalf("create notify_prefs u43 as the web app: %v", err)
	}
	var watched []string
	for len(watched) < 2 { // the put and the update (nil marks the end of the initial values)
		select {
		case e := <-watch.Updates():
			if e != nil {
				watched = append(watched, string(e.Value()))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("watch of notify_prefs u42 as the web app saw %q, want the put and the update", watched)
		}
	}
	if !strings.Contains(watched[len(watched)-1], `"task.assigned":true`) {
		t.Errorf("watch of notify_prefs u42: %q, want the update last", watched)
	}
	keys, err := prefsKV.ListKeys(ctx)
	if err != nil {
		t.Fatalf("list notify_prefs keys as the web app: %v", err)
	}
	var keyList []string
	for k := range keys.Keys() {
		keyList = append(keyList, k)
	}
	if len(keyList) != 2 {
		t.Errorf("notify_prefs keys: %v, want u42 and u43", keyList)
	}

	// A notification, with a JetStream ack, and its ledger record: get and
	// watch.
	ledgerKV, err := webJS.KeyValue(ctx, "notify_email_state")
	if err != nil {
		t.Fatalf("open notify_email_state as the web app: %v", err)
	}
	ledgerWatch, err := ledgerKV.Watch(ctx, "web-1")
	if err != nil {
		t.Fatalf("watch notify_email_state as the web app: %v", err)
	}
	defer ledgerWatch.Stop()
	publishAssigned(t, webJS, "web-1", "u42", "ann@example.com")
	mp.WaitForCount(t, 1, time.Minute)
	st, _ := kvState(t, ledgerKV, "web-1", "sent", 30*time.Second)
	if st.Recipient != "u42" {
		t.Errorf("ledger record of web-1 read by the web app: %+v", st)
	}
	seenSent := false
	for !seenSent {
		select {
		case e := <-ledgerWatch.Updates():
			if e != nil {
				var w emailState
				_ = json.Unmarshal(e.Value(), &w)
				seenSent = w.State == "sent"
			}
		case <-time.After(30 * time.Second):
			t.Fatal("watch of notify_email_state web-1 as the web app never saw sent")
		}
	}

	// notify_seen: the user saw it in the app.
	seenKV, err := webJS.KeyValue(ctx, "notify_seen")
	if err != nil {
		t.Fatalf("open notify_seen as the web app: %v", err)
	}
	if _, err := seenKV.Put(ctx, "web-1", []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		t.Fatalf("put notify_seen web-1 as the web app: %v", err)
	}
	if _, err := openBucket(t, relayJS, "notify_seen").Get(ctx, "web-1"); err != nil {
		t.Errorf("notify_seen web-1 as the relay reads it: %v", err)
	}

	// The nats CLI works the same way under this identity.
	cli := []string{"--user", confWebAppUser, "--password", ns.webAppPassword, "--inbox-prefix", confWebAppInbox}
	if _, _, err := runNATSCLI(t, ns.URL(), `{"email":{"mention":false}}`, append(cli, "kv", "put", "notify_prefs", "u44")...); err != nil {
		t.Errorf("nats kv put notify_prefs as the web app: %v", err)
	}
	if out, _, err := runNATSCLI(t, ns.URL(), "", append(cli, "kv", "get", "--raw", "notify_prefs", "u44")...); err != nil ||
		!strings.Contains(out, `"mention":false`) {
		t.Errorf("nats kv get notify_prefs as the web app: %q %v", out, err)
	}
	if out, _, err := runNATSCLI(t, ns.URL(), "", append(cli, "kv", "get", "--raw", "notify_email_state", "web-1")...); err != nil ||
		!strings.Contains(out, `"sent"`) {
		t.Errorf("nats kv get notify_email_state as the web app: %q %v", out, err)
	}
	if _, stderr, err := runNATSCLI(t, ns.URL(), string(assignedEvent("web-2", "u43", "bo@example.com")),
		append(cli, "pub", "--jetstream", "--no-templates", "--force-stdin", "notify.task.assigned", "-H", "Nats-Msg-Id:web-2")...); err != nil ||
		!strings.Contains(stderr, "Stored in Stream: NOTIFY") {
		t.Errorf("nats pub --jetstream as the web app: %v\n%s", err, stderr)
	}
	// mailrelay's own commands, given the web app's inbox prefix.
	webEnv := map[string]string{"NATS_URL": ns.URL(), "NATS_USER": confWebAppUser, "NATS_PASSWORD": ns.webAppPassword,
		"NATS_INBOX_PREFIX": confWebAppInbox}
	if res := runMailrelay(t, webEnv, "", "prefs", "set", "u45", "all=on"); res.ExitCode != 0 {
		t.Errorf("mailrelay prefs set as the web app: %+v", res)
	}
	if res := runMailrelay(t, webEnv, "", "state", "get", "web-1"); res.ExitCode != 0 || !strings.Contains(res.Stdout, `"sent"`) {
		t.Errorf("mailrelay state get as the web app: %+v", res)
	}
	if res := runMailrelay(t, webEnv, string(assignedEvent("web-3", "u42", "ann@example.com")), "publish"); res.ExitCode != 0 {
		t.Errorf("mailrelay publish as the web app: %+v", res)
	}
	mp.WaitForCount(t, 2, time.Minute) // web-3; web-2 is for u43, who has no task.assigned

	// None of that met a refusal.
	webV.mu.Lock()
	if len(webV.errs) != 0 {
		t.Errorf("the web app's allowed work met errors: %v", webV.errs)
	}
	webV.mu.Unlock()

	// --- What it must not do is refused.

	// High-level calls fail: their first request is refused.
	var wg sync.WaitGroup
	calls := []struct {
		what, subject string
		f             func(ctx context.Context) error
	}{
		{"delete the NOTIFY stream", "$JS.API.STREAM.DELETE.NOTIFY",
			func(ctx context.Context) error { return webJS.DeleteStream(ctx, "NOTIFY") }},
		{"delete the notify_prefs bucket", "$JS.API.STREAM.DELETE.KV_notify_prefs",
			func(ctx context.Context) error { return webJS.DeleteKeyValue(ctx, "notify_prefs") }},
		{"bind to the relay's consumer", "$JS.API.CONSUMER.INFO.NOTIFY.mailrelay",
			func(ctx context.Context) error { _, err := webJS.Consumer(ctx, "NOTIFY", "mailrelay"); return err }},
		{"create a consumer on NOTIFY", "$JS.API.CONSUMER.CREATE.NOTIFY.spy",
			func(ctx context.Context) error {
				_, err := webJS.CreateConsumer(ctx, "NOTIFY", jetstream.ConsumerConfig{Name: "spy"})
				return err
			}},
		{"create a bucket", "$JS.API.STREAM.UPDATE.KV_webapp_own",
			func(ctx context.Context) error {
				_, err := webJS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "webapp_own"})
				return err
			}},
		{"read another bucket", "$JS.API.STREAM.INFO.KV_notify_suppressed",
			func(ctx context.Context) error { _, err := webJS.KeyValue(ctx, "notify_suppressed"); return err }},
		{"put on notify_email_state", "$KV.notify_email_state.web-1",
			func(ctx context.Context) error {
				_, err := ledgerKV.Put(ctx, "web-1", []byte(`{"state":"sent"}`))
				return err
			}},
		{"read notify_seen", "$JS.API.DIRECT.GET.KV_notify_seen.$KV.notify_seen.web-1",
			func(ctx context.Context) error { _, err := seenKV.Get(ctx, "web-1"); return err }},
	}
	errs := make([]error, len(calls))
	for i, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
			defer ccancel()
			errs[i] = c.f(cctx)
		}()
	}
	wg.Wait()
	for i, c := range calls {
		if errs[i] == nil {
			t.Errorf("the web app could %s", c.what)
		}
		webV.wait(t, "Publish", c.subject)
	}

	// Lower-level ways in: pulling from the relay's consumer, stream
	// admin, writing the ledger, raw reads of other buckets.
	webV.refusePublish(t, webNC,
		"$JS.API.CONSUMER.MSG.NEXT.NOTIFY.mailrelay",
		"$JS.ACK.NOTIFY.mailrelay.1.1.1.1.1",
		"$JS.API.CONSUMER.DELETE.NOTIFY.mailrelay",
		"$JS.API.CONSUMER.CREATE.NOTIFY",
		"$JS.API.STREAM.PURGE.NOTIFY",
		"$JS.API.STREAM.PURGE.KV_notify_email_state",
		"$JS.API.STREAM.UPDATE.KV_notify_prefs",
		"$JS.API.STREAM.CREATE.KV_notify_seen",
		"$JS.API.DIRECT.GET.NOTIFY",
		"$JS.API.STREAM.MSG.GET.NOTIFY",
		"$JS.API.DIRECT.GET.KV_notify_suppressed",
		"$JS.API.CONSUMER.CREATE.KV_notify_seen",
		"$KV.notify_email_state.web-1",
		"$KV.notify_suppressed.x",
		"$JS.API.STREAM.LIST",
		"$JS.API.ACCOUNT.PURGE.$G",
	)
	// Listening in: the relay's replies, the publishers' replies, the
	// notifications and the buckets' raw subjects.
	webV.refuseSubscribe(t, webNC, "the web app", "_INBOX_mailrelay.>", "_INBOX.>", "notify.>", "$KV.notify_prefs.>", "$KV.notify_email_state.>", ">")
	// A web app connected with the default inbox prefix is told at once.
	defNC, err := nats.Connect(ns.URL(), nats.Name("e2e-default-inbox"), nats.UserInfo(confWebAppUser, ns.webAppPassword),
		nats.PermissionErrOnSubscribe(true))
	if err != nil {
		t.Fatal(err)
	}
	defer defNC.Close()
	if _, err := defNC.Request("$JS.API.INFO", nil, 2*time.Second); err == nil {
		t.Error("the web app could read replies on the default _INBOX prefix")
	}

	// Nothing it tried changed anything: the relay still mails u42 and the
	// ledger still says web-1 was sent.
	publishAssigned(t, webJS, "web-4", "u42", "ann@example.com")
	mp.WaitForCount(t, 3, time.Minute)
	relayLedger := openBucket(t, relayJS, "notify_email_state")
	kvState(t, relayLedger, "web-4", "sent", 30*time.Second)
	if st, _ := kvState(t, relayLedger, "web-1", "sent", 5*time.Second); st.Recipient != "u42" {
		t.Errorf("web-1 after the web app's attempts: %+v", st)
	}

	// The relay (serve and provision) never met a refusal.
	r.Stop()
	relayV.mu.Lock()
	if len(relayV.errs) != 0 {
		t.Errorf("the relay's identity met errors: %v", relayV.errs)
	}
	relayV.mu.Unlock()
	// Nor did the web app's nats CLI and mailrelay commands: its only
	// refusals are the test's deliberate attempts above (its Go client,
	// the default-inbox client, and provision run as the web app).
	for _, line := range strings.Split(readFile(ns.logPath), "\n") {
		if !strings.Contains(line, "Violation") {
			continue
		}
		if strings.Contains(line, "user:"+confRelayUser+`"`) {
			t.Errorf("nats-server refused the relay something it needs: %s", line)
		}
		if strings.Contains(line, "user:"+confWebAppUser+`"`) && !strings.Contains(line, `:e2e-notify-webapp"`) &&
			!strings.Contains(line, `:e2e-default-inbox"`) && !strings.Contains(line, `:mailrelay-provision"`) {
			t.Errorf("nats-server refused the web app something it needs: %s", line)
		}
	}
}
