package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The decoder reads the message into a tree of JSON values first, token by
// token, so that it sees what encoding/json hides: a key given twice (it
// keeps the last) and a key that differs from a field's only by case (it
// matches either). Then it reads the event's fields from the tree by their
// exact names, naming every value that is not what the contract says.

type kind uint8

const (
	kNull kind = iota
	kBool
	kNumber
	kString
	kObject
	kArray
)

// value is one JSON value.
type value struct {
	kind    kind
	text    string // a string, or a number as written
	members []member
	dup     map[string]bool // keys given more than once
}

type member struct {
	key string
	val *value
}

// what names the kind of v for a message.
func (v *value) what() string {
	switch v.kind {
	case kNull:
		return "null"
	case kBool:
		return "true or false"
	case kNumber:
		return "a number"
	case kString:
		return "a string"
	case kObject:
		return "an object"
	default:
		return "an array"
	}
}

// parse reads data into a tree. It reports keys given twice in ps, by
// path; the error is the message's syntax error, in words.
func parse(data []byte, ps *Problems) (*value, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		v    *value
		path string
		key  string // the key whose value comes next; "" before it
		// haveKey says key is set (a key may be "").
		haveKey bool
		n       int // array elements so far
		// seen holds the keys of a large object, so that finding a key
		// given twice stays linear; nil while a scan of members is cheap.
		seen map[string]bool
	}
	var (
		root  *value
		stack []*frame
	)
	// attach places v in its parent and returns its path.
	attach := func(v *value) string {
		if len(stack) == 0 {
			root = v
			return ""
		}
		f := stack[len(stack)-1]
		if f.v.kind == kArray {
			p := fmt.Sprintf("%s[%d]", f.path, f.n)
			f.n++
			return p
		}
		p := join(f.path, f.key)
		if f.seen == nil && len(f.v.members) >= 16 {
			f.seen = make(map[string]bool, 2*len(f.v.members))
			for _, m := range f.v.members {
				f.seen[m.key] = true
			}
		}
		var given bool
		if f.seen != nil {
			given = f.seen[f.key]
			f.seen[f.key] = true
		} else {
			given = slices.ContainsFunc(f.v.members, func(m member) bool { return m.key == f.key })
		}
		if given {
			if f.v.dup == nil {
				f.v.dup = map[string]bool{}
			}
			f.v.dup[f.key] = true
			ps.add(p, "is given twice: keys must be unique")
		}
		f.v.members = append(f.v.members, member{key: f.key, val: v})
		f.key, f.haveKey = "", false
		return p
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxError(err, dec.InputOffset())
		}
		if len(stack) > 0 {
			if f := stack[len(stack)-1]; f.v.kind == kObject && !f.haveKey {
				if k, ok := tok.(string); ok {
					f.key, f.haveKey = k, true
					continue
				}
			}
		}
		var v *value
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				v = &value{kind: kObject}
				if t == '[' {
					v.kind = kArray
				}
				stack = append(stack, &frame{v: v, path: attach(v)})
				continue
			default: // '}' or ']'
				stack = stack[:len(stack)-1]
			}
		case string:
			v = &value{kind: kString, text: t}
		case json.Number:
			v = &value{kind: kNumber, text: string(t)}
		case bool:
			v = &value{kind: kBool, text: strconv.FormatBool(t)}
		case nil:
			v = &value{kind: kNull}
		}
		if v != nil {
			attach(v)
		}
		if len(stack) == 0 {
			break
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return root, errors.New("event has trailing data after the JSON value")
	}
	return root, nil
}

// syntaxError words a JSON syntax error without the decoder's own terms.
func syntaxError(err error, offset int64) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("event is not valid JSON: it ends before the JSON value does")
	}
	var se *json.SyntaxError
	msg := err.Error()
	if errors.As(err, &se) {
		msg, offset = se.Error(), se.Offset
	}
	msg = strings.TrimPrefix(msg, "json: ")
	return fmt.Errorf("event is not valid JSON: %s (at byte %d)", msg, offset)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// reader reads the event's fields from the tree, collecting problems.
type reader struct {
	ps Problems
}

// object returns the members of the object v at path by their contract
// keys. It records a key that differs from a contract key only by case;
// a key given twice is left out (parse has named it). nil v or null is an
// absent object: nil, and "is required" when required.
func (r *reader) object(path string, v *value) map[string]*value {
	if v == nil || v.kind == kNull {
		return nil
	}
	if v.kind != kObject {
		r.ps.add(path, "must be an object, not %s", v.what())
		return nil
	}
	keys := contractKeys[path]
	fields := make(map[string]*value, len(keys))
	for _, m := range v.members {
		if v.dup[m.key] {
			continue
		}
		exact := false
		for _, k := range keys {
			if m.key == k {
				fields[k], exact = m.val, true
				break
			}
		}
		if exact {
			continue
		}
		for _, k := range keys {
			if strings.EqualFold(m.key, k) {
				r.ps.add(join(path, m.key), "differs from the key %q only by case: keys are exact", k)
				break
			}
		}
	}
	return fields
}

// text reads an optional string: null and absent give "".
func (r *reader) text(path string, v *value) string {
	if v == nil || v.kind == kNull {
		return ""
	}
	if v.kind != kString {
		r.ps.add(path, "must be a string, not %s", v.what())
		return ""
	}
	return v.text
}

// id reads an id: a string, or an integer from 0 to MaxIntegerID, whose
// canonical form is its decimal string. null and absent give "".
func (r *reader) id(path string, v *value) string {
	if v == nil || v.kind == kNull {
		return ""
	}
	switch v.kind {
	case kString:
		return v.text
	case kNumber:
		s, msg := canonicalInteger(v.text)
		if msg != "" {
			r.ps.add(path, "%s", msg)
		}
		return s
	}
	r.ps.add(path, "must be a string or an integer from 0 to %d, not %s", MaxIntegerID, v.what())
	return ""
}

// canonicalInteger returns the decimal form of the JSON number lit when it
// is an integer from 0 to MaxIntegerID (1e3 and 12.0 are integers, as JSON
// Schema's "integer" says), else a message saying why not.
func canonicalInteger(lit string) (string, string) {
	shown := truncate(lit, 40)
	neg := strings.HasPrefix(lit, "-")
	s := strings.TrimPrefix(lit, "-")
	exp := 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e := strings.TrimPrefix(s[i+1:], "+")
		s = s[:i]
		n, err := strconv.Atoi(e)
		if err != nil { // beyond int: clamp, the verdict is the same
			n = 1 << 30
			if strings.HasPrefix(e, "-") {
				n = -n
			}
		}
		exp = max(min(n, 1<<30), -1<<30)
	}
	digits := s
	if i := strings.IndexByte(s, '.'); i >= 0 {
		digits = s[:i] + s[i+1:]
		exp -= len(s) - i - 1
	}
	digits = strings.TrimLeft(digits, "0")
	if digits == "" {
		return "0", ""
	}
	for strings.HasSuffix(digits, "0") {
		digits = digits[:len(digits)-1]
		exp++
	}
	switch {
	case exp < 0:
		return "", fmt.Sprintf("%s is not a whole number: an integer id must be from 0 to %d", shown, MaxIntegerID)
	case neg:
		return "", fmt.Sprintf("%s is negative: an integer id must be from 0 to %d", shown, MaxIntegerID)
	case len(digits)+exp > 16:
		return "", fmt.Sprintf("%s is over %d (2^53-1), the largest integer id: send it as a string", shown, MaxIntegerID)
	}
	n, _ := strconv.ParseUint(digits+strings.Repeat("0", exp), 10, 64)
	if n > MaxIntegerID {
		return "", fmt.Sprintf("%s is over %d (2^53-1), the largest integer id: send it as a string", shown, MaxIntegerID)
	}
	return strconv.FormatUint(n, 10), ""
}

// timestamp reads occurred_at: an RFC 3339 date-time from the year 0002.
func (r *reader) timestamp(path string, v *value) time.Time {
	if v == nil || v.kind == kNull {
		return time.Time{}
	}
	if v.kind != kString {
		r.ps.add(path, "must be an RFC 3339 date-time such as 2026-11-26T09:30:00Z, not %s", v.what())
		return time.Time{}
	}
	t, msg := parseOccurredAt(v.text)
	if msg != "" {
		r.ps.add(path, "%s", msg)
	}
	return t
}

// parseOccurredAt parses s by OccurredAtPattern, or says why it cannot,
// showing the expected form.
func parseOccurredAt(s string) (time.Time, string) {
	if occurredAtPattern.MatchString(s) {
		t, err := parseRFC3339(s)
		if err != nil { // cannot happen: the pattern checked every part
			return time.Time{}, fmt.Sprintf("%q is not an RFC 3339 date-time", truncate(s, 64))
		}
		return t, ""
	}
	shown := strconv.Quote(truncate(s, 64))
	if dateTimePattern.MatchString(s) { // well formed, in the year 0001
		if t, err := parseRFC3339(s); err == nil && t.IsZero() {
			return time.Time{}, fmt.Sprintf("%s is the zero time, not a valid time", s)
		}
		return time.Time{}, fmt.Sprintf("%s lies in the year 0001, next to the zero time: not a valid time", s)
	}
	if len(s) > 10 && s[10] == ' ' { // Python's str(datetime)
		fixed := s[:10] + "T" + s[11:]
		if !dateTimePattern.MatchString(fixed) {
			fixed += "Z"
		}
		if dateTimePattern.MatchString(fixed) {
			return time.Time{}, fmt.Sprintf("%s is not an RFC 3339 date-time: use %s (a T between date and time, and Z or an offset such as +01:00)",
				shown, truncate(fixed, 64))
		}
	}
	if strings.Contains(s, ":60") {
		return time.Time{}, fmt.Sprintf("%s is not accepted: a leap second (:60) is not a valid time here", shown)
	}
	return time.Time{}, fmt.Sprintf("%s is not an RFC 3339 date-time such as 2026-11-26T09:30:00Z or 2026-11-26t10:30:00.123+01:00", shown)
}

// parseRFC3339 parses a date-time that DateTimePattern matches: Go's
// time.Parse wants T and Z in upper case.
func parseRFC3339(s string) (time.Time, error) {
	u := []byte(s)
	if len(u) > 10 && (u[10] == 't' || u[10] == ' ') {
		u[10] = 'T'
	}
	if u[len(u)-1] == 'z' {
		u[len(u)-1] = 'Z'
	}
	// time.Parse reads at most 9 fractional digits: drop the rest, which
	// are below a nanosecond.
	us := string(u)
	if i := strings.IndexByte(us, '.'); i > 0 {
		j := i + 1
		for j < len(us) && us[j] >= '0' && us[j] <= '9' {
			j++
		}
		if j-i-1 > 9 {
			us = us[:i+10] + us[j:]
		}
	}
	return time.Parse(time.RFC3339Nano, us)
}

// date reads change.from or change.to: a date, a date-time, or null.
func (r *reader) date(path string, v *value) *string {
	if v == nil || v.kind == kNull {
		return nil
	}
	if v.kind != kString {
		r.ps.add(path, "must be a date (YYYY-MM-DD), an RFC 3339 date-time or null, not %s", v.what())
		return nil
	}
	s := v.text
	return &s
}
