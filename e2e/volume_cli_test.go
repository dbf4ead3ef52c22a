package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
)

// TestE2EVolumeWithTheCLI: the built relay with MAILRELAY_BATCH_WINDOW,
// the way an operator and the web app use it with the `nats` CLI. Three
// notifications for one user are held (`nats kv get` shows deferred with
// until, `nats stream subjects` shows them in NOTIFY_HELD, `nats stream get
// --last-for` shows the user's window); the app marks one seen with `nats kv
// put notify_seen`; when the window closes Mailpit gets ONE mail carrying
// the other two, the seen one is skipped_seen, and NOTIFY_HELD is empty.
func TestE2EVolumeWithTheCLI(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	url := s.ns.URL()
	startReadyRelay(t, s.env("MAILRELAY_BATCH_WINDOW", "6s"))
	prefsPut(t, url, "u9", `{"email":{"task.assigned":true,"task.comment":true,"mention":true},"time_zone":"Europe/Berlin"}`)

	ids := []string{"vol-1", "vol-2", "vol-3"}
	titles := []string{"Pour foundation", "Order rebar", "Frame walls"}
	for i, id := range ids {
		ev := newEvent(id, []event.Type{event.TaskAssigned, event.TaskComment, event.Mention}[i], "u9", "ann@example.com", "Ann Lee")
		ev.Task.ID, ev.Task.Title = fmt.Sprintf("t-%d", i+1), titles[i]
		pubEvent(t, url, ev)
	}
	for _, id := range ids {
		st := waitState(t, url, id, "deferred", settleTimeout)
		if st.Until == "" {
			t.Fatalf("%s deferred without until: %+v", id, st)
		}
	}
	subjects := natsCLIOK(t, url, "stream", "subjects", "NOTIFY_HELD", "notify_held.item.>")
	if !strings.Contains(subjects, "notify_held.item.u9") {
		t.Errorf("nats stream subjects: the held notifications of u9 are not listed:\n%s", subjects)
	}
	window := natsCLIOK(t, url, "stream", "get", "NOTIFY_HELD", "--last-for", "notify_held.window.u9")
	if !strings.Contains(window, "@at ") || !strings.Contains(window, "notify_held.due.u9") {
		t.Errorf("nats stream get --last-for: no pending window for u9:\n%s", window)
	}
	// The web app: the user read vol-2 in the app.
	natsCLIOK(t, url, "kv", "put", "notify_seen", "vol-2", time.Now().UTC().Format(time.RFC3339))

	msgs := s.mp.WaitForCount(t, 1, settleTimeout)
	var mid string
	for _, id := range []string{"vol-1", "vol-3"} {
		st := waitState(t, url, id, "sent", settleTimeout)
		if st.Batch != 2 || st.MessageID == "" || (mid != "" && st.MessageID != mid) {
			t.Errorf("%s: %+v, want sent in one mail of 2", id, st)
		}
		mid = st.MessageID
	}
	waitState(t, url, "vol-2", "skipped_seen", settleTimeout)
	time.Sleep(time.Second) // nothing else may arrive
	if c := s.mp.Count(t); c != 1 {
		t.Fatalf("%d mails, want 1", c)
	}
	raw := string(s.mp.Raw(t, msgs[0].ID))
	if !strings.Contains(raw, "Pour foundation") || !strings.Contains(raw, "Frame walls") || strings.Contains(raw, "Order rebar") {
		t.Errorf("the mail must carry vol-1 and vol-3 and leave out the seen vol-2:\n%s", raw)
	}
	eventually(t, settleTimeout, func() (bool, string) {
		out, err := natsCLI(t, url, "stream", "subjects", "NOTIFY_HELD", "notify_held.item.>")
		return err == nil && !strings.Contains(out, "notify_held.item.u9"), "still held:\n" + out
	})
}
