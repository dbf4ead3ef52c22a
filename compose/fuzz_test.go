package compose

import (
	"errors"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
)

// fuzzBases are the base URLs FuzzCompose picks from.
var fuzzBases = []string{
	"",
	"https://app.example.com",
	"http://localhost:8000/",
	"https://app.example.com/a/rather/long/prefix/for/the/web/app/",
}

// CheckRendered checks m as the relay's transport renders it: every header,
// decoded with mime.WordDecoder, holds no CR, LF, control, invisible or
// bidi character and nothing that is not in m (text shaped like an
// encoded-word reads literally). It is set by spoof_test.go, in package
// compose_test, because the transport imports compose.
var CheckRendered func(t testing.TB, m *Message)

// FuzzCompose composes events whose free-text fields are arbitrary: Compose
// must never panic, and a message it returns must follow every rule of
// §5 (see checkMessage and CheckRendered). Ids that break §3 are replaced by
// valid ones, so the fuzzer spends its time on the text; TestComposeErrors
// covers invalid ids.
func FuzzCompose(f *testing.F) {
	f.Add(uint8(2), "01JD3N6Q9W4ZK2V8X5T7R1M0PA", "w1", "Acme Build", "Ann Lee", "Bob Stone", "t-1001", "Pour foundation", "HQ",
		"Concrete truck is late, see https://status.example.com/x", "2026-12-01", "2026-12-05", "Site survey", "Acme", "", uint8(1), 0)
	f.Add(uint8(0), "n1", "", "", "", "", "t.1..", "x", "", "", "", "", "", "", "", uint8(0), 0)
	f.Add(uint8(1), "n-2", "w\r\n1", "Bâtiment\r\nBcc: x@y", "Zoë\u2028Ångström", "\"José\" <j@x>", "t_2", "Fondations\x00 基礎工事 🚧\t",
		"Tōkyō\u202eHQ", "", "", "2026-12-05T10:00:00Z", "", "=?utf-8?q?x?=", "<list.example.com>", uint8(2), 0)
	f.Add(uint8(3), "n3", "w", "[x]", "a,b;c", "(comment)", "t3", "\"quoted\" \\ title", "p", "", "", "", "blocker\nBcc: y", "\\", "lists.example.com", uint8(3), 10)
	f.Add(uint8(4), "n4", "w", "ws", "r", "a", "t4", "title", "p", "e\u0301\u0301\u0301 "+string(make([]byte, 600)), "", "", "", "", "", uint8(3), 500)
	// Text shaped like RFC 2047 encoded-words, which a reader would decode
	// into CR LF, a fake Bcc or a right-to-left override.
	f.Add(uint8(2), "n5", "w", "=?UTF-8?q?Invoice=E2=80=AEgnp.exe?=", "=?utf-8?b?QW5uDQpCY2M6IGV2aWxAZXZpbC5leGFtcGxl?=",
		"=?UTF-8?q?x=0D=0ABcc:_evil@evil.example=0D=0A?=", "t5", "=?UTF-8?q?Invoice=E2=80=AEgnp.exe?= due", "p", "", "", "", "", "=?us-ascii?q?Relay?=", "", uint8(1), 0)
	f.Add(uint8(0), "n6", "w", "\u200bAcme\u200d\u061c", "Ann\U000E0041\U000E007F\u2060", "Bob\u200e\u200f\u2067x\u2069", "t6", "a =?x?= b ?= =? \ufeff", "p", "", "", "", "", "", "", uint8(0), 0)
	// URLs in the comment, German recipient, sent late (typ&128).
	f.Add(uint8(130), "n7", "w", "ws", "r", "a", "t7", "title", "p",
		"see (https://status.example.com/d/2026/11/26/truck-4711?include=eta,driver,route&format=long#eta), ok. https://x.example/"+
			"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.", "2026-12-01T08:00:00Z", "", "", "", "", uint8(1), 0)
	f.Fuzz(func(t *testing.T, typ uint8, id, wsID, wsName, rcptName, actorName, taskID, title, project, body, from, to, blocked, fromName, listID string, base uint8, snippetMax int) {
		if !event.ValidID(id) {
			id = "n1"
		}
		if !event.ValidTaskID(taskID) {
			taskID = "t-1"
		}
		ev := &event.Event{
			ID:         id,
			Type:       event.Types[int(typ)%len(event.Types)],
			OccurredAt: time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC),
			Recipient:  event.Recipient{ID: "u1", Email: "ann@example.com", Name: rcptName},
			Task:       event.Task{ID: taskID, Title: title, Project: project},
			Comment:    &event.Comment{Body: body},
			Change:     &event.Change{Field: []string{"planned_start", "planned_end"}[typ/8%2], From: date(from), To: date(to)},
		}
		if typ&16 == 0 {
			ev.Workspace = &event.Workspace{ID: wsID, Name: wsName}
		}
		if typ&32 == 0 {
			ev.Actor = &event.Actor{ID: "u2", Name: actorName}
		}
		if typ&64 == 0 {
			ev.BlockedBy = &event.TaskRef{ID: "t-0", Title: blocked}
		}
		now, o := time.Date(2026, 11, 26, 9, 31, 0, 0, time.UTC), Options{}
		if typ&128 != 0 {
			ev.Recipient.Locale = "de-AT"
			now, o.TimeZone = now.Add(7*time.Hour), time.FixedZone("", 5*3600+1800)
		}
		cfg := Config{
			HTML:       typ&8 != 0,
			From:       Address{Name: fromName, Email: "notify@example.com"},
			BaseURL:    fuzzBases[int(base)%len(fuzzBases)],
			ListID:     listID,
			SnippetMax: snippetMax,
		}
		m, err := ComposeFor(ev, cfg, now, o)
		if err != nil {
			if ev.Validate() == nil {
				t.Fatalf("Compose rejected a valid event: %v", err)
			}
			if !errors.Is(err, event.ErrInvalid) {
				t.Fatalf("Compose error %v does not wrap event.ErrInvalid", err)
			}
			return
		}
		checkMessage(t, m, deepLink(cfg.BaseURL, taskID))
		if CheckRendered == nil {
			t.Fatal("CheckRendered is not set: spoof_test.go is missing")
		}
		CheckRendered(t, m)
	})
}

// date returns a pointer to s, or nil for "".
func date(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
