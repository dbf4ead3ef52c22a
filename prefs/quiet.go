package prefs

import "time"

// QuietHours are a user's quiet hours in their time zone: mail that would go
// out inside them waits until they end. Start and End are minutes after
// local midnight (0..1439); End < Start wraps midnight (22:00–07:00).
//
// Start == End is no quiet hours (an empty span, not a whole day: a day-long
// span would hold mail forever), and so is a value outside 0..1439. A stored
// value never gives either: the Answer's Quiet is nil then.
type QuietHours struct{ Start, End int }

// minutesPerDay bounds Start and End.
const minutesPerDay = 24 * 60

// Until reports whether t falls inside q in loc (nil: UTC) and, if so, the
// moment they end: the next local End after t. Start == End means no quiet
// hours.
//
// Inside is read on the local clock: Start ≤ time of day < End, or, when q
// wraps midnight, time of day ≥ Start or < End; so t at Start is inside and
// t at End is not. The returned end is strictly after t, in loc. On the day
// clocks change, an End that the clock skips (spring forward, 02:30 in a
// 02:00 → 03:00 gap) is read with the offset before the change, so it falls
// after the gap (03:30), as Python's zoneinfo and JavaScript's Temporal read
// it; an End the clock shows twice (fall back) is its first occurrence
// after t.
func (q QuietHours) Until(t time.Time, loc *time.Location) (end time.Time, inside bool) {
	if q.Start == q.End || q.Start < 0 || q.End < 0 || q.Start >= minutesPerDay || q.End >= minutesPerDay {
		return time.Time{}, false
	}
	if loc == nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	m := lt.Hour()*60 + lt.Minute() // Start and End are whole minutes, so seconds don't change the comparison
	if q.Start < q.End {
		inside = q.Start <= m && m < q.End
	} else {
		inside = m >= q.Start || m < q.End
	}
	if !inside {
		return time.Time{}, false
	}
	y, mo, d := lt.Date()
	for day := d; ; day++ {
		first, second := wallClock(y, mo, day, q.End, loc)
		if first.After(t) {
			return first, true
		}
		if !second.IsZero() && second.After(t) {
			return second, true
		}
		// An End on the next day is after t: the loop runs at most twice.
	}
}

// wallClock returns the moments, in loc, at which its clock shows minute m
// of the given day (time.Date normalizes the day): usually one; two when the
// clock goes back over it (second is then the later one, else zero); and
// when the clock skips it, the moment it would have been with the offset
// before the change. time.Date alone does not decide these cases the same
// way in every zone (it depends on the sign of the offset).
func wallClock(y int, mo time.Month, d, m int, loc *time.Location) (first, second time.Time) {
	naive := time.Date(y, mo, d, m/60, m%60, 0, 0, time.UTC) // the clock reading, as if in UTC
	// The offsets in force around that reading: a change of offset happens
	// at most once within a day in any zone.
	_, before := naive.Add(-24 * time.Hour).In(loc).Zone()
	_, after := naive.Add(24 * time.Hour).In(loc).Zone()
	a := naive.Add(-time.Duration(before) * time.Second).In(loc)
	b := naive.Add(-time.Duration(after) * time.Second).In(loc)
	aOK, bOK := offsetAt(a) == before, offsetAt(b) == after
	switch {
	case before == after || (aOK && !bOK):
		return a, time.Time{}
	case bOK && !aOK:
		return b, time.Time{}
	case aOK && bOK: // shown twice
		if b.Before(a) {
			a, b = b, a
		}
		return a, b
	default: // skipped: with the earlier offset, which lands after the gap
		return a, time.Time{}
	}
}

func offsetAt(t time.Time) int {
	_, off := t.Zone()
	return off
}
