package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mailrelay/mailrelay/event"
)

// benchUsers is how many distinct recipients the generated events rotate
// through; every one of them is opted in to every type.
const benchUsers = 100

// userID is the recipient id of event i.
func userID(i int) string { return fmt.Sprintf("user%03d", i%benchUsers) }

// rcptDomain makes each mail's envelope recipient unique: the sink maps an
// accepted mail back to its event index by it.
const rcptDomain = "bench.example"

func rcptOf(i int) string { return "n" + strconv.Itoa(i) + "@" + rcptDomain }

// indexOf parses the event index out of an envelope recipient, -1 if none.
func indexOf(rcpt string) int {
	rcpt = strings.Trim(rcpt, "<>")
	at := strings.IndexByte(rcpt, '@')
	if at < 2 || rcpt[0] != 'n' {
		return -1
	}
	i, err := strconv.Atoi(rcpt[1:at])
	if err != nil {
		return -1
	}
	return i
}

var comment = "Concrete truck is late again, see https://status.example.com/deliveries/4711 " +
	"for the tracking page. We will need to move the pour to Thursday morning; please check " +
	"that the crane booking can move with it and tell the site office before noon."

// benchEvent builds event i: the five types in turn, every optional part
// filled in, realistic sizes (400–700 bytes of JSON).
func benchEvent(run string, i int, now time.Time) *event.Event {
	typ := event.Types[i%len(event.Types)]
	from, to := "2026-12-01", "2026-12-05"
	ev := &event.Event{
		ID:         fmt.Sprintf("%s-%08d", run, i),
		Type:       typ,
		OccurredAt: now.UTC().Truncate(time.Second),
		Workspace:  &event.Workspace{ID: "w1", Name: "Acme Build"},
		Recipient:  event.Recipient{ID: userID(i), Email: rcptOf(i), Name: "Ann Lee"},
		Actor:      &event.Actor{ID: "u7", Name: "Bob Stone"},
		Task:       event.Task{ID: fmt.Sprintf("t-%d", 1000+i%500), Title: "Pour foundation, east wing", Project: "HQ"},
	}
	switch typ {
	case event.TaskComment, event.Mention:
		ev.Comment = &event.Comment{ID: "c" + strconv.Itoa(i), Body: comment}
	case event.TaskDateChanged:
		ev.Change = &event.Change{Field: "planned_end", From: &from, To: &to}
	case event.TaskBlocked:
		ev.BlockedBy = &event.TaskRef{ID: "t-0999", Title: "Site survey"}
	}
	return ev
}

// encode returns the subject and JSON of ev.
func encode(ev *event.Event) (string, []byte) {
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err)
	}
	return ev.Type.Subject(), b
}

// jsonRecord encodes a ledger record as state.Store does.
func jsonRecord(r any) ([]byte, error) { return json.Marshal(r) }
