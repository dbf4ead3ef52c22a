package event_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

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
		}, wantErr: `change.from: "soon" is not a date`},
		{name: "too large", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["comment"] = map[string]any{"body": strings.Repeat("a", 70000)} })
		}, wantErr: "over the limit"},
		{name: "missing id", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { delete(m, "id") }) }, wantErr: "id: is required", noID: true},
		{name: "bad id", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["id"] = "a b" }) }, wantErr: "id: must match", noID: true},
		{name: "id too long", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["id"] = strings.Repeat("a", 129) })
		}, wantErr: "id: must match", noID: true},
		{name: "unknown type", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["type"] = "task.deleted" }) }, wantErr: "not one of"},
		{name: "missing occurred_at", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { delete(m, "occurred_at") }) }, wantErr: "occurred_at"},
		{name: "missing occurred_at is required", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { delete(m, "occurred_at") }) },
			wantErr: "occurred_at: is required (RFC 3339"},
		{name: "null occurred_at is required", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["occurred_at"] = nil }) },
			wantErr: "occurred_at: is required (RFC 3339"},
		{name: "zero occurred_at is not a valid time", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["occurred_at"] = "0001-01-01T00:00:00Z" })
		}, wantErr: "occurred_at: 0001-01-01T00:00:00Z is the zero time, not a valid time"},
		{name: "zero occurred_at with an offset", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["occurred_at"] = "0001-01-01T01:00:00+01:00" })
		}, wantErr: "is the zero time, not a valid time"},
		{name: "occurred_at in 2099 decodes (the clock rule is TooFarAhead's)", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["occurred_at"] = "2099-01-01T00:00:00Z" })
		}},
		{name: "bad occurred_at", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["occurred_at"] = "yesterday" }) },
			wantErr: `occurred_at: "yesterday" is not an RFC 3339 date-time`},
		{name: "missing recipient id", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["recipient"] = map[string]any{"email": "a@b.c"} })
		}, wantErr: "recipient.id: is required"},
		{name: "bad recipient email", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["recipient"] = map[string]any{"id": "u1", "email": "Ann <a@b.c>"} })
		}, wantErr: "recipient.email"},
		{name: "header injection in email", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["recipient"] = map[string]any{"id": "u1", "email": "a@b.c\r\nBcc: x@y.z"} })
		}, wantErr: "recipient.email"},
		{name: "local part of 64 octets", data: withEmail(strings.Repeat("a", 64) + "@example.com")},
		{name: "encoded-word in the address", data: withEmail("=?utf-8?q?a=E2=80=AEb?=@example.com"),
			wantErr: "which mail clients would decode as an RFC 2047 encoded-word"},
		{name: "local part of 65 octets", data: withEmail(strings.Repeat("a", 65) + "@example.com"),
			wantErr: "recipient.email: the local part is 65 octets, over the limit of 64 (RFC 5321)"},
		{name: "local part counted in octets, not characters", data: withEmail(strings.Repeat("é", 33) + "@example.com"),
			wantErr: "the local part is 66 octets, over the limit of 64"},
		{name: "domain of 256 octets", data: withEmail("a@" + domainOf(256)),
			wantErr: "recipient.email: the domain is 256 octets, over the limit of 255 (RFC 5321)"},
		{name: "address of 254 octets", data: withEmail(strings.Repeat("a", 63) + "@" + domainOf(190))},
		{name: "address of 255 octets", data: withEmail(strings.Repeat("a", 64) + "@" + domainOf(190)),
			wantErr: "recipient.email: the address is 255 octets, over the limit of 254 (RFC 5321)"},
		{name: "no email is fine", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["recipient"] = map[string]any{"id": "u1"} })
		}},
		{name: "task id with slash", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["task"] = map[string]any{"id": "../x", "title": "T"} })
		}, wantErr: "task.id: must match"},
		{name: "blank task title", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["task"] = map[string]any{"id": "t1", "title": "  "} })
		}, wantErr: "task.title"},
		{name: "task title of zero-width characters", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["task"] = map[string]any{"id": "t1", "title": "\u200b\u200d\u2060\ufeff"} })
		}, wantErr: "task.title: is required (it has no visible character)"},
		{name: "task title of a Hangul filler and a no-break space", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["task"] = map[string]any{"id": "t1", "title": "\u3164\u00a0"} })
		}, wantErr: "task.title: is required"},
		{name: "empty task title", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["task"] = map[string]any{"id": "t1", "title": ""} })
		}, wantErr: "task.title: is required"},
		{name: "task title with one visible character", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["task"] = map[string]any{"id": "t1", "title": "\u200bx\u200b"} })
		}},
		{name: "comment body of bidi controls and tags", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["comment"] = map[string]any{"body": "\u202e\u2066\U000E0041\r\n\t"} })
		}, wantErr: "comment.body: is required for task.comment (it has no visible character)"},
		{name: "comment without body", data: func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { delete(m, "comment") }) }, wantErr: "comment.body"},
		{name: "date change without change", data: func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["type"] = "task.date_changed"; delete(m, "comment") })
		}, wantErr: "change: is required"},
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

// withEmail is an event data func whose recipient has address email.
func withEmail(email string) func(t *testing.T) []byte {
	return func(t *testing.T) []byte {
		return mutate(t, func(m map[string]any) { m["recipient"] = map[string]any{"id": "u1", "email": email} })
	}
}

// domainOf returns a domain name of exactly n octets (n >= 5), in labels
// of at most 63 octets.
func domainOf(n int) string {
	var labels []string
	for n > 0 {
		l := min(n, 63)
		if n-l == 1 { // a lone dot cannot end the name: shorten this label
			l--
		}
		labels = append(labels, strings.Repeat("d", l))
		n -= l + 1 // the dot before the next label
	}
	d := strings.Join(labels, ".")
	return d
}

func TestDomainOf(t *testing.T) {
	for _, n := range []int{5, 63, 64, 65, 190, 255, 256} {
		if d := domainOf(n); len(d) != n || strings.HasSuffix(d, ".") || strings.Contains(d, "..") {
			t.Errorf("domainOf(%d) = %q (%d octets)", n, d, len(d))
		}
	}
}

// TestZeroTimeInGoIsRequired: a Go value whose OccurredAt was never set is
// told "required", not "not a valid time".
func TestZeroTimeInGoIsRequired(t *testing.T) {
	e := &event.Event{ID: "n1", Type: event.TaskAssigned, Recipient: event.Recipient{ID: "u1"}, Task: event.Task{ID: "t1", Title: "T"}}
	if err := e.Validate(); !errors.Is(err, event.ErrInvalid) || !strings.Contains(err.Error(), "occurred_at: is required") {
		t.Errorf("Validate = %v, want occurred_at is required", err)
	}
}

func TestTooFarAhead(t *testing.T) {
	now := time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC)
	cases := []struct {
		name string
		at   time.Time
		bad  bool
	}{
		{"now", now, false},
		{"in the past", now.AddDate(-1, 0, 0), false},
		{"exactly 24h ahead", now.Add(event.MaxClockSkew), false},
		{"24h and 1ns ahead", now.Add(event.MaxClockSkew + time.Nanosecond), true},
		{"in 2099", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"24h ahead in another zone", now.Add(event.MaxClockSkew).In(time.FixedZone("x", 5*3600)), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := &event.Event{OccurredAt: tc.at}
			err := e.TooFarAhead(now)
			if !tc.bad {
				if err != nil {
					t.Fatalf("TooFarAhead = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, event.ErrInvalid) || !strings.Contains(err.Error(), "occurred_at: ") ||
				!strings.Contains(err.Error(), "more than 24h ahead of the relay's clock") {
				t.Fatalf("TooFarAhead = %v, want ErrInvalid saying more than 24h ahead of the relay's clock", err)
			}
		})
	}
	if event.MaxClockSkew != 24*time.Hour {
		t.Errorf("MaxClockSkew = %v, want 24h (contract §3)", event.MaxClockSkew)
	}
}

func TestHasVisible(t *testing.T) {
	cases := []struct {
		name string
		s    string
		want bool
	}{
		{"empty", "", false},
		{"spaces and controls", " \t\r\n\x00\x7f\u0085", false},
		{"no-break and ideographic spaces", "\u00a0\u2007\u3000", false},
		{"line and paragraph separators", "\u2028\u2029", false},
		{"zero-width characters", "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff", false},
		{"bidi controls", "\u061c\u202a\u202e\u2066\u2069", false},
		{"tag characters", "\U000E0001\U000E0041\U000E007F", false},
		{"Hangul fillers", "\u115f\u1160\u3164\uffa0", false},
		{"variation selectors", "\ufe0f\U000E0100", false},
		{"combining grapheme joiner", "\u034f", false},
		{"soft hyphen", "\u00ad", false},
		{"braille blank", "\u2800", false},
		{"a letter", "a", true},
		{"a letter among invisibles", "\u200b\u3164x\u2800", true},
		{"a braille dot", "\u2801", true},
		{"an emoji", "\U0001F600", true},
		{"a lone combining accent", "\u0301", true},
		{"a replacement character", "\ufffd", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := event.HasVisible(tc.s); got != tc.want {
				t.Errorf("HasVisible(%+q) = %v, want %v", tc.s, got, tc.want)
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
	f.Add("", []byte(`{"id":"z","type":"task.assigned","occurred_at":"0001-01-01T00:00:00Z","recipient":{"id":"u"},"task":{"id":"t","title":"T"}}`))
	f.Add("", []byte(`{"id":"v","type":"mention","occurred_at":"2026-01-01T00:00:00Z","recipient":{"id":"u"},"task":{"id":"t","title":"\u200b"},"comment":{"body":"\u3164"}}`))
	f.Add("notify.task.blocked", []byte(`{"id":12,"type":"task.blocked","occurred_at":"2026-01-01t00:00:00.123456789012z","recipient":{"id":4.2e1,"email":null,"locale":"pt-BR"},"task":{"id":1e3,"title":"T"},"blocked_by":{"id":".."}}`))
	f.Add("", []byte(`{"id":"a","id":"b","Recipient":{"id":"u"},"recipient":{"id":"u","id":9007199254740992},"task":{"id":-0,"title":"T"},"occurred_at":"2026-01-01 00:00:00"}`))
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

// TestSchemaEmailMaxLength: the schema bounds recipient.email by the RFC
// 5321 address limit the relay applies.
func TestSchemaEmailMaxLength(t *testing.T) {
	b, err := os.ReadFile("event.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties struct {
			Recipient struct {
				Properties struct {
					Email struct {
						MaxLength int `json:"maxLength"`
					} `json:"email"`
				} `json:"properties"`
			} `json:"recipient"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if got := s.Properties.Recipient.Properties.Email.MaxLength; got != 254 {
		t.Errorf("schema recipient.email maxLength = %d, want 254 (RFC 5321)", got)
	}
}
