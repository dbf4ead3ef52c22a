package e2e

// Volume control (issue 14, contract §9.3) under crashes and restarts: the
// real mailrelay binary, a real nats-server and Mailpit. Held notifications
// live in NOTIFY_HELD; a relay killed with SIGKILL inside an open window, or
// in the middle of flushing windows, loses nothing and mails at most its
// in-flight windows twice; a SIGTERM rolling restart of two relays mails
// nothing twice.
//
// Every notification here is a task.assigned on a task of its own
// (t-<notification id>), so a mail's deep links say exactly which
// notifications it carried: "no notification in two mails" is checked
// from the mails themselves, not only from their Message-IDs.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailrelay/mailrelay/event"
)

// Object names of volume control (internal/hold), as the nats CLI sees them.
const (
	vcHeldStream    = "NOTIFY_HELD"
	vcFlushConsumer = "mailrelay_flush"
	vcItemSubjects  = "notify_held.item.>"
)

// vcRecord is a notify_email_state record with the fields of §9.2.
type vcRecord struct {
	State     string    `json:"state"`
	Recipient string    `json:"recipient"`
	Attempts  int       `json:"attempts"`
	Error     string    `json:"error"`
	MessageID string    `json:"message_id"`
	Until     time.Time `json:"until"`
	Batch     int       `json:"batch"`
	FlushSeq  uint64    `json:"flush_seq"`
	Delivery  int       `json:"delivery"`
}

// vcUser is the id of the u-th recipient of a scenario; its address is
// vcUser@example.com.
func vcUser(prefix string, u int) string { return fmt.Sprintf("%s-u%03d", prefix, u) }

func vcAddress(user string) string { return user + "@example.com" }

// vcNoteID is the id of the k-th notification for user.
func vcNoteID(user string, k int) string { return fmt.Sprintf("%s-n%d", user, k) }

// vcOptIn turns Email on for every type for each user, with the Go client
// (hundreds of `nats kv put` would take a while).
func vcOptIn(t *testing.T, js jetstream.JetStream, users []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := js.KeyValue(ctx, "notify_prefs")
	if err != nil {
		t.Fatalf("notify_prefs: %v", err)
	}
	const on = `{"email":{"task.assigned":true,"task.date_changed":true,"task.comment":true,"task.blocked":true,"mention":true}}`
	for _, u := range users {
		if _, err := kv.PutString(ctx, u, on); err != nil {
			t.Fatalf("notify_prefs %s: %v", u, err)
		}
	}
}

// vcEvent is notification id for user: a task.assigned on task t-<id>.
func vcEvent(id, user string) *event.Event {
	ev := newEvent(id, event.TaskAssigned, user, vcAddress(user), "")
	ev.Task.ID = "t-" + id
	ev.Task.Title = "Task " + id
	return ev
}

// vcPublish publishes the event with the Go client (Nats-Msg-Id = id).
func vcPublish(js jetstream.JetStream, ev *event.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := event.PublishRaw(ctx, js, ev.Type.Subject(), ev.ID, b)
	if err != nil {
		return fmt.Errorf("publish %s: %w", ev.ID, err)
	}
	if ack.Duplicate || ack.Stream != "NOTIFY" {
		return fmt.Errorf("publish %s: %+v, want stored in NOTIFY", ev.ID, ack)
	}
	return nil
}

// vcPublishAll publishes perUser notifications to each user, user after
// user (a user's notifications are back to back in NOTIFY, so they fall
// into one window), and returns their ids and recipients.
func vcPublishAll(t *testing.T, js jetstream.JetStream, users []string, perUser int) (ids []string, userOf map[string]string) {
	t.Helper()
	userOf = map[string]string{}
	start := time.Now()
	for _, u := range users {
		for k := 1; k <= perUser; k++ {
			id := vcNoteID(u, k)
			ev := vcEvent(id, u)
			if err := vcPublish(js, ev); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
			userOf[id] = u
		}
	}
	t.Logf("published %d notifications for %d recipients in %v", len(ids), len(users), time.Since(start).Round(time.Millisecond))
	return ids, userOf
}

// vcLedger reads the records of ids (State "none" for no record).
func vcLedger(t *testing.T, js jetstream.JetStream, ids []string) map[string]vcRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := js.KeyValue(ctx, "notify_email_state")
	if err != nil {
		t.Fatalf("notify_email_state: %v", err)
	}
	out := make(map[string]vcRecord, len(ids))
	for _, id := range ids {
		e, err := kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			out[id] = vcRecord{State: "none"}
			continue
		}
		if err != nil {
			t.Fatalf("notify_email_state %s: %v", id, err)
		}
		var r vcRecord
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			t.Fatalf("notify_email_state %s: %v in %q", id, err, e.Value())
		}
		out[id] = r
	}
	return out
}

// vcCount counts records by state.
func vcCount(recs map[string]vcRecord) map[string]int {
	n := map[string]int{}
	for _, r := range recs {
		n[r.State]++
	}
	return n
}

// vcWaitAll waits until every id has state want.
func vcWaitAll(t *testing.T, js jetstream.JetStream, ids []string, want string, timeout time.Duration) map[string]vcRecord {
	t.Helper()
	var recs map[string]vcRecord
	eventually(t, timeout, func() (bool, string) {
		recs = vcLedger(t, js, ids)
		n := vcCount(recs)
		return n[want] == len(ids), fmt.Sprintf("ledger %v, want all %d %s", n, len(ids), want)
	})
	return recs
}

// vcHeldItems is how many notifications NOTIFY_HELD still holds.
func vcHeldItems(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, vcHeldStream)
	if err != nil {
		t.Fatalf("stream %s: %v", vcHeldStream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(vcItemSubjects))
	if err != nil {
		t.Fatalf("stream %s info: %v", vcHeldStream, err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// vcSettle waits until nothing is held any more and the flush consumer has
// nothing pending or unacknowledged: no window is left to flush, so the
// mails in Mailpit are all there will be.
func vcSettle(t *testing.T, url string, js jetstream.JetStream) {
	t.Helper()
	eventually(t, settleTimeout, func() (bool, string) {
		held := vcHeldItems(t, js)
		ci := consumerInfo(t, url, vcHeldStream, vcFlushConsumer)
		return held == 0 && ci.NumPending == 0 && ci.NumAckPending == 0,
			fmt.Sprintf("%d notifications held; consumer %s: %d pending, %d ack pending", held, vcFlushConsumer, ci.NumPending, ci.NumAckPending)
	})
}

// vcMail is one mail in Mailpit and the notifications it carried.
type vcMail struct {
	MessageID string // without <>
	To        string
	Subject   string
	Notes     []string // notification ids, from the deep links, sorted
	Created   time.Time
}

// vcTaskLink finds the deep links of this file's notifications.
var vcTaskLink = regexp.MustCompile(`https://app\.example\.com/tasks/t-([A-Za-z0-9_-]+)`)

// vcMails reads every mail in Mailpit with its text.
func vcMails(t *testing.T, mp *mailpit) []vcMail {
	t.Helper()
	var out []vcMail
	for _, s := range mp.Messages(t) {
		msg := mp.Message(t, s.ID)
		m := vcMail{MessageID: s.MessageID, Subject: s.Subject, Created: s.Created}
		if len(s.To) == 1 {
			m.To = s.To[0].Address
		} else {
			t.Errorf("mail %s %q: To %v, want one recipient", s.MessageID, s.Subject, s.To)
		}
		for _, sm := range vcTaskLink.FindAllStringSubmatch(msg.Text, -1) {
			if !slices.Contains(m.Notes, sm[1]) {
				m.Notes = append(m.Notes, sm[1])
			}
		}
		slices.Sort(m.Notes)
		if len(m.Notes) == 0 {
			t.Errorf("mail %s %q carries no deep link of a notification:\n%s", s.MessageID, s.Subject, msg.Text)
		}
		out = append(out, m)
	}
	return out
}

// vcTally is what the mails and the ledger say about a scenario.
type vcTally struct {
	mails     []vcMail
	carriers  map[string][]int // notification → the mails carrying it
	perUser   map[string][]int // recipient → its mails
	lost      []string         // in no mail
	notSent   []string         // not recorded sent
	dupNotes  []string         // in more than one mail ("id×n")
	dupUsers  map[string]bool  // recipients with a notification in two mails
	splitUser []string         // recipients with several mails that share no notification
}

// vcCheck relates the mails to the notifications and the ledger; it
// reports (t.Errorf) every mismatch that no crash explains: a mail for an
// unknown notification or to the wrong recipient, a sent record whose
// message_id is no mail carrying it or whose batch is not that mail's
// size. Losses and duplicates are left to the caller, which knows the
// bound.
func vcCheck(t *testing.T, ids []string, userOf map[string]string, mails []vcMail, recs map[string]vcRecord) *vcTally {
	t.Helper()
	tl := &vcTally{mails: mails, carriers: map[string][]int{}, perUser: map[string][]int{}, dupUsers: map[string]bool{}}
	for i, m := range mails {
		for _, id := range m.Notes {
			u, ok := userOf[id]
			switch {
			case !ok:
				t.Errorf("mail %s carries %s, which is no notification of this test", m.MessageID, id)
				continue
			case vcAddress(u) != m.To:
				t.Errorf("mail %s to %s carries %s, a notification for %s", m.MessageID, m.To, id, u)
			}
			tl.carriers[id] = append(tl.carriers[id], i)
		}
		if u, _, ok := strings.Cut(m.To, "@"); ok {
			tl.perUser[u] = append(tl.perUser[u], i)
		}
	}
	for _, id := range ids {
		c := tl.carriers[id]
		switch {
		case len(c) == 0:
			tl.lost = append(tl.lost, id)
		case len(c) > 1:
			tl.dupNotes = append(tl.dupNotes, fmt.Sprintf("%s×%d", id, len(c)))
			tl.dupUsers[userOf[id]] = true
		}
		r := recs[id]
		if r.State != "sent" {
			tl.notSent = append(tl.notSent, fmt.Sprintf("%s(%s)", id, r.State))
			continue
		}
		if r.Recipient != userOf[id] {
			t.Errorf("%s: recorded for %q, want %s", id, r.Recipient, userOf[id])
		}
		match := -1
		for _, k := range c {
			if "<"+mails[k].MessageID+">" == r.MessageID {
				match = k
			}
		}
		if match < 0 {
			t.Errorf("%s: recorded sent with message_id %s, which is none of the %d mail(s) carrying it", id, r.MessageID, len(c))
			continue
		}
		if r.Batch != len(mails[match].Notes) {
			t.Errorf("%s: recorded batch %d, its mail %s carried %d", id, r.Batch, r.MessageID, len(mails[match].Notes))
		}
	}
	for u, ms := range tl.perUser {
		if len(ms) > 1 && !tl.dupUsers[u] {
			tl.splitUser = append(tl.splitUser, fmt.Sprintf("%s:%d", u, len(ms)))
		}
	}
	slices.Sort(tl.dupNotes)
	slices.Sort(tl.splitUser)
	return tl
}

// dupUserList is the sorted list of recipients with a duplicate.
func (tl *vcTally) dupUserList() []string {
	var out []string
	for u := range tl.dupUsers {
		out = append(out, fmt.Sprintf("%s:%d mails", u, len(tl.perUser[u])))
	}
	slices.Sort(out)
	return out
}

// requireNothingLost fails for every notification without a mail or not
// recorded sent.
func (tl *vcTally) requireNothingLost(t *testing.T) {
	t.Helper()
	if len(tl.lost) != 0 || len(tl.notSent) != 0 {
		t.Errorf("lost: %d notifications in no mail %v; %d not recorded sent %v", len(tl.lost), vcFirst(tl.lost), len(tl.notSent), vcFirst(tl.notSent))
	}
}

func vcFirst(s []string) []string { return s[:min(len(s), 20)] }

// ---------------------------------------------------------------------------
// 1a. kill -9 inside the open windows.

// TestE2EVolumeKill9InsideWindow: MAILRELAY_BATCH_WINDOW=4s, 20 recipients ×
// 5 notifications. Once all 100 are deferred (and before the first window
// closes) the relay is killed with SIGKILL; the schedules fire while no
// relay runs, and a new relay flushes them: every notification is sent
// exactly once, Mailpit holds exactly one mail per recipient carrying its
// five, and the ledger records each sent with batch 5 and that mail's
// Message-ID (one per recipient).
func TestE2EVolumeKill9InsideWindow(t *testing.T) {
	t.Parallel()
	const users, perUser, window = 20, 5, 4 * time.Second
	s := newStack(t)
	url := s.ns.URL()
	env := s.env("MAILRELAY_BATCH_WINDOW", window.String())
	r := startReadyRelay(t, env)
	js := jsConnect(t, url)
	var us []string
	for u := range users {
		us = append(us, vcUser("vkw", u))
	}
	vcOptIn(t, js, us)

	start := time.Now()
	ids, userOf := vcPublishAll(t, js, us, perUser)
	recs := vcWaitAll(t, js, ids, "deferred", 30*time.Second)
	deferredAfter := time.Since(start)
	firstClose := time.Time{}
	for _, rec := range recs {
		if rec.Until.IsZero() {
			t.Fatalf("deferred without until: %+v", rec)
		}
		if firstClose.IsZero() || rec.Until.Before(firstClose) {
			firstClose = rec.Until
		}
	}
	kill9(t, r)
	killedAt := time.Now()
	if n := s.mp.Count(t); n != 0 {
		t.Fatalf("mailpit holds %d mails when the relay was killed: a window closed before the kill", n)
	}
	if !killedAt.Before(firstClose) {
		t.Fatalf("killed at %v, after the first window closed (%v): the kill was not inside the windows",
			killedAt.Format(time.RFC3339Nano), firstClose.Format(time.RFC3339Nano))
	}
	t.Logf("all %d deferred after %v; killed %v before the first window closed", len(ids), deferredAfter.Round(time.Millisecond),
		firstClose.Sub(killedAt).Round(time.Millisecond))

	r2 := startReadyRelay(t, env)
	recs = vcWaitAll(t, js, ids, "sent", settleTimeout)
	t.Logf("all sent %v after the kill", time.Since(killedAt).Round(time.Millisecond))
	vcSettle(t, url, js)
	mails := vcMails(t, s.mp)
	stopClean(t, r2, 30*time.Second)

	tl := vcCheck(t, ids, userOf, mails, recs)
	tl.requireNothingLost(t)
	if len(tl.dupNotes) != 0 {
		t.Errorf("duplicates: %v", tl.dupNotes)
	}
	if len(mails) != users {
		t.Errorf("mailpit holds %d mails, want exactly %d (one per recipient)", len(mails), users)
	}
	byMsgID := map[string]bool{}
	for _, u := range us {
		ms := tl.perUser[u]
		if len(ms) != 1 {
			t.Errorf("%s: %d mails, want 1", u, len(ms))
			continue
		}
		m := mails[ms[0]]
		if len(m.Notes) != perUser {
			t.Errorf("%s: its mail %s carries %v, want all %d", u, m.MessageID, m.Notes, perUser)
		}
		if !strings.HasPrefix(m.Subject, strconv.Itoa(perUser)+" updates") {
			t.Errorf("%s: subject %q, want it to say %d updates", u, m.Subject, perUser)
		}
		ids := map[string]bool{}
		for k := 1; k <= perUser; k++ {
			rec := recs[vcNoteID(u, k)]
			ids[rec.MessageID] = true
			if rec.Batch != perUser || rec.Attempts != 1 {
				t.Errorf("%s: %+v, want sent with batch %d at the first attempt", vcNoteID(u, k), rec, perUser)
			}
		}
		if len(ids) != 1 {
			t.Errorf("%s: %d message_ids in the ledger, want 1: %v", u, len(ids), ids)
		}
		byMsgID[m.MessageID] = true
	}
	if len(byMsgID) != users {
		t.Errorf("%d distinct Message-IDs, want %d", len(byMsgID), users)
	}
	t.Logf("kill -9 inside the window: %d mails for %d notifications, duplicates %d", len(mails), len(ids), len(tl.dupNotes))
}

// TestE2EVolumeKill9WhileHolding: the relay is killed with SIGKILL while it
// is still holding a backlog (200 recipients × 5 notifications published
// before it starts, window 4 s), before any window closes: some
// notifications are held and recorded deferred, some only stored in
// NOTIFY_HELD, some not touched yet. A new relay finishes: every
// notification is sent exactly once (no window was being flushed, so
// there is nothing to mail twice), and none is lost. A recipient whose
// notifications were held partly before and partly after the crash may get
// two mails (two windows), each carrying different notifications.
func TestE2EVolumeKill9WhileHolding(t *testing.T) {
	t.Parallel()
	const users, perUser = 200, 5
	s := newStack(t)
	url := s.ns.URL()
	env := s.env("MAILRELAY_BATCH_WINDOW", "4s", "MAILRELAY_CONCURRENCY", "4")
	provisionOnly(t, env)
	js := jsConnect(t, url)
	var us []string
	for u := range users {
		us = append(us, vcUser("vkh", u))
	}
	vcOptIn(t, js, us)
	ids, userOf := vcPublishAll(t, js, us, perUser)

	start := time.Now()
	r := startRelay(t, env)
	var held uint64
	eventually(t, time.Minute, func() (bool, string) {
		if r.Exited() {
			t.Fatalf("mailrelay exited: %s", r.proc.exitDescription())
		}
		held = vcHeldItems(t, js)
		return held >= 150, fmt.Sprintf("%d notifications held, want at least 150", held)
	})
	kill9(t, r)
	killedAt := time.Now()
	atKill := vcCount(vcLedger(t, js, ids))
	heldAtKill := vcHeldItems(t, js)
	t.Logf("kill -9 %v after start: %d held in NOTIFY_HELD, ledger %v, %d mails",
		killedAt.Sub(start).Round(time.Millisecond), heldAtKill, atKill, s.mp.Count(t))
	if atKill["deferred"] >= len(ids) {
		t.Fatalf("every notification was held before the kill: the scenario did not interrupt the holding")
	}
	if n := s.mp.Count(t); n != 0 {
		t.Fatalf("%d mails before the kill: a window closed while holding", n)
	}

	r2 := startReadyRelay(t, env)
	recs := vcWaitAll(t, js, ids, "sent", time.Minute)
	t.Logf("all sent %v after the kill", time.Since(killedAt).Round(time.Millisecond))
	vcSettle(t, url, js)
	mails := vcMails(t, s.mp)
	stopClean(t, r2, 30*time.Second)

	tl := vcCheck(t, ids, userOf, mails, recs)
	tl.requireNothingLost(t)
	if len(tl.dupNotes) != 0 {
		t.Errorf("mailed twice although no window was being flushed at the kill: %v (recipients %v)", tl.dupNotes, tl.dupUserList())
	}
	for u, ms := range tl.perUser {
		if len(ms) > 2 {
			t.Errorf("%s: %d mails, want at most 2 (the window before the kill and one after)", u, len(ms))
		}
	}
	t.Logf("kill -9 while holding: %d mails for %d notifications to %d recipients; duplicates %d; recipients in two windows: %v",
		len(mails), len(ids), users, len(tl.dupNotes), tl.splitUser)
}

// ---------------------------------------------------------------------------
// 1b. kill -9 while windows are being flushed.

// TestE2EVolumeKill9DuringFlush: 200 recipients × 3 notifications, a 4 s
// window, MAILRELAY_CONCURRENCY=4. The relay is killed with SIGKILL once
// Mailpit holds at least 20 mails (fewer than 200: windows are still being
// flushed); a new relay finishes. Nothing is lost, and at most the killed
// relay's in-flight windows (4) are mailed twice: at most 4 recipients get
// a second mail, and it is a copy of the first (the same notifications).
func TestE2EVolumeKill9DuringFlush(t *testing.T) {
	t.Parallel()
	const users, perUser, k = 200, 3, 4
	s := newStack(t)
	url := s.ns.URL()
	// 4 s: all 600 are held before the first window closes even on two
	// busy cores with the race detector (a notification held after its
	// window closed goes out in the next one, legitimately).
	env := s.env("MAILRELAY_BATCH_WINDOW", "4s", "MAILRELAY_CONCURRENCY", strconv.Itoa(k))
	provisionOnly(t, env)
	js := jsConnect(t, url)
	var us []string
	for u := range users {
		us = append(us, vcUser("vkf", u))
	}
	vcOptIn(t, js, us)
	ids, userOf := vcPublishAll(t, js, us, perUser)

	start := time.Now()
	r := startRelay(t, env)
	seen := waitMailsAtLeast(t, s.mp, r, 20, time.Minute)
	kill9(t, r)
	killedAt := time.Now()
	after := s.mp.Count(t)
	atKill := vcCount(vcLedger(t, js, ids))
	t.Logf("kill -9 %v after start: %d mails when killed, %d once it had exited; ledger %v",
		killedAt.Sub(start).Round(time.Millisecond), seen, after, atKill)
	if after >= users {
		t.Fatalf("every window was flushed before the kill (%d mails): the scenario did not interrupt the flush", after)
	}

	r2 := startReadyRelay(t, env)
	recs := vcWaitAll(t, js, ids, "sent", time.Minute)
	t.Logf("all sent %v after the kill", time.Since(killedAt).Round(time.Millisecond))
	vcSettle(t, url, js)
	mails := vcMails(t, s.mp)
	stopClean(t, r2, 30*time.Second)

	tl := vcCheck(t, ids, userOf, mails, recs)
	tl.requireNothingLost(t)
	twice, more := 0, 0
	for _, u := range us {
		switch n := len(tl.perUser[u]); {
		case n == 2:
			twice++
		case n > 2:
			more++
			t.Errorf("%s: %d mails, want at most 2", u, n)
		}
	}
	// A duplicate is a window mailed again after the crash: the
	// redelivered flush mails again what the crashed one had not recorded
	// sent yet, so the second mail carries the first one's notifications
	// or some of them (then under another Message-ID), never others.
	for u := range tl.dupUsers {
		ms := tl.perUser[u]
		if len(ms) != 2 {
			continue // reported above
		}
		a, b := mails[ms[0]].Notes, mails[ms[1]].Notes
		if len(a) < len(b) {
			a, b = b, a
		}
		for _, id := range b {
			if !slices.Contains(a, id) {
				t.Errorf("%s: mails %v and %v: the second is not a repeat of (part of) the first window", u, a, b)
				break
			}
		}
	}
	t.Logf("kill -9 during the flush: %d mails for %d notifications to %d recipients; %d recipients got 2 mails (bound %d); duplicated notifications %d: %v; recipients %v; windows split without a duplicate: %v",
		len(mails), len(ids), users, twice, k, len(tl.dupNotes), tl.dupNotes, tl.dupUserList(), tl.splitUser)
	if twice > k {
		t.Errorf("%d recipients got two mails, want at most the killed relay's %d in-flight windows", twice, k)
	}
	if len(tl.dupUsers) > k {
		t.Errorf("%d recipients got a notification twice, want at most %d", len(tl.dupUsers), k)
	}
	if len(tl.splitUser) != 0 {
		t.Errorf("recipients whose notifications went out in several windows (all were published back to back): %v", tl.splitUser)
	}
}

// ---------------------------------------------------------------------------
// 1c. SIGTERM rolling restart of two relays.

// TestE2EVolumeRollingRestart: two relays share the work (window 3 s);
// notifications are published for ~9 s to 30 recipients; meanwhile relay A
// is stopped with SIGTERM and replaced by A', then B by B', each while
// windows are open. A SIGTERM is a clean stop: every notification is sent
// exactly once, in exactly one mail whose Message-ID the ledger records,
// nothing is mailed twice, and a recipient gets no more mails than its
// notifications span windows.
func TestE2EVolumeRollingRestart(t *testing.T) {
	t.Parallel()
	const (
		users    = 30
		window   = 3 * time.Second
		publish  = 9 * time.Second
		interval = 40 * time.Millisecond
	)
	s := newStack(t)
	url := s.ns.URL()
	env := s.env("MAILRELAY_BATCH_WINDOW", window.String(), "MAILRELAY_CONCURRENCY", "4")
	a := startReadyRelay(t, env)
	b := startReadyRelay(t, env)
	js := jsConnect(t, url)
	var us []string
	for u := range users {
		us = append(us, vcUser("vrr", u))
	}
	vcOptIn(t, js, us)

	var (
		mu        sync.Mutex
		ids       []string
		userOf    = map[string]string{}
		firstPub  = map[string]time.Time{}
		lastPub   = map[string]time.Time{}
		pubErr    error
		published = make(chan struct{})
	)
	start := time.Now()
	go func() {
		defer close(published)
		n := make([]int, users)
		for i := 0; time.Since(start) < publish; i++ {
			u := i % users
			n[u]++
			user := us[u]
			id := vcNoteID(user, n[u])
			if err := vcPublish(js, vcEvent(id, user)); err != nil {
				mu.Lock()
				pubErr = err
				mu.Unlock()
				return
			}
			now := time.Now()
			mu.Lock()
			ids = append(ids, id)
			userOf[id] = user
			if _, ok := firstPub[user]; !ok {
				firstPub[user] = now
			}
			lastPub[user] = now
			mu.Unlock()
			time.Sleep(interval)
		}
	}()
	publishing := func(what string) {
		t.Helper()
		select {
		case <-published:
			t.Fatalf("%s after publishing ended (%v): the restart did not overlap open windows", what, time.Since(start).Round(time.Millisecond))
		default:
		}
		mu.Lock()
		n := len(ids)
		mu.Unlock()
		t.Logf("%s at %v, %d notifications published so far", what, time.Since(start).Round(time.Millisecond), n)
	}

	// The first windows close after ~3-4 s: from then on windows are
	// flushed while others are open and new ones open.
	time.Sleep(time.Until(start.Add(3500 * time.Millisecond)))
	publishing("SIGTERM A")
	stopClean(t, a, 30*time.Second)
	a2 := startReadyRelay(t, env)
	publishing("A' ready")
	time.Sleep(time.Until(start.Add(6500 * time.Millisecond)))
	publishing("SIGTERM B")
	stopClean(t, b, 30*time.Second)
	b2 := startReadyRelay(t, env)
	publishing("B' ready")
	<-published
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	t.Logf("published %d notifications in %v", len(ids), time.Since(start).Round(time.Millisecond))

	recs := vcWaitAll(t, js, ids, "sent", settleTimeout)
	vcSettle(t, url, js)
	mails := vcMails(t, s.mp)
	stopClean(t, a2, 30*time.Second)
	stopClean(t, b2, 30*time.Second)

	tl := vcCheck(t, ids, userOf, mails, recs)
	tl.requireNothingLost(t)
	if len(tl.dupNotes) != 0 {
		t.Errorf("a clean stop mailed notifications twice: %v (recipients %v)", tl.dupNotes, tl.dupUserList())
	}
	byMsgID := countByMailMessageID(mails)
	for id, n := range byMsgID {
		if n != 1 {
			t.Errorf("Message-ID %s: %d mails, want 1", id, n)
		}
	}
	inLedger := map[string]bool{}
	for _, r := range recs {
		inLedger[strings.Trim(r.MessageID, "<>")] = true
	}
	if len(inLedger) != len(mails) {
		t.Errorf("%d mails in Mailpit, %d distinct message_ids in the ledger", len(mails), len(inLedger))
	}
	var perUser []string
	for _, u := range us {
		ms := tl.perUser[u]
		span := lastPub[u].Sub(firstPub[u])
		// Windows are disjoint and each lasts one window: a recipient's
		// notifications, held within span (plus a little for the hand-over
		// of a restart), fit into at most span/window + 1 of them.
		bound := int((span+2*time.Second)/window) + 1
		perUser = append(perUser, strconv.Itoa(len(ms)))
		if len(ms) > bound {
			t.Errorf("%s: %d mails for notifications published over %v, want at most %d windows", u, len(ms), span.Round(time.Millisecond), bound)
		}
	}
	t.Logf("rolling restart: %d notifications in %d mails (%d recipients; mails per recipient %s); duplicates %d",
		len(ids), len(mails), users, strings.Join(perUser, " "), len(tl.dupNotes))
}

// countByMailMessageID counts mails per Message-ID.
func countByMailMessageID(mails []vcMail) map[string]int {
	n := map[string]int{}
	for _, m := range mails {
		n[m.MessageID]++
	}
	return n
}
