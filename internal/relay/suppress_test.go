package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/smtptest"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/suppress"
)

// TestSuppressionByReply: which permanent replies put the recipient's
// address on the suppression list (the capture server gives exact enhanced
// status codes), and that a suppressed address gets no SMTP attempt.
func TestSuppressionByReply(t *testing.T) {
	cases := []struct {
		name       string
		stage      smtptest.Stage
		code       int
		enhanced   string
		suppressed bool
	}{
		{"550 5.1.1 at RCPT", smtptest.StageRcpt, 550, "5.1.1", true},
		{"550 5.1.1 after DATA", smtptest.StageData, 550, "5.1.1", true},
		{"554 5.7.1 at RCPT (policy)", smtptest.StageRcpt, 554, "5.7.1", false},
		{"552 5.3.4 after DATA (size)", smtptest.StageData, 552, "5.3.4", false},
		{"550 5.7.1 after DATA (content)", smtptest.StageData, 550, "5.7.1", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.startRelay(nil)
			e.optIn("u1", event.TaskAssigned)
			e.smtp.FailNextAt(tc.stage, 1, tc.code, tc.enhanced, "no")
			e.publish(newEvent("first", event.TaskAssigned, "u1"), "first")
			e.waitState("first", state.InboxOnly, 10*time.Second)

			kv, err := e.js.KeyValue(context.Background(), suppress.Bucket)
			if err != nil {
				t.Fatal(err)
			}
			store := suppress.New(kv)
			got, err := store.Suppressed(context.Background(), "u1@example.com")
			if err != nil || got != tc.suppressed {
				t.Fatalf("suppressed = %v, %v; want %v", got, err, tc.suppressed)
			}
			before := e.smtp.Count()
			e.publish(newEvent("second", event.TaskAssigned, "u1"), "second")
			if tc.suppressed {
				rec := e.waitState("second", state.SkippedSuppressed, 10*time.Second)
				if rec.Attempts != 0 || e.smtp.Count() != before {
					t.Fatalf("second: %+v, %d more mails; want no attempt", rec, e.smtp.Count()-before)
				}
				entry, err := store.Get(context.Background(), "U1@example.com")
				if err != nil || entry.Source != suppress.SourceSMTP || entry.Code != "550 5.1.1" {
					t.Fatalf("entry %+v, %v", entry, err)
				}
				if err := store.Remove(context.Background(), "u1@example.com"); err != nil {
					t.Fatal(err)
				}
				e.publish(newEvent("third", event.TaskAssigned, "u1"), "third")
				e.waitState("third", state.Sent, 10*time.Second)
				return
			}
			e.waitState("second", state.Sent, 10*time.Second)
		})
	}
}
