package compose

import (
	"strings"
	"testing"
)

// checkBatchLinks asserts that the body holds the deep link of every
// section whole, on a line of its own.
func checkBatchLinks(t testing.TB, m *Message, base string, sections []Section) {
	t.Helper()
	if base == "" {
		return
	}
	for i, sec := range sections {
		link := deepLink(base, sec.Events[0].Task.ID)
		if !strings.Contains("\n"+m.Body, "\n"+link+"\n") {
			t.Errorf("section %d: body lacks the deep link %q on a line of its own:\n%s", i+1, link, m.Body)
		}
	}
}
