package headers

import (
	"mime"
	"strings"
	"testing"
)

func TestMustEncode(t *testing.T) {
	for in, want := range map[string]bool{
		"Pour foundation":                       false,
		"a ?= b":                                false,
		"=?UTF-8?q?x=0D=0ABcc:_e@x.example?=":   true,
		"Re: =?x":                               true,
		"Zoë =?utf-8?b?QQ==?=":                  true,
		"=?":                                    true,
		"= ?":                                   false,
		"":                                      false,
		"=?UTF-8?q?Invoice=E2=80=AEgnp.exe?= x": true,
	} {
		if got := MustEncode(in); got != want {
			t.Errorf("MustEncode(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestEncodeWords(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"ascii word forced", "=?x?=", "=?UTF-8?q?=3D=3Fx=3F=3D?="},
		{"space and specials", `a b"(,)<@>`, "=?UTF-8?q?a_b=22=28=2C=29=3C=40=3E?="},
		{"underscore and equals", "_=", "=?UTF-8?q?=5F=3D?="},
		{"non-ASCII", "Zoë", "=?UTF-8?q?Zo=C3=AB?="},
		{"invalid UTF-8", "a\xffb", "=?UTF-8?q?a=EF=BF=BDb?="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EncodeWords(tt.in); got != tt.want {
				t.Errorf("EncodeWords(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// checkEncoded asserts the properties of EncodeWords(s): printable ASCII
// words of at most 75 characters, valid in a phrase, that decode back to s.
func checkEncoded(t *testing.T, s string) {
	t.Helper()
	got := EncodeWords(s)
	if s == "" {
		if got != "" {
			t.Fatalf("EncodeWords(%q) = %q", s, got)
		}
		return
	}
	for _, w := range strings.Split(got, " ") {
		if len(w) > maxWord || !strings.HasPrefix(w, "=?UTF-8?q?") || !strings.HasSuffix(w, "?=") || len(w) == len("=?UTF-8?q??=") {
			t.Fatalf("EncodeWords(%q): bad word %q in %q", s, w, got)
		}
		for i := len("=?UTF-8?q?"); i < len(w)-2; i++ {
			if c := w[i]; !isWordSafe(c) && c != '=' && c != '_' && !(c >= 'A' && c <= 'F') {
				t.Fatalf("EncodeWords(%q): %q in word %q", s, c, w)
			}
		}
	}
	dec, err := new(mime.WordDecoder).DecodeHeader(got)
	want := strings.Map(func(r rune) rune { return r }, s) // each bad byte becomes U+FFFD, as in EncodeWords
	if err != nil || dec != want {
		t.Fatalf("EncodeWords(%q) = %q decodes to %q (%v)", s, got, dec, err)
	}
}

func TestEncodeWordsLong(t *testing.T) {
	for _, s := range []string{
		strings.Repeat("=?UTF-8?q?x?= ", 40),
		strings.Repeat("基礎工事🚧", 50),
		strings.Repeat("a", 200) + "é",
	} {
		checkEncoded(t, s)
	}
}

// FuzzEncodeWords: whatever the text, the words are well-formed and decode
// (with Go's mime.WordDecoder) to exactly that text.
func FuzzEncodeWords(f *testing.F) {
	f.Add("=?UTF-8?q?x=0D=0ABcc:_evil@evil.example=0D=0A?=")
	f.Add("=?UTF-8?q?Invoice=E2=80=AEgnp.exe?=")
	f.Add("Zoë \"x\" =?utf-8?b?QW5uDQo=?= \xff")
	f.Fuzz(func(t *testing.T, s string) {
		checkEncoded(t, s)
	})
}
