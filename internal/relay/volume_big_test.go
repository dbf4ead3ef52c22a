package relay_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/consumer"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/state"
)

// TestBigWindowSplits: a window holding more than one mail carries
// (consumer.MaxBatch) goes out as several mails, one after the other, each
// notification in exactly one; 230 notifications are also more than one
// flush lists (2 × MaxBatch), so the listing's continuation is exercised.
func TestBigWindowSplits(t *testing.T) {
	e := newEnv(t)
	e.startRelay(map[string]string{"MAILRELAY_BATCH_WINDOW": "2s"})
	e.optIn("u1", event.Types...)
	const n = 230
	start := time.Now().UTC()
	for i := range n {
		ev := newEvent(fmt.Sprintf("big%03d", i), event.TaskAssigned, "u1")
		ev.Task.ID = fmt.Sprintf("t-%d", i)
		ev.OccurredAt = start.Add(time.Duration(i) * time.Millisecond)
		e.publish(ev, ev.ID)
	}
	byMail := map[string]int{}
	batchOf := map[string]int{}
	for i := range n {
		rec := e.waitState(fmt.Sprintf("big%03d", i), state.Sent, 60*time.Second)
		byMail[rec.MessageID]++
		if b, ok := batchOf[rec.MessageID]; ok && b != rec.Batch {
			t.Fatalf("mail %s: records say batch %d and %d", rec.MessageID, b, rec.Batch)
		}
		batchOf[rec.MessageID] = rec.Batch
	}
	total := 0
	for id, c := range byMail {
		if c > consumer.MaxBatch || batchOf[id] != c {
			t.Errorf("mail %s carried %d (batch %d), at most %d", id, c, batchOf[id], consumer.MaxBatch)
		}
		total += c
	}
	want := (n + consumer.MaxBatch - 1) / consumer.MaxBatch
	if total != n || len(byMail) < want {
		t.Fatalf("%d notifications in %d mails, want %d in at least %d", total, len(byMail), n, want)
	}
	natstest.Eventually(t, 10*time.Second, func() (bool, string) {
		return e.smtp.Count() == len(byMail), fmt.Sprintf("%d mails received, %d recorded", e.smtp.Count(), len(byMail))
	})
}
