package compose

import (
	"bytes"
	"strings"
	"unicode/utf8"

	"github.com/mailrelay/mailrelay/headers"
)

// Body and subject bounds, in runes (characters).
const (
	// MaxLine is the longest body line, except the line holding only the
	// deep link.
	MaxLine = 78
	// WrapWidth is the width paragraphs and snippets are wrapped to.
	WrapWidth = 72
	// MaxSubject is the longest subject.
	MaxSubject = 160

	maxNameRunes  = 100 // display names in From and To
	maxTextRunes  = 200 // titles and names given to templates
	maxPrefix     = 40  // longest indent or label kept when re-wrapping
	tabWidth      = 8
	signatureLine = "-- "
)

// snippet returns the comment text body as a bounded, wrapped snippet:
// whitespace normalized, at most max runes (cut at a word boundary with
// "…"), wrapped at WrapWidth columns, long runs broken, lines separated by
// "\n" with no trailing newline.
func snippet(body string, max int) string {
	s := headers.Sanitize(body, max)
	if s == "" {
		return ""
	}
	var b strings.Builder
	b.Grow(len(s) + len(s)/WrapWidth + 1)
	wrap(&b, s, WrapWidth, "", "")
	return strings.TrimSuffix(b.String(), "\n")
}

// wrap writes text (words separated by spaces) to b as lines of at most
// width columns (see columns), each ending in "\n": the first starts with
// first, the others with cont. A word longer than a line is broken across
// lines without splitting a UTF-8 sequence or a character from its
// combining marks, except a URL (isURLWord), which stands whole on a line of
// its own so that mail clients link all of it (contract §9.4). Callers keep
// the prefixes well below width.
func wrap(b *strings.Builder, text string, width int, first, cont string) {
	prefix := first
	avail := width - columns(prefix)
	contAvail := width - columns(cont)
	lineLen := -1 // runes on the current line after the prefix; -1: none yet
	for {
		text = strings.TrimLeft(text, " ")
		if text == "" {
			break
		}
		end := strings.IndexByte(text, ' ')
		if end < 0 {
			end = len(text)
		}
		word := text[:end]
		text = text[end:]
		wl := columns(word)
		if lineLen >= 0 {
			if lineLen+1+wl <= avail {
				b.WriteByte(' ')
				b.WriteString(word)
				lineLen += 1 + wl
				continue
			}
			b.WriteByte('\n')
			prefix, avail = cont, contAvail
		}
		if wl > avail && isURLWord(word) {
			b.WriteString(prefix)
			b.WriteString(word)
			b.WriteByte('\n')
			prefix, avail = cont, contAvail
			lineLen = -1 // what follows starts a new line
			continue
		}
		for wl > avail {
			i := cutColumns(word, avail)
			b.WriteString(prefix)
			b.WriteString(word[:i])
			b.WriteByte('\n')
			wl -= columns(word[:i])
			word = word[i:]
			prefix, avail = cont, contAvail
		}
		b.WriteString(prefix)
		b.WriteString(word)
		lineLen = wl
	}
	if lineLen >= 0 {
		b.WriteByte('\n')
	}
}

// urlOpeners is the opening punctuation that may come before a URL word.
const urlOpeners = "(<[\"'«“‘"

// isURLWord reports whether word (no spaces) is a web address, possibly
// wrapped in opening punctuation ("(", "<", quotes) and followed by closing
// punctuation: such a word is never broken across lines.
func isURLWord(word string) bool {
	w := strings.TrimLeft(word, urlOpeners)
	return len(w) > len("https://") && (hasPrefixFold(w, "https://") || hasPrefixFold(w, "http://"))
}

// urlLine reports whether line holds one URL word and nothing else but a
// leading indent or quote marks ("> "): such a line may exceed MaxLine.
func urlLine(line string) bool {
	w := strings.TrimLeft(line, " >")
	return w != "" && !strings.Contains(w, " ") && isURLWord(w)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// finishBody turns what a body template rendered into the body of the
// mail, whatever the template did: valid UTF-8; lines separated by "\n"
// (CR, CRLF, VT, FF, NEL, U+2028 and U+2029 all end a line); TABs expanded;
// other control characters and the invisible and bidi characters of
// headers.IsControl removed (the joiners ZWNJ and ZWJ, harmless, stay);
// trailing spaces trimmed (except on the
// "-- " signature line); leading, trailing and repeated blank lines
// dropped; every line longer than MaxLine re-wrapped at WrapWidth, keeping
// its indent, quote marks, label alignment or numbered-item indent on the
// continuation lines, except a line that holds only link or only one URL
// (urlLine); a URL inside a re-wrapped line stays whole on a line of its
// own. The body ends with "\n"; it is "" when the template rendered nothing
// visible.
func finishBody(raw []byte, link string) string {
	var b strings.Builder
	b.Grow(len(raw) + len(raw)/32)
	var scratch []byte
	wrote, blank := false, false
	for len(raw) > 0 {
		line, rest := nextLine(raw)
		raw = rest
		if !simple(line) {
			scratch = cleanLine(scratch[:0], line)
			line = scratch
		}
		if len(line) == 0 {
			blank = wrote
			continue
		}
		if blank {
			b.WriteByte('\n')
			blank = false
		}
		wrote = true
		if len(line) <= MaxLine || columns(string(line)) <= MaxLine ||
			(link != "" && string(bytes.TrimSpace(line)) == link) || urlLine(string(line)) {
			b.Write(line)
			b.WriteByte('\n')
			continue
		}
		rewrap(&b, string(line))
	}
	return b.String()
}

// nextLine splits off the first line of raw and returns it without its
// terminator, and what follows the terminator.
func nextLine(raw []byte) (line, rest []byte) {
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '\n', c == '\v', c == '\f':
			return raw[:i], raw[i+1:]
		case c == '\r':
			if i+1 < len(raw) && raw[i+1] == '\n' {
				return raw[:i], raw[i+2:]
			}
			return raw[:i], raw[i+1:]
		case c == 0xc2 && i+1 < len(raw) && raw[i+1] == 0x85: // NEL
			return raw[:i], raw[i+2:]
		case c == 0xe2 && i+2 < len(raw) && raw[i+1] == 0x80 && (raw[i+2] == 0xa8 || raw[i+2] == 0xa9): // U+2028, U+2029
			return raw[:i], raw[i+3:]
		}
	}
	return raw, nil
}

// simple reports whether line needs no cleaning: printable ASCII with no
// trailing space.
func simple(line []byte) bool {
	for _, c := range line {
		if c < ' ' || c >= 0x7f {
			return false
		}
	}
	return len(line) == 0 || line[len(line)-1] != ' '
}

// cleanLine appends line to dst with invalid UTF-8 replaced by U+FFFD, TABs
// expanded to the next multiple of 8 columns, control and invisible
// formatting characters (headers.IsControl: bidi controls, zero width space,
// tags, … but not the joiners) removed and trailing spaces trimmed (except on
// the signature line "-- ").
func cleanLine(dst, line []byte) []byte {
	col := 0
	for i := 0; i < len(line); {
		r, size := utf8.DecodeRune(line[i:])
		i += size
		switch {
		case r == '\t':
			for n := tabWidth - col%tabWidth; n > 0; n-- {
				dst = append(dst, ' ')
				col++
			}
			continue
		case r == utf8.RuneError && size == 1:
			r = utf8.RuneError
		case headers.IsControl(r):
			continue
		}
		dst = utf8.AppendRune(dst, r)
		col++
	}
	if string(dst) == signatureLine {
		return dst
	}
	for len(dst) > 0 && dst[len(dst)-1] == ' ' {
		dst = dst[:len(dst)-1]
	}
	return dst
}

// rewrap writes the over-long line s to b wrapped at WrapWidth. The
// continuation lines repeat its leading indent and quote marks ("> "), or,
// for a numbered item ("2. text") or a "Label:  value" row, are indented
// to the text or the value.
func rewrap(b *strings.Builder, s string) {
	n := 0
	for n < len(s) && (s[n] == ' ' || s[n] == '>') {
		n++
	}
	first, cont, text := s[:n], s[:n], s[n:]
	if !strings.Contains(first, ">") {
		if m := listMarker(text); m > 0 {
			// "12. item": hang continuation lines under the item.
			first, text = s[:n+m], text[m:]
			cont = strings.Repeat(" ", columns(first))
		} else if i := strings.Index(text, ":  "); i > 0 && i < maxPrefix && !strings.Contains(text[:i], ": ") {
			// "Label:  value": hang continuation lines under the value.
			j := i + 1
			for j < len(text) && text[j] == ' ' {
				j++
			}
			first = s[:n+j]
			text = text[j:]
			cont = strings.Repeat(" ", columns(first))
		}
	}
	if columns(first) > maxPrefix || columns(cont) > maxPrefix {
		first, cont, text = "", "", s
	}
	wrap(b, text, WrapWidth, first, cont)
}

// listMarker returns the length of the number that starts a numbered list
// item ("12. ", one to three digits, a dot and a space), 0 when text does
// not start with one.
func listMarker(text string) int {
	i := 0
	for i < len(text) && i < 3 && text[i] >= '0' && text[i] <= '9' {
		i++
	}
	if i == 0 || !strings.HasPrefix(text[i:], ". ") {
		return 0
	}
	return i + 2
}

// columns is the display width of s as wrapping counts it: one column per
// rune, two for an East Asian wide or fullwidth character (CJK, Hangul,
// kana, fullwidth forms, most emoji). It is never less than the number of
// runes, so a line within width columns is within width runes too.
func columns(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return n + wideColumns(s[i:])
		}
		n++
	}
	return n
}

func wideColumns(s string) int {
	n := 0
	for _, r := range s {
		n += runeColumns(r)
	}
	return n
}

// runeColumns is 2 for a wide character, else 1.
func runeColumns(r rune) int {
	if r < 0x1100 {
		return 1
	}
	switch {
	case r <= 0x115f, // Hangul Jamo initials
		r >= 0x2e80 && r <= 0x303e, // CJK radicals, punctuation
		r >= 0x3041 && r <= 0x33ff, // kana, CJK compatibility
		r >= 0x3400 && r <= 0x4dbf, // CJK extension A
		r >= 0x4e00 && r <= 0x9fff, // CJK unified ideographs
		r >= 0xa000 && r <= 0xa4cf, // Yi
		r >= 0xac00 && r <= 0xd7a3, // Hangul syllables
		r >= 0xf900 && r <= 0xfaff, // CJK compatibility ideographs
		r >= 0xfe30 && r <= 0xfe4f, // CJK compatibility forms
		r >= 0xff00 && r <= 0xff60, // fullwidth forms
		r >= 0xffe0 && r <= 0xffe6,
		r >= 0x1f300 && r <= 0x1f64f, // pictographs, emoticons
		r >= 0x1f900 && r <= 0x1f9ff, // supplemental pictographs
		r >= 0x20000 && r <= 0x3fffd: // CJK extensions B…
		return 2
	}
	return 1
}

// cutColumns returns the byte index in s after the runes that fit in cols
// columns (at least one rune), moved back so as not to split a character
// from its combining marks (see headers.CutIndex).
func cutColumns(s string, cols int) int {
	n, w := 0, 0
	for _, r := range s {
		if w += runeColumns(r); w > cols && n > 0 {
			break
		}
		n++
	}
	return headers.CutIndex(s, n)
}
