package relay_test

import (
	"bufio"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/internal/state"
)

var notificationsLine = regexp.MustCompile(`^mailrelay_notifications_total\{state="([a-z_]+)",type="([a-z._]+)"\} (\d+)$`)

// notificationCounts reads mailrelay_notifications_total from /metrics,
// by "type/state", leaving out zeros.
func notificationCounts(t *testing.T, addr string) map[string]int {
	t.Helper()
	code, body := get(addr, "/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	out := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if m := notificationsLine.FindStringSubmatch(sc.Text()); m != nil {
			if n, _ := strconv.Atoi(m[3]); n > 0 {
				out[m[2]+"/"+m[1]] = n
			}
		}
	}
	return out
}

// TestMetricsFollowTheLedger: after a run with copies (republished under
// other Nats-Msg-Ids) and redeliveries (temporary SMTP failures), the
// notifications counter has one count per record in the ledger, and a copy
// does not re-point the original's record at its own stream sequence.
func TestMetricsFollowTheLedger(t *testing.T) {
	e := newEnv(t)
	addr := freeAddr(t)
	e.startRelay(map[string]string{"MAILRELAY_HTTP_ADDR": addr})
	e.optIn("u1", event.TaskAssigned)
	e.smtp.FailNext(3, 451, "4.3.0", "try again later") // three redeliveries
	const n = 10
	var ids []string
	for i := range n {
		for _, user := range []string{"u1", "u2"} { // u2 has Email off
			id := fmt.Sprintf("%s-%d", user, i)
			ids = append(ids, id)
			e.publish(newEvent(id, event.TaskAssigned, user), id)
		}
	}
	for _, id := range ids {
		rec := e.waitFinal(id, 30*time.Second)
		if rec.State != state.Sent && rec.State != state.SkippedOptedOut {
			t.Fatalf("%s: %+v", id, rec)
		}
	}
	seqs := map[string]uint64{}
	for _, id := range ids {
		rec, _ := e.record(id)
		seqs[id] = rec.StreamSeq
		e.publish(newEvent(id, event.TaskAssigned, strings.SplitN(id, "-", 2)[0]), id+".copy") // a copy
	}
	// The copies are acked as duplicates: wait until the consumer is idle.
	natstest.Eventually(t, 30*time.Second, func() (bool, string) {
		c, err := e.js.Consumer(context.Background(), "NOTIFY", "mailrelay")
		if err != nil {
			return false, err.Error()
		}
		ci, err := c.Info(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return ci.NumPending == 0 && ci.NumAckPending == 0, fmt.Sprintf("%d pending, %d ack pending", ci.NumPending, ci.NumAckPending)
	})
	want := map[string]int{}
	for _, id := range ids {
		rec, _ := e.record(id)
		want[rec.Type+"/"+string(rec.State)]++
		if rec.StreamSeq != seqs[id] {
			t.Errorf("%s: the copy re-pointed the record at stream seq %d (was %d)", id, rec.StreamSeq, seqs[id])
		}
	}
	if mails := len(messageIDs(e.smtp.Messages())); mails != n {
		t.Errorf("%d notifications mailed, want %d (copies mail nothing)", mails, n)
	}
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		got := notificationCounts(t, addr)
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("metrics %v, ledger %v", got, want)
	})
}

// waitFinal waits until key's record is an outcome (a final state).
func (e *env) waitFinal(key string, timeout time.Duration) state.Record {
	e.t.Helper()
	var rec state.Record
	natstest.Eventually(e.t, timeout, func() (bool, string) {
		var ok bool
		rec, ok = e.record(key)
		return ok && rec.State.Final(), fmt.Sprintf("record of %s: %+v", key, rec)
	})
	return rec
}
