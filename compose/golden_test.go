package compose

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// goldenNow is the sending time of every golden mail.
var goldenNow = time.Date(2026, 11, 26, 9, 31, 0, 0, time.UTC)

// texts are the free-text fields of a golden event.
type texts struct {
	workspace, recipient, actor, title, project, comment, blocker string
}

var (
	asciiTexts = texts{
		workspace: "Acme Build",
		recipient: "Ann Lee",
		actor:     "Bob Stone",
		title:     "Pour foundation",
		project:   "HQ",
		comment: "Concrete truck is late, see https://status.example.com/deliveries/2026/11/26/truck-4711?include=eta,driver,route&format=long for details.\n\n" +
			"We should move the pour to Thursday.\tThe crew is\r\nbooked anyway.",
		blocker: "Site survey",
	}
	utf8Texts = texts{
		workspace: "Bâtiment Nord — Zürich",
		recipient: "Zoë Ångström",
		actor:     "José Núñez",
		title:     "Fondations coulées 基礎工事 🚧",
		project:   "Tōkyō HQ",
		comment: "Le camion de béton est en retard 🚚… Cafe\u0301 fermé.\n" +
			"基礎工事の開始は木曜日に延期します。作業員の手配は済んでいますので、天候が良ければ予定通り進められます。よろしくお願いします。\u2028" +
			"👩🏽‍🔧 dit : « on verra ».",
		blocker: "Étude du terrain",
	}
)

// goldenEvent builds the event of one golden case.
func goldenEvent(typ event.Type, names bool, tx texts) *event.Event {
	from, to := "2026-12-01", "2026-12-05"
	ev := &event.Event{
		ID:         "01JD3N6Q9W4ZK2V8X5T7R1M0PA",
		Type:       typ,
		OccurredAt: time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC),
		Recipient:  event.Recipient{ID: "u42", Email: "ann@example.com"},
		Task:       event.Task{ID: "t-1001", Title: tx.title},
	}
	switch typ {
	case event.TaskComment, event.Mention:
		ev.Comment = &event.Comment{ID: "c9", Body: tx.comment}
	case event.TaskDateChanged:
		ev.Change = &event.Change{Field: "planned_end", From: &from, To: &to}
	}
	if !names {
		if ev.Change != nil {
			ev.Change = &event.Change{Field: "planned_start", To: &to}
		}
		return ev
	}
	ev.Workspace = &event.Workspace{ID: "w1", Name: tx.workspace}
	ev.Recipient.Name = tx.recipient
	ev.Actor = &event.Actor{ID: "u7", Name: tx.actor}
	ev.Task.Project = tx.project
	if typ == event.TaskBlocked {
		ev.BlockedBy = &event.TaskRef{ID: "t-0999", Title: tx.blocker}
	}
	return ev
}

// deepLink is the link Compose must put in the body, "" without base.
func deepLink(base, taskID string) string {
	if base == "" {
		return ""
	}
	return strings.TrimRight(base, "/") + "/tasks/" + url.PathEscape(taskID)
}

// TestGolden composes every type × {base URL set, unset} × {names present,
// absent} × {ASCII, non-ASCII} and compares the rendered mail with
// testdata/golden/*.eml. Run with -update to rewrite them.
func TestGolden(t *testing.T) {
	for _, typ := range event.Types {
		for _, base := range []string{"https://app.example.com/", ""} {
			for _, names := range []bool{true, false} {
				for _, charset := range []string{"ascii", "utf8"} {
					name := fmt.Sprintf("%s_%s_%s_%s", typ, map[bool]string{true: "base", false: "nobase"}[base != ""],
						map[bool]string{true: "names", false: "nonames"}[names], charset)
					t.Run(name, func(t *testing.T) {
						tx := asciiTexts
						if charset == "utf8" {
							tx = utf8Texts
						}
						cfg := Config{From: Address{Name: "Acme Notifications", Email: "notify@example.com"}, BaseURL: base}
						ev := goldenEvent(typ, names, tx)
						m, err := Compose(ev, cfg, goldenNow)
						if err != nil {
							t.Fatalf("Compose: %v", err)
						}
						checkMessage(t, m, deepLink(base, ev.Task.ID))
						compareGolden(t, filepath.Join("testdata", "golden", name+".eml"), renderMail(m))
					})
				}
			}
		}
	}
}

// compareGolden compares got with the file at path, or writes it with
// -update.
func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run go test -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
