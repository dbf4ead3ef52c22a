package relay_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/prefs"
)

// TestTimeZoneFromPreferences: a mail that goes out well after its
// notification says when it happened, in the recipient's time_zone from
// notify_prefs (the consumer passes it to compose).
func TestTimeZoneFromPreferences(t *testing.T) {
	e := newEnv(t)
	e.startRelay(nil)
	kv, err := e.js.KeyValue(context.Background(), prefs.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), "u1", []byte(`{"email":{"task.assigned":true},"time_zone":"Asia/Tokyo"}`)); err != nil {
		t.Fatal(err)
	}
	ev := newEvent("late", event.TaskAssigned, "u1")
	ev.OccurredAt = time.Now().Add(-2 * time.Hour).UTC()
	e.publish(ev, "late")
	e.waitState("late", state.Sent, 10*time.Second)
	msgs := e.smtp.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d mails", len(msgs))
	}
	body := string(msgs[0].Data)
	want := ev.OccurredAt.In(mustZone(t, "Asia/Tokyo")).Format("15:04")
	if !strings.Contains(body, want) || !strings.Contains(body, "JST") {
		t.Fatalf("the mail does not say when it happened in Asia/Tokyo (%s JST):\n%s", want, body)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
