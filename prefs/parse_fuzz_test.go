package prefs

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mailrelay/mailrelay/event"
)

// FuzzParse: the optional fields, given as JSON values beside an "email"
// that turns mention on, never turn Email off and never set Problem; what
// they yield agrees with a plain reading of contract §9.2; the text is
// short, printable and the same at every read; and the cache's answer
// equals Store's. An empty argument leaves its field out.
func FuzzParse(f *testing.F) {
	for _, s := range [][3]string{
		{`"Europe/Berlin"`, `{"start":"22:00","end":"07:00"}`, `"10m"`},
		{`""`, `{"start":"09:00","end":"17:00"}`, `"off"`},
		{`null`, `{"start":"08:00","end":"08:00"}`, `"0s"`},
		{`"Mars/Olympus"`, `{"start":"25:00","end":"07:00"}`, `"-5m"`},
		{``, `{"start":"22:00"}`, `"25h"`},
		{`1`, `{"start":"22:00","end":"07:00","x":1}`, `600`},
		{`"Local"`, `"22:00-07:00"`, `"OFF"`},
		{``, `{"Start":"22:00","end":"07:00"}`, `"24h"`},
		{``, `{"start":"2\u0032:00","end":"07:00"}`, `"1h30m"`},
		{``, `{"start":null,"end":"07:00"}`, `null`},
		{``, `{"start":"22:00","start":"23:00","end":"07:00"}`, `""`},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, tz, quiet, batch string) {
		doc := `{"email":{"mention":true}`
		for _, m := range [...]struct{ key, raw string }{{"time_zone", tz}, {"quiet_hours", quiet}, {"batch", batch}} {
			if m.raw == "" {
				continue
			}
			if !json.Valid([]byte(m.raw)) {
				return // one JSON value each, so that no argument adds keys
			}
			doc += fmt.Sprintf(",%q:%s", m.key, m.raw)
		}
		doc += "}"
		const user = "u1"
		v := parse(user, []byte(doc))
		a := v.answer(event.Mention)
		if !a.On || a.Problem != "" {
			t.Fatalf("%s: %+v; want on without a problem", doc, a)
		}

		// quiet_hours: exactly "start" and "end", each 24-hour HH:MM.
		wantQuiet, quietOK := plainQuiet(quiet)
		switch {
		case a.Quiet == nil && wantQuiet != nil, a.Quiet != nil && (wantQuiet == nil || *a.Quiet != *wantQuiet):
			t.Fatalf("%s: Quiet %v, want %v", quiet, a.Quiet, wantQuiet)
		case quietOK == strings.Contains(a.Ignored, `notify_prefs["u1"].quiet_hours`):
			t.Fatalf("%s: Ignored %q, quiet_hours valid: %v", quiet, a.Ignored, quietOK)
		}
		if a.Quiet != nil {
			q := *a.Quiet
			if q.Start == q.End || q.Start < 0 || q.End < 0 || q.Start >= 1440 || q.End >= 1440 {
				t.Fatalf("%s: Quiet %+v out of range", quiet, q)
			}
			again := parse(user, fmt.Appendf(nil, `{"quiet_hours":{"start":"%02d:%02d","end":"%02d:%02d"}}`, q.Start/60, q.Start%60, q.End/60, q.End%60))
			if again.opt.quiet != q || again.opt.ignored != "" {
				t.Fatalf("%+v does not read back: %+v", q, again.opt)
			}
		}

		// batch: "off" or a Go duration from 0 to 24h.
		wantBatch, batchOK := plainBatch(batch)
		if a.Batch != wantBatch || batchOK == strings.Contains(a.Ignored, `notify_prefs["u1"].batch`) {
			t.Fatalf("%s: Batch %+v, Ignored %q; want %+v, valid: %v", batch, a.Batch, a.Ignored, wantBatch, batchOK)
		}

		// time_zone: what time.LoadLocation knows, but not "Local".
		var name string
		tzOK := tz == "" || tz == "null" || json.Unmarshal([]byte(tz), &name) == nil && (name == "" || name != "Local" && loads(name))
		if tzOK == strings.Contains(a.Ignored, `notify_prefs["u1"].time_zone`) || (a.TimeZone != nil) != (tzOK && name != "") {
			t.Fatalf("%s: TimeZone %v, Ignored %q; valid: %v", tz, a.TimeZone, a.Ignored, tzOK)
		}

		if quietOK && batchOK && tzOK && a.Ignored != "" {
			t.Fatalf("%s: Ignored %q, want none", doc, a.Ignored)
		}
		if len(a.Ignored) > 400 || !utf8.ValidString(a.Ignored) || strings.ContainsFunc(a.Ignored, func(r rune) bool { return r < ' ' || r > '~' }) {
			t.Fatalf("Ignored not short and printable: %q", a.Ignored)
		}
		if w := parse(user, []byte(doc)); w.answer(event.Mention).Ignored != a.Ignored {
			t.Fatalf("Ignored differs between reads: %q, %q", a.Ignored, w.answer(event.Mention).Ignored)
		}
		c := parseCached(user, []byte(doc))
		if got := c.answer(); got.Ignored != a.Ignored || got.Batch != a.Batch || got.TimeZone != a.TimeZone ||
			(got.Quiet == nil) != (a.Quiet == nil) || got.Quiet != nil && *got.Quiet != *a.Quiet {
			t.Fatalf("cache %+v, store %+v", got, a)
		}
	})
}

var hhmm = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]$`)

// plainQuiet reads quiet_hours as the contract words it, independently of
// the package: the quiet hours (nil for none) and whether raw is valid.
func plainQuiet(raw string) (*QuietHours, bool) {
	if raw == "" || raw == "null" {
		return nil, true
	}
	var m map[string]any
	if json.Unmarshal([]byte(raw), &m) != nil || m == nil || len(m) != 2 {
		return nil, false
	}
	var mins [2]int
	for i, k := range []string{"start", "end"} {
		s, ok := m[k].(string)
		if !ok || !hhmm.MatchString(s) {
			return nil, false
		}
		c, _ := time.Parse("15:04", s)
		mins[i] = c.Hour()*60 + c.Minute()
	}
	if mins[0] == mins[1] {
		return nil, true
	}
	return &QuietHours{Start: mins[0], End: mins[1]}, true
}

// plainBatch reads batch as the contract words it.
func plainBatch(raw string) (Batch, bool) {
	if raw == "" || raw == "null" {
		return Batch{}, true
	}
	var s string
	if json.Unmarshal([]byte(raw), &s) != nil {
		return Batch{}, false
	}
	if s == "" {
		return Batch{}, true
	}
	if s == "off" {
		return Batch{Set: true}, true
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > 24*time.Hour {
		return Batch{}, false
	}
	return Batch{Set: true, Window: d}, true
}

func loads(name string) bool {
	_, err := time.LoadLocation(name)
	return err == nil
}
