package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/smtptest"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/suppress"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go/jetstream"
)

// TestBatchWindowOneMail: three notifications inside a window go out as one
// mail carrying all three, each recorded sent with the mail's Message-ID
// and batch 3; two recipients get two mails.
func TestBatchWindowOneMail(t *testing.T) {
	e := newEnv(t)
	e.startRelay(map[string]string{"MAILRELAY_BATCH_WINDOW": "2s"})
	e.optIn("u1", event.Types...)
	e.optIn("u2", event.Types...)
	start := time.Now()
	ids := []string{"b1", "b2", "b3"}
	for i, id := range ids {
		ty := []event.Type{event.TaskComment, event.TaskAssigned, event.Mention}[i]
		ev := newEvent(id, ty, "u1")
		ev.OccurredAt = start.Add(time.Duration(i) * time.Millisecond).UTC()
		e.publish(ev, id)
		rec := e.waitState(id, state.Deferred, 5*time.Second)
		if rec.Until.IsZero() {
			t.Fatalf("deferred without until: %+v", rec)
		}
	}
	e.publish(newEvent("c1", event.TaskAssigned, "u2"), "c1")

	var msgID string
	for _, id := range ids {
		rec := e.waitState(id, state.Sent, 15*time.Second)
		if rec.Batch != 3 || rec.MessageID == "" {
			t.Fatalf("%s: %+v, want batch 3 with a message id", id, rec)
		}
		if msgID != "" && rec.MessageID != msgID {
			t.Fatalf("%s: message id %s, want %s (one mail)", id, rec.MessageID, msgID)
		}
		msgID = rec.MessageID
	}
	if time.Since(start) < 2*time.Second {
		t.Fatalf("sent %v after the first: before the window closed", time.Since(start))
	}
	other := e.waitState("c1", state.Sent, 15*time.Second)
	if other.Batch != 1 {
		t.Fatalf("u2's single notification: %+v", other)
	}
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		return e.smtp.Count() == 2, fmt.Sprintf("%d mails, want 2", e.smtp.Count())
	})
	var batch []byte
	for _, m := range e.smtp.Messages() {
		if m.To[0] == "u1@example.com" {
			batch = m.Data
		}
	}
	for _, want := range []string{"3 updates", "Message-Id: " + msgID, "/tasks/t-1001"} {
		if !bytes.Contains(bytes.ToLower(batch), bytes.ToLower([]byte(want))) {
			t.Errorf("the batch mail lacks %q:\n%s", want, batch)
		}
	}
}

// TestQuietHoursWrapMidnightInZone: a recipient in a zone other than UTC
// whose quiet hours wrap midnight (22:00 to a minute a few seconds from
// now, local time) gets nothing while they last: both notifications are
// deferred until exactly their end, and once they end the two go out as
// ONE mail (no batching window set: quiet hours release as one batch).
// The pure rule the relay applies, prefs.QuietHours.Until, is checked at
// fixed times in the same zone alongside.
func TestQuietHoursWrapMidnightInZone(t *testing.T) {
	e := newEnv(t)
	e.startRelay(nil)
	zone, loc, q, end := quietSpanEndingSoon(t, time.Now())
	t.Logf("quiet hours %02d:%02d–%02d:%02d in %s, ending %s (in %s)", q.Start/60, q.Start%60, q.End/60, q.End%60,
		zone, end.In(loc).Format(time.RFC3339), time.Until(end).Round(time.Second))

	// The pure rule at fixed times in the zone (Asia/Karachi, UTC+5).
	pk := mustZone(t, "Asia/Karachi")
	night := prefs.QuietHours{Start: 22 * 60, End: 7 * 60}
	for _, tc := range []struct {
		name    string
		at      time.Time
		loc     *time.Location
		inside  bool
		wantEnd time.Time
	}{
		{"before midnight: ends the next morning", time.Date(2026, 12, 6, 23, 30, 0, 0, pk), pk, true, time.Date(2026, 12, 7, 7, 0, 0, 0, pk)},
		{"at start: inside", time.Date(2026, 12, 6, 22, 0, 0, 0, pk), pk, true, time.Date(2026, 12, 7, 7, 0, 0, 0, pk)},
		{"after midnight: ends the same morning", time.Date(2026, 12, 7, 3, 0, 0, 0, pk), pk, true, time.Date(2026, 12, 7, 7, 0, 0, 0, pk)},
		{"a second before the end", time.Date(2026, 12, 7, 6, 59, 59, 0, pk), pk, true, time.Date(2026, 12, 7, 7, 0, 0, 0, pk)},
		{"at end: outside", time.Date(2026, 12, 7, 7, 0, 0, 0, pk), pk, false, time.Time{}},
		{"a second before the start: outside", time.Date(2026, 12, 7, 21, 59, 59, 0, pk), pk, false, time.Time{}},
		{"17:30 UTC is 22:30 in Karachi: inside", time.Date(2026, 12, 6, 17, 30, 0, 0, time.UTC), pk, true, time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC)},
		{"the same instant read in UTC: outside", time.Date(2026, 12, 6, 17, 30, 0, 0, time.UTC), time.UTC, false, time.Time{}},
		{"nil zone is UTC", time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC), nil, true, time.Date(2026, 12, 7, 7, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, inside := night.Until(tc.at, tc.loc)
			if inside != tc.inside || !got.Equal(tc.wantEnd) {
				t.Errorf("Until(%s) = %s, %v; want %s, %v", tc.at.Format(time.RFC3339), got.Format(time.RFC3339), inside,
					tc.wantEnd.Format(time.RFC3339), tc.inside)
			}
		})
	}
	// And the live span, as the relay will read it now.
	if got, inside := q.Until(time.Now(), loc); !inside || !got.Equal(end) {
		t.Fatalf("the live span: Until(now) = %s, %v; want %s, true", got, inside, end)
	}
	if _, inside := q.Until(end, loc); inside {
		t.Fatalf("the live span: still inside at its end")
	}

	e.putPrefs("u1", fmt.Sprintf(`{"email":{"task.assigned":true,"task.comment":true},"time_zone":%q,`+
		`"quiet_hours":{"start":"%02d:%02d","end":"%02d:%02d"}}`, zone, q.Start/60, q.Start%60, q.End/60, q.End%60))
	if time.Until(end) < 2*time.Second {
		t.Fatalf("too slow: the quiet hours end in %s", time.Until(end))
	}
	a := newEvent("q1", event.TaskAssigned, "u1")
	a.Task = event.Task{ID: "t-1", Title: "Pour foundation"}
	c := newEvent("q2", event.TaskComment, "u1")
	c.Task = event.Task{ID: "t-2", Title: "Order rebar"}
	c.OccurredAt = a.OccurredAt.Add(time.Millisecond)
	e.publish(a, "q1")
	e.publish(c, "q2")
	for _, id := range []string{"q1", "q2"} {
		rec := e.waitState(id, state.Deferred, 5*time.Second)
		if !rec.Until.Equal(end) {
			t.Fatalf("%s deferred until %s, want the end of the quiet hours %s", id, rec.Until, end)
		}
	}
	// Nothing while they last.
	for time.Until(end) > 250*time.Millisecond {
		if n := e.smtp.Count(); n != 0 {
			t.Fatalf("%d mail(s) %s before the quiet hours end", n, time.Until(end))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var msgID string
	for _, id := range []string{"q1", "q2"} {
		rec := e.waitState(id, state.Sent, time.Until(end)+15*time.Second)
		if rec.UpdatedAt.Before(end) {
			t.Errorf("%s sent at %s, before the quiet hours ended (%s)", id, rec.UpdatedAt, end)
		}
		if rec.Batch != 2 || rec.MessageID == "" || msgID != "" && rec.MessageID != msgID {
			t.Errorf("%s: %+v, want batch 2 and the other's message id %q", id, rec, msgID)
		}
		msgID = rec.MessageID
	}
	msgs := e.smtp.WaitFor(t, 1, 5*time.Second)
	e.waitNothingHeld("u1", 5*time.Second)
	if len(msgs) != 1 || e.smtp.Count() != 1 {
		t.Fatalf("%d mails, want one carrying both", e.smtp.Count())
	}
	m := readMail(t, msgs[0])
	if d, err := m.Header.Date(); err != nil || d.Before(end) {
		t.Errorf("mail dated %s (%v), before the quiet hours ended (%s)", d, err, end)
	}
	for _, want := range []string{"Pour foundation", "Order rebar", "/tasks/t-1", "/tasks/t-2"} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("the mail lacks %q:\n%s", want, m.Body)
		}
	}
	if !strings.HasPrefix(m.Subject, "2 updates") {
		t.Errorf("subject %q, want the batch's", m.Subject)
	}
}

// quietSpanEndingSoon picks quiet hours that wrap midnight (start 22:00,
// after the end) in a zone with a whole-hour offset other than UTC, such
// that now is inside and they end at the next local minute at least 3 s
// after now. Asia/Karachi (UTC+5) unless its clock reads 22:00 or later
// (the end would not be before the start); then Asia/Tokyo (UTC+9), four
// hours ahead.
func quietSpanEndingSoon(t *testing.T, now time.Time) (zone string, loc *time.Location, q prefs.QuietHours, end time.Time) {
	t.Helper()
	for _, zone := range []string{"Asia/Karachi", "Asia/Tokyo"} {
		loc := mustZone(t, zone)
		end := now.Truncate(time.Minute).Add(time.Minute) // whole-hour offset: a local minute too
		if end.Sub(now) < 3*time.Second {
			end = end.Add(time.Minute)
		}
		local := end.In(loc)
		if m := local.Hour()*60 + local.Minute(); m < 22*60 {
			return zone, loc, prefs.QuietHours{Start: 22 * 60, End: m}, end
		}
	}
	t.Fatal("no zone gives quiet hours that wrap midnight now")
	return "", nil, prefs.QuietHours{}, time.Time{}
}

// TestHeldTurnsStale: staleness applies when a held notification is
// finally due: with MAILRELAY_STALE_AFTER shorter than the window, a
// notification fresh when it arrives is deferred, and when the window
// flushes it is skipped_stale, nothing is mailed and nothing stays held.
func TestHeldTurnsStale(t *testing.T) {
	e := newEnv(t)
	e.startRelay(map[string]string{"MAILRELAY_STALE_AFTER": "3s", "MAILRELAY_BATCH_WINDOW": "5s"})
	e.optIn("u1", event.TaskAssigned)
	ev := newEvent("old", event.TaskAssigned, "u1")
	ev.OccurredAt = time.Now().UTC()
	e.publish(ev, "old")
	d := e.waitState("old", state.Deferred, 3*time.Second)
	if d.Until.Sub(ev.OccurredAt) < 5*time.Second {
		t.Fatalf("deferred until %s, want the window's end (5s after %s)", d.Until, ev.OccurredAt)
	}
	rec := e.waitState("old", state.SkippedStale, 15*time.Second)
	if rec.Attempts != 0 || rec.MessageID != "" || !rec.Until.IsZero() {
		t.Errorf("stale record %+v, want no attempt, no message id, no until", rec)
	}
	if rec.UpdatedAt.Before(d.Until.Add(-time.Second)) {
		t.Errorf("decided stale at %s, before its window closed at %s", rec.UpdatedAt, d.Until)
	}
	e.waitNothingHeld("u1", 5*time.Second)
	if n := e.smtp.Count(); n != 0 {
		t.Fatalf("%d mails, want none", n)
	}
}

// TestEmailTurnedOffWhileHeld: preferences are read again when a window
// flushes: the user turns Email off for one of two held types before the
// window closes; that one is skipped_opted_out, the other goes out alone
// (batch 1, a single mail), and exactly one mail is sent.
func TestEmailTurnedOffWhileHeld(t *testing.T) {
	e := newEnv(t)
	e.startRelay(map[string]string{"MAILRELAY_BATCH_WINDOW": "3s"})
	e.optIn("u1", event.TaskAssigned, event.TaskComment)
	start := time.Now()
	a := newEvent("keep", event.TaskAssigned, "u1")
	c := newEvent("drop", event.TaskComment, "u1")
	c.OccurredAt = a.OccurredAt.Add(time.Millisecond)
	e.publish(a, "keep")
	e.publish(c, "drop")
	e.waitState("keep", state.Deferred, 3*time.Second)
	e.waitState("drop", state.Deferred, 3*time.Second)

	kv, err := e.js.KeyValue(context.Background(), prefs.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prefs.New(kv).Set(context.Background(), "u1", map[event.Type]bool{event.TaskComment: false}); err != nil {
		t.Fatal(err)
	}
	if since := time.Since(start); since > 2500*time.Millisecond {
		t.Fatalf("Email turned off %s after the window opened: too late for a 3s window", since)
	}

	off := e.waitState("drop", state.SkippedOptedOut, 15*time.Second)
	if off.Attempts != 0 || off.MessageID != "" {
		t.Errorf("opted-out record %+v, want no attempt and no message id", off)
	}
	sent := e.waitState("keep", state.Sent, 15*time.Second)
	if sent.Batch != 1 || sent.Attempts != 1 || sent.MessageID == "" {
		t.Errorf("sent record %+v, want batch 1, one attempt, a message id", sent)
	}
	e.waitNothingHeld("u1", 5*time.Second)
	msgs := e.smtp.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d mails, want 1", len(msgs))
	}
	m := readMail(t, msgs[0])
	if strings.Contains(m.Subject, "updates") || !strings.Contains(m.Subject, "assigned you") {
		t.Errorf("subject %q, want the single mail of the assignment", m.Subject)
	}
	if m.Header.Get("Message-Id") != sent.MessageID {
		t.Errorf("Message-ID %q, record says %q", m.Header.Get("Message-Id"), sent.MessageID)
	}
	if strings.Contains(m.Body, "Concrete truck") {
		t.Errorf("the mail carries the comment that was turned off:\n%s", m.Body)
	}
}

// TestSeenLeftOutOfBatch: a notification the recipient saw in the app
// (its id in notify_seen) before the window closes is skipped_seen and
// left out of the batch; the other two go out as one mail (batch 2, one
// message_id) that does not mention the seen one.
func TestSeenLeftOutOfBatch(t *testing.T) {
	e := newEnv(t)
	e.startRelay(map[string]string{"MAILRELAY_BATCH_WINDOW": "3s"})
	e.optIn("u1", event.Types...)
	start := time.Now()
	titles := map[string]string{"s1": "Pour foundation", "s2": "Order rebar", "s3": "Frame walls"}
	for i, id := range []string{"s1", "s2", "s3"} {
		ev := newEvent(id, event.TaskAssigned, "u1")
		ev.Task = event.Task{ID: "t-" + id, Title: titles[id]}
		ev.OccurredAt = start.Add(time.Duration(i) * time.Millisecond).UTC()
		e.publish(ev, id)
		e.waitState(id, state.Deferred, 3*time.Second)
	}
	seen, err := e.js.KeyValue(context.Background(), provision.SeenBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seen.Put(context.Background(), "s2", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if since := time.Since(start); since > 2500*time.Millisecond {
		t.Fatalf("marked seen %s after the window opened: too late for a 3s window", since)
	}

	skipped := e.waitState("s2", state.SkippedSeen, 15*time.Second)
	if skipped.Attempts != 0 || skipped.MessageID != "" || skipped.Batch != 0 {
		t.Errorf("seen record %+v, want no attempt, no message id, no batch", skipped)
	}
	var msgID string
	for _, id := range []string{"s1", "s3"} {
		rec := e.waitState(id, state.Sent, 15*time.Second)
		if rec.Batch != 2 || rec.MessageID == "" || msgID != "" && rec.MessageID != msgID {
			t.Errorf("%s: %+v, want batch 2 and the other's message id %q", id, rec, msgID)
		}
		msgID = rec.MessageID
	}
	e.waitNothingHeld("u1", 5*time.Second)
	msgs := e.smtp.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d mails, want 1", len(msgs))
	}
	m := readMail(t, msgs[0])
	if m.Header.Get("Message-Id") != msgID {
		t.Errorf("Message-ID %q, records say %q", m.Header.Get("Message-Id"), msgID)
	}
	if !strings.HasPrefix(m.Subject, "2 updates") {
		t.Errorf("subject %q, want 2 updates", m.Subject)
	}
	for _, want := range []string{"Pour foundation", "Frame walls", "/tasks/t-s1", "/tasks/t-s3"} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("the mail lacks %q:\n%s", want, m.Body)
		}
	}
	for _, not := range []string{"Order rebar", "/tasks/t-s2"} {
		if strings.Contains(m.Body, not) || strings.Contains(m.Subject, not) {
			t.Errorf("the mail mentions the seen notification (%q):\n%s", not, m.Body)
		}
	}
}

// TestSeenDelay: with MAILRELAY_SEEN_DELAY and no window, a notification
// that just happened is deferred until the delay after its occurred_at
// and mailed only then; one seen in the app meanwhile is skipped_seen; one
// that happened longer ago than the delay goes out at once, its record
// never deferred (no until, no batch).
func TestSeenDelay(t *testing.T) {
	e := newEnv(t)
	e.startRelay(map[string]string{"MAILRELAY_SEEN_DELAY": "3s"})
	e.optIn("u1", event.Types...)
	fresh := newEvent("fresh", event.TaskAssigned, "u1")
	fresh.OccurredAt = time.Now().UTC()
	read := newEvent("read", event.TaskComment, "u1")
	read.OccurredAt = fresh.OccurredAt
	old := newEvent("old", event.Mention, "u1")
	old.OccurredAt = time.Now().Add(-10 * time.Second).UTC()
	oldLog := e.watchRecord("old")

	e.publish(fresh, "fresh")
	e.publish(read, "read")
	for _, id := range []string{"fresh", "read"} {
		d := e.waitState(id, state.Deferred, 2*time.Second)
		if lag := d.Until.Sub(fresh.OccurredAt); lag < 3*time.Second || lag > 4*time.Second {
			t.Fatalf("%s deferred until %s, %s after it happened; want the seen delay (3s, up to the next second)", id, d.Until, lag)
		}
	}
	seen, err := e.js.KeyValue(context.Background(), provision.SeenBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seen.Put(context.Background(), "read", []byte("1")); err != nil {
		t.Fatal(err)
	}

	published := time.Now()
	e.publish(old, "old")
	rec := e.waitState("old", state.Sent, 5*time.Second)
	if took := time.Since(published); took > 2*time.Second {
		t.Errorf("the old notification took %s: not at once", took)
	}
	if !rec.Until.IsZero() || rec.Batch != 0 || rec.Attempts != 1 {
		t.Errorf("old: %+v, want a direct send: no until, no batch, one attempt", rec)
	}
	for _, r := range oldLog.records() {
		if r.State == state.Deferred {
			t.Errorf("old passed through deferred: %+v", r)
		}
	}

	// Nothing for the fresh one within 2 s of when it happened.
	time.Sleep(time.Until(fresh.OccurredAt.Add(2 * time.Second)))
	if n := e.smtp.Count(); n != 1 {
		t.Fatalf("%d mails 2s after the fresh notification happened, want only the old one", n)
	}
	if r, _ := e.record("fresh"); r.State != state.Deferred {
		t.Fatalf("fresh after 2s: %+v, want deferred", r)
	}
	sent := e.waitState("fresh", state.Sent, 10*time.Second)
	if sent.UpdatedAt.Before(fresh.OccurredAt.Add(3 * time.Second)) {
		t.Errorf("fresh sent at %s, before the seen delay after %s", sent.UpdatedAt, fresh.OccurredAt)
	}
	if sent.Batch != 1 {
		t.Errorf("fresh: %+v, want batch 1 (the seen one left out)", sent)
	}
	skipped := e.waitState("read", state.SkippedSeen, 5*time.Second)
	if skipped.Attempts != 0 || skipped.MessageID != "" {
		t.Errorf("read: %+v, want no attempt", skipped)
	}
	e.waitNothingHeld("u1", 5*time.Second)
	msgs := e.smtp.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d mails, want 2 (old, fresh)", len(msgs))
	}
	for _, m := range msgs {
		if bytes.Contains(m.Data, []byte("commented on")) {
			t.Errorf("the seen comment was mailed:\n%s", m.Data)
		}
	}
}

// TestSeenDelayNotEarlyInAWindow: the seen delay holds inside a batching
// window too (contract §9.3: no mail goes out earlier than the delay after
// occurred_at). A notification joins an open window while its own seen
// delay ends 0.9 s after the window closes: it is deferred until the next
// whole second after that, and must not go out with the window's mail
// before then.
func TestSeenDelayNotEarlyInAWindow(t *testing.T) {
	e := newEnv(t)
	e.startRelay(map[string]string{"MAILRELAY_BATCH_WINDOW": "2s", "MAILRELAY_SEEN_DELAY": "3s"})
	e.optIn("u1", event.Types...)
	opener := newEvent("opener", event.TaskAssigned, "u1")
	opener.OccurredAt = time.Now().Add(-10 * time.Second).UTC() // its seen delay is over
	e.publish(opener, "opener")
	window := e.waitState("opener", state.Deferred, 3*time.Second).Until

	late := newEvent("late", event.TaskComment, "u1")
	late.OccurredAt = window.Add(900*time.Millisecond - 3*time.Second).UTC() // seen delay ends 0.9 s after the window
	e.publish(late, "late")
	d := e.waitState("late", state.Deferred, 2*time.Second)
	notBefore := late.OccurredAt.Add(3 * time.Second)
	if d.Until.Before(notBefore) {
		t.Fatalf("late deferred until %s, before its seen delay ends (%s)", d.Until, notBefore)
	}
	if time.Now().After(window) {
		t.Fatalf("too slow: the window closed before late was held")
	}
	rec := e.waitState("late", state.Sent, 15*time.Second)
	if rec.UpdatedAt.Before(notBefore) {
		t.Errorf("late sent at %s, %s before its seen delay ended (%s) and before the until it was deferred to (%s); "+
			"record %+v", rec.UpdatedAt.Format(time.RFC3339Nano), notBefore.Sub(rec.UpdatedAt), notBefore.Format(time.RFC3339Nano),
			d.Until.Format(time.RFC3339), rec)
	}
	e.waitState("opener", state.Sent, 5*time.Second)
}

// TestDateChangesCollapse: three date changes of one task and field in
// one window (A→B, B→C, C→D) go out as one mail with one line from A to D
// (B and C appear nowhere), each recorded sent with the mail's message_id
// and batch 3; another task's change that is undone in the same window
// (E→F, F→E) is left out of the mail and both its notifications are
// skipped_unchanged. A window that holds nothing but such an undone
// change (another recipient's) sends no mail at all.
func TestDateChangesCollapse(t *testing.T) {
	e := newEnv(t)
	e.startRelay(map[string]string{"MAILRELAY_BATCH_WINDOW": "3s"})
	e.optIn("u1", event.TaskDateChanged)
	e.optIn("u2", event.TaskDateChanged)
	start := time.Now()
	change := func(id, task, title, from, to string, i int) {
		user := "u1"
		if strings.HasPrefix(id, "x") {
			user = "u2"
		}
		ev := newEvent(id, event.TaskDateChanged, user)
		ev.Task = event.Task{ID: task, Title: title, Project: "HQ"}
		ev.Change = &event.Change{Field: "planned_end", From: &from, To: &to}
		ev.OccurredAt = start.Add(time.Duration(i) * time.Millisecond).UTC()
		e.publish(ev, id)
	}
	change("d1", "t-1", "Pour foundation", "2026-12-01", "2026-12-02", 0)
	change("u1a", "t-2", "Order rebar", "2026-12-10", "2026-12-11", 1)
	change("d2", "t-1", "Pour foundation", "2026-12-02", "2026-12-03", 2)
	change("d3", "t-1", "Pour foundation", "2026-12-03", "2026-12-04", 3)
	change("u1b", "t-2", "Order rebar", "2026-12-11", "2026-12-10", 4)
	change("x1", "t-3", "Frame walls", "2026-12-20", "2026-12-21", 5)
	change("x2", "t-3", "Frame walls", "2026-12-21", "2026-12-20", 6)

	var msgID string
	for _, id := range []string{"d1", "d2", "d3"} {
		rec := e.waitState(id, state.Sent, 15*time.Second)
		if rec.Batch != 3 || rec.MessageID == "" || msgID != "" && rec.MessageID != msgID {
			t.Errorf("%s: %+v, want batch 3 and the others' message id %q", id, rec, msgID)
		}
		msgID = rec.MessageID
	}
	for _, id := range []string{"u1a", "u1b", "x1", "x2"} {
		rec := e.waitState(id, state.SkippedUnchanged, 5*time.Second)
		if rec.Attempts != 0 || rec.MessageID != "" || rec.Batch != 0 {
			t.Errorf("%s: %+v, want no attempt, no message id, no batch", id, rec)
		}
	}
	if time.Since(start) < 3*time.Second {
		t.Errorf("decided %s after the first: before the window closed", time.Since(start))
	}
	e.waitNothingHeld("u1", 5*time.Second)
	e.waitNothingHeld("u2", 5*time.Second)
	msgs := e.smtp.Messages()
	if len(msgs) != 1 || msgs[0].To[0] != "u1@example.com" {
		t.Fatalf("%d mails, want 1, to u1", len(msgs))
	}
	m := readMail(t, msgs[0])
	if m.Header.Get("Message-Id") != msgID {
		t.Errorf("Message-ID %q, records say %q", m.Header.Get("Message-Id"), msgID)
	}
	var lines []string
	for _, l := range strings.Split(m.Body, "\n") {
		if strings.Contains(l, "→") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) != 1 || !regexp.MustCompile(`^Planned end:\s+2026-12-01 → 2026-12-04$`).MatchString(lines[0]) {
		t.Errorf("change lines %q, want one from 2026-12-01 to 2026-12-04:\n%s", lines, m.Body)
	}
	for _, not := range []string{"2026-12-02", "2026-12-03", "Order rebar", "/tasks/t-2", "2026-12-1"} {
		if strings.Contains(m.Body, not) || strings.Contains(m.Subject, not) {
			t.Errorf("the mail mentions %q:\n%s", not, m.Body)
		}
	}
	if !strings.Contains(m.Body, "Pour foundation") || !strings.Contains(m.Body, "/tasks/t-1") {
		t.Errorf("the mail lacks the task:\n%s", m.Body)
	}
}

// TestDefaultsAreV1: with no volume setting, a notification goes out at
// once as in v1: its record goes to sent without ever being deferred, and
// holds neither until nor batch (the keys are absent, as v1 wrote them);
// the mail is a single mail; NOTIFY_HELD never stores anything.
func TestDefaultsAreV1(t *testing.T) {
	e := newEnv(t)
	e.startRelay(nil)
	e.optIn("u1", event.TaskAssigned)
	log := e.watchRecord("v1")
	e.publish(newEvent("v1", event.TaskAssigned, "u1"), "v1")
	rec := e.waitState("v1", state.Sent, 5*time.Second)
	if rec.Attempts != 1 || rec.MessageID == "" {
		t.Errorf("record %+v, want one attempt and a message id", rec)
	}
	raw := e.rawRecord("v1")
	for _, key := range []string{"until", "batch", "flush_seq"} {
		if _, ok := raw[key]; ok {
			t.Errorf("the sent record has %q: %v", key, raw)
		}
	}
	natstest.Eventually(t, 2*time.Second, func() (bool, string) {
		rs := log.records()
		return len(rs) > 0 && rs[len(rs)-1].State == state.Sent, fmt.Sprintf("watched %+v", rs)
	})
	for _, r := range log.records() {
		if r.State == state.Deferred || !r.Until.IsZero() || r.Batch != 0 {
			t.Errorf("the record passed through %+v", r)
		}
	}
	msgs := e.smtp.WaitFor(t, 1, 5*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("%d mails, want 1", len(msgs))
	}
	if m := readMail(t, msgs[0]); strings.Contains(m.Header.Get("Message-Id"), "batch.") || strings.Contains(m.Subject, "updates") {
		t.Errorf("not a v1 mail: %q, %q", m.Header.Get("Message-Id"), m.Subject)
	}
	info := e.heldInfo("")
	if info.State.Msgs != 0 || info.State.LastSeq != 0 {
		t.Errorf("NOTIFY_HELD: %d messages, last sequence %d; want nothing ever stored", info.State.Msgs, info.State.LastSeq)
	}
}

// TestUserBatchOff: a user's "batch" preference overrides the relay's
// window both ways: "off" under MAILRELAY_BATCH_WINDOW=3s is mailed at once
// and never deferred (while a user without the preference is deferred),
// and "2s" with no relay window batches that user's notifications.
func TestUserBatchOff(t *testing.T) {
	t.Run("off under a relay window", func(t *testing.T) {
		e := newEnv(t)
		e.startRelay(map[string]string{"MAILRELAY_BATCH_WINDOW": "3s"})
		e.putPrefs("u1", `{"email":{"task.assigned":true},"batch":"off"}`)
		e.optIn("u2", event.TaskAssigned)
		log := e.watchRecord("now")
		published := time.Now()
		e.publish(newEvent("now", event.TaskAssigned, "u1"), "now")
		e.publish(newEvent("later", event.TaskAssigned, "u2"), "later")
		rec := e.waitState("now", state.Sent, 5*time.Second)
		if took := time.Since(published); took > 2*time.Second {
			t.Errorf("batch off took %s: not at once", took)
		}
		if !rec.Until.IsZero() || rec.Batch != 0 || rec.Attempts != 1 {
			t.Errorf("record %+v, want a direct send", rec)
		}
		for _, r := range log.records() {
			if r.State == state.Deferred {
				t.Errorf("batch off, yet deferred: %+v", r)
			}
		}
		if n := e.heldInfo(hold.ItemSubject("u1")).State.Subjects[hold.ItemSubject("u1")]; n != 0 {
			t.Errorf("%d notifications of u1 held, want none", n)
		}
		// The relay's window holds for anyone without the preference.
		d := e.waitState("later", state.Deferred, 3*time.Second)
		if d.Until.Sub(published) < 2*time.Second {
			t.Errorf("u2 deferred until %s: not the relay's 3s window", d.Until)
		}
		if n := e.smtp.Count(); n != 1 {
			t.Errorf("%d mails before the window closed, want 1", n)
		}
		e.waitState("later", state.Sent, 15*time.Second)
	})
	t.Run("2s without a relay window", func(t *testing.T) {
		e := newEnv(t)
		e.startRelay(nil)
		e.putPrefs("u3", `{"email":{"task.assigned":true,"task.comment":true},"batch":"2s"}`)
		start := time.Now()
		a := newEvent("w1", event.TaskAssigned, "u3")
		c := newEvent("w2", event.TaskComment, "u3")
		c.OccurredAt = a.OccurredAt.Add(time.Millisecond)
		e.publish(a, "w1")
		e.publish(c, "w2")
		for _, id := range []string{"w1", "w2"} {
			d := e.waitState(id, state.Deferred, 3*time.Second)
			if lag := d.Until.Sub(start); lag < 2*time.Second || lag > 4*time.Second {
				t.Errorf("%s deferred until %s after the first publish, want the user's 2s window", id, lag)
			}
		}
		var msgID string
		for _, id := range []string{"w1", "w2"} {
			rec := e.waitState(id, state.Sent, 15*time.Second)
			if rec.Batch != 2 || msgID != "" && rec.MessageID != msgID {
				t.Errorf("%s: %+v, want batch 2 with the other's message id", id, rec)
			}
			msgID = rec.MessageID
		}
		e.waitNothingHeld("u3", 5*time.Second)
		if n := e.smtp.Count(); n != 1 {
			t.Fatalf("%d mails, want one", n)
		}
	})
}

// TestFlushTemporaryFailureThenSent: a window's mail that meets a
// temporary SMTP failure (451 after DATA) is retried after
// MAILRELAY_RETRY_DELAYS: every notification of the batch is recorded
// retrying, then sent with attempts 2; one mail is accepted.
func TestFlushTemporaryFailureThenSent(t *testing.T) {
	e := newEnv(t)
	e.startRelay(map[string]string{"MAILRELAY_BATCH_WINDOW": "2s", "MAILRELAY_RETRY_DELAYS": "1s"})
	e.optIn("u1", event.Types...)
	e.smtp.FailNext(1, 451, "4.3.0", "try again later")
	logs := map[string]*stateLog{"r1": e.watchRecord("r1"), "r2": e.watchRecord("r2")}
	a := newEvent("r1", event.TaskAssigned, "u1")
	c := newEvent("r2", event.TaskComment, "u1")
	c.OccurredAt = a.OccurredAt.Add(time.Millisecond)
	e.publish(a, "r1")
	e.publish(c, "r2")
	var msgID string
	for _, id := range []string{"r1", "r2"} {
		rec := e.waitState(id, state.Sent, 15*time.Second)
		if rec.Attempts != 2 || rec.Batch != 2 || msgID != "" && rec.MessageID != msgID {
			t.Errorf("%s: %+v, want attempts 2, batch 2, the other's message id", id, rec)
		}
		msgID = rec.MessageID
	}
	for id, l := range logs {
		var retrying *state.Record
		for _, r := range l.records() {
			if r.State == state.Retrying {
				retrying = &r
				break
			}
		}
		if retrying == nil || retrying.Attempts != 1 || !strings.Contains(retrying.Error, "451") {
			t.Errorf("%s: no retrying record with attempt 1 and the 451 among %+v", id, l.records())
		}
	}
	e.waitNothingHeld("u1", 5*time.Second)
	if n := e.smtp.Count(); n != 1 {
		t.Fatalf("%d mails accepted, want 1", n)
	}
	if tries := e.commands("MAIL"); tries != 2 {
		t.Errorf("%d mail transactions (MAIL FROM), want 2 (the failed one and the retry)", tries)
	}
}

// TestFlushPermanentRejectionSuppresses: a window's mail whose recipient
// is refused for good (550 5.1.1 at RCPT) ends every notification of the
// batch inbox_only with the reason, puts the address on the suppression
// list, and nothing more goes to SMTP for that address.
func TestFlushPermanentRejectionSuppresses(t *testing.T) {
	e := newEnv(t)
	e.smtp.SetReplyAt(smtptest.StageRcpt, 550, "5.1.1", "no such user")
	e.startRelay(map[string]string{"MAILRELAY_BATCH_WINDOW": "2s"})
	e.optIn("u1", event.Types...)
	a := newEvent("p1", event.TaskAssigned, "u1")
	c := newEvent("p2", event.TaskComment, "u1")
	c.OccurredAt = a.OccurredAt.Add(time.Millisecond)
	e.publish(a, "p1")
	e.publish(c, "p2")
	for _, id := range []string{"p1", "p2"} {
		e.waitState(id, state.Deferred, 3*time.Second)
	}
	for _, id := range []string{"p1", "p2"} {
		rec := e.waitState(id, state.InboxOnly, 15*time.Second)
		if rec.Attempts != 1 || !strings.Contains(rec.Error, "550") {
			t.Errorf("%s: %+v, want one attempt and the 550", id, rec)
		}
	}
	kv, err := e.js.KeyValue(context.Background(), suppress.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(context.Background(), suppress.Key("u1@example.com")); err != nil {
		t.Fatalf("no suppression entry under %s: %v", suppress.Key("u1@example.com"), err)
	}
	var entry suppress.Entry
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		entry, err = suppress.New(kv).Get(context.Background(), "U1@example.com")
		return err == nil, fmt.Sprint(err)
	})
	if entry.Source != suppress.SourceSMTP || entry.Code != "550 5.1.1" {
		t.Errorf("suppression entry %+v, want source smtp and 550 5.1.1", entry)
	}
	e.waitNothingHeld("u1", 5*time.Second)

	// Nothing more is tried for that address.
	e.publish(newEvent("p3", event.Mention, "u1"), "p3")
	e.waitState("p3", state.SkippedSuppressed, 5*time.Second)
	if n := e.smtp.Count(); n != 0 {
		t.Errorf("%d mails accepted, want none", n)
	}
	if rcpt := e.commands("RCPT"); rcpt != 1 {
		t.Errorf("%d RCPT commands, want 1 (one mail for the batch, none after)", rcpt)
	}
}

// TestDeferredFigures: what is held shows in the admin status JSON
// ("deferred": notifications, recipients, oldest) and in /metrics
// (mailrelay_deferred, mailrelay_deferred_recipients,
// mailrelay_deferred_oldest_seconds). The figures are refreshed by the
// relay's sweep of NOTIFY_HELD every 15 s, so this waits for its second
// look, inside a 20 s window.
func TestDeferredFigures(t *testing.T) {
	e := newEnv(t)
	addr := freeAddr(t)
	const token = "test-admin-token-0123456789"
	e.startRelay(map[string]string{"MAILRELAY_BATCH_WINDOW": "20s", "MAILRELAY_HTTP_ADDR": addr, "MAILRELAY_ADMIN_TOKEN": token})
	e.optIn("u1", event.Types...)
	e.optIn("u2", event.Types...)
	held := time.Now()
	for i, n := range []struct{ id, user string }{{"f1", "u1"}, {"f2", "u1"}, {"f3", "u2"}} {
		ev := newEvent(n.id, event.Types[i], n.user)
		e.publish(ev, n.id)
		e.waitState(n.id, state.Deferred, 3*time.Second)
	}

	type figures struct {
		Notifications int       `json:"notifications"`
		Recipients    int       `json:"recipients"`
		Oldest        time.Time `json:"oldest"`
	}
	var got struct {
		Deferred *figures `json:"deferred"`
	}
	natstest.Eventually(t, 17*time.Second, func() (bool, string) {
		code, body := adminGet(addr, "/v1/status/email", token)
		if code != http.StatusOK {
			return false, fmt.Sprintf("status %d: %s", code, body)
		}
		got.Deferred = nil
		if err := json.Unmarshal([]byte(body), &got); err != nil || got.Deferred == nil {
			return false, fmt.Sprintf("%v: %s", err, body)
		}
		return got.Deferred.Notifications == 3, body
	})
	if d := got.Deferred; d.Recipients != 2 || d.Oldest.IsZero() || d.Oldest.Before(held.Add(-time.Second)) || d.Oldest.After(time.Now()) {
		t.Errorf("deferred %+v, want 3 notifications of 2 recipients, the oldest held since about %s", *d, held)
	}
	metrics := deferredMetrics(t, addr)
	if metrics["mailrelay_deferred"] != 3 || metrics["mailrelay_deferred_recipients"] != 2 || metrics["mailrelay_deferred_oldest_seconds"] <= 0 {
		t.Errorf("metrics %v, want 3 deferred, 2 recipients, oldest > 0", metrics)
	}
	if n := e.smtp.Count(); n != 0 {
		t.Errorf("%d mails while the window is open", n)
	}
}

// --- helpers ---------------------------------------------------------------

// putPrefs stores user's notify_prefs value as given (raw JSON).
func (e *env) putPrefs(user, value string) {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), prefs.Bucket)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), user, []byte(value)); err != nil {
		e.t.Fatal(err)
	}
}

// rawRecord is key's ledger value as stored, decoded as a JSON object.
func (e *env) rawRecord(key string) map[string]any {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), state.Bucket)
	if err != nil {
		e.t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), key)
	if err != nil {
		e.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		e.t.Fatalf("record of %s: %v: %s", key, err, entry.Value())
	}
	return m
}

// stateLog is every value a ledger record took while watched.
type stateLog struct {
	mu   sync.Mutex
	recs []state.Record
}

func (l *stateLog) records() []state.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]state.Record(nil), l.recs...)
}

// watchRecord watches key's ledger record until the test ends and logs
// every value written to it (a KV watch started before the writes sees
// each one as it is stored).
func (e *env) watchRecord(key string) *stateLog {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	kv, err := e.js.KeyValue(ctx, state.Bucket)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	w, err := kv.Watch(ctx, key, jetstream.UpdatesOnly())
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	l := &stateLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-w.Updates():
				if !ok {
					return
				}
				if u == nil || u.Operation() != jetstream.KeyValuePut {
					continue
				}
				var r state.Record
				if json.Unmarshal(u.Value(), &r) == nil {
					l.mu.Lock()
					l.recs = append(l.recs, r)
					l.mu.Unlock()
				}
			}
		}
	}()
	e.t.Cleanup(func() {
		_ = w.Stop()
		cancel()
		<-done
	})
	return l
}

// heldInfo is NOTIFY_HELD's info, its state limited to subject ("" for all).
func (e *env) heldInfo(subject string) *jetstream.StreamInfo {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), hold.Stream)
	if err != nil {
		e.t.Fatal(err)
	}
	var opts []jetstream.StreamInfoOpt
	if subject != "" {
		opts = append(opts, jetstream.WithSubjectFilter(subject))
	}
	info, err := s.Info(context.Background(), opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return info
}

// waitNothingHeld waits until NOTIFY_HELD holds no notification of user
// (a flush removes what it decided).
func (e *env) waitNothingHeld(user string, timeout time.Duration) {
	e.t.Helper()
	subject := hold.ItemSubject(user)
	natstest.Eventually(e.t, timeout, func() (bool, string) {
		n := e.heldInfo(subject).State.Subjects[subject]
		return n == 0, fmt.Sprintf("%d notifications of %s still held", n, user)
	})
}

// commands counts the SMTP commands clients sent with verb.
func (e *env) commands(verb string) int {
	n := 0
	for _, c := range e.smtp.Commands() {
		if v, _, _ := strings.Cut(strings.ToUpper(c), " "); v == verb {
			n++
		}
	}
	return n
}

// receivedMail is an accepted mail, read: its header, its decoded subject
// and its decoded plain-text body (LF line endings).
type receivedMail struct {
	Header  mail.Header
	Subject string
	Body    string
}

func readMail(t *testing.T, m smtptest.Message) receivedMail {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatalf("accepted mail does not parse: %v\n%s", err, m.Data)
	}
	var body io.Reader = msg.Body
	if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		body = quotedprintable.NewReader(body)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("body: %v\n%s", err, m.Data)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("subject: %v", err)
	}
	return receivedMail{Header: msg.Header, Subject: subject, Body: strings.ReplaceAll(string(b), "\r\n", "\n")}
}

// adminGet is GET http://addr/path with the admin bearer token.
func adminGet(addr, path, token string) (int, string) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+token)
	c := http.Client{Timeout: time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var deferredLine = regexp.MustCompile(`^(mailrelay_deferred(?:_recipients|_oldest_seconds)?) (\S+)$`)

// deferredMetrics reads the mailrelay_deferred* gauges from /metrics.
func deferredMetrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	code, body := get(addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("metrics: %d", code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if m := deferredLine.FindStringSubmatch(sc.Text()); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			out[m[1]] = v
		}
	}
	return out
}
