package compose

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mailrelay/mailrelay/headers"
)

func TestSnippet(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"empty", "", 280, ""},
		{"only space", " \r\n\t ", 280, ""},
		{"normalized", "  one\r\ntwo\t\tthree\u2028four  ", 280, "one two three four"},
		{"cut at word", "alpha beta gamma delta", 15, "alpha beta…"},
		{"wrapped", strings.Repeat("word ", 20), 280,
			"word word word word word word word word word word word word word word\nword word word word word word"},
		{"long run broken", strings.Repeat("x", 100), 280, strings.Repeat("x", 72) + "\n" + strings.Repeat("x", 28)},
		{"url whole on its line", "see https://example.com/" + strings.Repeat("a/", 40) + " now", 280,
			"see\nhttps://example.com/" + strings.Repeat("a/", 40) + "\nnow"},
		{"url with query, fragment and period", "read https://example.com/" + strings.Repeat("b", 60) + "?q=1&r=(2)#frag. Then", 280,
			"read\nhttps://example.com/" + strings.Repeat("b", 60) + "?q=1&r=(2)#frag.\nThen"},
		{"url in parentheses", "(see <https://en.example.org/wiki/Foo_(" + strings.Repeat("c", 60) + ")>), ok", 280,
			"(see\n<https://en.example.org/wiki/Foo_(" + strings.Repeat("c", 60) + ")>),\nok"},
		{"short url wraps as a word", strings.Repeat("w ", 34) + "https://x.example/a?b=1", 280,
			strings.TrimSpace(strings.Repeat("w ", 34)) + "\nhttps://x.example/a?b=1"},
		{"not a url broken", "xhttps://example.com/" + strings.Repeat("d", 70), 280,
			"xhttps://example.com/" + strings.Repeat("d", 51) + "\n" + strings.Repeat("d", 19)},
		{"wide characters count two", strings.Repeat("基", 40), 280, strings.Repeat("基", 36) + "\n" + strings.Repeat("基", 4)},
		{"combining kept with base", strings.Repeat("x", 71) + "e\u0301" + "yz", 280, strings.Repeat("x", 71) + "\ne\u0301yz"},
		{"invalid UTF-8", "a\xff\xfeb", 280, "a\ufffdb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := snippet(tt.in, tt.max); got != tt.want {
				t.Errorf("snippet(%q, %d) =\n%q\nwant\n%q", tt.in, tt.max, got, tt.want)
			}
		})
	}
}

func TestFinishBody(t *testing.T) {
	link := "https://app.example.com/tasks/" + strings.Repeat("t", 90)
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", ""},
		{"blank only", "\n \n\t\n", ""},
		{"blank lines collapsed and trimmed", "\n\na  \n\n\n\nb\n\n", "a\n\nb\n"},
		{"line endings", "a\r\nb\rc\u2028d\u2029e\vf\fg\u0085h", "a\nb\nc\nd\ne\nf\ng\nh\n"},
		{"controls removed", "a\x00b\x1b[1mc\x7f\u202ed", "ab[1mcd\n"},
		{"tabs expanded", "a\tb\n\tc", "a       b\n        c\n"},
		{"signature kept", "text\n-- \nfooter", "text\n-- \nfooter\n"},
		{"invalid UTF-8", "a\xffb", "a\ufffdb\n"},
		{"long line wrapped", strings.Repeat("word ", 20),
			"word word word word word word word word word word word word word word\nword word word word word word\n"},
		{"quote kept", "> " + strings.Repeat("word ", 20),
			"> word word word word word word word word word word word word word word\n> word word word word word word\n"},
		{"label hanging", "  Task:           " + strings.Repeat("title ", 16),
			"  Task:           title title title title title title title title title\n                  title title title title title title title\n"},
		{"numbered item hanging", "12. " + strings.Repeat("item ", 16),
			"12. item item item item item item item item item item item item item\n    item item item\n"},
		{"not a numbered item", "1234. " + strings.Repeat("item ", 15),
			"1234. item item item item item item item item item item item item item\nitem item\n"},
		{"deep link kept", "Open:\n" + link + "\n", "Open:\n" + link + "\n"},
		{"other URL alone kept", "https://other.example.com/" + strings.Repeat("t", 90),
			"https://other.example.com/" + strings.Repeat("t", 90) + "\n"},
		{"quoted URL kept", "> https://other.example.com/" + strings.Repeat("t", 90) + "#x",
			"> https://other.example.com/" + strings.Repeat("t", 90) + "#x\n"},
		{"URL inside a long line on its own line", "see https://other.example.com/" + strings.Repeat("t", 90) + ", thanks",
			"see\nhttps://other.example.com/" + strings.Repeat("t", 90) + ",\nthanks\n"},
		{"other long run broken", strings.Repeat("Zm9v", 25),
			strings.Repeat("Zm9v", 18) + "\n" + strings.Repeat("Zm9v", 7) + "\n"},
		{"runaway prefix", strings.Repeat(">", 100), strings.Repeat(">", 72) + "\n" + strings.Repeat(">", 28) + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := finishBody([]byte(tt.in), link); got != tt.want {
				t.Errorf("finishBody(%q) =\n%q\nwant\n%q", tt.in, got, tt.want)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"a", "> a"},
		{"a\nb\n", "> a\n> b\n"},
		{"a\n\nb", "> a\n>\n> b"},
	}
	for _, tt := range tests {
		if got := quote(tt.in); got != tt.want {
			t.Errorf("quote(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// checkLines asserts text is valid UTF-8 with lines of at most max runes
// and no control characters.
func checkLines(t *testing.T, text string, max int, except string) {
	t.Helper()
	if !utf8.ValidString(text) {
		t.Fatalf("not valid UTF-8: %q", text)
	}
	for _, line := range strings.Split(text, "\n") {
		if n := utf8.RuneCountInString(line); n > max && (except == "" || strings.TrimSpace(line) != except) && !urlLine(line) {
			t.Errorf("line of %d runes: %q", n, line)
		}
		for _, r := range line {
			if headers.IsControl(r) {
				t.Errorf("control character %U in %q", r, line)
			}
		}
	}
}

// FuzzSnippet checks the snippet and wrap pipeline: bounded, wrapped,
// valid UTF-8, nothing lost but whitespace (and the cut).
func FuzzSnippet(f *testing.F) {
	f.Add("Concrete truck is late, see https://status.example.com/deliveries/2026/11/26/truck-4711?x=1 ok", 280)
	f.Add(strings.Repeat("基礎工事", 100), 500)
	f.Add("e\u0301\u0301\u0301"+strings.Repeat("\u0301", 200), 100)
	f.Add("a\r\nb\x00c\u2028d\t\te", 3)
	f.Add("👩🏽‍🔧👩🏽‍🔧👩🏽‍🔧 \xff\xfe", 0)
	// URLs: query strings, fragments, parentheses, trailing punctuation.
	f.Add("see https://status.example.com/deliveries/2026/11/26/truck-4711?include=eta,driver,route&format=long#eta. ok", 280)
	f.Add("(https://en.example.org/wiki/Foundation_(engineering)_and_a_rather_long_title_here), then <https://x.example/a?b=(c)&d=e#f>!", 500)
	f.Add("'https://example.com/"+strings.Repeat("p/", 60)+"'; \"http://example.com/"+strings.Repeat("q", 90)+"\"?", 500)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max <= 0 || max > MaxSnippetMax {
			max = DefaultSnippetMax
		}
		got := snippet(s, max)
		checkLines(t, got, WrapWidth, "")
		if n := utf8.RuneCountInString(strings.ReplaceAll(got, "\n", "")); n > max {
			t.Errorf("snippet has %d runes, over %d", n, max)
		}
		flat := headers.Sanitize(s, max)
		if strings.ReplaceAll(strings.ReplaceAll(got, "\n", ""), " ", "") != strings.ReplaceAll(flat, " ", "") {
			t.Errorf("wrapping changed the text:\n%q\n%q", got, flat)
		}
	})
}

// FuzzFinishBody feeds arbitrary template output to finishBody.
func FuzzFinishBody(f *testing.F) {
	link := "https://app.example.com/tasks/" + strings.Repeat("t", 80)
	f.Add("Hi,\n\n> " + strings.Repeat("quoted ", 30) + "\n" + link + "\n-- \nfooter")
	f.Add("  Task:           " + strings.Repeat("title ", 30))
	f.Add("\t\t\t" + strings.Repeat("x", 300) + "\r\n\r\n\u2028")
	f.Add(strings.Repeat("> ", 60) + "end")
	f.Add("   12. " + strings.Repeat("headline ", 12) + link)
	f.Fuzz(func(t *testing.T, s string) {
		got := finishBody([]byte(s), link)
		checkLines(t, strings.TrimSuffix(got, "\n"), MaxLine, link)
		if got != "" && (!strings.HasSuffix(got, "\n") || strings.HasPrefix(got, "\n") || strings.Contains(got, "\n\n\n")) {
			t.Errorf("bad blank lines: %q", got)
		}
	})
}
