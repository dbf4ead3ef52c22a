package compose

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mailrelay/mailrelay/event"
)

// FuzzComposeBatch plans and composes batches of up to eight notifications
// whose free text is arbitrary. Each byte of plan makes one notification:
// bits 0-2 its type, bit 3 its task (taskID or "t-2"), bit 4 the field of
// a date change, bit 5 no workspace, bits 6-7 its minute; its dates step
// through d1, d2 and null, so changes merge and cancel out. flags: bit 0
// HTML, bit 1 German, bit 2 one-click, bits 3-4 the base URL, bit 5 a time
// zone. ComposeBatch must never panic nor fail on what PlanBatch returns,
// and the mail must follow every rule of §5 (checkMessage, CheckRendered):
// a subject of one line and at most 160 characters, and every section's
// deep link whole on a line of its own.
func FuzzComposeBatch(f *testing.F) {
	f.Add([]byte{2, 1, 0, 4}, uint8(8), "Pour foundation", "Bob Stone", "Concrete truck is late, see https://status.example.com/x", "Acme Build", "Ann Lee", "t-1001", "2026-12-01", "2026-12-05")
	f.Add([]byte{1, 1}, uint8(0), "x", "", "", "", "", "t.1", "", "2026-12-05")
	f.Add([]byte{1, 0x41, 0x81, 0xc1, 3, 0x0b}, uint8(0x3f), "Fondations\r\nBcc: x@y", "José\u202e", "=?UTF-8?q?x=0D=0A?=", "Bâtiment", "Zoë", "t_2", "2026-12-01T10:00:00Z", "2026-12-01t11:00:00+01:00")
	f.Fuzz(func(t *testing.T, plan []byte, flags uint8, title, actor, body, wsName, rcptName, taskID, d1, d2 string) {
		if len(plan) == 0 || len(plan) > 8 {
			return
		}
		if !event.ValidTaskID(taskID) {
			taskID = "t-1"
		}
		dates := []*string{date(d1), date(d2), nil}
		var evs []*event.Event
		for i, p := range plan {
			ev := &event.Event{
				ID:         fmt.Sprintf("n%d", i),
				Type:       event.Types[int(p&7)%len(event.Types)],
				OccurredAt: time.Date(2026, 11, 26, 9, int(p>>6)*10, 0, 0, time.UTC),
				Workspace:  &event.Workspace{ID: "w1", Name: wsName},
				Recipient:  event.Recipient{ID: "u1", Email: "ann@example.com", Name: rcptName},
				Actor:      &event.Actor{ID: fmt.Sprintf("u%d", i%3), Name: fmt.Sprintf("%s %d", actor, i%3)},
				Task:       event.Task{ID: taskID, Title: title},
				Comment:    &event.Comment{Body: body},
				Change:     &event.Change{Field: []string{"planned_start", "planned_end"}[p>>4&1], From: dates[i%3], To: dates[(i+1)%3]},
				BlockedBy:  &event.TaskRef{ID: "t-0", Title: title},
			}
			if p&8 != 0 {
				ev.Task.ID = "t-2"
			}
			if p&32 != 0 {
				ev.Workspace = nil
			}
			evs = append(evs, ev)
		}
		cfg := Config{From: Address{Name: "Acme", Email: "notify@example.com"}, HTML: flags&1 != 0, BaseURL: fuzzBases[int(flags>>3&3)]}
		if flags&4 != 0 {
			cfg.OneClick = fakeOneClick("https://relay.example.com/u/")
		}
		o := Options{}
		if flags&2 != 0 {
			o.Locale = "de"
		}
		if flags&32 != 0 {
			o.TimeZone = time.FixedZone("", -(9*3600 + 1800))
		}
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}

		sections, unchanged := PlanBatch(evs)
		n := len(unchanged)
		for _, s := range sections {
			n += len(s.Events)
		}
		if n != len(evs) {
			t.Fatalf("PlanBatch returned %d of %d notifications", n, len(evs))
		}
		if len(sections) == 0 {
			return
		}
		m, err := c.ComposeBatch(sections, time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC), o)
		if err != nil {
			t.Fatalf("ComposeBatch: %v", err)
		}
		if strings.ContainsAny(m.Subject, "\r\n") || utf8.RuneCountInString(m.Subject) > MaxSubject {
			t.Errorf("subject %q", m.Subject)
		}
		checkMessage(t, m, "")
		checkBatchLinks(t, m, cfg.BaseURL, sections)
		if CheckRendered == nil {
			t.Fatal("CheckRendered is not set: spoof_test.go is missing")
		}
		CheckRendered(t, m)
	})
}
