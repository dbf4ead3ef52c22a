package prefs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Batch is a user's batching window: Set false when the user has none (the
// relay's MAILRELAY_BATCH_WINDOW applies); Set with Window 0 means "off".
type Batch struct {
	Set    bool
	Window time.Duration
}

// MaxBatchWindow is the longest batching window a user may choose (and,
// in internal/policy, the relay's MAILRELAY_BATCH_WINDOW and
// MAILRELAY_SEEN_DELAY): mail held longer than a day is no longer news.
const MaxBatchWindow = 24 * time.Hour

// optional is what a stored value's optional fields (contract §9.2) say.
// Each is read on its own: one that is malformed is ignored (as if absent)
// and said in ignored, and never turns Email off.
type optional struct {
	tz      *time.Location // time_zone, nil when absent or ignored
	quiet   QuietHours     // quiet_hours; Start == End when none
	batch   Batch
	ignored string // "" unless a field was ignored: which and why
}

// quietHours returns q as an Answer carries it: nil when there are none.
func (o *optional) quietHours() *QuietHours {
	if o.quiet.Start == o.quiet.End {
		return nil
	}
	q := o.quiet
	return &q
}

// parseOptional reads the optional fields of user's stored object. null,
// and for the string fields "", mean the same as absent. Texts are built
// only for a field that is ignored: preferences are read at every
// notification.
func parseOptional(user string, top map[string]json.RawMessage) optional {
	var o optional
	var ignored []string
	tz, why := zone(top["time_zone"])
	o.tz = tz
	if why != "" {
		ignored = append(ignored, where(user)+".time_zone"+why)
	}
	if raw, ok := top["quiet_hours"]; ok {
		q, why := quietHours(raw)
		o.quiet = q
		if why != "" {
			ignored = append(ignored, where(user)+".quiet_hours"+why)
		}
	}
	if raw, ok := top["batch"]; ok {
		b, why := batch(raw)
		o.batch = b
		if why != "" {
			ignored = append(ignored, where(user)+".batch"+why)
		}
	}
	if len(top) > 1 {
		ignored = append(ignored, inexactKeys(user, top)...)
	}
	if ignored != nil {
		o.ignored = strings.Join(ignored, "; ")
	}
	return o
}

// inexactKeys names each key of top that differs from an optional field's
// name only by case: it is not read (keys are exact, as for "email"), and
// the user likely meant it.
func inexactKeys(user string, top map[string]json.RawMessage) []string {
	var out []string
	for _, name := range optionalNames {
		var found string
		for k := range top {
			if k != name && strings.EqualFold(k, name) && (found == "" || k < found) {
				found = k // the least, so that the text does not depend on map order
			}
		}
		if found != "" {
			out = append(out, fmt.Sprintf("%s has the key %s; the key is %q (exact case)", where(user), strconv.QuoteToASCII(found), name))
		}
	}
	return out
}

// optionalNames are the optional fields in the order their problems are
// told.
var optionalNames = [...]string{"time_zone", "quiet_hours", "batch"}

// zone reads a stored time_zone: nil when absent, null or "", and nil with
// why it is ignored when it is not the name of an IANA zone this machine
// knows.
func zone(raw json.RawMessage) (*time.Location, string) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, ""
	}
	name, ok := jsonString(raw)
	if !ok {
		return nil, " is " + describe(raw) + `, not an IANA zone name such as "Europe/Berlin"`
	}
	if name == "" {
		return nil, ""
	}
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location), ""
	}
	l, err := time.LoadLocation(name)
	if err != nil || name == "Local" { // "Local" is this machine's zone, not the user's
		return nil, " is " + describe(raw) + ", not a known IANA zone"
	}
	zones.Store(name, l)
	return l, ""
}

// zones caches loaded locations: preferences are read at every notification.
var zones sync.Map

// quietHours reads a stored quiet_hours: {"start": "HH:MM", "end": "HH:MM"},
// exactly these two keys. It returns no quiet hours when raw is null or
// start equals end (an empty span: a way to say "none", not a mistake), and
// no quiet hours with why when raw is anything else.
func quietHours(raw json.RawMessage) (QuietHours, string) {
	if string(raw) == "null" {
		return QuietHours{}, ""
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return QuietHours{}, " is " + describe(raw) + `, not an object {"start": "HH:MM", "end": "HH:MM"}`
	}
	var extra string
	var hasExtra bool
	for k := range m {
		if k != "start" && k != "end" && (!hasExtra || k < extra) {
			extra, hasExtra = k, true // the least, so that the text does not depend on map order
		}
	}
	if hasExtra {
		return QuietHours{}, " has the key " + strconv.QuoteToASCII(extra) + `; its keys are "start" and "end"`
	}
	var q QuietHours
	for _, f := range [...]struct {
		name string
		dst  *int
	}{{"start", &q.Start}, {"end", &q.End}} {
		r, ok := m[f.name]
		if !ok {
			return QuietHours{}, " has no " + strconv.Quote(f.name)
		}
		mins, ok := clock(r)
		if !ok {
			return QuietHours{}, "." + f.name + " is " + describe(r) + ", not HH:MM"
		}
		*f.dst = mins
	}
	if q.Start == q.End {
		return QuietHours{}, ""
	}
	return q, ""
}

// clock reads a JSON string "HH:MM" (24-hour, two digits each) as minutes
// after midnight.
func clock(r json.RawMessage) (int, bool) {
	s, ok := jsonString(r)
	if !ok || len(s) != 5 || s[2] != ':' {
		return 0, false
	}
	for _, i := range [...]int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	if h > 23 || m > 59 {
		return 0, false
	}
	return h*60 + m, true
}

// batch reads a stored batch: a Go duration from 0 to MaxBatchWindow, or
// "off" (the same as 0). null and "" are absent; anything else is ignored,
// with why.
func batch(raw json.RawMessage) (Batch, string) {
	if string(raw) == "null" {
		return Batch{}, ""
	}
	s, ok := jsonString(raw)
	if !ok {
		return Batch{}, " is " + describe(raw) + `, not a duration such as "10m", or "off"`
	}
	switch s {
	case "":
		return Batch{}, ""
	case "off":
		return Batch{Set: true}, ""
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return Batch{}, " is " + describe(raw) + `, not a duration such as "10m", or "off"`
	case d < 0:
		return Batch{}, " is " + describe(raw) + ", negative"
	case d > MaxBatchWindow:
		return Batch{}, " is " + describe(raw) + ", longer than 24h"
	}
	return Batch{Set: true, Window: d}, ""
}

// jsonString reads a JSON value that is a string. One without escapes, the
// usual case, is read without the decoder: preferences are read at every
// notification.
func jsonString(raw []byte) (string, bool) {
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' &&
		bytes.IndexByte(raw[1:n-1], '\\') < 0 && bytes.IndexByte(raw[1:n-1], '"') < 0 && utf8.Valid(raw[1:n-1]) {
		return string(raw[1 : n-1]), true
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}
