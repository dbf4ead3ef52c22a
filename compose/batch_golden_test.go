package compose

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
)

// batchNow is the sending time of the golden batch mails: the window
// closed 35 minutes after the first notification.
var batchNow = time.Date(2026, 11, 26, 10, 5, 0, 0, time.UTC)

// batchEvent is a notification of the golden batch: for Ann Lee in Acme
// Build, by actor, about task, at minute past 09:00 UTC.
func batchEvent(id string, typ event.Type, minute int, actor string, task event.Task) *event.Event {
	ev := &event.Event{
		ID:         id,
		Type:       typ,
		OccurredAt: time.Date(2026, 11, 26, 9, minute, 0, 0, time.UTC),
		Workspace:  &event.Workspace{ID: "w1", Name: "Acme Build"},
		Recipient:  event.Recipient{ID: "u42", Email: "ann@example.com", Name: "Ann Lee"},
		Task:       task,
	}
	if actor != "" {
		ev.Actor = &event.Actor{ID: "u-" + strings.ToLower(strings.Fields(actor)[0]), Name: actor}
	}
	return ev
}

// dateChange is a task.date_changed notification of planned_end.
func dateChange(id string, minute int, actor string, task event.Task, from, to string) *event.Event {
	ev := batchEvent(id, event.TaskDateChanged, minute, actor, task)
	ev.Change = &event.Change{Field: "planned_end", From: date(from), To: date(to)}
	return ev
}

var (
	pourTask  = event.Task{ID: "t-1001", Title: "Pour foundation", Project: "HQ"}
	rebarTask = event.Task{ID: "t-1002", Title: "Order rebar", Project: "HQ"}
	wallsTask = event.Task{ID: "t-1003", Title: "Frame walls", Project: "HQ"}
)

// goldenBatch is a window's worth of notifications, not in order: a
// comment, two changes of one date by two people (merged), an assignment
// and a blocked task.
func goldenBatch() []*event.Event {
	comment := batchEvent("n1", event.TaskComment, 30, "Bob Stone", pourTask)
	comment.Comment = &event.Comment{ID: "c9", Body: asciiTexts.comment}
	blocked := batchEvent("n5", event.TaskBlocked, 55, "Carol Diaz", wallsTask)
	blocked.BlockedBy = &event.TaskRef{ID: "t-1001", Title: "Pour foundation"}
	return []*event.Event{
		dateChange("n4", 50, "Carol Diaz", pourTask, "2026-12-05", "2026-12-07"),
		comment,
		batchEvent("n3", event.TaskAssigned, 45, "Dan Moss", rebarTask),
		dateChange("n2", 40, "Bob Stone", pourTask, "2026-12-01", "2026-12-05"),
		blocked,
	}
}

// TestGoldenBatch composes the golden batch, and its merged date change
// alone, in English and German in the recipient's zone; compared with
// testdata/golden/batch. Run with -update to rewrite them.
func TestGoldenBatch(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no zone data: %v", err)
	}
	cfg := Config{From: Address{Name: "Acme Notifications", Email: "notify@example.com"}, BaseURL: "https://app.example.com/", HTML: true}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	all := goldenBatch()
	merged := []*event.Event{all[0], all[3]}
	for _, locale := range []string{"en", "de"} {
		for name, evs := range map[string][]*event.Event{"mixed": all, "merged": merged} {
			t.Run(locale+"/"+name, func(t *testing.T) {
				sections, unchanged := PlanBatch(evs)
				if len(unchanged) != 0 {
					t.Fatalf("unchanged = %v", unchanged)
				}
				m, err := c.ComposeBatch(sections, batchNow, Options{TimeZone: berlin, Locale: locale})
				if err != nil {
					t.Fatal(err)
				}
				checkMessage(t, m, "")
				checkBatchLinks(t, m, cfg.BaseURL, sections)
				path := filepath.Join("testdata", "golden", "batch", locale+"_"+name)
				compareGolden(t, path+".eml", renderMail(m))
				compareGolden(t, path+".html", m.HTML)
			})
		}
	}
}
