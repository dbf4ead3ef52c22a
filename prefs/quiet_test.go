package prefs_test

import (
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/prefs"
)

// hm is a QuietHours from two "HH:MM".
func hm(t testing.TB, start, end string) prefs.QuietHours {
	t.Helper()
	var q prefs.QuietHours
	for _, f := range []struct {
		s   string
		dst *int
	}{{start, &q.Start}, {end, &q.End}} {
		c, err := time.Parse("15:04", f.s)
		if err != nil {
			t.Fatal(err)
		}
		*f.dst = c.Hour()*60 + c.Minute()
	}
	return q
}

func mustZone(t testing.TB, name string) *time.Location {
	t.Helper()
	if name == "" {
		return nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestQuietHoursUntil: inside is read on the local clock (start inside, end
// outside), and the end is the next local End after t, also on the days
// clocks change. Times are written with their offset, so each names one
// instant.
func TestQuietHoursUntil(t *testing.T) {
	const (
		berlin = "Europe/Berlin"
		ny     = "America/New_York"
	)
	cases := []struct {
		name, zone, start, end string
		t                      string // RFC 3339
		want                   string // RFC 3339; "" = not inside
	}{
		{"before start", "", "09:00", "17:00", "2026-06-01T08:59:59.999Z", ""},
		{"at start is inside", "", "09:00", "17:00", "2026-06-01T09:00:00Z", "2026-06-01T17:00:00Z"},
		{"just before end", "", "09:00", "17:00", "2026-06-01T16:59:59.999Z", "2026-06-01T17:00:00Z"},
		{"at end is outside", "", "09:00", "17:00", "2026-06-01T17:00:00Z", ""},
		{"wrap: at start", "", "22:00", "07:00", "2026-06-01T22:00:00Z", "2026-06-02T07:00:00Z"},
		{"wrap: before midnight", "", "22:00", "07:00", "2026-06-01T23:59:59Z", "2026-06-02T07:00:00Z"},
		{"wrap: at midnight", "", "22:00", "07:00", "2026-06-02T00:00:00Z", "2026-06-02T07:00:00Z"},
		{"wrap: just before end", "", "22:00", "07:00", "2026-06-02T06:59:59Z", "2026-06-02T07:00:00Z"},
		{"wrap: at end", "", "22:00", "07:00", "2026-06-02T07:00:00Z", ""},
		{"wrap: midday", "", "22:00", "07:00", "2026-06-02T12:00:00Z", ""},
		{"wrap: just before start", "", "22:00", "07:00", "2026-06-02T21:59:59Z", ""},
		{"wrap: over the new year", "", "22:00", "07:00", "2026-12-31T23:30:00Z", "2027-01-01T07:00:00Z"},
		{"end at midnight", "", "20:00", "00:00", "2026-06-01T23:00:00Z", "2026-06-02T00:00:00Z"},
		{"start at midnight", "", "00:00", "06:00", "2026-06-01T00:00:00Z", "2026-06-01T06:00:00Z"},
		{"start == end is none", "", "08:00", "08:00", "2026-06-01T08:00:00Z", ""},
		{"the zone's clock, not UTC's", berlin, "22:00", "07:00", "2026-01-15T21:30:00Z", "2026-01-16T07:00:00+01:00"},
		{"UTC's clock says outside", "", "22:00", "07:00", "2026-01-15T21:30:00Z", ""},
		{"Berlin winter", berlin, "22:00", "07:00", "2026-01-15T23:00:00+01:00", "2026-01-16T07:00:00+01:00"},
		{"Berlin summer", berlin, "22:00", "07:00", "2026-07-15T23:00:00+02:00", "2026-07-16T07:00:00+02:00"},
		{"Berlin spring forward night", berlin, "22:00", "07:00", "2026-03-28T23:00:00+01:00", "2026-03-29T07:00:00+02:00"},
		{"Berlin spring forward: end skipped is read after the gap", berlin, "22:00", "02:30", "2026-03-29T01:00:00+01:00", "2026-03-29T03:30:00+02:00"},
		{"Berlin spring forward: after the gap is past the end", berlin, "22:00", "02:30", "2026-03-29T03:10:00+02:00", ""},
		{"Berlin spring forward: start skipped", berlin, "02:30", "06:00", "2026-03-29T03:00:00+02:00", "2026-03-29T06:00:00+02:00"},
		{"Berlin fall back night", berlin, "22:00", "07:00", "2026-10-24T23:00:00+02:00", "2026-10-25T07:00:00+01:00"},
		{"Berlin fall back: end shown twice, the first", berlin, "22:00", "02:30", "2026-10-25T01:00:00+02:00", "2026-10-25T02:30:00+02:00"},
		{"Berlin fall back: second pass, the second", berlin, "22:00", "02:30", "2026-10-25T02:10:00+01:00", "2026-10-25T02:30:00+01:00"},
		{"Berlin fall back: between the two ends", berlin, "22:00", "02:30", "2026-10-25T02:45:00+02:00", ""},
		{"New York winter", ny, "22:00", "07:00", "2026-01-15T22:00:00-05:00", "2026-01-16T07:00:00-05:00"},
		{"New York spring forward night", ny, "22:00", "07:00", "2026-03-07T23:00:00-05:00", "2026-03-08T07:00:00-04:00"},
		// time.Date gives 01:30 EST here (before t): the end would be a day late.
		{"New York spring forward: end skipped is read after the gap", ny, "22:00", "02:30", "2026-03-08T01:59:00-05:00", "2026-03-08T03:30:00-04:00"},
		{"New York fall back night", ny, "22:00", "07:00", "2026-10-31T22:00:00-04:00", "2026-11-01T07:00:00-05:00"},
		// time.Date gives the first 01:30 here, and the second one in Berlin.
		{"New York fall back: end shown twice, the first", ny, "22:00", "01:30", "2026-10-31T23:00:00-04:00", "2026-11-01T01:30:00-04:00"},
		{"New York fall back: second pass, the second", ny, "22:00", "01:30", "2026-11-01T01:10:00-05:00", "2026-11-01T01:30:00-05:00"},
		{"New York fall back: between the two ends", ny, "22:00", "01:30", "2026-11-01T01:40:00-04:00", ""},
		{"a t in another zone is the same instant", ny, "22:00", "07:00", "2026-01-16T04:00:00+01:00", "2026-01-16T07:00:00-05:00"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			at, err := time.Parse(time.RFC3339Nano, c.t)
			if err != nil {
				t.Fatal(err)
			}
			end, inside := hm(t, c.start, c.end).Until(at, mustZone(t, c.zone))
			if c.want == "" {
				if inside || !end.IsZero() {
					t.Fatalf("Until(%s) = %s, %v; want outside", c.t, end, inside)
				}
				return
			}
			want, err := time.Parse(time.RFC3339, c.want)
			if err != nil {
				t.Fatal(err)
			}
			if !inside || !end.Equal(want) {
				t.Fatalf("Until(%s) = %s, %v; want %s, inside", c.t, end.Format(time.RFC3339), inside, c.want)
			}
			if end.Location().String() != orUTC(mustZone(t, c.zone)).String() {
				t.Errorf("end in %s, want in the user's zone", end.Location())
			}
		})
	}
}

func orUTC(l *time.Location) *time.Location {
	if l == nil {
		return time.UTC
	}
	return l
}

// TestQuietHoursUntilOutOfRange: values a stored value never gives are no
// quiet hours rather than a wait that never ends.
func TestQuietHoursUntilOutOfRange(t *testing.T) {
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, q := range []prefs.QuietHours{{Start: -1, End: 60}, {Start: 0, End: 1440}, {Start: 1440, End: 60}, {}} {
		if end, inside := q.Until(at, nil); inside || !end.IsZero() {
			t.Errorf("%+v: Until = %s, %v; want outside", q, end, inside)
		}
	}
}

// FuzzUntil: whatever the zone and instant, an end is after t and within a
// day and an hour; away from a change of offset, it is the local End
// exactly, no more than a day ahead, and outside.
func FuzzUntil(f *testing.F) {
	f.Add(22*60, 7*60, int64(1774744200), uint8(1))   // Berlin, spring forward
	f.Add(22*60, 90, int64(1793511000), uint8(2))     // New York, fall back
	f.Add(0, 3*60, int64(1775314800), uint8(3))       // Lord Howe: a 30-minute change
	f.Add(23*60, 15, int64(1772944200), uint8(4))     // Havana: midnight skipped
	f.Add(9*60, 17*60, int64(1780315200), uint8(0))   // UTC
	f.Add(3*60, 2*60+30, int64(1772953140), uint8(2)) // nearly all day, New York spring forward
	zones := []string{"UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Havana", "Asia/Kolkata", "Pacific/Chatham", "America/Santiago"}
	locs := make([]*time.Location, len(zones))
	for i, z := range zones {
		locs[i] = mustZone(f, z)
	}
	f.Fuzz(func(t *testing.T, start, end int, unix int64, zone uint8) {
		q := prefs.QuietHours{Start: mod(start, 1440), End: mod(end, 1440)}
		at := time.Unix(mod64(unix, 4102444800), 0) // 1970..2100
		loc := locs[int(zone)%len(locs)]
		until, inside := q.Until(at, loc)

		lt := at.In(loc)
		m := lt.Hour()*60 + lt.Minute()
		want := q.Start != q.End && (q.Start <= m && m < q.End || q.Start > q.End && (m >= q.Start || m < q.End))
		if inside != want {
			t.Fatalf("%+v at %s: inside = %v, want %v", q, lt, inside, want)
		}
		if !inside {
			if !until.IsZero() {
				t.Fatalf("outside with an end %s", until)
			}
			return
		}
		if !until.After(at) || until.Sub(at) > 25*time.Hour {
			t.Fatalf("%+v at %s: end %s, want after t and within 25h", q, lt, until.In(loc))
		}
		if offsetsIn(at.Add(-24*time.Hour), at.Add(48*time.Hour), loc) {
			return
		}
		u := until.In(loc)
		if u.Hour()*60+u.Minute() != q.End || u.Second() != 0 || u.Nanosecond() != 0 || until.Sub(at) > 24*time.Hour {
			t.Fatalf("%+v at %s: end %s, want the next %02d:%02d", q, lt, u, q.End/60, q.End%60)
		}
		if _, in := q.Until(until, loc); in {
			t.Fatalf("%+v: inside at its own end %s", q, u)
		}
	})
}

// offsetsIn reports whether loc changes its offset between from and to.
func offsetsIn(from, to time.Time, loc *time.Location) bool {
	_, a := from.In(loc).Zone()
	_, b := to.In(loc).Zone()
	_, zoneEnd := from.In(loc).ZoneBounds()
	return a != b || (!zoneEnd.IsZero() && zoneEnd.Before(to))
}

func mod(a, n int) int {
	a %= n
	if a < 0 {
		a += n
	}
	return a
}

func mod64(a, n int64) int64 {
	a %= n
	if a < 0 {
		a += n
	}
	return a
}
