package compose

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

// planEvent is a notification for PlanBatch: type typ about task at minute
// past 09:00; a date change of field from → to ("" for null).
func planEvent(id string, typ event.Type, minute int, task string) *event.Event {
	return &event.Event{ID: id, Type: typ, OccurredAt: time.Date(2026, 11, 26, 9, minute, 0, 0, time.UTC),
		Workspace: &event.Workspace{ID: "w1"}, Recipient: event.Recipient{ID: "u42", Email: "ann@example.com"},
		Task: event.Task{ID: task, Title: "Task " + task}}
}

func planChange(id string, minute int, task, field, from, to string) *event.Event {
	ev := planEvent(id, event.TaskDateChanged, minute, task)
	ev.Change = &event.Change{Field: field, From: date(from), To: date(to)}
	return ev
}

// ids lists the ids of evs.
func ids(evs []*event.Event) []string {
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.ID)
	}
	return out
}

func TestPlanBatch(t *testing.T) {
	const start, end = "planned_start", "planned_end"
	otherWorkspace := planChange("d2", 2, "t1", end, "B", "C")
	otherWorkspace.Workspace = &event.Workspace{ID: "w2"}
	dup := planEvent("a", event.TaskComment, 9, "t1")
	dup.Task.Title = "second copy"
	tests := []struct {
		name      string
		in        []*event.Event
		sections  [][]string // ids per section
		unchanged []string
	}{
		{name: "empty"},
		{name: "ordered by occurred_at",
			in:       []*event.Event{planEvent("c", event.Mention, 3, "t3"), planEvent("a", event.TaskComment, 1, "t1"), planEvent("b", event.TaskAssigned, 2, "t2")},
			sections: [][]string{{"a"}, {"b"}, {"c"}}},
		{name: "ties by id",
			in:       []*event.Event{planEvent("n2", event.TaskComment, 1, "t1"), planEvent("n10", event.TaskComment, 1, "t1"), planEvent("n1", event.TaskComment, 1, "t1")},
			sections: [][]string{{"n1"}, {"n10"}, {"n2"}}},
		{name: "tie across zones is a tie",
			in: []*event.Event{
				func() *event.Event {
					e := planEvent("b", event.TaskComment, 1, "t1")
					e.OccurredAt = e.OccurredAt.In(time.FixedZone("", 3600))
					return e
				}(),
				planEvent("a", event.TaskComment, 1, "t1")},
			sections: [][]string{{"a"}, {"b"}}},
		{name: "A→B, B→C merged where the first is",
			in:       []*event.Event{planChange("d2", 5, "t1", end, "B", "C"), planEvent("c", event.TaskComment, 3, "t1"), planChange("d1", 1, "t1", end, "A", "B")},
			sections: [][]string{{"d1", "d2"}, {"c"}}},
		{name: "three merged",
			in:       []*event.Event{planChange("d1", 1, "t1", end, "A", "B"), planChange("d2", 2, "t1", end, "B", "C"), planChange("d3", 3, "t1", end, "C", "D")},
			sections: [][]string{{"d1", "d2", "d3"}}},
		{name: "A→B, B→A left out",
			in:        []*event.Event{planEvent("c", event.TaskComment, 2, "t1"), planChange("d2", 3, "t1", end, "B", "A"), planChange("d1", 1, "t1", end, "A", "B")},
			sections:  [][]string{{"c"}},
			unchanged: []string{"d1", "d2"}},
		{name: "null→A, A→null left out",
			in:        []*event.Event{planChange("d1", 1, "t1", start, "", "2026-12-01"), planChange("d2", 2, "t1", start, "2026-12-01", "")},
			unchanged: []string{"d1", "d2"}},
		{name: "same instant in another zone left out",
			in:        []*event.Event{planChange("d1", 1, "t1", end, "2026-12-01T10:00:00Z", "x"), planChange("d2", 2, "t1", end, "x", "2026-12-01t11:00:00+01:00")},
			unchanged: []string{"d1", "d2"}},
		{name: "A→B, B→A, A→C kept as A→C",
			in:       []*event.Event{planChange("d1", 1, "t1", end, "A", "B"), planChange("d2", 2, "t1", end, "B", "A"), planChange("d3", 3, "t1", end, "A", "C")},
			sections: [][]string{{"d1", "d2", "d3"}}},
		{name: "a single change to the same date is kept",
			in:       []*event.Event{planChange("d1", 1, "t1", end, "A", "A")},
			sections: [][]string{{"d1"}}},
		{name: "different fields not merged",
			in:       []*event.Event{planChange("d1", 1, "t1", start, "A", "B"), planChange("d2", 2, "t1", end, "B", "A")},
			sections: [][]string{{"d1"}, {"d2"}}},
		{name: "different tasks not merged",
			in:       []*event.Event{planChange("d1", 1, "t1", end, "A", "B"), planChange("d2", 2, "t2", end, "B", "A")},
			sections: [][]string{{"d1"}, {"d2"}}},
		{name: "same task id in another workspace not merged",
			in:       []*event.Event{planChange("d1", 1, "t1", end, "A", "B"), otherWorkspace},
			sections: [][]string{{"d1"}, {"d2"}}},
		{name: "other types of one task not merged",
			in:       []*event.Event{planEvent("a", event.TaskComment, 1, "t1"), planEvent("b", event.TaskComment, 2, "t1")},
			sections: [][]string{{"a"}, {"b"}}},
		{name: "duplicates keep the first",
			in:       []*event.Event{planEvent("a", event.TaskComment, 1, "t1"), planEvent("b", event.TaskAssigned, 2, "t1"), dup, nil},
			sections: [][]string{{"a"}, {"b"}}},
		{name: "a duplicated change merges once",
			in:       []*event.Event{planChange("d1", 1, "t1", end, "A", "B"), planChange("d1", 1, "t1", end, "A", "B"), planChange("d2", 2, "t1", end, "B", "C")},
			sections: [][]string{{"d1", "d2"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			sections, unchanged := PlanBatch(tt.in)
			var got [][]string
			for _, s := range sections {
				got = append(got, ids(s.Events))
			}
			if !reflect.DeepEqual(got, tt.sections) {
				t.Errorf("sections = %q, want %q", got, tt.sections)
			}
			if u := ids(unchanged); !slices.Equal(u, tt.unchanged) {
				t.Errorf("unchanged = %q, want %q", u, tt.unchanged)
			}
			if !slices.Equal(in, tt.in) {
				t.Errorf("PlanBatch reordered its input")
			}
			for _, s := range sections {
				for _, ev := range s.Events {
					if ev == dup {
						t.Errorf("kept the second copy of %s", ev.ID)
					}
				}
			}
		})
	}
}

// batchComposer is a Composer for the batch tests, with one-click when
// oneClick is set.
func batchComposer(t *testing.T, base string, oneClick OneClick, html bool) *Composer {
	t.Helper()
	cfg := testConfig(base)
	cfg.OneClick, cfg.HTML = oneClick, html
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func composeBatch(t *testing.T, c *Composer, evs []*event.Event, o Options) (*Message, []Section) {
	t.Helper()
	sections, _ := PlanBatch(evs)
	m, err := c.ComposeBatch(sections, batchNow, o)
	if err != nil {
		t.Fatalf("ComposeBatch: %v", err)
	}
	checkMessage(t, m, "")
	return m, sections
}

// mixedBatch is three sections about two tasks: a comment, a merged date
// change and an assignment.
func mixedBatch() []*event.Event {
	all := goldenBatch()
	return all[:4]
}

// TestComposeBatchOneEvent: a batch of one notification is the mail
// ComposeFor makes, whatever the options.
func TestComposeBatchOneEvent(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no zone data: %v", err)
	}
	for _, typ := range event.Types {
		for _, html := range []bool{false, true} {
			c := batchComposer(t, "https://app.example.com", fakeOneClick("https://relay.example.com/u/"), html)
			ev := goldenEvent(typ, true, utf8Texts)
			o := Options{TimeZone: berlin, Locale: "de"}
			want, err := c.ComposeFor(ev, goldenDelayed, o)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.ComposeBatch([]Section{{Events: []*event.Event{ev}}}, goldenDelayed, o)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: ComposeBatch differs from ComposeFor:\n%s\n---\n%s", typ, renderMail(got), renderMail(want))
			}
		}
	}
}

// TestComposeBatchMerged: one merged date change reads as one date-change
// mail from the first from to the last to, threaded with its task.
func TestComposeBatchMerged(t *testing.T) {
	c := batchComposer(t, "https://app.example.com", nil, false)
	all := goldenBatch()
	m, sections := composeBatch(t, c, []*event.Event{all[0], all[3]}, Options{})
	if len(sections) != 1 || len(sections[0].Events) != 2 {
		t.Fatalf("sections = %v", sections)
	}
	for _, want := range []string{
		"\nBob Stone and Carol Diaz changed the planned end of a task.\n",
		"\n  Planned end:    2026-12-01 → 2026-12-07\n",
		"\n  When:           Thursday, 26 November 2026, 09:40 (UTC)\n",
		"\nhttps://app.example.com/tasks/t-1001\n",
	} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, m.Body)
		}
	}
	if want := `[Acme Build] Bob Stone and Carol Diaz changed the planned end of "Pour foundation"`; m.Subject != want {
		t.Errorf("Subject = %q, want %q", m.Subject, want)
	}
	thread := headers.ThreadID("w1", "t-1001", "example.com")
	if m.InReplyTo != thread || m.References != thread {
		t.Errorf("threading %q %q, want %q", m.InReplyTo, m.References, thread)
	}
	for _, ev := range sections[0].Events {
		if m.MessageID == headers.MessageID(ev.ID, "example.com") {
			t.Errorf("Message-ID %q is that of the single mail of %s", m.MessageID, ev.ID)
		}
	}
	if got, _ := header(m, headers.Reason); got != "task.date_changed" {
		t.Errorf("reason = %q", got)
	}

	// German: the verb agrees with two people.
	m, _ = composeBatch(t, c, []*event.Event{all[0], all[3]}, Options{Locale: "de"})
	if want := "[Acme Build] Bob Stone und Carol Diaz haben das geplante Ende von „Pour foundation“ geändert"; m.Subject != want {
		t.Errorf("Subject = %q, want %q", m.Subject, want)
	}
	// One person: as a single mail.
	one := *all[3]
	one.Actor = all[0].Actor
	m, _ = composeBatch(t, c, []*event.Event{all[0], &one}, Options{Locale: "de"})
	if !strings.Contains(m.Body, "\nCarol Diaz hat das geplante Ende einer Aufgabe geändert.\n") {
		t.Errorf("body:\n%s", m.Body)
	}
}

func TestComposeBatchMixed(t *testing.T) {
	c := batchComposer(t, "https://app.example.com", nil, false)
	m, sections := composeBatch(t, c, mixedBatch(), Options{})
	if len(sections) != 3 {
		t.Fatalf("%d sections, want 3", len(sections))
	}
	if want := `3 updates in Acme Build: Bob Stone commented on "Pour foundation" and 2 more`; m.Subject != want {
		t.Errorf("Subject = %q, want %q", m.Subject, want)
	}
	// The sections in order, each with its link on a line of its own
	// after its headline and before the next one.
	pos := 0
	for i, s := range []struct{ headline, link string }{
		{`1. Bob Stone commented on "Pour foundation"`, "https://app.example.com/tasks/t-1001"},
		{`2. Bob Stone and Carol Diaz changed the planned end of "Pour foundation"`, "https://app.example.com/tasks/t-1001"},
		{`3. Dan Moss assigned you "Order rebar"`, "https://app.example.com/tasks/t-1002"},
	} {
		h := strings.Index(m.Body[pos:], "\n"+s.headline+"\n")
		if h < 0 {
			t.Fatalf("section %d: no headline %q after offset %d:\n%s", i+1, s.headline, pos, m.Body)
		}
		pos += h + 1
		l := strings.Index(m.Body[pos:], "\n"+s.link+"\n")
		if next := strings.Index(m.Body[pos:], fmt.Sprintf("\n%d. ", i+2)); l < 0 || next >= 0 && l > next {
			t.Errorf("section %d: link %s not on a line of its own within the section:\n%s", i+1, s.link, m.Body)
		}
	}
	for _, want := range []string{
		"\n   Planned end:    2026-12-01 → 2026-12-07\n",
		"\n   When:           Thursday, 26 November 2026, 09:30 (UTC)\n",
		"\n> Concrete truck is late, see\n",
		"\nYou get this email because Email is on for comments on your tasks,\nchanges to planned dates and tasks assigned to you.\n",
		"\nhttps://app.example.com/settings/notifications\n",
	} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, m.Body)
		}
	}
	if strings.Contains(m.Body, "Workspace:") {
		t.Errorf("the shared workspace is repeated per section:\n%s", m.Body)
	}
	if m.InReplyTo != "" || m.References != "" {
		t.Errorf("a batch about two tasks is threaded: %q %q", m.InReplyTo, m.References)
	}
	if got, _ := header(m, headers.Reason); got != "batch" {
		t.Errorf("reason = %q, want batch", got)
	}
	if m.To != (Address{Name: "Ann Lee", Email: "ann@example.com"}) || !m.Date.Equal(batchNow) {
		t.Errorf("To %+v Date %v", m.To, m.Date)
	}
	if m.HTML != "" {
		t.Errorf("HTML part without Config.HTML")
	}
}

func TestComposeBatchWorkspaces(t *testing.T) {
	c := batchComposer(t, "https://app.example.com", nil, false)
	none := mixedBatch()
	for i, ev := range none {
		e := *ev
		e.Workspace = nil
		none[i] = &e
	}
	m, _ := composeBatch(t, c, none, Options{})
	if want := `3 updates: Bob Stone commented on "Pour foundation" and 2 more`; m.Subject != want {
		t.Errorf("Subject = %q, want %q", m.Subject, want)
	}

	two := mixedBatch()
	other := *two[2]
	other.Workspace = &event.Workspace{ID: "w2", Name: "Acme Design"}
	two[2] = &other
	m, _ = composeBatch(t, c, two, Options{})
	if !strings.HasPrefix(m.Subject, "3 updates: ") {
		t.Errorf("Subject = %q names one of two workspaces", m.Subject)
	}
	for _, want := range []string{"\n   Workspace:      Acme Build\n", "\n   Workspace:      Acme Design\n"} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, m.Body)
		}
	}
}

// TestComposeBatchThreading: a batch about one task threads with it.
func TestComposeBatchThreading(t *testing.T) {
	c := batchComposer(t, "https://app.example.com", nil, false)
	all := goldenBatch()
	m, sections := composeBatch(t, c, all[:2], Options{}) // a date change and a comment of t-1001
	if len(sections) != 2 {
		t.Fatalf("%d sections", len(sections))
	}
	thread := headers.ThreadID("w1", "t-1001", "example.com")
	if m.InReplyTo != thread || m.References != thread {
		t.Errorf("threading %q %q, want %q", m.InReplyTo, m.References, thread)
	}
	// The same task id in another workspace is another task.
	other := *all[1]
	other.Workspace = &event.Workspace{ID: "w2", Name: "Acme Build"}
	m, _ = composeBatch(t, c, []*event.Event{all[0], &other}, Options{})
	if m.InReplyTo != "" || m.References != "" {
		t.Errorf("two workspaces threaded: %q", m.InReplyTo)
	}
}

func TestComposeBatchUnsubscribe(t *testing.T) {
	oneClick := fakeOneClick("https://relay.example.com/u/")
	comment := func(id string, minute int) *event.Event {
		ev := batchEvent(id, event.TaskComment, minute, "Bob Stone", pourTask)
		ev.Comment = &event.Comment{Body: "comment " + id}
		return ev
	}
	tests := []struct {
		name   string
		c      *Composer
		evs    []*event.Event
		unsub  string
		post   bool
		reason string
	}{
		{"mixed types, one-click", batchComposer(t, "https://app.example.com", oneClick, false), mixedBatch(),
			"<https://app.example.com/settings/notifications>", false, "batch"},
		{"one type, one-click", batchComposer(t, "https://app.example.com", oneClick, false), []*event.Event{comment("a", 1), comment("b", 2)},
			"<https://relay.example.com/u/u42:task.comment:en>", true, "task.comment"},
		{"one type, no one-click", batchComposer(t, "https://app.example.com", nil, false), []*event.Event{comment("a", 1), comment("b", 2)},
			"<https://app.example.com/settings/notifications>", false, "task.comment"},
		{"mixed types, one-click, no base", batchComposer(t, "", oneClick, false), mixedBatch(), "", false, "batch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := composeBatch(t, tt.c, tt.evs, Options{})
			got, ok := header(m, headers.ListUnsubscribeHeader)
			if got != tt.unsub || ok != (tt.unsub != "") {
				t.Errorf("List-Unsubscribe = %q (present %v), want %q", got, ok, tt.unsub)
			}
			post, ok := header(m, headers.ListUnsubscribePost)
			if ok != tt.post || ok && post != headers.OneClickValue {
				t.Errorf("List-Unsubscribe-Post = %q (present %v), want present %v", post, ok, tt.post)
			}
			if got, _ := header(m, headers.Reason); got != tt.reason {
				t.Errorf("reason = %q, want %q", got, tt.reason)
			}
			for _, name := range []string{headers.AutoSubmitted, headers.AutoResponseSuppress, headers.ListIDHeader} {
				if _, ok := header(m, name); !ok {
					t.Errorf("no %s", name)
				}
			}
			// The footer offers one-click exactly when the header does,
			// with the URL on a line of its own.
			offered := strings.Contains(m.Body, "https://relay.example.com/u/")
			if offered != tt.post || tt.post && !strings.Contains(m.Body, "\n"+strings.Trim(tt.unsub, "<>")+"\n") {
				t.Errorf("the footer offers one-click: %v, want %v:\n%s", offered, tt.post, m.Body)
			}
		})
	}
}

func TestComposeBatchGerman(t *testing.T) {
	c := batchComposer(t, "https://app.example.com", nil, false)
	m, _ := composeBatch(t, c, mixedBatch(), Options{Locale: "de-AT"})
	if want := "3 Neuigkeiten in Acme Build: Bob Stone hat „Pour foundation“ kommentiert und 2 weitere"; m.Subject != want {
		t.Errorf("Subject = %q, want %q", m.Subject, want)
	}
	// The recipient's locale serves when the options name none.
	evs := mixedBatch()
	for i, ev := range evs {
		e := *ev
		e.Recipient.Locale = "de"
		evs[i] = &e
	}
	m, _ = composeBatch(t, c, evs, Options{})
	if !strings.HasPrefix(m.Body, "Hallo Ann Lee,\n\n3 Neuigkeiten in Acme Build:\n") {
		t.Errorf("body:\n%s", m.Body)
	}
	if !strings.Contains(m.Body, "\n2. Bob Stone und Carol Diaz haben das geplante Ende von „Pour\n   foundation“ geändert\n") {
		t.Errorf("the long headline does not hang under its text:\n%s", m.Body)
	}
}

func TestComposeBatchHTML(t *testing.T) {
	m, sections := composeBatch(t, batchComposer(t, "https://app.example.com", nil, true), mixedBatch(), Options{Locale: "de"})
	for _, want := range []string{`lang="de"`, "<title>3 Neuigkeiten in Acme Build: Bob Stone hat „Pour foundation“ kommentiert und 2 weitere</title>",
		`<a href="https://app.example.com/tasks/t-1002" style="font-weight: bold;">Aufgabe öffnen</a>`, "2. Bob Stone und Carol Diaz haben"} {
		if !strings.Contains(m.HTML, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	if n := strings.Count(m.HTML, `style="font-weight: bold;">Aufgabe öffnen</a>`); n != len(sections) {
		t.Errorf("HTML has %d task links, want %d", n, len(sections))
	}
	plain, _ := composeBatch(t, batchComposer(t, "https://app.example.com", nil, false), mixedBatch(), Options{Locale: "de"})
	if plain.Body != m.Body {
		t.Errorf("the text part changed with HTML on")
	}
}

func TestComposeBatchMessageID(t *testing.T) {
	c := batchComposer(t, "https://app.example.com", nil, false)
	evs := mixedBatch()
	m, _ := composeBatch(t, c, evs, Options{})
	reversed := slices.Clone(evs)
	slices.Reverse(reversed)
	again, _ := composeBatch(t, c, reversed, Options{})
	if m.MessageID != again.MessageID {
		t.Errorf("Message-ID not stable: %q then %q", m.MessageID, again.MessageID)
	}
	if !strings.HasPrefix(m.MessageID, "<notify.batch.n1.") || !strings.HasSuffix(m.MessageID, "@example.com>") {
		t.Errorf("Message-ID = %q", m.MessageID)
	}
	for _, ev := range evs {
		if m.MessageID == headers.MessageID(ev.ID, "example.com") {
			t.Errorf("Message-ID is that of the single mail of %s", ev.ID)
		}
	}
	fewer, _ := composeBatch(t, c, evs[:3], Options{}) // n1 first again, one change fewer
	if fewer.MessageID == m.MessageID {
		t.Errorf("two sets of notifications share Message-ID %q", m.MessageID)
	}
}

func TestComposeBatchErrors(t *testing.T) {
	c := batchComposer(t, "", nil, false)
	ev := func(id string) *event.Event { return planEvent(id, event.TaskAssigned, 1, "t1") }
	other := ev("b")
	other.Recipient.ID = "u7"
	noMail := ev("b")
	noMail.Recipient.Email = ""
	unknown := ev("b")
	unknown.Type = "task.deleted"
	tests := []struct {
		name     string
		sections []Section
		want     error
	}{
		{"no sections", nil, ErrBatch},
		{"empty section", []Section{{Events: []*event.Event{ev("a")}}, {}}, ErrBatch},
		{"nil event", []Section{{Events: []*event.Event{ev("a")}}, {Events: []*event.Event{nil}}}, ErrBatch},
		{"two recipients", []Section{{Events: []*event.Event{ev("a")}}, {Events: []*event.Event{other}}}, ErrBatch},
		{"no address", []Section{{Events: []*event.Event{ev("a")}}, {Events: []*event.Event{noMail}}}, ErrNoAddress},
		{"merging what is not a date change", []Section{{Events: []*event.Event{ev("a"), ev("b")}}}, ErrBatch},
		{"merging two fields", []Section{{Events: []*event.Event{planChange("a", 1, "t1", "planned_start", "A", "B"), planChange("b", 2, "t1", "planned_end", "B", "C")}}}, ErrBatch},
		{"unknown type", []Section{{Events: []*event.Event{ev("a")}}, {Events: []*event.Event{unknown}}}, event.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := c.ComposeBatch(tt.sections, batchNow, Options{})
			if !errors.Is(err, tt.want) || m != nil {
				t.Errorf("ComposeBatch = %v, %v; want %v", m, err, tt.want)
			}
		})
	}
}

// TestComposeBatchBounds: long text stays within the contract's bounds,
// and snippets are shorter than in a single mail.
func TestComposeBatchBounds(t *testing.T) {
	long := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit. ", 50)
	evs := mixedBatch()
	for i, ev := range evs {
		e := *ev
		e.Workspace = &event.Workspace{ID: "w1", Name: long + "\r\nBcc: x@example.com"}
		e.Actor = &event.Actor{Name: long}
		e.Task.Title = long
		if e.Comment != nil {
			e.Comment = &event.Comment{Body: long}
		}
		evs[i] = &e
	}
	m, sections := composeBatch(t, batchComposer(t, "https://app.example.com", nil, false), evs, Options{})
	checkBatchLinks(t, m, "https://app.example.com", sections)
	if n := utf8.RuneCountInString(m.Subject); n > MaxSubject || strings.ContainsAny(m.Subject, "\r\n") {
		t.Errorf("subject of %d runes: %q", n, m.Subject)
	}
	if n := utf8.RuneCountInString(quotedText(m.Body)); n > batchSnippetMax {
		t.Errorf("snippet of %d runes, want at most %d", n, batchSnippetMax)
	}
}

func TestComposeBatchDoesNotMutate(t *testing.T) {
	evs := goldenBatch()
	before := make([]event.Event, len(evs))
	for i, ev := range evs {
		before[i] = *ev
	}
	composeBatch(t, batchComposer(t, "https://app.example.com", nil, true), evs, Options{})
	for i, ev := range evs {
		if !reflect.DeepEqual(*ev, before[i]) {
			t.Errorf("event %s changed", ev.ID)
		}
	}
}

// TestBatchTemplatesChecked: a batch template that fails is reported at
// start-up, naming its file; an override is used.
func TestBatchTemplatesChecked(t *testing.T) {
	dir := writeTemplates(t, map[string]string{BatchBodyTemplate: "{{range .Sections}}{{.Nope}}{{end}}"})
	_, err := LoadTemplates(dir)
	var te *TemplateError
	if !errors.As(err, &te) || !strings.HasSuffix(te.File, BatchBodyTemplate) {
		t.Fatalf("LoadTemplates = %v, want a *TemplateError naming %s", err, BatchBodyTemplate)
	}

	dir = writeTemplates(t, map[string]string{BatchSubjectTemplate: "{{.Count}} things, first: {{(index .Sections 0).Headline}}"})
	tpl, err := LoadTemplates(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("")
	cfg.Templates = tpl
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sections, _ := PlanBatch(mixedBatch())
	m, err := c.ComposeBatch(sections, batchNow, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := `3 things, first: Bob Stone commented on "Pour foundation"`; m.Subject != want {
		t.Errorf("Subject = %q, want %q", m.Subject, want)
	}
}

// TestTypeTemplateNameClash: a type whose body template has the name of a
// shared one is refused at start-up.
func TestTypeTemplateNameClash(t *testing.T) {
	registerType(t, event.Def{Type: "digest", Label: "digests", Template: BatchBodyTemplate})
	_, err := LoadTemplates("")
	if !errors.Is(err, ErrTemplate) || !strings.Contains(err.Error(), `type "digest"`) {
		t.Fatalf("LoadTemplates = %v, want a clash error", err)
	}
}
