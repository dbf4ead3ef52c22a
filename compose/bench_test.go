package compose

import (
	"testing"

	"github.com/mailrelay/mailrelay/event"
)

// BenchmarkCompose measures one Compose per type, with the golden event
// (ASCII, every name given, base URL set).
func BenchmarkCompose(b *testing.B) {
	tpl, err := LoadTemplates("")
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{From: Address{Name: "Acme", Email: "notify@example.com"}, BaseURL: "https://app.example.com", Templates: tpl}
	for _, typ := range event.Types {
		ev := goldenEvent(typ, true, asciiTexts)
		b.Run(string(typ), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compose(ev, cfg, goldenNow); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSnippet measures the snippet of a long comment.
func BenchmarkSnippet(b *testing.B) {
	body := goldenEvent(event.TaskComment, true, utf8Texts).Comment.Body
	b.ReportAllocs()
	for b.Loop() {
		snippet(body, MaxSnippetMax)
	}
}
