package event_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/mailrelay/mailrelay/event"
)

const valid = `{"id":"01JD3N6Q9W4ZK2V8X5T7R1M0PA","type":"task.comment","occurred_at":"2026-11-26T09:30:00Z",
"workspace":{"id":"w1","name":"Acme Build"},"recipient":{"id":"u42","email":"ann@example.com","name":"Ann Lee"},
"actor":{"id":"u7","name":"Bob Stone"},"task":{"id":"t-1001","title":"Pour foundation","project":"HQ"},
"comment":{"id":"c9","body":"Concrete truck is late"}}`

func mutate(t *testing.T, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(valid), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecode(t *testing.T) {
	cases := []struct {
		name    string
		subject string
		data    func(t *testing.T) []byte
		wantErr string // "" = valid
		noID    bool   // the id cannot be recovered from this invalid event
	}{
		{name: "valid", subject: "notify.task.comment", data: func(*testing.T) []byte { return []byte(valid) }},
		{name: "no subject check", data: func(*testing.T) []byte { return []byte(valid) }},
		{name: "wrong subject", subject: "notify.mention", data: func(*testing.T) []byte { return []byte(valid) }, wantErr: "does not match subject"},
		{name: "not JSON", data: func(*testing.T) []byte { return []byte("hello") }, wantErr: "not valid JSON", noID: true},
		{name: "trailing data", data: func(*testing.T) []byte { return []byte(valid + "{}") }, wantErr: "trailing", noID: true},
		{name: "not UTF-8", data: func(*testing.T) []byte { return []byte("{\"id\":\"\xff\"}") }, wantErr: "UTF-8", noID: true},
		{name: "not UTF-8 in the body, usable id", data: func(*testing.T) []byte {
			return []byte(strings.Replace(valid, `"body":"`, "\"body\":\"\xff", 1))
		}, wantErr: "UTF-8"},
		{name: "bad from and to: change.from is named", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) {
				m["type"] = "task.date_changed"
				delete(m, "comment")
				m["change"] = map[string]any{"field": "planned_end", "from": "soon", "to": "later"}
			})
		}, wantErr: "change.from must be a date"},
		{name: "too large", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["comment"] = map[string]any{"body": strings.Repeat("a", 70000)} })
		}, wantErr: "over the limit"},
		{name: "missing id", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { delete(m, "id") }) }, wantErr: "id is required", noID: true},
		{name: "bad id", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["id"] = "a b" }) }, wantErr: "id must match", noID: true},
		{name: "id too long", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["id"] = strings.Repeat("a", 129) })
		}, wantErr: "id must match", noID: true},
		{name: "unknown type", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["type"] = "task.deleted" }) }, wantErr: "not one of"},
		{name: "missing occurred_at", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { delete(m, "occurred_at") }) }, wantErr: "occurred_at"},
		{name: "bad occurred_at", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["occurred_at"] = "yesterday" }) }, wantErr: "not valid JSON"},
		{name: "missing recipient id", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["recipient"] = map[string]any{"email": "a@b.c"} })
		}, wantErr: "recipient.id is required"},
		{name: "bad recipient email", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["recipient"] = map[string]any{"id": "u1", "email": "Ann <a@b.c>"} })
		}, wantErr: "recipient.email"},
		{name: "header injection in email", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["recipient"] = map[string]any{"id": "u1", "email": "a@b.c\r\nBcc: x@y.z"} })
		}, wantErr: "recipient.email"},
		{name: "no email is fine", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["recipient"] = map[string]any{"id": "u1"} })
		}},
		{name: "task id with slash", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["task"] = map[string]any{"id": "../x", "title": "T"} })
		}, wantErr: "task.id must match"},
		{name: "blank task title", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["task"] = map[string]any{"id": "t1", "title": "  "} })
		}, wantErr: "task.title"},
		{name: "comment without body", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { delete(m, "comment") }) }, wantErr: "comment.body"},
		{name: "date change without change", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["type"] = "task.date_changed"; delete(m, "comment") })
		}, wantErr: "change is required"},
		{name: "date change bad field", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) {
				m["type"] = "task.date_changed"
				m["change"] = map[string]any{"field": "title", "from": nil, "to": "2026-12-01"}
			})
		}, wantErr: "change.field"},
		{name: "date change with nulls", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) {
				m["type"] = "task.date_changed"
				m["change"] = map[string]any{"field": "planned_start", "from": nil, "to": "2026-12-01"}
			})
		}},
		{name: "date change bad date", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) {
				m["type"] = "task.date_changed"
				m["change"] = map[string]any{"field": "planned_start", "from": "soon", "to": nil}
			})
		}, wantErr: "change.from"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := event.Decode(tc.subject, tc.data(t), 0)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, event.ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want ErrInvalid containing %q", err, tc.wantErr)
			}
			gotID := ""
			if ev != nil {
				gotID = ev.ID
			}
			wantID := "01JD3N6Q9W4ZK2V8X5T7R1M0PA"
			if tc.noID {
				wantID = ""
			}
			if gotID != wantID {
				t.Errorf("recovered id = %q, want %q", gotID, wantID)
			}
		})
	}
}

func TestSchemaFileParses(t *testing.T) {
	b, err := os.ReadFile("event.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Required   []string       `json:"required"`
		Properties map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	for _, f := range []string{"id", "type", "occurred_at", "recipient", "task"} {
		if !strings.Contains(strings.Join(s.Required, ","), f) {
			t.Errorf("schema does not require %s", f)
		}
	}
	// every field of the Go type is in the schema
	for _, f := range []string{"id", "type", "occurred_at", "workspace", "recipient", "actor", "task", "comment", "change", "blocked_by"} {
		if _, ok := s.Properties[f]; !ok {
			t.Errorf("schema lacks property %s", f)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("notify.task.comment", []byte(valid))
	f.Add("notify.mention", []byte(`{"id":"x","type":"mention"}`))
	f.Add("", []byte(`{"id":"a","type":"task.date_changed","occurred_at":"2026-01-01T00:00:00Z","recipient":{"id":"u"},"task":{"id":"t","title":"T"},"change":{"field":"planned_end","from":null,"to":"2026-01-02"}}`))
	f.Add("", []byte(`[]`))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		ev, err := event.Decode(subject, data, 4096)
		if err != nil {
			if !errors.Is(err, event.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			if ev != nil && ev.ID != "" && !event.ValidID(ev.ID) {
				t.Fatalf("recovered an unusable id %q", ev.ID)
			}
			return
		}
		// a valid event re-validates, and survives a round trip
		if err := ev.Validate(); err != nil {
			t.Fatalf("decoded event does not validate: %v", err)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := event.Decode("", b, 1<<20); err != nil {
			t.Fatalf("round trip: %v\n%s", err, b)
		}
	})
}
