package event_test

import (
	"errors"
	"net/mail"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
)

// TestDecodeCanonicalIDs: an integer id reads as its decimal string,
// however JSON writes it (§9.1).
func TestDecodeCanonicalIDs(t *testing.T) {
	data := `{"id": 12345, "type": "task.blocked", "occurred_at": "2026-12-05t23:18:28.989z",
"workspace": {"id": 0}, "recipient": {"id": 4.2e1, "email": null, "locale": "pt-BR"}, "actor": {"id": 7.0},
"task": {"id": 1001, "title": "T"}, "comment": {"id": 9, "body": null}, "blocked_by": {"id": 9007199254740991}}`
	ev, err := event.Decode("notify.task.blocked", []byte(data), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{ev.ID, "12345"}, {ev.Workspace.ID, "0"}, {ev.Recipient.ID, "42"}, {ev.Actor.ID, "7"},
		{ev.Task.ID, "1001"}, {ev.Comment.ID, "9"}, {ev.BlockedBy.ID, "9007199254740991"}, {ev.Recipient.Locale, "pt-BR"}} {
		if c[0] != c[1] {
			t.Errorf("got %q, want %q", c[0], c[1])
		}
	}
	if ev.HasEmail() {
		t.Error("a null email is an email")
	}
	if want := time.Date(2026, 12, 5, 23, 18, 28, 989_000_000, time.UTC); !ev.OccurredAt.Equal(want) {
		t.Errorf("occurred_at = %v, want %v", ev.OccurredAt, want)
	}
}

// TestDecodeProblems: every problem at once, by path, in the contract's
// order, with a list for errors.As; the event keeps its usable id.
func TestDecodeProblems(t *testing.T) {
	data := `{"id": "n1", "type": "task.comment", "occurred_at": "2026-12-05 23:18:28", "Recipient": {"id": "u9"},
"recipient": {"id": "a b", "email": "Ann <ann@example.com>"}, "task": {"id": ".", "title": " ", "title": "x"}}`
	ev, err := event.Decode("", []byte(data), 0)
	var ps event.Problems
	if !errors.As(err, &ps) || !errors.Is(err, event.ErrInvalid) {
		t.Fatalf("Decode = %v, want Problems wrapping ErrInvalid", err)
	}
	want := []event.Problem{
		{"occurred_at", `"2026-12-05 23:18:28" is not an RFC 3339 date-time: use 2026-12-05T23:18:28Z (a T between date and time, and Z or an offset such as +01:00)`},
		{"Recipient", `differs from the key "recipient" only by case: keys are exact`},
		{"recipient.id", "must match ^[A-Za-z0-9_-]{1,128}$"},
		{"recipient.email", `"Ann <ann@example.com>" is not an email address: give one bare address such as ann@example.com, without a name, quotes, spaces or angle brackets`},
		{"task.id", `may not be ".": the deep link /tasks/. would lead to another page`},
		{"task.title", "is given twice: keys must be unique"},
		{"comment.body", "is required for task.comment"},
	}
	if len(ps) != len(want) {
		t.Fatalf("problems:\n%v\nwant %d", err, len(want))
	}
	for i := range want {
		if ps[i] != want[i] {
			t.Errorf("problem %d = %q, want %q", i, ps[i], want[i])
		}
	}
	if !strings.HasPrefix(err.Error(), "invalid event: occurred_at: ") || strings.Count(err.Error(), "; ") != len(want)-1 {
		t.Errorf("error text = %q", err)
	}
	if ev == nil || ev.ID != "n1" {
		t.Errorf("event = %+v, want one with the usable id n1", ev)
	}
}

// TestDecodeDuplicateID: an id given twice is no usable id.
func TestDecodeDuplicateID(t *testing.T) {
	ev, err := event.Decode("", []byte(`{"id": "n1", "id": "n2"}`), 0)
	if err == nil || ev != nil || !strings.Contains(err.Error(), "id: is given twice") {
		t.Errorf("Decode = %+v, %v; want no event and id given twice", ev, err)
	}
}

// TestEmailPatternIsNetMail: the address rule (shared with the schema) is
// what net/mail reads as one bare address, less domain literals and "=?".
func TestEmailPatternIsNetMail(t *testing.T) {
	re := regexp.MustCompile(event.EmailPattern)
	for _, s := range []string{"ann@example.com", "a.b@c", "a..b@c", ".a@c", "a.@c", "a@c.", "a@.c", "@c", "a@", "a b@c",
		`"a"@c`, "a@b@c", "<a@c>", "Ann <a@c>", "a@c (x)", "a+b=c?d@e", "=@?", "a=?b@c", "j\u00fcrgen@ex\u00e4mple.com",
		"a\u200b@c", "a,b@c", "a;b@c", "a\\b@c", "a:b@c", "a(b@c", "a\tb@c", "a\x7f@c", "!#$%&'*+/=?^_`{|}~-@x"} {
		a, err := mail.ParseAddress(s)
		netmail := err == nil && a.Name == "" && a.Address == s && !strings.Contains(s, "=?") && !strings.Contains(s, "[")
		if got := re.MatchString(s); got != netmail {
			t.Errorf("EmailPattern(%+q) = %v, net/mail %v", s, got, netmail)
		}
	}
}
