package consumer

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/prefs"
)

// TestDecideHold walks the rows that hold a notification (contract §9.2:
// after skipped_not_configured, "deferred when a window, quiet hours or the
// seen delay applies"), and checks that with every setting at its default
// nothing is held.
func TestDecideHold(t *testing.T) {
	batching := policy.Default()
	batching.BatchWindow = 2 * time.Minute
	seenDelay := policy.Default()
	seenDelay.SeenDelay = 10 * time.Minute
	quiet := &prefs.QuietHours{Start: 22 * 60, End: 7 * 60} // 22:00–07:00
	holdable := func(f Facts) Facts { f.CanHold = true; return f }
	withPrefs := func(f Facts, pf PrefsFacts) Facts {
		pf.Read, pf.On = true, true
		f.Prefs = pf
		return f
	}
	occurred := baseFacts().Event.OccurredAt // testNow - 1m

	cases := []struct {
		name      string
		facts     Facts
		p         policy.Policy
		step      Step
		windowEnd time.Time
		notBefore time.Time
	}{
		{"defaults: nothing held, the mail is composed", holdable(withPrefs(baseFacts(), PrefsFacts{})), policy.Default(), Compose, time.Time{}, time.Time{}},
		{"a window: held until it closes", holdable(withPrefs(baseFacts(), PrefsFacts{})), batching, Hold, testNow.Add(2 * time.Minute), testNow},
		{"the user's batch overrides the relay's window", holdable(withPrefs(baseFacts(), PrefsFacts{Batch: prefs.Batch{Set: true, Window: 10 * time.Minute}})), batching,
			Hold, testNow.Add(10 * time.Minute), testNow},
		{"the user's batch off: not held", holdable(withPrefs(baseFacts(), PrefsFacts{Batch: prefs.Batch{Set: true}})), batching, Compose, time.Time{}, time.Time{}},
		{"the user's batch without a relay window", holdable(withPrefs(baseFacts(), PrefsFacts{Batch: prefs.Batch{Set: true, Window: time.Minute}})), policy.Default(),
			Hold, testNow.Add(time.Minute), testNow},
		{"seen delay: held until occurred_at + delay", holdable(withPrefs(baseFacts(), PrefsFacts{})), seenDelay, Hold, occurred.Add(10 * time.Minute), occurred.Add(10 * time.Minute)},
		{"seen delay already over: not held", func() Facts {
			f := holdable(withPrefs(baseFacts(), PrefsFacts{}))
			f.Event.OccurredAt = testNow.Add(-time.Hour)
			return f
		}(), seenDelay, Compose, time.Time{}, time.Time{}},
		{"quiet hours (testNow is 10:00 UTC): outside, not held", holdable(withPrefs(baseFacts(), PrefsFacts{Quiet: quiet})), policy.Default(), Compose, time.Time{}, time.Time{}},
		{"quiet hours 18:00–20:00 in Tokyo (19:00 there): held until 20:00 JST", holdable(withPrefs(baseFacts(), PrefsFacts{Quiet: &prefs.QuietHours{Start: 18 * 60, End: 20 * 60},
			TimeZone: tokyo(t)})), policy.Default(), Hold, time.Date(2026, 11, 26, 11, 0, 0, 0, time.UTC), time.Date(2026, 11, 26, 11, 0, 0, 0, time.UTC)},
		{"no NOTIFY_HELD: never held", withPrefs(baseFacts(), PrefsFacts{}), batching, Compose, time.Time{}, time.Time{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(c.facts, c.p)
			if d.Step != c.step {
				t.Fatalf("step %s, want %s (%+v)", d.Step, c.step, d)
			}
			if c.step != Hold {
				return
			}
			if !d.Hold.WindowEnd.Equal(c.windowEnd) || !d.Hold.NotBefore.Equal(c.notBefore) {
				t.Fatalf("hold %v / %v, want %v / %v", d.Hold.WindowEnd, d.Hold.NotBefore, c.windowEnd, c.notBefore)
			}
		})
	}

	// The rules before deferred still come first: opted out is not held.
	f := holdable(baseFacts())
	f.Prefs = PrefsFacts{Read: true}
	if d := Decide(f, batching); d.Step != Act || d.Write == nil || d.Write.Record.State != state.SkippedOptedOut {
		t.Fatalf("opted out with a window: %+v", d)
	}
	// Held: acked, the record written by the hold.
	f = holdable(withPrefs(baseFacts(), PrefsFacts{}))
	f.Hold = HoldFacts{Done: true, Until: testNow.Add(2 * time.Minute)}
	if d := Decide(f, batching); d.Step != Act || d.Action != Ack || d.Write != nil || !strings.Contains(d.Reason, "deferred until") {
		t.Fatalf("held: %+v", d)
	}
	// Holding failed: released for a retry; the last delivery records why.
	f.Hold = HoldFacts{Err: errors.New("no responders")}
	if d := Decide(f, batching); d.Action != Nak || !strings.Contains(d.Reason, "could not hold it") {
		t.Fatalf("hold failed: %+v", d)
	}
	f.Delivery, f.Ledger = policy.MaxDeliver, LedgerFacts{Read: true}
	if d := Decide(f, batching); d.Step != Compose {
		t.Fatalf("hold failed on the last delivery: %+v, want it mailed at once (compose)", d)
	}
	// A redelivery that finds the flush's claim leaves it to the flush.
	f = holdable(redelivery(withPrefs(baseFacts(), PrefsFacts{}), 2))
	f = withRecord(f, state.Record{State: state.Sending, FlushSeq: 40, Delivery: 1, StreamSeq: 7, UpdatedAt: testNow}, 5)
	if d := Decide(f, batching); d.Action != Ack || !strings.Contains(d.Reason, "flush of its window") {
		t.Fatalf("claimed by a flush: %+v", d)
	}
	// A redelivery of a deferred notification holds it again (its item may
	// not have been stored before a crash).
	f = holdable(redelivery(withPrefs(baseFacts(), PrefsFacts{}), 2))
	f = withRecord(f, state.Record{State: state.Deferred, Until: testNow.Add(time.Minute), StreamSeq: 7}, 5)
	if d := Decide(f, batching); d.Step != Hold {
		t.Fatalf("deferred, redelivered: %+v", d)
	}
}

func tokyo(t *testing.T) *time.Location {
	l, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	return l
}

// TestDecideItem walks the rules of a flush (contract §9.2, "at the moment
// of sending").
func TestDecideItem(t *testing.T) {
	p := policy.Default()
	ev := baseFacts().Event
	base := func() ItemFacts {
		return ItemFacts{Event: ev, Due: testNow, Now: testNow, FlushSeq: 40, Delivery: 1, Configured: true,
			Record: state.Record{State: state.Deferred, Until: testNow}, Rev: 3,
			Prefs: PrefsFacts{Read: true, On: true}, Suppression: SuppressionFacts{Read: true}}
	}
	with := func(mod func(*ItemFacts)) ItemFacts { f := base(); mod(&f); return f }
	cases := []struct {
		name    string
		f       ItemFacts
		verdict Verdict
		state   state.State
		until   time.Time
	}{
		{"due: included", base(), Include, "", time.Time{}},
		{"no record (stored, record not yet written): included", with(func(f *ItemFacts) { f.Record, f.Rev = state.Record{}, 0 }), Include, "", time.Time{}},
		{"retrying after a failed window: included", with(func(f *ItemFacts) { f.Record.State = state.Retrying }), Include, "", time.Time{}},
		{"ledger unreadable: waits", with(func(f *ItemFacts) { f.RecordErr = errors.New("timeout") }), Wait, "", testNow.Add(p.LedgerRetryDelay)},
		{"already sent (a crash before removal): dropped", with(func(f *ItemFacts) { f.Record.State = state.Sent }), Drop, "", time.Time{}},
		{"already skipped: dropped", with(func(f *ItemFacts) { f.Record.State = state.SkippedOptedOut }), Drop, "", time.Time{}},
		{"claimed by a later delivery of this flush: stale", with(func(f *ItemFacts) {
			f.Record = state.Record{State: state.Sending, FlushSeq: 40, Delivery: 2, UpdatedAt: testNow}
		}), Stale, "", time.Time{}},
		{"claimed by an earlier delivery of this flush (it crashed): taken over", with(func(f *ItemFacts) {
			f.Delivery = 2
			f.Record = state.Record{State: state.Sending, FlushSeq: 40, Delivery: 1, UpdatedAt: testNow.Add(-2 * p.AckWait / 3)}
		}), Include, "", time.Time{}},
		{"claimed moments ago by an earlier delivery of this flush (alive, redelivered while it waited): waits", with(func(f *ItemFacts) {
			f.Delivery = 2
			f.Record = state.Record{State: state.Sending, FlushSeq: 40, Delivery: 1, UpdatedAt: testNow.Add(-time.Second)}
		}), Wait, "", testNow.Add(-time.Second).Add(p.ClaimTTL())},
		{"claimed by another flush, fresh: waits for its claim to expire", with(func(f *ItemFacts) {
			f.Record = state.Record{State: state.Sending, FlushSeq: 39, Delivery: 1, UpdatedAt: testNow.Add(-time.Second)}
		}), Wait, "", testNow.Add(-time.Second).Add(p.ClaimTTL())},
		{"claimed by another flush, expired: taken over", with(func(f *ItemFacts) {
			f.Record = state.Record{State: state.Sending, FlushSeq: 39, Delivery: 1, UpdatedAt: testNow.Add(-p.ClaimTTL() - time.Second)}
		}), Include, "", time.Time{}},
		{"not due yet: waits until due", with(func(f *ItemFacts) { f.Due = testNow.Add(time.Minute) }), Wait, "", testNow.Add(time.Minute)},
		{"due by the server's clock when the window fired (this relay's clock lags): included", with(func(f *ItemFacts) {
			f.Due, f.FiredAt = testNow.Add(500*time.Millisecond), testNow.Add(600*time.Millisecond)
		}), Include, "", time.Time{}},
		{"due a moment after the window fired: waits for the next", with(func(f *ItemFacts) {
			f.Due, f.FiredAt = testNow.Add(time.Second), testNow.Add(10*time.Millisecond)
		}), Wait, "", testNow.Add(time.Second)},
		{"this relay's clock runs ahead: still waits for its own window", with(func(f *ItemFacts) {
			f.Now, f.Due, f.FiredAt = testNow.Add(5*time.Second), testNow.Add(time.Second), testNow
		}), Wait, "", testNow.Add(time.Second)},
		{"Email turned off while held", with(func(f *ItemFacts) { f.Prefs.On = false }), Skip, state.SkippedOptedOut, time.Time{}},
		{"suppressed while held", with(func(f *ItemFacts) { f.Suppression.Suppressed = true }), Skip, state.SkippedSuppressed, time.Time{}},
		{"no transport any more", with(func(f *ItemFacts) { f.Configured = false }), Skip, state.SkippedNotConfigured, time.Time{}},
		{"quiet hours began meanwhile: waits until they end", with(func(f *ItemFacts) {
			f.Prefs.Quiet = &prefs.QuietHours{Start: 9 * 60, End: 11 * 60} // testNow is 10:00 UTC
		}), Wait, "", time.Date(2026, 11, 26, 11, 0, 0, 0, time.UTC)},
		{"seen in the app", with(func(f *ItemFacts) { f.Seen = true }), Skip, state.SkippedSeen, time.Time{}},
		{"notify_seen unreadable: waits", with(func(f *ItemFacts) { f.SeenErr = errors.New("timeout") }), Wait, "", testNow.Add(p.LedgerRetryDelay)},
		{"went stale while held", with(func(f *ItemFacts) { f.Event = staleEvent(ev, p) }), Skip, state.SkippedStale, time.Time{}},
		{"seen comes before stale", with(func(f *ItemFacts) { f.Event = staleEvent(ev, p); f.Seen = true }), Skip, state.SkippedSeen, time.Time{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := DecideItem(c.f, p)
			if d.Verdict != c.verdict || d.State != c.state {
				t.Fatalf("got %s %q (%s), want %s %q", d.Verdict, d.State, d.Reason, c.verdict, c.state)
			}
			if c.verdict == Wait && !d.Until.Equal(c.until) {
				t.Fatalf("until %v, want %v", d.Until, c.until)
			}
		})
	}
}

func staleEvent(ev *event.Event, p policy.Policy) *event.Event {
	e := *ev
	e.OccurredAt = testNow.Add(-p.StaleAfter - time.Minute)
	return &e
}

// TestClip: a held comment is cut on a rune boundary, never inside one.
func TestClip(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{{"abc", 5, "abc"}, {"abcdef", 3, "abc"}, {"aé", 2, "a"}, {"aé", 3, "aé"}, {"日本", 4, "日"}, {"日本", 2, ""}} {
		if got := clip(c.s, c.n); got != c.want {
			t.Errorf("clip(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}
