package headers

import (
	"strings"
	"unicode/utf8"
)

// MustEncode reports whether a header value made of event text has to be
// written as RFC 2047 encoded-words even when it is plain ASCII: it holds
// "=?", the start of an encoded-word. Written raw, text shaped like
// "=?UTF-8?q?x=0D=0ABcc:_evil@evil.example?=" would be decoded by the reader
// into a CR, LF, fake field or bidi control that Sanitize removed. Encoded,
// it is decoded once and shows literally (RFC 2047 §5).
func MustEncode(s string) bool { return strings.Contains(s, "=?") }

// maxWord is the longest encoded-word (RFC 2047 §2).
const maxWord = 75

// EncodeWords returns s as UTF-8 "Q" encoded-words separated by single
// spaces, whatever s holds: the encoding MustEncode asks for. Only letters,
// digits and "!*+-/" stay as they are, a space becomes "_", every other
// byte "=XX", so each word is valid in a Subject and in a display name
// (RFC 2047 §5 (1) and (3)). Words are at most 75 characters long and
// never split a UTF-8 sequence; a reader drops the spaces between them
// (§6.2), so decoding gives back s exactly. The result is printable ASCII
// with no CR or LF; "" stays "". Invalid UTF-8 is written as U+FFFD.
func EncodeWords(s string) string {
	if s == "" {
		return "" // an encoded-word may not be empty
	}
	const (
		open      = "=?UTF-8?q?"
		end       = "?="
		hexDigits = "0123456789ABCDEF"
	)
	var b strings.Builder
	b.Grow(3*len(s) + len(s)/16*(len(open)+len(end)+1) + len(open) + len(end))
	b.WriteString(open)
	n := len(open) // length of the current word so far
	var buf [utf8.UTFMax]byte
	for _, r := range s { // a range over a string turns invalid bytes into U+FFFD
		enc := buf[:utf8.EncodeRune(buf[:], r)]
		size := 3 * len(enc)
		if len(enc) == 1 && (isWordSafe(enc[0]) || enc[0] == ' ') {
			size = 1
		}
		if n+size+len(end) > maxWord && n > len(open) {
			b.WriteString(end + " " + open)
			n = len(open)
		}
		for _, c := range enc {
			switch {
			case c == ' ':
				b.WriteByte('_')
			case size == 1:
				b.WriteByte(c)
			default:
				b.WriteByte('=')
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xf])
			}
		}
		n += size
	}
	b.WriteString(end)
	return b.String()
}

// isWordSafe reports whether c may stand for itself in a "Q" encoded-word
// inside a phrase (RFC 2047 §5 (3)), which is also safe in a Subject.
func isWordSafe(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '!' || c == '*' || c == '+' || c == '-' || c == '/'
}
