package e2e

// Security: the repository's nats.conf (three users with least privilege) and
// secrets that never leave the relay.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ---------------------------------------------------------------------------
// nats-server with the repository's nats.conf

// The users of nats.conf and the variables holding their passwords.
const (
	confRelayUser        = "mailrelay"
	confRelayPassVar     = "MAILRELAY_NATS_PASSWORD"
	confPublisherUser    = "notify-publisher"
	confPublisherPassVar = "NOTIFY_PUBLISHER_NATS_PASSWORD"
	confWebAppUser       = "notify-webapp"
	confWebAppPassVar    = "NOTIFY_WEBAPP_NATS_PASSWORD"
	// confWebAppInbox is the web app's own inbox prefix (nats.conf).
	confWebAppInbox = "_INBOX_notify_webapp"
)

// confNATS is a nats-server running <repo>/nats.conf.
type confNATS struct {
	port, monPort     int
	logPath           string
	relayPassword     string
	publisherPassword string
	webAppPassword    string
}

func (n *confNATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// relayEnv is the NATS part of the relay's environment, with its own identity.
func (n *confNATS) relayEnv() map[string]string {
	return map[string]string{"NATS_URL": n.URL(), "NATS_USER": confRelayUser, "NATS_PASSWORD": n.relayPassword}
}

// storeDirRE finds the store_dir line of nats.conf.
var storeDirRE = regexp.MustCompile(`(?m)^(\s*store_dir:\s*).*$`)

// confCopy writes nats.conf into dir with its store_dir pointed at dir:
// nats-server refuses -sd together with a store_dir in the file.
func confCopy(t testing.TB, dir string) string {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(mustRepoRoot(t), "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(storeDirRE.FindAllIndex(text, -1)); n != 1 {
		t.Fatalf("nats.conf has %d store_dir lines, want 1", n)
	}
	out := storeDirRE.ReplaceAll(text, []byte("${1}"+strconv.Quote(filepath.Join(dir, "store"))))
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startConfNATS runs nats-server -c nats.conf on free ports (-p, -m), with
// the three passwords in its environment, and waits until it is healthy.
func startConfNATS(t testing.TB) *confNATS {
	t.Helper()
	bin := requireTool(t, "nats-server")
	dir := t.TempDir()
	conf := confCopy(t, dir)
	n := &confNATS{
		logPath:           filepath.Join(dir, "nats-server.log"),
		relayPassword:     "relay-nats-" + randomMarker(),
		publisherPassword: "pub-nats-" + randomMarker(),
		webAppPassword:    "webapp-nats-" + randomMarker(),
	}
	dumpOnFailure(t, "nats-server (nats.conf)", n.logPath)
	for attempt := 1; ; attempt++ {
		n.port, n.monPort = freePort(t), freePort(t)
		p := startProcess(t, procSpec{
			name: "nats-server",
			bin:  bin,
			args: []string{"-c", conf, "-a", "127.0.0.1", "-p", itoa(n.port), "-m", itoa(n.monPort)},
			env: cleanEnv(dir, confRelayPassVar+"="+n.relayPassword,
				confPublisherPassVar+"="+n.publisherPassword, confWebAppPassVar+"="+n.webAppPassword),
			dir:    dir,
			stdout: n.logPath,
			stderr: n.logPath,
		})
		health := fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", n.monPort)
		msg, ok := poll(startTimeout, func() (bool, string) {
			if p.exited() {
				return true, "exited: " + p.exitDescription()
			}
			if code, err := httpStatus(health); err != nil || code != 200 {
				return false, fmt.Sprintf("%s: %d %v", health, code, err)
			}
			if err := natsGreets(n.port); err != nil {
				return false, err.Error()
			}
			return true, ""
		})
		if ok && !p.exited() {
			return n
		}
		p.kill()
		if attempt < 3 && addressInUse(readFile(n.logPath)) {
			continue
		}
		t.Fatalf("nats-server -c nats.conf: %s", msg)
	}
}

// violations records the asynchronous errors of a NATS connection.
type violations struct {
	mu   sync.Mutex
	errs []error
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	v.errs = append(v.errs, err)
	v.mu.Unlock()
}

// wait fails the test unless the server reported a permissions violation
// for op ("Publish" or "Subscription") on subject.
func (v *violations) wait(t testing.TB, op, subject string) {
	t.Helper()
	want := fmt.Sprintf("Permissions Violation for %s to %q", op, subject)
	eventually(t, 10*time.Second, func() (bool, string) {
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, err := range v.errs {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no %q among the connection's errors %v", want, v.errs)
	})
}

// refusePublish sends a request on each subject over nc and waits until
// the server has reported a publish permissions violation for it.
func (v *violations) refusePublish(t testing.TB, nc *nats.Conn, subjects ...string) {
	t.Helper()
	inbox := nc.NewRespInbox()
	for _, subj := range subjects {
		if err := nc.PublishRequest(subj, inbox, []byte(`{"batch":1}`)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		v.wait(t, "Publish", subj)
	}
}

// refuseSubscribe subscribes to each subject over nc (as who) and checks
// that the subscription fails with a permissions violation the server
// also reported.
func (v *violations) refuseSubscribe(t testing.TB, nc *nats.Conn, who string, subjects ...string) {
	t.Helper()
	for _, subj := range subjects {
		sub, err := nc.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(5 * time.Second); !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("subscribe %s as %s: %v, want a permissions violation", subj, who, err)
		}
		v.wait(t, "Subscription", subj)
	}
}

// connectAs connects to url as user and returns the connection, a JetStream
// context and the recorder of its permission errors.
func connectAs(t testing.TB, url, user, password string) (*nats.Conn, jetstream.JetStream, *violations) {
	t.Helper()
	v := &violations{}
	opts := []nats.Option{nats.Name("e2e-" + user), nats.UserInfo(user, password),
		nats.ErrorHandler(v.handler), nats.PermissionErrOnSubscribe(true)}
	switch user {
	case confRelayUser:
		// the relay identity may read replies only on its own inbox prefix
		opts = append(opts, nats.CustomInboxPrefix("_INBOX_mailrelay"))
	case confWebAppUser:
		opts = append(opts, nats.CustomInboxPrefix(confWebAppInbox))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, v
}

// assignedEvent is the JSON of a task.assigned notification for user.
func assignedEvent(id, user, email string) []byte {
	ev := map[string]any{
		"id": id, "type": "task.assigned", "occurred_at": time.Now().UTC().Format(time.RFC3339),
		"recipient": map[string]string{"id": user, "email": email, "name": "Ann Lee"},
		"actor":     map[string]string{"id": "u7", "name": "Bob Stone"},
		"task":      map[string]string{"id": "t-1001", "title": "Pour foundation"},
	}
	b, _ := json.Marshal(ev)
	return b
}

// publishAssigned publishes a task.assigned notification with Nats-Msg-Id
// and requires a JetStream ack from NOTIFY.
func publishAssigned(t testing.TB, js jetstream.JetStream, id, user, email string) *jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := nats.NewMsg("notify.task.assigned")
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Data = assignedEvent(id, user, email)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatalf("publish %s: %v", id, err)
	}
	if ack.Stream != "NOTIFY" || ack.Duplicate {
		t.Fatalf("publish %s: ack %+v, want stored in NOTIFY", id, ack)
	}
	return ack
}

// kvState waits until the ledger record of id (read through kv) has state
// want, and returns the raw record.
func kvState(t testing.TB, kv jetstream.KeyValue, id, want string, timeout time.Duration) (emailState, string) {
	t.Helper()
	var st emailState
	var raw string
	eventually(t, timeout, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e, err := kv.Get(ctx, id)
		if err != nil {
			return false, fmt.Sprintf("notify_email_state %s: %v", id, err)
		}
		raw = string(e.Value())
		st = emailState{}
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			t.Fatalf("notify_email_state %s: %v in %q", id, err, raw)
		}
		return st.State == want, fmt.Sprintf("state of %s is %s, want %s", id, raw, want)
	})
	return st, raw
}

func openBucket(t testing.TB, js jetstream.JetStream, name string) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		t.Fatalf("bucket %s: %v", name, err)
	}
	return kv
}

// randomMarker is a unique string to look for in outputs.
func randomMarker() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// TestNATSConfRefusesMissingPasswords: nats.conf holds no secret; without
// the password variables nats-server refuses the configuration.
func TestNATSConfRefusesMissingPasswords(t *testing.T) {
	t.Parallel()
	bin := requireTool(t, "nats-server")
	dir := t.TempDir()
	conf := confCopy(t, dir)
	raw, err := os.ReadFile(filepath.Join(mustRepoRoot(t), "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{confRelayPassVar, confPublisherPassVar, confWebAppPassVar} {
		if !bytes.Contains(raw, []byte("$"+v)) {
			t.Fatalf("nats.conf does not take a password from $%s", v)
		}
	}
	check := func(env ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "-t", "-c", conf)
		cmd.Env = cleanEnv(dir, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := check(); err == nil || !strings.Contains(out, confRelayPassVar) {
		t.Errorf("nats-server -t without the variables: err %v, output %q; want a refusal naming %s", err, out, confRelayPassVar)
	}
	if out, err := check(confRelayPassVar+"=a", confPublisherPassVar+"=b"); err == nil || !strings.Contains(out, confWebAppPassVar) {
		t.Errorf("nats-server -t without $%s: err %v, output %q; want a refusal naming it", confWebAppPassVar, err, out)
	}
	if out, err := check(confRelayPassVar+"=a", confPublisherPassVar+"=b", confWebAppPassVar+"=c"); err != nil {
		t.Errorf("nats-server -t with the variables: %v\n%s", err, out)
	}
}

// TestNATSConfPermissions runs nats-server with the repository's nats.conf:
// the relay, with its own identity, provisions and mails end to end without
// a single permission violation; the publisher can publish notifications and
// get the JetStream ack, and nothing else: reading notify_prefs or
// notify_email_state, consuming NOTIFY or writing preferences is refused
// with a permissions violation.
func TestNATSConfPermissions(t *testing.T) {
	t.Parallel()
	buildMailrelay(t)
	ns := startConfNATS(t)
	mp := startMailpit(t, mailpitOptions{})
	env := ns.relayEnv()
	for k, v := range map[string]string{
		"EMAIL_HOST": mp.SMTPHost(), "EMAIL_PORT": itoa(mp.SMTPPort()),
		"DEFAULT_FROM_EMAIL": "notify@example.com", "FRONTEND_BASE_URL": "https://app.example.com",
		"MAILRELAY_RETRY_DELAYS": "100ms", "MAILRELAY_LOG_LEVEL": "debug",
	} {
		env[k] = v
	}
	r := startRelay(t, env)
	r.WaitReady(t, time.Minute)
	if res := runMailrelay(t, env, "", "prefs", "set", "u42", "task.assigned=on"); res.ExitCode != 0 {
		t.Fatalf("prefs set as the relay: %+v", res)
	}

	// The publisher publishes and gets the JetStream ack.
	pubNC, pubJS, pubV := connectAs(t, ns.URL(), confPublisherUser, ns.publisherPassword)
	publishAssigned(t, pubJS, "perm-1", "u42", "ann@example.com")
	// mailrelay publish works with the publisher's identity too.
	pubEnv := map[string]string{"NATS_URL": ns.URL(), "NATS_USER": confPublisherUser, "NATS_PASSWORD": ns.publisherPassword}
	if res := runMailrelay(t, pubEnv, string(assignedEvent("perm-2", "u42", "ann@example.com")), "publish"); res.ExitCode != 0 ||
		!strings.Contains(res.Stdout, "stream NOTIFY") {
		t.Fatalf("mailrelay publish as the publisher: %+v", res)
	}

	// The relay mails both, and records them, with its own identity.
	mails := mp.WaitForCount(t, 2, time.Minute)
	for _, m := range mails {
		if len(m.To) != 1 || m.To[0].Address != "ann@example.com" {
			t.Errorf("mail: %+v", m)
		}
	}
	_, relayJS, relayV := connectAs(t, ns.URL(), confRelayUser, ns.relayPassword)
	ledger := openBucket(t, relayJS, "notify_email_state")
	for _, id := range []string{"perm-1", "perm-2"} {
		kvState(t, ledger, id, "sent", 30*time.Second)
	}
	if res := runMailrelay(t, env, "", "state", "get", "perm-1"); res.ExitCode != 0 || !strings.Contains(res.Stdout, `"sent"`) {
		t.Errorf("state get as the relay: %+v", res)
	}
	// replay reads the ledger with a watch (an ordered consumer on the bucket).
	if res := runMailrelay(t, env, "", "replay", "--dry-run"); res.ExitCode != 0 {
		t.Errorf("replay --dry-run as the relay: %+v", res)
	}

	// The publisher may read nothing and consume nothing. High-level calls
	// fail (their first API request is refused) ...
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Add(3)
	go func() { defer wg.Done(); _, errs[0] = pubJS.KeyValue(ctx, "notify_prefs") }()
	go func() { defer wg.Done(); _, errs[1] = pubJS.KeyValue(ctx, "notify_email_state") }()
	go func() { defer wg.Done(); _, errs[2] = pubJS.Consumer(ctx, "NOTIFY", "mailrelay") }()
	wg.Wait()
	for i, what := range []string{"open notify_prefs", "open notify_email_state", "bind consumer mailrelay"} {
		if errs[i] == nil {
			t.Errorf("publisher could %s", what)
		}
	}
	pubV.wait(t, "Publish", "$JS.API.STREAM.INFO.KV_notify_prefs")
	pubV.wait(t, "Publish", "$JS.API.STREAM.INFO.KV_notify_email_state")
	pubV.wait(t, "Publish", "$JS.API.CONSUMER.INFO.NOTIFY.mailrelay")

	// ... and so does every lower-level way in: direct gets of the buckets,
	// pulling from the consumer, a consumer of its own, writing a
	// preference, deleting the stream.
	pubV.refusePublish(t, pubNC,
		"$JS.API.DIRECT.GET.KV_notify_prefs.$KV.notify_prefs.u42",
		"$JS.API.DIRECT.GET.KV_notify_email_state.$KV.notify_email_state.perm-1",
		"$JS.API.STREAM.MSG.GET.KV_notify_prefs",
		"$JS.API.CONSUMER.MSG.NEXT.NOTIFY.mailrelay",
		"$JS.API.CONSUMER.CREATE.NOTIFY",
		"$KV.notify_prefs.u42",
		"$JS.API.STREAM.DELETE.NOTIFY",
	)
	// Core subscriptions to the notifications or the buckets are refused
	// too, and so is listening in on the relay's replies (its inbox prefix).
	pubV.refuseSubscribe(t, pubNC, "the publisher", "notify.>", "$KV.notify_prefs.>", "$KV.notify_email_state.>", "_INBOX_mailrelay.>")

	// The relay's identity is not an admin either.
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer dcancel()
	if err := relayJS.DeleteStream(dctx, "NOTIFY"); err == nil {
		t.Error("the relay could delete the NOTIFY stream")
	}
	relayV.wait(t, "Publish", "$JS.API.STREAM.DELETE.NOTIFY")

	// Nothing the publisher tried changed anything: the preference is still
	// on, and a third notification is still mailed.
	prefsKV := openBucket(t, relayJS, "notify_prefs")
	if e, err := prefsKV.Get(context.Background(), "u42"); err != nil || !strings.Contains(string(e.Value()), `"task.assigned":true`) {
		t.Errorf("notify_prefs u42 after the publisher's attempts: %v %v", e, err)
	}
	publishAssigned(t, pubJS, "perm-3", "u42", "ann@example.com")
	mp.WaitForCount(t, 3, time.Minute)
	kvState(t, ledger, "perm-3", "sent", 30*time.Second)

	// The relay and its CLI never hit a permission it lacks.
	r.Stop()
	for _, line := range strings.Split(readFile(ns.logPath), "\n") {
		if strings.Contains(line, "user:"+confRelayUser+`"`) && strings.Contains(line, "Violation") &&
			!strings.Contains(line, "$JS.API.STREAM.DELETE.NOTIFY") {
			t.Errorf("nats-server refused the relay something it needs: %s", line)
		}
	}
	if strings.Contains(r.Stderr(), "permissions violation") {
		t.Error("the relay logged a permissions violation")
	}
}

// ---------------------------------------------------------------------------
// Secrets

// secretForms lists the ways a secret could leak: as is, and base64 encoded
// alone or as SMTP AUTH PLAIN sends it with user.
func secretForms(user, secret string) []string {
	forms := []string{secret}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		forms = append(forms, enc.EncodeToString([]byte(secret)), enc.EncodeToString([]byte("\x00"+user+"\x00"+secret)))
	}
	return forms
}

// transcript collects everything the relay wrote, labelled.
type transcript struct {
	parts []struct{ where, text string }
}

func (tr *transcript) add(where, text string) {
	tr.parts = append(tr.parts, struct{ where, text string }{where, text})
}

// addResult adds a one-shot command's outputs.
func (tr *transcript) addResult(what string, res relayResult) {
	tr.add(what+" stdout", res.Stdout)
	tr.add(what+" stderr", res.Stderr)
}

// httpCall performs one request and returns the status, the headers and the
// body.
func httpCall(t testing.TB, method, url, authorization string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// TestSecretsNeverLeak runs the relay, with unique markers as the SMTP
// password, the admin token and the NATS password, through a successful
// send, an SMTP outage, an authentication failure (a wrong password, also a
// marker), `mailrelay status`, `mailrelay send-test`, the HTTP endpoints
// with and without the token, and a configuration error; then it searches
// every byte the relay wrote (stdout, stderr, HTTP answers, state records)
// for the markers, as is and base64 encoded.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	buildMailrelay(t)
	ns := startConfNATS(t)
	const smtpUser = "relay-smtp"
	password := "smtp-pw-" + randomMarker()
	wrongPassword := "smtp-wrong-" + randomMarker()
	token := "admin-token-" + randomMarker()
	unsubKey := "unsub-key-" + randomMarker() + "-0123456789abcdef0123456789abcdef"
	mp := startMailpit(t, mailpitOptions{Username: smtpUser, Password: password})

	env := ns.relayEnv()
	for k, v := range map[string]string{
		"EMAIL_HOST": mp.SMTPHost(), "EMAIL_PORT": itoa(mp.SMTPPort()),
		"EMAIL_HOST_USER": smtpUser, "EMAIL_HOST_PASSWORD": password,
		"MAILRELAY_ADMIN_TOKEN": token, "DEFAULT_FROM_EMAIL": "notify@example.com",
		"FRONTEND_BASE_URL": "https://app.example.com", "MAILRELAY_RETRY_DELAYS": "100ms",
		"MAILRELAY_LOG_LEVEL": "debug",
		// One-click on: the key signs every mail's token and never shows.
		"MAILRELAY_UNSUBSCRIBE_KEYS": unsubKey, "MAILRELAY_PUBLIC_URL": "https://relay.example.com",
	} {
		env[k] = v
	}
	var tr transcript
	cli := func(what string, env map[string]string, stdin string, args ...string) relayResult {
		t.Helper()
		res := runMailrelay(t, env, stdin, args...)
		tr.addResult(what, res)
		return res
	}
	_, pubJS, _ := connectAs(t, ns.URL(), confPublisherUser, ns.publisherPassword)
	_, relayJS, _ := connectAs(t, ns.URL(), confRelayUser, ns.relayPassword)

	r := startRelay(t, env)
	r.WaitReady(t, time.Minute)
	ledger := openBucket(t, relayJS, "notify_email_state")
	if res := cli("prefs set", env, "", "prefs", "set", "u1", "all=on"); res.ExitCode != 0 {
		t.Fatalf("prefs set: %+v", res)
	}

	// A successful send.
	publishAssigned(t, pubJS, "sec-ok", "u1", "ann@example.com")
	mp.WaitForCount(t, 1, time.Minute)
	_, raw := kvState(t, ledger, "sec-ok", "sent", 30*time.Second)
	tr.add("state sec-ok", raw)

	// The HTTP endpoints, with and without the token.
	for _, c := range []struct {
		path, auth string
		want       int
	}{
		{"/v1/status/email", "", 401},
		{"/v1/status/email", "Bearer wrong-" + token[:4], 401},
		{"/v1/status/email", "Bearer " + token, 200},
		{"/metrics", "", 200},
		{"/healthz", "", 200},
		{"/readyz", "", 200},
	} {
		code, h, body := httpCall(t, http.MethodGet, r.HTTPURL()+c.path, c.auth)
		if code != c.want {
			t.Errorf("GET %s (with authorization: %v): %d, want %d", c.path, c.auth != "", code, c.want)
		}
		hb, _ := json.Marshal(h)
		tr.add("GET "+c.path+" headers", string(hb))
		tr.add("GET "+c.path+" body", body)
	}

	// status and send-test.
	if res := cli("status", env, "", "status"); res.ExitCode != 0 {
		t.Errorf("status: %+v", res)
	}
	if res := cli("send-test", env, "", "send-test", "--to", "ann@example.com"); res.ExitCode != 0 ||
		!strings.Contains(res.Stdout, "accepted by") {
		t.Errorf("send-test: %+v", res)
	}
	mp.WaitForCount(t, 2, time.Minute)

	// An SMTP outage: a notification runs out of attempts, send-test fails.
	mp.Stop()
	publishAssigned(t, pubJS, "sec-outage", "u1", "ann@example.com")
	_, raw = kvState(t, ledger, "sec-outage", "inbox_only", time.Minute)
	tr.add("state sec-outage", raw)
	if res := cli("send-test during the outage", env, "", "send-test", "--to", "ann@example.com"); res.ExitCode == 0 ||
		!strings.Contains(res.Stderr, "step connect") {
		t.Errorf("send-test during the outage: %+v", res)
	}
	mp.Restart()

	// An authentication failure: a relay with the wrong password.
	r.Stop()
	tr.add("relay stdout", r.Stdout())
	tr.add("relay stderr", r.Stderr())
	wrongEnv := mapWith(env, "EMAIL_HOST_PASSWORD", wrongPassword)
	r2 := startRelay(t, wrongEnv)
	r2.WaitReady(t, time.Minute)
	publishAssigned(t, pubJS, "sec-auth", "u1", "ann@example.com")
	st, raw := kvState(t, ledger, "sec-auth", "inbox_only", time.Minute)
	tr.add("state sec-auth", raw)
	if !strings.Contains(st.Error, "auth") {
		t.Errorf("state of sec-auth: %+v, want an auth failure", st)
	}
	if res := cli("send-test with the wrong password", wrongEnv, "", "send-test", "--to", "ann@example.com"); res.ExitCode == 0 ||
		!strings.Contains(res.Stderr, "step auth") {
		t.Errorf("send-test with the wrong password: %+v", res)
	}
	r2.Stop()
	tr.add("relay 2 stdout", r2.Stdout())
	tr.add("relay 2 stderr", r2.Stderr())

	// A configuration error, for each command that reads the configuration.
	badEnv := mapWith(mapWith(env, "EMAIL_USE_TLS", "true"), "EMAIL_USE_SSL", "true")
	for _, args := range [][]string{{"serve"}, {"status"}, {"send-test", "--to", "ann@example.com"}} {
		res := cli("config error: "+strings.Join(args, " "), badEnv, "", args...)
		if res.ExitCode == 0 || !strings.Contains(res.Stderr, "EMAIL_USE_TLS") || !strings.Contains(res.Stderr, "EMAIL_USE_SSL") {
			t.Errorf("mailrelay %s with EMAIL_USE_TLS and EMAIL_USE_SSL: %+v", strings.Join(args, " "), res)
		}
	}

	if mp.Count(t) != 2 {
		t.Errorf("mailpit holds %d messages, want 2", mp.Count(t))
	}
	secrets := map[string][]string{
		"EMAIL_HOST_PASSWORD":             secretForms(smtpUser, password),
		"EMAIL_HOST_PASSWORD (the wrong)": secretForms(smtpUser, wrongPassword),
		"MAILRELAY_ADMIN_TOKEN":           secretForms("", token),
		"NATS_PASSWORD":                   secretForms(confRelayUser, ns.relayPassword),
		"MAILRELAY_UNSUBSCRIBE_KEYS":      secretForms("", unsubKey),
	}
	total := 0
	for _, p := range tr.parts {
		total += len(p.text)
		for name, forms := range secrets {
			for _, f := range forms {
				if strings.Contains(p.text, f) {
					t.Errorf("%s leaks %s (as %q)", p.where, name, f)
				}
			}
		}
	}
	if total < 10_000 {
		t.Errorf("only %d bytes of output searched: the transcript is incomplete", total)
	}
}
