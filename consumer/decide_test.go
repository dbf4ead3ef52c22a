package consumer

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/transport"
)

// baseFacts is a valid first delivery of n1 (task.assigned for u1, who has
// an address), at testNow, with a transport configured.
func baseFacts() Facts {
	return Facts{Seq: 7, Delivery: 1, Now: testNow, Configured: true, Suppression: SuppressionFacts{Read: true},
		Event: &event.Event{ID: "n1", Type: event.TaskAssigned, OccurredAt: testNow.Add(-time.Minute),
			Recipient: event.Recipient{ID: "u1", Email: "ann@example.com"}, Task: event.Task{ID: "t1", Title: "T"}}}
}

// Facts at each point of the path that sends, built up in order.
func readyToClaim(f Facts) Facts {
	f.Prefs = PrefsFacts{Read: true, On: true}
	f.MessageID = "<n.n1@example.com>"
	return f
}

func claimed(f Facts) Facts {
	f = readyToClaim(f)
	f.Claim.Stored, f.Claim.Rev = true, 11
	return f
}

func sent(f Facts, err error) Facts {
	f = claimed(f)
	f.Sent = &SendResult{Err: err, At: testNow.Add(time.Second)}
	return f
}

func withRecord(f Facts, r state.Record, rev uint64) Facts {
	f.Ledger = LedgerFacts{Read: true, Record: r, Rev: rev}
	return f
}

func redelivery(f Facts, n int) Facts { f.Delivery = n; return f }

// TestDecide walks every row of the decision table (docs/delivery.md):
// the contract's rules in order, the claim rules of the crash windows,
// the ownership check of a delivery held long, and what a send's result
// means. Decide is pure, so each row is its facts and the decision.
func TestDecide(t *testing.T) {
	p := policy.Default()
	temp := &transport.Error{Temporary: true, Code: 451, Enhanced: "4.3.0", Step: "data", Err: errors.New("try later")}
	perm := &transport.Error{Temporary: false, Code: 550, Enhanced: "5.1.1", Step: "rcpt", Err: errors.New("no such user")}
	retrying := state.Record{State: state.Retrying, Attempts: 1, Error: "451 try later", MessageID: "<n.n1@example.com>", StreamSeq: 7}

	type want struct {
		step     Step
		action   Action
		delay    time.Duration
		reason   string // a part of the reason
		mode     WriteMode
		key      string // "" = nothing written
		fallback string
		state    state.State
		attempts int
		rev      uint64
	}
	cases := []struct {
		name  string
		facts Facts
		want  want
	}{
		// The contract's rules, in order.
		{"not a JetStream delivery", Facts{NotDelivery: errors.New("no reply subject")},
			want{action: Term, reason: "not a JetStream delivery"}},
		{"invalid, no usable id: under seq.<n>", Facts{Seq: 7, Delivery: 1, Now: testNow, Invalid: errors.New("invalid event: bad JSON")},
			want{action: Term, reason: "invalid: bad JSON", mode: Put, key: "seq.7", state: state.Invalid}},
		{"invalid, usable id: created under it, else under seq.<n>", func() Facts {
			f := baseFacts()
			f.Invalid = errors.New("invalid event: task.title is required")
			return f
		}(), want{action: Term, reason: "task.title is required", mode: Create, key: "n1", fallback: "seq.7", state: state.Invalid}},
		{"invalid wins over stopping and a settled record", func() Facts {
			f := withRecord(baseFacts(), state.Record{State: state.Sent}, 3)
			f.Invalid, f.Stopping = errors.New("invalid event: x"), true
			return f
		}(), want{action: Term, reason: "invalid", mode: Create, key: "n1", fallback: "seq.7", state: state.Invalid}},
		{"stopping: released untouched", func() Facts { f := baseFacts(); f.Stopping = true; return f }(),
			want{action: Nak, reason: reasonShutdown}},
		{"first delivery: the ledger is not read", baseFacts(), want{step: ReadPrefs}},
		{"redelivery: the ledger is read first", redelivery(baseFacts(), 2), want{step: ReadLedger}},
		{"ledger unreadable", func() Facts {
			f := redelivery(baseFacts(), 2)
			f.Ledger = LedgerFacts{Read: true, Err: errors.New("timeout")}
			return f
		}(), want{action: Nak, delay: p.LedgerRetryDelay, reason: "ledger unavailable: timeout"}},
		{"ledger unreadable on the last delivery: inbox_only with the real reason", func() Facts {
			f := redelivery(baseFacts(), policy.MaxDeliver)
			f.Ledger = LedgerFacts{Read: true, Err: errors.New("bucket not found")}
			return f
		}(), want{action: Term, reason: "ledger unavailable: bucket not found", mode: Create, key: "n1", state: state.InboxOnly}},
		{"already sent", withRecord(redelivery(baseFacts(), 2), state.Record{State: state.Sent, Attempts: 1}, 3),
			want{action: Ack, reason: "already sent"}},
		{"a copy meets the outcome of another copy: a duplicate, the record stays the original's",
			withRecord(redelivery(baseFacts(), 2), state.Record{State: state.SkippedOptedOut, StreamSeq: 3}, 3),
			want{action: Ack, reason: "duplicate: another copy of this notification was skipped_opted_out"}},
		{"a redelivery of the same message re-evaluates a skip",
			withRecord(redelivery(baseFacts(), 2), state.Record{State: state.SkippedOptedOut, StreamSeq: 7}, 3),
			want{step: ReadPrefs}},
		{"a corrected copy of an invalid notification is decided",
			withRecord(redelivery(baseFacts(), 2), state.Record{State: state.Invalid, StreamSeq: 3}, 3),
			want{step: ReadPrefs}},
		{"already inbox_only", withRecord(redelivery(baseFacts(), 2), state.Record{State: state.InboxOnly, Attempts: 3}, 3),
			want{action: Ack, reason: "already inbox_only"}},
		{"stale, before the preferences are read", func() Facts {
			f := baseFacts()
			f.Event.OccurredAt = testNow.Add(-25 * time.Hour)
			return f
		}(), want{action: Ack, reason: "older than 24h0m0s", mode: Create, key: "n1", state: state.SkippedStale}},
		{"stale on a redelivery keeps the attempts", func() Facts {
			f := withRecord(redelivery(baseFacts(), 2), retrying, 4)
			f.Event.OccurredAt = testNow.Add(-25 * time.Hour)
			return f
		}(), want{action: Ack, reason: "older than", mode: Put, key: "n1", state: state.SkippedStale, attempts: 1}},
		{"preferences unreadable", func() Facts {
			f := baseFacts()
			f.Prefs = PrefsFacts{Read: true, Err: errors.New("no responders")}
			return f
		}(), want{action: Nak, delay: p.LedgerRetryDelay, reason: "preferences unavailable"}},
		{"preferences unreadable on the last delivery: inbox_only with the real reason", func() Facts {
			f := withRecord(redelivery(baseFacts(), policy.MaxDeliver), state.Record{State: state.Retrying, Attempts: 0, Error: "x"}, 4)
			f.Prefs = PrefsFacts{Read: true, Err: errors.New("no responders")}
			return f
		}(), want{action: Term, reason: "preferences unavailable: no responders", mode: Put, key: "n1", state: state.InboxOnly}},
		{"opted out, first delivery: created only if the id has no record", func() Facts {
			f := baseFacts()
			f.Prefs = PrefsFacts{Read: true}
			return f
		}(), want{action: Ack, reason: "email is off", mode: Create, key: "n1", state: state.SkippedOptedOut}},
		{"broken preference: off, and the record says why", func() Facts {
			f := baseFacts()
			f.Prefs = PrefsFacts{Read: true, Problem: `notify_prefs["u1"].email["task.assigned"] is "yes", not a boolean`}
			return f
		}(), want{action: Ack, reason: "the preferences are not valid", mode: Create, key: "n1", state: state.SkippedOptedOut}},
		{"occurred_at more than 24h ahead of the clock: invalid", func() Facts {
			f := baseFacts()
			f.Event.OccurredAt = testNow.Add(25 * time.Hour)
			return f
		}(), want{action: Term, reason: "ahead of the relay's clock", mode: Create, key: "n1", fallback: "seq.7", state: state.Invalid}},
		{"occurred_at 23h ahead: decided as usual", func() Facts {
			f := baseFacts()
			f.Event.OccurredAt = testNow.Add(23 * time.Hour)
			return f
		}(), want{step: ReadPrefs}},
		{"opted out, redelivery: retrying keeps its attempts", func() Facts {
			f := withRecord(redelivery(baseFacts(), 2), retrying, 4)
			f.Prefs = PrefsFacts{Read: true}
			return f
		}(), want{action: Ack, reason: "email is off", mode: Put, key: "n1", state: state.SkippedOptedOut, attempts: 1}},
		{"no address", func() Facts {
			f := baseFacts()
			f.Event.Recipient.Email = ""
			f.Prefs = PrefsFacts{Read: true, On: true}
			return f
		}(), want{action: Ack, reason: "no email address", mode: Create, key: "n1", state: state.SkippedNoEmail}},
		{"opted in, the address not looked up yet", func() Facts {
			f := baseFacts()
			f.Prefs, f.Suppression = PrefsFacts{Read: true, On: true}, SuppressionFacts{}
			return f
		}(), want{step: ReadSuppression}},
		{"suppressed address", func() Facts {
			f := baseFacts()
			f.Prefs, f.Suppression = PrefsFacts{Read: true, On: true}, SuppressionFacts{Read: true, Suppressed: true}
			return f
		}(), want{action: Ack, reason: "suppression list", mode: Create, key: "n1", state: state.SkippedSuppressed}},
		{"suppression list unreadable", func() Facts {
			f := baseFacts()
			f.Prefs, f.Suppression = PrefsFacts{Read: true, On: true}, SuppressionFacts{Read: true, Err: errors.New("timeout")}
			return f
		}(), want{action: Nak, delay: p.LedgerRetryDelay, reason: "suppression list unavailable"}},
		{"not configured", func() Facts {
			f := baseFacts()
			f.Configured = false
			f.Prefs = PrefsFacts{Read: true, On: true}
			return f
		}(), want{action: Ack, reason: "no mail transport", mode: Create, key: "n1", state: state.SkippedNotConfigured}},
		{"opted in: compose", func() Facts { f := baseFacts(); f.Prefs = PrefsFacts{Read: true, On: true}; return f }(),
			want{step: Compose}},

		// The claim.
		{"no record: claim with create", readyToClaim(baseFacts()),
			want{step: Claim, mode: Swap, key: "n1", state: state.Sending, attempts: 1, rev: 0}},
		{"retrying: claim over it, one more attempt", readyToClaim(withRecord(redelivery(baseFacts(), 2), retrying, 4)),
			want{step: Claim, mode: Swap, key: "n1", state: state.Sending, attempts: 2, rev: 4}},
		{"crash after claiming: the earlier delivery's claim is taken over",
			readyToClaim(withRecord(redelivery(baseFacts(), 2), state.Record{State: state.Sending, Attempts: 1, StreamSeq: 7, Delivery: 1, UpdatedAt: testNow.Add(-time.Second)}, 5)),
			want{step: Claim, mode: Swap, key: "n1", state: state.Sending, attempts: 2, rev: 5}},
		{"crash after claiming, claim without a delivery number: taken over",
			readyToClaim(withRecord(redelivery(baseFacts(), 2), state.Record{State: state.Sending, Attempts: 1, StreamSeq: 7, UpdatedAt: testNow.Add(-2 * time.Minute)}, 5)),
			want{step: Claim, mode: Swap, key: "n1", state: state.Sending, attempts: 2, rev: 5}},
		{"a stale delivery meets a later delivery's claim: left alone",
			readyToClaim(withRecord(redelivery(baseFacts(), 2), state.Record{State: state.Sending, Attempts: 2, StreamSeq: 7, Delivery: 3, UpdatedAt: testNow}, 5)),
			want{action: Leave, reason: "a later delivery of this message owns it"}},
		{"another copy is being sent: this one is a duplicate",
			readyToClaim(withRecord(baseFacts(), state.Record{State: state.Sending, Attempts: 1, StreamSeq: 3, UpdatedAt: testNow.Add(-time.Second)}, 5)),
			want{action: Ack, reason: "duplicate"}},
		{"another copy's claim expired: taken over",
			readyToClaim(withRecord(baseFacts(), state.Record{State: state.Sending, Attempts: 1, StreamSeq: 3, UpdatedAt: testNow.Add(-p.ClaimTTL())}, 5)),
			want{step: Claim, mode: Swap, key: "n1", state: state.Sending, attempts: 2, rev: 5}},
		{"claim write failed", func() Facts {
			f := readyToClaim(baseFacts())
			f.Claim.Err = errors.New("timeout")
			return f
		}(), want{action: Nak, delay: p.LedgerRetryDelay, reason: "ledger unavailable: timeout"}},
		{"claim conflict: read the record again", func() Facts {
			f := readyToClaim(baseFacts())
			f.Claim.Conflicts = 1
			return f
		}(), want{step: ReadLedger}},
		{"claim conflict, then the record says sent", func() Facts {
			f := readyToClaim(withRecord(baseFacts(), state.Record{State: state.Sent, Attempts: 1}, 9))
			f.Claim.Conflicts = 1
			return f
		}(), want{action: Ack, reason: "already sent"}},
		{"claim conflicts persist", func() Facts {
			f := readyToClaim(withRecord(baseFacts(), retrying, 9))
			f.Claim.Conflicts = policy.ClaimConflicts
			return f
		}(), want{action: Nak, delay: p.RetryDelay(1), reason: "keeps changing"}},
		{"stopping while claiming", func() Facts {
			f := readyToClaim(baseFacts())
			f.Claim.Err, f.Stopping = errors.New("context canceled"), true
			return f
		}(), want{action: Nak, reason: reasonShutdown}},

		// Claimed: the ownership check, then the send.
		{"claimed, held briefly: send", claimed(baseFacts()), want{step: Send}},
		{"claimed, held past AckWait/3: check the claim first", func() Facts {
			f := claimed(baseFacts())
			f.Held = p.AckWait / 3
			return f
		}(), want{step: CheckClaim}},
		{"claim checked, still ours: send", func() Facts {
			f := claimed(baseFacts())
			f.Held, f.Claim.Checked, f.Claim.CurrentRev = p.AckWait, true, 11
			return f
		}(), want{step: Send}},
		{"claim checked, taken over by a later delivery: left alone, nothing sent", func() Facts {
			f := claimed(baseFacts())
			f.Held, f.Claim.Checked, f.Claim.CurrentRev = p.AckWait, true, 12
			return f
		}(), want{action: Leave, reason: "taken over"}},
		{"claim check failed: send as before", func() Facts {
			f := claimed(baseFacts())
			f.Held, f.Claim.Checked, f.Claim.CheckErr = p.AckWait, true, errors.New("timeout")
			return f
		}(), want{step: Send}},
		{"stopping once claimed: still sent (the send gives up if it has not begun)", func() Facts {
			f := claimed(baseFacts())
			f.Stopping = true
			return f
		}(), want{step: Send}},

		// The send's result.
		{"sent", sent(baseFacts(), nil), want{action: Ack, reason: "sent", mode: Put, key: "n1", state: state.Sent, attempts: 1}},
		{"shutdown before the send: the attempt is taken back", func() Facts {
			f := sent(withRecord(redelivery(baseFacts(), 2), retrying, 4), errNotTried)
			f.Sent.NotTried = true
			return f
		}(), want{action: Nak, reason: reasonShutdown, mode: Put, key: "n1", state: state.Retrying, attempts: 1}},
		{"went stale waiting out slow-downs: no attempt", func() Facts {
			f := sent(baseFacts(), errStale)
			f.Sent.WentStale = true
			return f
		}(), want{action: Ack, reason: "older than", mode: Put, key: "n1", state: state.SkippedStale, attempts: 0}},
		{"interrupted by shutdown mid-send: the attempt counts", func() Facts {
			f := sent(baseFacts(), temp)
			f.Sent.Stopping = true
			return f
		}(), want{action: Nak, reason: "shutdown", mode: Put, key: "n1", state: state.Retrying, attempts: 1}},
		{"550: permanent", sent(baseFacts(), perm), want{action: Term, reason: "permanent failure: 550 5.1.1", mode: Put, key: "n1", state: state.InboxOnly, attempts: 1}},
		{"451 on attempt 1", sent(baseFacts(), temp), want{action: Nak, delay: 30 * time.Second, reason: "temporary failure: 451", mode: Put, key: "n1", state: state.Retrying, attempts: 1}},
		{"451 on attempt 2", sent(withRecord(redelivery(baseFacts(), 2), retrying, 4), temp),
			want{action: Nak, delay: 2 * time.Minute, reason: "temporary failure", mode: Put, key: "n1", state: state.Retrying, attempts: 2}},
		{"451 on attempt 3: attempts exhausted", sent(withRecord(redelivery(baseFacts(), 3), state.Record{State: state.Retrying, Attempts: 2}, 4), temp),
			want{action: Term, reason: "attempts exhausted (3)", mode: Put, key: "n1", state: state.InboxOnly, attempts: 3}},
		{"no reply code (dropped connection) is temporary", sent(baseFacts(), errors.New("connection reset")),
			want{action: Nak, delay: 30 * time.Second, reason: "temporary failure", mode: Put, key: "n1", state: state.Retrying, attempts: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.facts, p)
			w := tc.want
			if d.Step != w.step {
				t.Fatalf("step %s, want %s (decision %+v)", d.Step, w.step, d)
			}
			if d.Step == Act && (d.Action != w.action || d.Delay != w.delay) {
				t.Errorf("action %s after %s, want %s after %s (reason %q)", d.Action, d.Delay, w.action, w.delay, d.Reason)
			}
			if !strings.Contains(d.Reason, w.reason) {
				t.Errorf("reason %q, want it to contain %q", d.Reason, w.reason)
			}
			if w.key == "" {
				if d.Write != nil {
					t.Errorf("writes %+v, want nothing written", d.Write)
				}
				return
			}
			if d.Write == nil {
				t.Fatalf("writes nothing, want %s under %s", w.state, w.key)
			}
			got := d.Write
			if got.Mode != w.mode || got.Key != w.key || got.Fallback != w.fallback || got.Rev != w.rev {
				t.Errorf("write mode %d key %q fallback %q rev %d, want %d %q %q %d", got.Mode, got.Key, got.Fallback, got.Rev,
					w.mode, w.key, w.fallback, w.rev)
			}
			if got.Record.State != w.state || got.Record.Attempts != w.attempts {
				t.Errorf("record %s/%d, want %s/%d (%+v)", got.Record.State, got.Record.Attempts, w.state, w.attempts, got.Record)
			}
			if got.Record.StreamSeq != 7 {
				t.Errorf("record stream_seq %d, want 7", got.Record.StreamSeq)
			}
			if got.Record.State == state.Sending && got.Record.Delivery != tc.facts.Delivery {
				t.Errorf("claim delivery %d, want %d", got.Record.Delivery, tc.facts.Delivery)
			}
			if tc.facts.Prefs.Problem != "" && !strings.Contains(got.Record.Error, tc.facts.Prefs.Problem) {
				t.Errorf("record error %q does not say why the preferences are off", got.Record.Error)
			}
			if (got.Record.State == state.InboxOnly || got.Record.State == state.Invalid) && got.Record.Error == "" {
				t.Errorf("%s record without a reason", got.Record.State)
			}
		})
	}
}

// TestAfterWriteFailed: what a delivery becomes when its ledger write
// failed for good.
func TestAfterWriteFailed(t *testing.T) {
	p := policy.Default()
	sentD := Decide(sent(baseFacts(), nil), p)
	skipD := Decide(func() Facts { f := baseFacts(); f.Prefs = PrefsFacts{Read: true}; return f }(), p)
	cases := []struct {
		name   string
		d      Decision
		exists bool
		action Action
		delay  time.Duration
		write  bool
	}{
		{"a create met a record: decided again at once", skipD, true, Nak, 0, false},
		{"after an accepted send: acked anyway, no second mail", sentD, false, Ack, 0, true},
		{"a skip: released after LedgerRetryDelay", skipD, false, Nak, p.LedgerRetryDelay, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := AfterWriteFailed(tc.d, tc.exists, p)
			if got.Action != tc.action || got.Delay != tc.delay || (got.Write != nil) != tc.write {
				t.Fatalf("got %s after %s (write %v), want %s after %s (write %v)", got.Action, got.Delay, got.Write != nil,
					tc.action, tc.delay, tc.write)
			}
		})
	}
}

// A broken preference is logged once per user in a while, not at every
// notification.
func TestOnceEvery(t *testing.T) {
	var o onceEvery
	now := testNow
	if !o.first("u1", now) || o.first("u1", now.Add(time.Minute)) {
		t.Fatal("u1 logged twice within the period, or not at all")
	}
	if !o.first("u2", now) {
		t.Fatal("u2 not logged")
	}
	if !o.first("u1", now.Add(brokenPrefsEvery)) {
		t.Fatal("u1 not logged again after the period")
	}
	for i := range brokenPrefsKeys + 1 {
		o.first(fmt.Sprint("k", i), now)
	}
	if len(o.last) > brokenPrefsKeys {
		t.Fatalf("%d keys held, more than %d", len(o.last), brokenPrefsKeys)
	}
}

// TestDecideSuppresses: a permanent rejection of the recipient puts the
// address on the suppression list with the decision; one about the message
// or the sender does not.
func TestDecideSuppresses(t *testing.T) {
	p := policy.Default()
	for _, tc := range []struct {
		name string
		err  *transport.Error
		want bool
	}{
		{"550 5.1.1 at RCPT", &transport.Error{Code: 550, Enhanced: "5.1.1", Step: transport.StepRcpt, Err: errors.New("no such user")}, true},
		{"554 5.7.1 at RCPT", &transport.Error{Code: 554, Enhanced: "5.7.1", Step: transport.StepRcpt, Err: errors.New("policy")}, false},
		{"451 at RCPT", &transport.Error{Temporary: true, Code: 451, Step: transport.StepRcpt, Err: errors.New("later")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(sent(baseFacts(), tc.err), p)
			if (d.Suppress != nil) != tc.want {
				t.Fatalf("suppress %+v, want %v", d.Suppress, tc.want)
			}
			if tc.want && (d.Suppress.Address != "ann@example.com" || d.Suppress.Code != "550 5.1.1") {
				t.Fatalf("suppress %+v", d.Suppress)
			}
		})
	}
}
