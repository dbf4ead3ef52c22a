package event

import (
	"regexp"
	"slices"
	"strings"
	"unicode"
)

// The patterns below are the rules of §3 and §9.1 as regular expressions
// that Go's regexp, ECMA-262 (ajv) and Python's re read alike: no
// lookaround, no backreferences, no escapes beyond \. and no flags; the
// characters beyond ASCII stand in them as themselves. event.schema.json
// carries the same strings (TestSchemaPatternsAreGo), so the schema and
// the decoder apply one rule.

// IDPattern is what a notification or user id must match.
const IDPattern = `^[A-Za-z0-9_-]{1,128}$`

// TaskIDPattern is what a task id must match; "." and ".." are refused
// besides (they would turn the deep link into another page).
const TaskIDPattern = `^[A-Za-z0-9_.-]{1,128}$`

// MaxIntegerID is the largest id a publisher may send as a JSON integer:
// 2^53-1, the largest integer every JSON parser reads exactly.
const MaxIntegerID = 1<<53 - 1

// Date and time patterns: RFC 3339 (T and Z in either case, any number of
// fractional digits, numeric offsets), with the calendar checked in the
// pattern itself, so that a validator without a date-time format checker
// (Python's jsonschema without rfc3339-validator) agrees. Leap seconds
// (:60) are refused: Go cannot represent them and validators disagree
// about where they may fall.
const (
	monthDay = `(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))`
	leapYear = `(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)`
	// year1 is 0001 to 9999: Python's datetime has no year 0.
	year1 = `(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)`
	// year2 is 0002 to 9999: occurred_at in the year 1 is the zero time
	// of Go (0001-01-01T00:00:00Z) or close to it, never a real event.
	year2     = `(?:[0-9]{3}[2-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})`
	clockTime = `(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])`

	// DatePattern is a calendar date, YYYY-MM-DD (change.from, change.to).
	DatePattern = `^(?:` + year1 + `-` + monthDay + `|` + leapYear + `-02-29)$`
	// DateTimePattern is an RFC 3339 date-time (change.from, change.to).
	DateTimePattern = `^(?:` + year1 + `-` + monthDay + `|` + leapYear + `-02-29)[Tt]` + clockTime + `$`
	// OccurredAtPattern is an RFC 3339 date-time from the year 0002 on.
	OccurredAtPattern = `^(?:` + year2 + `-` + monthDay + `|` + leapYear + `-02-29)[Tt]` + clockTime + `$`
)

// LocalePattern is a well-formed BCP 47 language tag (RFC 5646 §2.1:
// langtag or privateuse; the deprecated grandfathered tags are not
// accepted), in any case. The empty string means no locale.
const LocalePattern = `^(?:|(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4,8})(?:-[A-Za-z]{4})?(?:-(?:[A-Za-z]{2}|[0-9]{3}))?` +
	`(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*(?:-[A-WY-Za-wy-z0-9](?:-[A-Za-z0-9]{2,8})+)*(?:-[Xx](?:-[A-Za-z0-9]{1,8})+)?` +
	`|[Xx](?:-[A-Za-z0-9]{1,8})+)$`

// EmailPattern is the shape of recipient.email: empty (no email), or one
// bare address local@domain, each part a dot-atom of RFC 5322 atext plus
// any character beyond ASCII (RFC 6532), as net/mail reads it, without
// "=?" (mail clients would decode an RFC 2047 encoded-word). No display
// name, no quoted local part, no domain literal, no white space.
var EmailPattern = func() string {
	const ascii = "A-Za-z0-9!#$%&'*+/^_`{|}~"
	wide := "\u0080-\U0010FFFF"
	a := "[" + ascii + "?" + wide + "-]" // atext but '='
	b := "[" + ascii + wide + "-]"       // atext but '=' and '?'
	atom := `(?:(?:` + a + `|=+` + b + `)+=*|=+)`
	dotAtom := atom + `(?:\.` + atom + `)*`
	return `^(?:|` + dotAtom + `@` + dotAtom + `)$`
}()

// EmailLengthPattern bounds the parts of recipient.email in characters:
// local part 64, domain 255 (RFC 5321 §4.5.3.1 counts octets: the decoder
// counts octets too, which a pattern cannot).
const EmailLengthPattern = `^(?:|[^@]{1,64}@[^@]{1,255})$`

// VisiblePattern matches a text that holds a visible character (HasVisible):
// one outside the invisible set of invisible().
var VisiblePattern = func() string {
	var b strings.Builder
	b.WriteString("[^")
	for _, r := range invisibleRanges() {
		b.WriteRune(r[0])
		if r[1] != r[0] {
			b.WriteByte('-')
			b.WriteRune(r[1])
		}
	}
	b.WriteString("]")
	return b.String()
}()

// invisibleRanges lists the code points invisible() reports, as ranges.
// It walks the members of invisibleTables rather than every code point,
// which would cost tens of milliseconds at every program's start.
func invisibleRanges() [][2]rune {
	points := []rune{brailleBlank}
	for _, t := range invisibleTables {
		for _, r16 := range t.R16 {
			for r := rune(r16.Lo); r <= rune(r16.Hi); r += rune(r16.Stride) {
				points = append(points, r)
			}
		}
		for _, r32 := range t.R32 {
			for r := rune(r32.Lo); r <= rune(r32.Hi); r += rune(r32.Stride) {
				points = append(points, r)
			}
		}
	}
	slices.Sort(points)
	points = slices.Compact(points)
	var rs [][2]rune
	for _, r := range points {
		if n := len(rs); n > 0 && rs[n-1][1] == r-1 {
			rs[n-1][1] = r
		} else {
			rs = append(rs, [2]rune{r, r})
		}
	}
	return rs
}

var (
	idPattern         = regexp.MustCompile(IDPattern)
	taskIDPattern     = regexp.MustCompile(TaskIDPattern)
	datePattern       = regexp.MustCompile(DatePattern)
	dateTimePattern   = regexp.MustCompile(DateTimePattern)
	occurredAtPattern = regexp.MustCompile(OccurredAtPattern)
	localePattern     = regexp.MustCompile(LocalePattern)
	emailPattern      = regexp.MustCompile(EmailPattern)
	emailLenPattern   = regexp.MustCompile(EmailLengthPattern)
)

// contractKeys are the keys of each object of the event, by the JSON path
// of the object ("" is the event itself). A key that differs from one of
// them only by case is refused; other unknown keys are ignored.
var contractKeys = map[string][]string{
	"":           {"id", "type", "occurred_at", "workspace", "recipient", "actor", "task", "comment", "change", "blocked_by"},
	"workspace":  {"id", "name"},
	"recipient":  {"id", "email", "name", "locale"},
	"actor":      {"id", "name"},
	"task":       {"id", "title", "project"},
	"comment":    {"id", "body"},
	"change":     {"field", "from", "to"},
	"blocked_by": {"id", "title"},
}

// caseVariantPattern matches every key that equals one of keys under
// Unicode simple case folding (strings.EqualFold), the exact keys
// included: the schema refuses a key that matches it and is not one of
// keys.
func caseVariantPattern(keys []string) string {
	var b strings.Builder
	b.WriteString("^(?:")
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('|')
		}
		for _, r := range k {
			orbit := []rune{r}
			for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
				orbit = append(orbit, f)
			}
			if len(orbit) == 1 {
				b.WriteRune(r)
				continue
			}
			b.WriteByte('[')
			for _, f := range orbit {
				b.WriteRune(f)
			}
			b.WriteByte(']')
		}
	}
	b.WriteString(")$")
	return b.String()
}
