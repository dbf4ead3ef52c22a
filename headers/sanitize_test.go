package headers

import (
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"testing/quick"
	"unicode/utf8"
)

func TestSanitize(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"empty", "", 10, ""},
		{"clean unchanged", "Pour foundation", 0, "Pour foundation"},
		{"CRLF header injection", "Hi\r\nBcc: victim@example.com", 0, "Hi Bcc: victim@example.com"},
		{"whitespace collapsed and trimmed", " \t a \n\n b\u00a0\u3000c \r", 0, "a b c"},
		{"line and paragraph separators", "a\u2028b\u2029c\u0085d", 0, "a b c d"},
		{"controls removed", "a\x00b\x07c\x1b[0m\x7fd\u009be", 0, "abc[0mde"},
		{"bidi and BOM removed", "\ufeffabc\u202edef\u2066g\u2069", 0, "abcdefg"},
		{"invalid UTF-8 replaced once per run", "a\xff\xfe\xfdb\xc3", 0, "a\ufffdb\ufffd"},
		{"fits exactly", "alpha beta", 10, "alpha beta"},
		{"cut at word", "alpha beta gamma", 12, "alpha beta…"},
		{"cut at word end", "alpha beta gamma", 11, "alpha beta…"},
		{"cut long word", "abcdefghijklmnop", 6, "abcde…"},
		{"cut prefers the word unless it loses half", "a bcdefghijklmnop", 10, "a bcdefgh…"},
		{"cut counts runes", "ééééé ééééé", 8, "ééééé…"},
		{"cut keeps combining marks", "abcde\u0301fgh", 6, "abcd…"},
		{"cut wide", "基礎工事基礎工事", 5, "基礎工事…"},
		{"max one", "abc", 1, "…"},
		{"max counts after cleaning", "a\r\n\r\n\r\nb", 3, "a b"},
		{"emoji sequence kept whole", "ab👩🏽\u200d🔧cd", 5, "ab…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Sanitize(tt.in, tt.max); got != tt.want {
				t.Errorf("Sanitize(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
			}
		})
	}
}

func TestCutIndex(t *testing.T) {
	tests := []struct {
		name string
		in   string
		n    int
		want int
	}{
		{"ascii", "abcdef", 3, 3},
		{"whole", "abc", 5, 3},
		{"multi-byte", "éé", 1, 2},
		{"before combining mark", "abe\u0301", 3, 2},
		{"not after a joiner", "xa\u200db", 3, 1},
		{"all one cluster", "e\u0301\u0301\u0301", 2, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CutIndex(tt.in, tt.n); got != tt.want {
				t.Errorf("CutIndex(%q, %d) = %d, want %d", tt.in, tt.n, got, tt.want)
			}
		})
	}
}

// checkSanitized asserts the properties of every Sanitize result.
func checkSanitized(t *testing.T, in string, max int, got string) {
	t.Helper()
	if !utf8.ValidString(got) {
		t.Fatalf("Sanitize(%q, %d) = %q: not valid UTF-8", in, max, got)
	}
	for _, r := range got {
		if IsControl(r) || (IsSpace(r) && r != ' ') {
			t.Fatalf("Sanitize(%q, %d) = %q holds %U", in, max, got, r)
		}
	}
	if strings.Contains(got, "  ") || strings.TrimSpace(got) != got {
		t.Fatalf("Sanitize(%q, %d) = %q: whitespace not collapsed", in, max, got)
	}
	if n := utf8.RuneCountInString(got); max > 0 && n > max {
		t.Fatalf("Sanitize(%q, %d) = %q: %d runes", in, max, got, n)
	}
	if again := Sanitize(got, max); again != got {
		t.Fatalf("Sanitize is not idempotent: %q then %q", got, again)
	}
	if max <= 0 && got != Sanitize(in, 0) {
		t.Fatalf("not deterministic")
	}
}

// nastyString generates strings rich in what Sanitize must remove.
type nastyString string

// Generate picks runes from control characters, separators, marks, wide
// characters, invalid bytes and plain letters.
func (nastyString) Generate(r *rand.Rand, size int) reflect.Value {
	pieces := []string{"\r", "\n", "\r\n", "\t", "\x00", "\x1b", "\x7f", "\u0085", "\u009b", "\u2028", "\u2029",
		"\u202e", "\u2066", "\ufeff", "\u00a0", "\u3000", " ", "  ", "\xff", "\xc3", "\u0301", "\u200d", "é", "基", "🚧",
		"a", "bc", "def", "Bcc:", "<", ">", "\"", "\\"}
	var b strings.Builder
	for n := r.Intn(size + 1); n > 0; n-- {
		b.WriteString(pieces[r.Intn(len(pieces))])
	}
	return reflect.ValueOf(nastyString(b.String()))
}

// TestSanitizeProperty: whatever the input, the result has no CR, LF or
// other control character, is valid UTF-8, collapsed and within bounds.
func TestSanitizeProperty(t *testing.T) {
	cfg := &quick.Config{MaxCount: 5000, Rand: rand.New(rand.NewSource(1))}
	err := quick.Check(func(s nastyString, max uint8) bool {
		got := Sanitize(string(s), int(max))
		checkSanitized(t, string(s), int(max), got)
		return !strings.ContainsAny(got, "\r\n")
	}, cfg)
	if err != nil {
		t.Error(err)
	}
}

// FuzzSanitize checks the properties of Sanitize on arbitrary input.
func FuzzSanitize(f *testing.F) {
	f.Add("Hi\r\nBcc: victim@example.com", 0)
	f.Add("alpha beta gamma", 12)
	f.Add("e\u0301\u0301\u0301\u0301 \u2028\u2029\x00\xff", 3)
	f.Add(strings.Repeat("基礎工事 ", 100), 160)
	f.Add("=?UTF-8?q?Invoice=E2=80=AEgnp.exe?=\u200b\u200d\u061c\U000E0041", 0)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max > 1<<20 {
			max = 1 << 20
		}
		checkSanitized(t, s, max, Sanitize(s, max))
		// SanitizeHeader: the same properties, and no invisible at all.
		h := SanitizeHeader(s, max)
		for _, r := range h {
			if IsControl(r) || IsInvisible(r) || (IsSpace(r) && r != ' ') {
				t.Fatalf("SanitizeHeader(%q, %d) = %q holds %U", s, max, h, r)
			}
		}
		if !utf8.ValidString(h) || strings.Contains(h, "  ") || strings.TrimSpace(h) != h ||
			(max > 0 && utf8.RuneCountInString(h) > max) || SanitizeHeader(h, max) != h {
			t.Fatalf("SanitizeHeader(%q, %d) = %q: not valid, collapsed, bounded and idempotent", s, max, h)
		}
	})
}

func BenchmarkSanitize(b *testing.B) {
	cases := map[string]string{
		"clean": "Pour foundation",
		"dirty": "Pour\r\n foundation\t\x00 — 基礎工事",
		"long":  strings.Repeat("Concrete truck is late. ", 3000),
	}
	for name, s := range cases {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Sanitize(s, 280)
			}
		})
	}
}

func TestSanitizeHeader(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"zero width and marks", "a\u200bb\u200cc\u200dd\u200ee\u200ff", "abcdef"},
		{"arabic letter mark", "a\u061cb", "ab"},
		{"bidi overrides and isolates", "Invoice\u202egnp.exe\u202a\u2066x\u2067\u2068\u2069", "Invoicegnp.exex"},
		{"word joiner and invisible operators", "a\u2060b\u2061\u2062\u2063\u2064\u2065c", "abc"},
		{"BOM", "\ufeffa", "a"},
		{"tag block", "a\U000E0000\U000E0041\U000E007Fb", "ab"},
		{"emoji sequence loses its joiner", "👩🏽\u200d🔧", "👩🏽🔧"},
		{"joiner between spaces", "a \u200d b", "a b"},
		{"only invisible", "\u200b\u200d\U000E0041", ""},
		{"encoded-word kept as text", "=?UTF-8?q?x=0D=0A?=", "=?UTF-8?q?x=0D=0A?="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SanitizeHeader(tt.in, 0); got != tt.want {
				t.Errorf("SanitizeHeader(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	// The body's rule: the same, but the joiners stay.
	if got := Sanitize("a\u200bb\u200cc\u200dd\u061ce\U000E0041", 0); got != "ab\u200cc\u200dde" {
		t.Errorf("Sanitize keeps %q, want only the joiners kept", got)
	}
}

// TestInvisibleSet: IsInvisible is exactly the set of the contract (§5),
// and IsControl holds all of it but the two joiners.
func TestInvisibleSet(t *testing.T) {
	in := func(r rune) bool {
		return r == 0x61c || r >= 0x200b && r <= 0x200f || r >= 0x202a && r <= 0x202e ||
			r >= 0x2060 && r <= 0x2069 || r == 0xfeff || r >= 0xe0000 && r <= 0xe007f
	}
	for r := rune(0); r <= 0x10ffff; r++ {
		if IsInvisible(r) != in(r) {
			t.Errorf("IsInvisible(%U) = %v", r, IsInvisible(r))
		}
		if in(r) && IsControl(r) == IsJoiner(r) {
			t.Errorf("IsControl(%U) = %v, IsJoiner %v", r, IsControl(r), IsJoiner(r))
		}
	}
}
