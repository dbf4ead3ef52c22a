package headers

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Ellipsis ends a value that Sanitize cut short.
const Ellipsis = "…"

// Sanitize returns s as one line of plain text, safe for any header value
// once SanitizeHeader's extra rule is applied, and the form event text takes
// in the body:
//
//   - invalid UTF-8 is replaced by U+FFFD (one per run of bad bytes);
//   - whitespace of every kind (space, TAB, CR, LF, VT, FF, NEL, NBSP, the
//     Unicode line and paragraph separators U+2028/U+2029, …) becomes a
//     space, runs of it collapse into one and the ends are trimmed;
//   - every other control character (C0 incl. NUL, DEL, C1) and every
//     invisible or bidi formatting character of IsInvisible except the two
//     joiners (IsJoiner) is removed.
//
// When maxRunes > 0 and the result is longer than maxRunes runes, it is cut
// at a word boundary (or, for a run without spaces, at a rune that does not
// split a base character from its combining marks) and ends with Ellipsis;
// the whole, ellipsis included, is then at most maxRunes runes. maxRunes <= 0
// means no limit.
//
// The result never holds a CR, LF or any other control character, and is
// always valid UTF-8.
func Sanitize(s string, maxRunes int) string { return sanitize(s, maxRunes, false) }

// SanitizeHeader is Sanitize with the joiners removed too, so that no
// character of IsInvisible is left: the rule for every header value made of
// event text (Subject, display names). A value it returns may still hold
// "=?"; the transport encodes such a value (see MustEncode).
func SanitizeHeader(s string, maxRunes int) string { return sanitize(s, maxRunes, true) }

func sanitize(s string, maxRunes int, dropJoiners bool) string {
	if (maxRunes <= 0 || len(s) <= maxRunes) && isClean(s) {
		return s
	}
	// Only the first maxRunes runes (and whether more follow) matter.
	limit := -1
	if maxRunes > 0 {
		limit = maxRunes + 1
	}
	var b strings.Builder
	if maxRunes > 0 && len(s) > 4*(maxRunes+1) {
		b.Grow(4 * (maxRunes + 1))
	} else {
		b.Grow(len(s))
	}
	n := 0
	space, bad := false, false
	for i := 0; i < len(s) && n != limit; {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r == utf8.RuneError && size == 1 {
			if bad {
				continue
			}
			bad = true
		} else {
			bad = false
		}
		switch {
		case IsSpace(r):
			space = true
			bad = false
			continue
		case IsControl(r), dropJoiners && IsJoiner(r):
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
			n++
			if n == limit {
				break
			}
		}
		space = false
		b.WriteRune(r)
		n++
	}
	out := strings.TrimRight(b.String(), " ")
	if maxRunes > 0 && n > maxRunes {
		return truncate(out, maxRunes)
	}
	return out
}

// IsSpace reports whether Sanitize treats r as whitespace (turned into one
// space): unicode.IsSpace, which covers TAB, CR, LF, VT, FF, NEL, NBSP and
// U+2028/U+2029.
func IsSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return r == ' ' || (r >= '\t' && r <= '\r')
	}
	return unicode.IsSpace(r)
}

// IsControl reports whether r is a control or invisible formatting
// character that never appears in the output of Sanitize, nor in a body
// line: C0 controls (NUL, TAB, LF, CR, …), DEL, C1 controls (NEL, …), the
// line and paragraph separators U+2028/U+2029, the non-characters
// U+FFFE/U+FFFF and every character of IsInvisible except the joiners.
// (Sanitize turns those that are whitespace into a space and drops the
// others.)
func IsControl(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r < 0xa0:
		return true
	case r == 0x2028, r == 0x2029:
		return true
	case r == 0xfffe, r == 0xffff:
		return true
	}
	return IsInvisible(r) && !IsJoiner(r)
}

// IsInvisible reports whether r is one of the invisible or bidi formatting
// characters, the one set removed from every header value (SanitizeHeader):
// the Arabic letter mark U+061C, U+200B–U+200F (zero width space,
// non-joiner and joiner, LRM, RLM), the bidi embeddings and overrides
// U+202A–U+202E, U+2060–U+2069 (word joiner, invisible operators, bidi
// isolates), the byte order mark U+FEFF and the tag block U+E0000–U+E007F.
// They can hide text, reorder what a reader sees (an "exe" shown as "gnp")
// or make an empty-looking name; none carries meaning in a subject or a
// display name.
func IsInvisible(r rune) bool {
	switch {
	case r < 0x61c:
		return false
	case r == 0x61c,
		r >= 0x200b && r <= 0x200f,
		r >= 0x202a && r <= 0x202e,
		r >= 0x2060 && r <= 0x2069,
		r == 0xfeff,
		r >= 0xe0000 && r <= 0xe007f:
		return true
	}
	return false
}

// IsJoiner reports whether r is the zero width non-joiner U+200C or joiner
// U+200D: the only characters of IsInvisible that body text keeps. They
// change how their neighbours join (Persian and Indic words, emoji
// sequences such as 👩‍🔧), never the order of the text or what it says.
func IsJoiner(r rune) bool { return r == 0x200c || r == zwj }

// isClean reports whether s is already what Sanitize would make of it when
// no cut is needed: printable ASCII, no leading, trailing or double space.
func isClean(s string) bool {
	prevSpace := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ':
			if prevSpace {
				return false
			}
			prevSpace = true
		case c > ' ' && c < 0x7f:
			prevSpace = false
		default:
			return false
		}
	}
	return !prevSpace || s == ""
}

// truncate cuts the single-line text s (already sanitized, longer than max
// runes) to at most max runes, Ellipsis included, preferring a word
// boundary.
func truncate(s string, max int) string {
	keep := max - 1
	if keep <= 0 {
		return Ellipsis
	}
	end := CutIndex(s, keep)
	cut := end
	if end < len(s) && s[end] != ' ' {
		// Back to the last space, unless that loses more than half.
		if sp := strings.LastIndexByte(s[:end], ' '); sp > 0 && utf8.RuneCountInString(s[:sp]) >= keep/2 {
			cut = sp
		}
	}
	return strings.TrimRight(s[:cut], " ") + Ellipsis
}

// CutIndex returns the byte index in s after at most n runes (n >= 1),
// moved back when needed so that a base character is not separated from the
// combining marks, joiners, variation selectors or emoji modifiers that
// follow it. When the whole of the first n runes is one such cluster it
// cuts after n runes anyway, so the result always advances by at least one
// rune when s is not empty. It never splits a UTF-8 sequence.
func CutIndex(s string, n int) int {
	i := 0
	for k := 0; k < n && i < len(s); k++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	if i >= len(s) {
		return len(s)
	}
	j := i
	for j > 0 {
		next, _ := utf8.DecodeRuneInString(s[j:])
		prev, size := utf8.DecodeLastRuneInString(s[:j])
		if !Extends(next) && prev != zwj {
			break
		}
		j -= size
	}
	if j == 0 {
		return i
	}
	return j
}

const zwj = '\u200d'

// Extends reports whether r belongs to the character before it, so that a
// line must not be broken in front of it: combining marks (Mn, Me, Mc), the
// zero width joiner, variation selectors, emoji skin-tone modifiers and tag
// characters.
func Extends(r rune) bool {
	switch {
	case r < 0x300:
		return false
	case r == zwj,
		r >= 0xfe00 && r <= 0xfe0f,
		r >= 0x1f3fb && r <= 0x1f3ff,
		r >= 0xe0020 && r <= 0xe007f,
		r >= 0xe0100 && r <= 0xe01ef:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Mc)
}
