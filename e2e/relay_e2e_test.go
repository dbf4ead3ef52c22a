package e2e

// End-to-end scenarios as a user runs them: the built mailrelay binary, a
// real nats-server, the nats CLI to publish and to read the KV buckets, and
// Mailpit as the SMTP server.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

// The From address and frontend of every relay in these tests.
const (
	e2eFromEmail = "notify@example.com"
	e2eFromHost  = "example.com"
	e2eBaseURL   = "https://app.example.com"
)

// Time limits of the scenarios (two cores, race detector on).
const (
	readyTimeout   = time.Minute      // a relay becomes ready
	settleTimeout  = 45 * time.Second // one notification reaches its state
	backlogTimeout = 3 * time.Minute  // a backlog of 1,000 is mailed
)

// ---------------------------------------------------------------------------
// A stack: nats-server + Mailpit, and relays started against them.

type e2eStack struct {
	ns *natsProc
	mp *mailpit
}

// newStack starts a JetStream server and a Mailpit for one test.
func newStack(t *testing.T) *e2eStack {
	t.Helper()
	buildMailrelay(t) // skip (no tools) or fail before starting servers
	return &e2eStack{ns: startNATSServer(t, natsOptions{}), mp: startMailpit(t, mailpitOptions{})}
}

// env is the relay environment for this stack; kv ("KEY", "value", ...)
// overrides or adds entries.
func (s *e2eStack) env(kv ...string) map[string]string {
	env := map[string]string{
		"NATS_URL":                   s.ns.URL(),
		"EMAIL_HOST":                 s.mp.SMTPHost(),
		"EMAIL_PORT":                 itoa(s.mp.SMTPPort()),
		"DEFAULT_FROM_EMAIL":         e2eFromEmail,
		"FRONTEND_BASE_URL":          e2eBaseURL,
		"MAILRELAY_RETRY_DELAYS":     "200ms",
		"MAILRELAY_ACK_WAIT":         "3s",
		"MAILRELAY_CONCURRENCY":      "8",
		"MAILRELAY_SHUTDOWN_TIMEOUT": "10s",
	}
	if len(kv)%2 != 0 {
		panic("env: odd number of arguments")
	}
	for i := 0; i < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	return env
}

// startReadyRelay starts `mailrelay serve` and waits until it is ready.
func startReadyRelay(t *testing.T, env map[string]string, args ...string) *relayProc {
	t.Helper()
	r := startRelay(t, env, args...)
	r.WaitReady(t, readyTimeout)
	return r
}

// stopClean sends SIGTERM and requires exit code 0 within timeout.
func stopClean(t *testing.T, r *relayProc, timeout time.Duration) {
	t.Helper()
	if err := r.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := r.Wait(timeout)
	if err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	if st.ExitCode() != 0 {
		t.Fatalf("after SIGTERM: %s, want exit code 0", st)
	}
}

// ---------------------------------------------------------------------------
// Events

// newEvent returns a valid event of type typ for recipient user (email may
// be ""), with every field its type requires.
func newEvent(id string, typ event.Type, user, email, name string) *event.Event {
	from, to := "2026-12-01", "2026-12-05"
	ev := &event.Event{
		ID:         id,
		Type:       typ,
		OccurredAt: time.Now().UTC().Truncate(time.Second),
		Workspace:  &event.Workspace{ID: "w1", Name: "Acme Build"},
		Recipient:  event.Recipient{ID: user, Email: email, Name: name},
		Actor:      &event.Actor{ID: "u7", Name: "Bob Stone"},
		Task:       event.Task{ID: "t-1001", Title: "Pour foundation", Project: "HQ"},
	}
	switch typ {
	case event.TaskComment, event.Mention:
		ev.Comment = &event.Comment{ID: "c9", Body: "Concrete truck is late, see https://example.com/deliveries/4711"}
	case event.TaskDateChanged:
		ev.Change = &event.Change{Field: "planned_end", From: &from, To: &to}
	case event.TaskBlocked:
		ev.BlockedBy = &event.TaskRef{ID: "t-0999", Title: "Site survey"}
	}
	return ev
}

// encodeEvent is the JSON of ev; it fails the test if ev is not valid.
func encodeEvent(t testing.TB, ev *event.Event) string {
	t.Helper()
	if err := ev.Validate(); err != nil {
		t.Fatalf("test event %s: %v", ev.ID, err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// pubEvent publishes ev with `nats pub` on its subject, Nats-Msg-Id = id.
func pubEvent(t testing.TB, url string, ev *event.Event) pubAck {
	t.Helper()
	ack := natsPub(t, url, ev.Type.Subject(), encodeEvent(t, ev), ev.ID)
	if ack.Stream != "NOTIFY" || ack.Duplicate {
		t.Fatalf("publish %s: %+v, want stored in NOTIFY", ev.ID, ack)
	}
	return ack
}

// mailID is the Message-ID (without <>) of the mail for notification id, as
// Mailpit reports it.
func mailID(id string) string {
	return strings.Trim(headers.MessageID(id, e2eFromHost), "<>")
}

// countByMessageID counts Mailpit's messages per Message-ID.
func countByMessageID(msgs []mailSummary) map[string]int {
	n := make(map[string]int, len(msgs))
	for _, m := range msgs {
		n[m.MessageID]++
	}
	return n
}

// requireNoMail fails if Mailpit holds a mail for any of the notifications.
func requireNoMail(t *testing.T, mp *mailpit, ids ...string) {
	t.Helper()
	byID := countByMessageID(mp.Messages(t))
	for _, id := range ids {
		if n := byID[mailID(id)]; n != 0 {
			t.Errorf("notification %s: %d mail(s), want none", id, n)
		}
	}
}

// jsConnect connects a Go client for bulk work (1,000 publishes or reads).
func jsConnect(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("e2e-test"))
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// ---------------------------------------------------------------------------
// 1. Every type, opted in, is mailed once.

func TestE2EAllTypesDelivered(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	startReadyRelay(t, s.env())
	url := s.ns.URL()

	prefsPut(t, url, "u42", `{"email":{"task.assigned":true,"task.date_changed":true,"task.comment":true,"task.blocked":true,"mention":true}}`)
	var ids []string
	for i, typ := range event.Types {
		id := fmt.Sprintf("all-%d", i+1)
		ids = append(ids, id)
		pubEvent(t, url, newEvent(id, typ, "u42", "ann@example.com", "Ann Lee"))
	}

	msgs := s.mp.WaitForCount(t, len(ids), settleTimeout)
	byID := countByMessageID(msgs)
	for i, id := range ids {
		typ := event.Types[i]
		if byID[mailID(id)] != 1 {
			t.Errorf("%s (%s): %d mails with Message-ID %s, want 1", id, typ, byID[mailID(id)], mailID(id))
		}
		st := waitState(t, url, id, "sent", settleTimeout)
		if st.Attempts != 1 || st.Type != string(typ) || st.Recipient != "u42" || st.MessageID != "<"+mailID(id)+">" {
			t.Errorf("%s: state %+v, want sent, attempts 1, type %s, recipient u42, message_id <%s>", id, st, typ, mailID(id))
		}
	}
	for _, m := range msgs {
		if len(m.To) != 1 || m.To[0].Address != "ann@example.com" || m.To[0].Name != "Ann Lee" ||
			m.From == nil || m.From.Address != e2eFromEmail {
			t.Errorf("mail %q: from %+v to %+v", m.Subject, m.From, m.To)
		}
	}
}

// ---------------------------------------------------------------------------
// 2. Opted out, no preferences, no address, invalid: recorded, never mailed.

func TestE2EOptOutAndNoEmail(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	startReadyRelay(t, s.env())
	url := s.ns.URL()

	prefsPut(t, url, "u-off", `{"email":{"task.assigned":false,"task.comment":true}}`)
	prefsPut(t, url, "u-on", `{"email":{"task.assigned":true}}`)

	// Email off for the type; no preferences at all; opted in but no address.
	pubEvent(t, url, newEvent("oo-off", event.TaskAssigned, "u-off", "off@example.com", ""))
	pubEvent(t, url, newEvent("oo-none", event.TaskAssigned, "u-nobody", "nobody@example.com", ""))
	pubEvent(t, url, newEvent("oo-noaddr", event.TaskAssigned, "u-on", "", "No Address"))

	// Not JSON at all: recorded under seq.<n>. Valid JSON whose type is
	// not its subject's: recorded under its id. Both stay in the stream.
	const badJSON = `{"id":"oo-badjson","type":"task.assigned",` // cut short
	badAck := natsPub(t, url, "notify.task.assigned", badJSON, "oo-badjson")
	mismatch := encodeEvent(t, newEvent("oo-mismatch", event.TaskComment, "u-on", "on@example.com", ""))
	misAck := natsPub(t, url, "notify.task.assigned", mismatch, "oo-mismatch")

	for id, want := range map[string]string{
		"oo-off":    "skipped_opted_out",
		"oo-none":   "skipped_opted_out",
		"oo-noaddr": "skipped_no_email",
	} {
		st := waitState(t, url, id, want, settleTimeout)
		if st.Type != string(event.TaskAssigned) || st.Recipient == "" {
			t.Errorf("%s: state %+v", id, st)
		}
	}
	badKey := "seq." + strconv.FormatUint(badAck.Seq, 10)
	if st := waitState(t, url, badKey, "invalid", settleTimeout); st.Error == "" {
		t.Errorf("%s: invalid without a reason: %+v", badKey, st)
	}
	st := waitState(t, url, "oo-mismatch", "invalid", settleTimeout)
	if !strings.Contains(st.Error, "task.comment") && !strings.Contains(st.Error, "subject") {
		t.Errorf("oo-mismatch: reason %q does not say the type does not match the subject", st.Error)
	}
	if _, found := kvGet(t, url, "notify_email_state", "oo-badjson"); found {
		t.Errorf("a message that is not JSON got a record under the id it did not carry")
	}
	for _, c := range []struct {
		ack  pubAck
		body string
	}{{badAck, badJSON}, {misAck, mismatch}} {
		msg := streamGet(t, url, "NOTIFY", c.ack.Seq)
		if msg.Subject != "notify.task.assigned" || string(msg.Data) != c.body {
			t.Errorf("stream NOTIFY seq %d: %q %q, want the invalid message kept", c.ack.Seq, msg.Subject, msg.Data)
		}
	}

	// Turning Email off takes effect for the very next notification.
	prefsPut(t, url, "u-toggle", `{"email":{"mention":true}}`)
	pubEvent(t, url, newEvent("oo-t1", event.Mention, "u-toggle", "toggle@example.com", ""))
	waitState(t, url, "oo-t1", "sent", settleTimeout)
	prefsPut(t, url, "u-toggle", `{"email":{"mention":false}}`)
	pubEvent(t, url, newEvent("oo-t2", event.Mention, "u-toggle", "toggle@example.com", ""))
	waitState(t, url, "oo-t2", "skipped_opted_out", settleTimeout)
	// Bad JSON in the preferences reads as off as well.
	kvPut(t, url, "notify_prefs", "u-toggle", `{"email":`)
	pubEvent(t, url, newEvent("oo-t3", event.Mention, "u-toggle", "toggle@example.com", ""))
	waitState(t, url, "oo-t3", "skipped_opted_out", settleTimeout)

	// Every state is final and written after its send (if any): only oo-t1
	// was mailed.
	msgs := s.mp.Messages(t)
	if len(msgs) != 1 || msgs[0].MessageID != mailID("oo-t1") {
		var got []string
		for _, m := range msgs {
			got = append(got, m.MessageID)
		}
		t.Errorf("mailpit holds %v, want only %s", got, mailID("oo-t1"))
	}
	requireNoMail(t, s.mp, "oo-off", "oo-none", "oo-noaddr", "oo-mismatch", "oo-t2", "oo-t3")
	if si := streamInfo(t, url, "NOTIFY"); si.State.Msgs != 8 {
		t.Errorf("stream NOTIFY holds %d messages, want all 8", si.State.Msgs)
	}
}

// ---------------------------------------------------------------------------
// 3. SMTP failures: temporary ones are retried up to MaxDeliver, permanent
// ones are not retried; both end inbox_only.

func TestE2EChaos(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	startReadyRelay(t, s.env())
	url := s.ns.URL()
	prefsPut(t, url, "u42", `{"email":{"task.assigned":true,"task.comment":true}}`)

	s.mp.SetChaos(t, chaosTriggers{Recipient: chaosTrigger{ErrorCode: 451, Probability: 100}})
	pubEvent(t, url, newEvent("ch-451", event.TaskAssigned, "u42", "ann@example.com", ""))
	st := waitState(t, url, "ch-451", "inbox_only", settleTimeout)
	if st.Attempts != 3 || !strings.Contains(st.Error, "451") {
		t.Errorf("ch-451: %+v, want inbox_only after 3 attempts with the 451 in error", st)
	}
	if n := s.mp.Count(t); n != 0 {
		t.Errorf("mailpit holds %d messages after 451s, want 0", n)
	}

	s.mp.ClearChaos(t)
	pubEvent(t, url, newEvent("ch-ok", event.TaskComment, "u42", "ann@example.com", ""))
	if st := waitState(t, url, "ch-ok", "sent", settleTimeout); st.Attempts != 1 {
		t.Errorf("ch-ok: %+v, want sent at the first attempt", st)
	}
	if msgs := s.mp.WaitForCount(t, 1, settleTimeout); msgs[0].MessageID != mailID("ch-ok") {
		t.Errorf("mail %s, want %s", msgs[0].MessageID, mailID("ch-ok"))
	}

	s.mp.SetChaos(t, chaosTriggers{Recipient: chaosTrigger{ErrorCode: 550, Probability: 100}})
	pubEvent(t, url, newEvent("ch-550", event.TaskAssigned, "u42", "ann@example.com", ""))
	st = waitState(t, url, "ch-550", "inbox_only", settleTimeout)
	if st.Attempts != 1 || !strings.Contains(st.Error, "550") {
		t.Errorf("ch-550: %+v, want inbox_only after 1 attempt with the 550 in error", st)
	}
	s.mp.ClearChaos(t)
	// A permanent failure is terminated (the state is written first, the
	// term follows): no redelivery, no attempt 2.
	waitConsumerIdle(t, url)
	if st, _, _ := stateGet(t, url, "ch-550"); st.State != "inbox_only" || st.Attempts != 1 {
		t.Errorf("ch-550 later: %+v", st)
	}
	requireNoMail(t, s.mp, "ch-451", "ch-550")
	if n := s.mp.Count(t); n != 1 {
		t.Errorf("mailpit holds %d messages, want 1", n)
	}
}

// ---------------------------------------------------------------------------
// 4 and 5. A backlog of 1,000 survives a stop (SIGTERM) and a crash (SIGKILL).

const (
	backlogSize  = 1000
	backlogUsers = 10
	concurrency  = 8
)

// backlogID is the id of the i-th (1-based) notification of a backlog.
func backlogID(prefix string, i int) string { return fmt.Sprintf("%s-%04d", prefix, i) }

// publishBacklog publishes n notifications: all but the last two with the Go
// client (event.PublishRaw, for speed), the last two with `nats pub`. Their
// recipients u-bl-0 … u-bl-9 are opted in to every type with `nats kv put`.
func publishBacklog(t *testing.T, url, prefix string, n int) []string {
	t.Helper()
	for u := range backlogUsers {
		prefsPut(t, url, fmt.Sprintf("u-bl-%d", u), `{"email":{"task.assigned":true,"task.date_changed":true,"task.comment":true,"task.blocked":true,"mention":true}}`)
	}
	js := jsConnect(t, url)
	ids := make([]string, n)
	start := time.Now()
	for i := range n {
		id := backlogID(prefix, i+1)
		ids[i] = id
		u := i % backlogUsers
		ev := newEvent(id, event.Types[i%len(event.Types)], fmt.Sprintf("u-bl-%d", u), fmt.Sprintf("user%d@example.com", u), "")
		if i >= n-2 {
			pubEvent(t, url, ev)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ack, err := event.PublishRaw(ctx, js, ev.Type.Subject(), id, []byte(encodeEvent(t, ev)))
		cancel()
		if err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
		if ack.Duplicate || ack.Stream != "NOTIFY" {
			t.Fatalf("publish %s: %+v", id, ack)
		}
	}
	t.Logf("published %d notifications in %v", n, time.Since(start).Round(time.Millisecond))
	if si := streamInfo(t, url, "NOTIFY"); si.State.Msgs != uint64(n) {
		t.Fatalf("stream NOTIFY holds %d messages, want %d", si.State.Msgs, n)
	}
	return ids
}

// provisionOnly runs a relay until it is ready and stops it, so the stream
// and the buckets exist before the backlog is published.
func provisionOnly(t *testing.T, env map[string]string) {
	t.Helper()
	r := startReadyRelay(t, env)
	stopClean(t, r, 30*time.Second)
}

// waitMailsAtLeast polls Mailpit (every 20ms) until it holds at least n
// mails, returning the count it saw. It gives up with a failure after
// timeout, or as soon as r exits.
func waitMailsAtLeast(t *testing.T, mp *mailpit, r *relayProc, n int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c := mp.Count(t)
		if c >= n {
			return c
		}
		if r.Exited() {
			t.Fatalf("mailrelay exited with %d mails sent, before %d", c, n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailpit holds %d mails after %v, want at least %d", c, timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAllSent waits until every id has state sent, reading the ledger with
// the Go client (1,000 nats CLI runs per poll would take a minute), and
// checks a few with `nats kv get` as well.
func waitAllSent(t *testing.T, url string, ids []string, timeout time.Duration) {
	t.Helper()
	js := jsConnect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, "notify_email_state")
	if err != nil {
		t.Fatal(err)
	}
	pending := slices.Clone(ids)
	eventually(t, timeout, func() (bool, string) {
		var still []string
		last := ""
		for _, id := range pending {
			e, err := kv.Get(ctx, id)
			if err != nil {
				still, last = append(still, id), fmt.Sprintf("%s: %v", id, err)
				continue
			}
			var st emailState
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				t.Fatalf("notify_email_state %s: %v in %q", id, err, e.Value())
			}
			if st.State != "sent" {
				still, last = append(still, id), fmt.Sprintf("%s: %s", id, e.Value())
			}
		}
		pending = still
		return len(pending) == 0, fmt.Sprintf("%d of %d not sent yet, e.g. %s", len(pending), len(ids), last)
	})
	for _, id := range []string{ids[0], ids[len(ids)/2], ids[len(ids)-1]} {
		if st, raw, found := stateGet(t, url, id); !found || st.State != "sent" || st.Attempts < 1 {
			t.Errorf("nats kv get notify_email_state %s: %s", id, raw)
		}
	}
}

// waitConsumerIdle waits until the mailrelay consumer has nothing pending
// and nothing unacknowledged (nats consumer info).
func waitConsumerIdle(t *testing.T, url string) {
	t.Helper()
	eventually(t, settleTimeout, func() (bool, string) {
		ci := consumerInfo(t, url, "NOTIFY", "mailrelay")
		return ci.NumPending == 0 && ci.NumAckPending == 0,
			fmt.Sprintf("consumer mailrelay: %d pending, %d ack pending", ci.NumPending, ci.NumAckPending)
	})
}

// ledgerStates counts the notify_email_state records of ids by state
// ("none" for no record), read with the Go client.
func ledgerStates(t *testing.T, url string, ids []string) map[string]int {
	t.Helper()
	js := jsConnect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := js.KeyValue(ctx, "notify_email_state")
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, id := range ids {
		e, err := kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			counts["none"]++
			continue
		}
		if err != nil {
			t.Fatalf("notify_email_state %s: %v", id, err)
		}
		var st emailState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			t.Fatalf("notify_email_state %s: %v in %q", id, err, e.Value())
		}
		counts[st.State]++
	}
	return counts
}

// backlogMails waits until Mailpit holds at least n mails and returns the
// count per Message-ID.
func backlogMails(t *testing.T, mp *mailpit, n int) (total int, byID map[string]int) {
	t.Helper()
	eventually(t, backlogTimeout, func() (bool, string) {
		c := mp.Count(t)
		return c >= n, fmt.Sprintf("mailpit holds %d mails, want at least %d", c, n)
	})
	msgs := mp.Messages(t)
	return len(msgs), countByMessageID(msgs)
}

// runBacklog is scenarios 4 and 5: a backlog, a relay stopped by sig once
// some hundreds are mailed, a second relay that finishes the work. It
// returns how many mails each Message-ID got.
//
// ackWait is MAILRELAY_ACK_WAIT; the second relay must have mailed the whole
// backlog within finish of becoming ready.
func runBacklog(t *testing.T, prefix string, sig syscall.Signal, ackWait string, finish time.Duration) (ids []string, byID map[string]int, total int) {
	s := newStack(t)
	url := s.ns.URL()
	env := s.env("MAILRELAY_CONCURRENCY", strconv.Itoa(concurrency), "MAILRELAY_ACK_WAIT", ackWait)
	provisionOnly(t, env)
	ids = publishBacklog(t, url, prefix, backlogSize)

	start := time.Now()
	r1 := startRelay(t, env)
	at := waitMailsAtLeast(t, s.mp, r1, 300, backlogTimeout)
	if err := r1.Signal(sig); err != nil {
		t.Fatal(err)
	}
	st, err := r1.Wait(time.Minute)
	if err != nil {
		t.Fatalf("after %v: %v", sig, err)
	}
	stopped := s.mp.Count(t)
	t.Logf("%v after %v with %d mails sent; %d when the relay had exited (%s)",
		sig, time.Since(start).Round(time.Millisecond), at, stopped, st)
	if stopped >= backlogSize {
		t.Errorf("the first relay mailed the whole backlog before %v: the scenario did not interrupt it", sig)
	}
	switch sig {
	case syscall.SIGTERM:
		if st.ExitCode() != 0 {
			t.Fatalf("after SIGTERM: %s, want exit code 0", st)
		}
		// A clean stop lets the sends in flight finish: nothing is left
		// claimed ("sending") in the ledger.
		states := ledgerStates(t, url, ids)
		t.Logf("ledger after the clean stop: %v", states)
		if n := states["sending"]; n != 0 {
			t.Errorf("%d notifications left in state sending by a clean stop", n)
		}
		if states["sent"] != stopped {
			t.Errorf("%d notifications sent according to the ledger, %d mails in Mailpit", states["sent"], stopped)
		}
	case syscall.SIGKILL:
		if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("after SIGKILL: %s", st)
		}
	}

	second := time.Now()
	r2 := startReadyRelay(t, env)
	waitAllSent(t, url, ids, finish)
	total, byID = backlogMails(t, s.mp, backlogSize)
	t.Logf("second relay finished the backlog in %v", time.Since(second).Round(time.Millisecond))
	waitConsumerIdle(t, url)
	stopClean(t, r2, 30*time.Second)

	for _, id := range ids {
		if byID[mailID(id)] == 0 {
			t.Errorf("%s: no mail", id)
		}
	}
	if len(byID) != backlogSize {
		t.Errorf("%d distinct Message-IDs, want %d", len(byID), backlogSize)
	}
	return ids, byID, total
}

func TestE2ESigtermMidBacklog(t *testing.T) {
	t.Parallel()
	// AckWait is long (2m), so the second relay can only finish in time if
	// the stopping relay finished or released (nak) the messages it held
	// instead of leaving them to expire.
	_, byID, total := runBacklog(t, "st", syscall.SIGTERM, "2m", 100*time.Second)
	if total != backlogSize {
		t.Errorf("mailpit holds %d mails, want exactly %d", total, backlogSize)
	}
	for mid, n := range byID {
		if n != 1 {
			t.Errorf("Message-ID %s: %d mails, want 1 (a clean stop must not duplicate)", mid, n)
		}
	}
}

func TestE2EKill9MidBacklog(t *testing.T) {
	t.Parallel()
	_, byID, total := runBacklog(t, "k9", syscall.SIGKILL, "3s", backlogTimeout)
	var dups []string
	for mid, n := range byID {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%s×%d", mid, n))
		}
	}
	slices.Sort(dups)
	t.Logf("SIGKILL: %d mails for %d notifications, %d duplicated: %v", total, backlogSize, total-backlogSize, dups)
	if total-backlogSize > concurrency {
		t.Errorf("%d duplicate mails, want at most MAILRELAY_CONCURRENCY (%d): %v", total-backlogSize, concurrency, dups)
	}
}

// ---------------------------------------------------------------------------
// 6. serve --embedded with the console backend: one command, a working system.

func TestE2EEmbeddedConsole(t *testing.T) {
	t.Parallel()
	buildMailrelay(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	env := map[string]string{
		"NATS_URL":           url,
		"EMAIL_BACKEND":      "console",
		"MAILRELAY_DATA_DIR": t.TempDir(),
		"DEFAULT_FROM_EMAIL": e2eFromEmail,
		"FRONTEND_BASE_URL":  e2eBaseURL,
	}
	r := startReadyRelay(t, env, "--embedded")

	res := runMailrelay(t, env, "", "prefs", "set", "u42", "all=on", "task.blocked=off")
	if res.ExitCode != 0 {
		t.Fatalf("prefs set: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	res = runMailrelay(t, env, "", "prefs", "get", "u42")
	var got struct {
		Email map[string]bool `json:"email"`
	}
	decodeJSON(t, res.Stdout, &got)
	want := map[string]bool{"task.assigned": true, "task.date_changed": true, "task.comment": true, "task.blocked": false, "mention": true}
	if res.ExitCode != 0 || !mapsEqual(got.Email, want) {
		t.Fatalf("prefs get: exit %d, %v, want %v\n%s", res.ExitCode, got.Email, want, res.Stderr)
	}
	// The nats CLI sees the same bucket.
	if v, ok := kvGet(t, url, "notify_prefs", "u42"); !ok || !strings.Contains(v, `"task.comment":true`) {
		t.Errorf("nats kv get notify_prefs u42: %q", v)
	}

	evFile := newEvent("emb-file", event.TaskComment, "u42", "ann@example.com", "Ann Lee")
	path := filepath.Join(t.TempDir(), "event.json")
	if err := os.WriteFile(path, []byte(encodeEvent(t, evFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	res = runMailrelay(t, env, "", "publish", "--file", path)
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "emb-file") || !strings.Contains(res.Stdout, "NOTIFY") {
		t.Fatalf("publish --file: exit %d\nstdout: %s\nstderr: %s", res.ExitCode, res.Stdout, res.Stderr)
	}
	evCLI := newEvent("emb-cli", event.Mention, "u42", "ann@example.com", "Ann Lee")
	pubEvent(t, url, evCLI)
	evOff := newEvent("emb-off", event.TaskBlocked, "u42", "ann@example.com", "Ann Lee")
	pubEvent(t, url, evOff)

	for _, ev := range []*event.Event{evFile, evCLI} {
		waitState(t, url, ev.ID, "sent", settleTimeout)
		res := runMailrelay(t, env, "", "state", "get", ev.ID)
		var st emailState
		decodeJSON(t, res.Stdout, &st)
		if res.ExitCode != 0 || st.State != "sent" || st.Attempts != 1 || st.MessageID != headers.MessageID(ev.ID, e2eFromHost) {
			t.Errorf("state get %s: exit %d, %+v\n%s", ev.ID, res.ExitCode, st, res.Stderr)
		}
	}
	waitState(t, url, "emb-off", "skipped_opted_out", settleTimeout)
	if res := runMailrelay(t, env, "", "state", "get", "emb-unknown"); res.ExitCode == 0 || !strings.Contains(res.Stderr, "emb-unknown") {
		t.Errorf("state get of an unknown id: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}

	// Both whole messages are on standard output, exactly as composed.
	mails := consoleMails(t, r.Stdout())
	if len(mails) != 2 {
		t.Fatalf("%d messages on standard output, want 2:\n%s", len(mails), r.Stdout())
	}
	cfg := compose.Config{From: compose.Address{Email: e2eFromEmail}, BaseURL: e2eBaseURL}
	for _, ev := range []*event.Event{evFile, evCLI} {
		wantMsg := composeExpected(t, ev, cfg)
		m, ok := mails[wantMsg.MessageID]
		if !ok {
			t.Errorf("no message with Message-ID %s on standard output", wantMsg.MessageID)
			continue
		}
		if m.subject != wantMsg.Subject {
			t.Errorf("%s: Subject %q, want %q", ev.ID, m.subject, wantMsg.Subject)
		}
		if m.body != strings.TrimRight(wantMsg.Body, "\n")+"\n" {
			t.Errorf("%s: body\n%s\nwant\n%s", ev.ID, m.body, wantMsg.Body)
		}
		if !strings.Contains(m.body, e2eBaseURL+"/tasks/t-1001") {
			t.Errorf("%s: no deep link in the body:\n%s", ev.ID, m.body)
		}
	}
	if strings.Contains(r.Stdout(), headers.MessageID("emb-off", e2eFromHost)) {
		t.Error("the opted-out notification was written to standard output")
	}
	stopClean(t, r, 30*time.Second)
}

// consoleMail is one message the console backend wrote.
type consoleMail struct {
	subject string // decoded
	body    string // decoded, LF line ends
}

// consoleMails parses the console backend's output (messages separated by a
// line of 79 dashes) by Message-ID.
func consoleMails(t *testing.T, out string) map[string]consoleMail {
	t.Helper()
	sep := strings.Repeat("-", 79) + "\r\n"
	mails := map[string]consoleMail{}
	for _, chunk := range strings.Split(out, sep) {
		if strings.TrimSpace(chunk) == "" {
			continue
		}
		msg, err := mail.ReadMessage(strings.NewReader(chunk))
		if err != nil {
			t.Fatalf("console output is not a message: %v\n%s", err, chunk)
		}
		subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
		if err != nil {
			t.Fatalf("Subject %q: %v", msg.Header.Get("Subject"), err)
		}
		if ct := msg.Header.Get("Content-Type"); ct != "text/plain; charset=UTF-8" {
			t.Errorf("Content-Type %q", ct)
		}
		var body io.Reader = msg.Body
		if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(msg.Body)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			t.Fatalf("body: %v", err)
		}
		mails[msg.Header.Get("Message-Id")] = consoleMail{subject: subject, body: strings.ReplaceAll(string(b), "\r\n", "\n")}
	}
	return mails
}

// composeExpected is what the relay should send for ev: the event as the
// relay decodes it from its JSON, composed with cfg.
func composeExpected(t testing.TB, ev *event.Event, cfg compose.Config) *compose.Message {
	t.Helper()
	decoded, err := event.Decode(ev.Type.Subject(), []byte(encodeEvent(t, ev)), 0)
	if err != nil {
		t.Fatalf("decode %s: %v", ev.ID, err)
	}
	m, err := compose.Compose(decoded, cfg, time.Now())
	if err != nil {
		t.Fatalf("compose %s: %v", ev.ID, err)
	}
	return m
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------
// 7. Wrong usage says what is accepted.

func TestE2ECLIUsage(t *testing.T) {
	t.Parallel()
	buildMailrelay(t)
	// No server is needed for any of these; point NATS_URL at a closed port
	// so nothing reaches a server by accident.
	env := map[string]string{"NATS_URL": fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))}
	invalid := `{"id":"cli-1","type":"task.shouted","occurred_at":"2026-11-26T09:30:00Z","recipient":{"id":"u42"},"task":{"id":"t-1","title":"x"}}`

	for _, c := range []struct {
		name  string
		stdin string
		args  []string
		want  []string // each must appear in the output
	}{
		{"no arguments", "", nil, []string{"serve", "publish", "prefs", "state"}},
		{"unknown command", "", []string{"frobnicate"}, []string{"frobnicate", "serve", "publish"}},
		{"unknown preference type", "", []string{"prefs", "set", "u1", "bogus=on"},
			[]string{"bogus", "task.assigned", "task.date_changed", "task.comment", "task.blocked", "mention", "all"}},
		{"bad preference value", "", []string{"prefs", "set", "u1", "mention=maybe"}, []string{"mention=maybe", "on", "off"}},
		{"invalid event", invalid, []string{"publish"},
			[]string{"type", "task.assigned", "task.date_changed", "task.comment", "task.blocked", "mention"}},
		{"event that is not JSON", "{", []string{"publish"}, []string{"invalid"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := runMailrelay(t, env, c.stdin, c.args...)
			out := res.Stdout + res.Stderr
			if res.ExitCode == 0 {
				t.Fatalf("mailrelay %s: exit 0, want non-zero\n%s", strings.Join(c.args, " "), out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("mailrelay %s (exit %d): output does not mention %q:\n%s", strings.Join(c.args, " "), res.ExitCode, w, out)
				}
			}
		})
	}

	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"serve", "publish", "prefs", "state", "status", "version"}},
		{[]string{"serve", "--help"}, []string{"--embedded"}},
		{[]string{"prefs", "set", "--help"}, []string{"task.assigned", "on", "off"}},
	} {
		res := runMailrelay(t, env, "", c.args...)
		out := res.Stdout + res.Stderr
		if res.ExitCode != 0 {
			t.Errorf("mailrelay %s: exit %d, want 0\n%s", strings.Join(c.args, " "), res.ExitCode, out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("mailrelay %s: help does not mention %q:\n%s", strings.Join(c.args, " "), w, out)
			}
		}
	}
}
