package compose_test

// Encoded-word spoofing (issue 11, contract §5): event text shaped like an
// RFC 2047 encoded-word must read literally once the mail is decoded, and no
// invisible or bidi character may reach a header. These tests render through
// the real transport, which imports compose: hence the external package.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
	"github.com/mailrelay/mailrelay/internal/transport"
)

func init() { compose.CheckRendered = checkRendered }

// Spoofing inputs: a reader that decoded them would show CR LF and a Bcc
// line, or bring back the right-to-left override Sanitize removes.
const (
	spoofBcc  = "=?UTF-8?q?x=0D=0ABcc:_evil@evil.example=0D=0A?="
	spoofRLO  = "=?UTF-8?q?Invoice=E2=80=AEgnp.exe?="
	spoofB64  = "=?utf-8?b?QW5uDQpCY2M6IGV2aWxAZXZpbC5leGFtcGxl?=" // "Ann\r\nBcc: evil@example"
	invisible = "\u200b\u200c\u200d\u200e\u200f\u061c\u202a\u202e\u2060\u2066\u2069\ufeff\U000E0041\U000E007F"
)

var encodedWord = regexp.MustCompile(`=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=`)

// rendered returns m as the transport writes it.
func rendered(t testing.TB, m *compose.Message) []byte {
	t.Helper()
	msg, err := transport.Render(m)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	var buf bytes.Buffer
	if _, err := msg.WriteTo(&buf); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	return buf.Bytes()
}

// field is one unfolded header field.
type field struct{ name, value string }

// fields splits the header section of raw into unfolded fields.
func fields(t testing.TB, raw []byte) []field {
	t.Helper()
	head, _, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no end of header in:\n%s", raw)
	}
	var fs []field
	for _, line := range strings.Split(string(head), "\r\n") {
		if line != "" && (line[0] == ' ' || line[0] == '\t') && len(fs) > 0 {
			fs[len(fs)-1].value += line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("header line %q has no colon", line)
		}
		fs = append(fs, field{name, value})
	}
	return fs
}

// checkRendered is compose.CheckRendered: see its doc.
func checkRendered(t testing.TB, m *compose.Message) {
	t.Helper()
	raw := rendered(t, m)
	sources := map[string]string{"Subject": m.Subject, "From": m.From.Name, "To": m.To.Name}
	for _, h := range m.Headers {
		sources[h.Name] = h.Value
	}
	dec := new(mime.WordDecoder)
	for _, f := range fields(t, raw) {
		for _, r := range f.value {
			if r < ' ' || r > '~' {
				t.Fatalf("%s holds %U raw: %q", f.name, r, f.value)
			}
		}
		decoded, err := dec.DecodeHeader(f.value)
		if err != nil {
			t.Fatalf("%s does not decode: %v: %q", f.name, err, f.value)
		}
		for _, r := range decoded {
			if headers.IsControl(r) || headers.IsInvisible(r) {
				t.Fatalf("%s decodes to %U: %q", f.name, r, decoded)
			}
		}
		src := sources[f.name]
		for _, w := range encodedWord.FindAllString(f.value, -1) {
			text, err := dec.Decode(w)
			if err != nil || !strings.Contains(src, text) {
				t.Fatalf("%s: encoded-word %q decodes to %q (%v), which is not in %q", f.name, w, text, err, src)
			}
		}
		switch f.name {
		case "Subject":
			if got := strings.TrimSpace(decoded); got != m.Subject {
				t.Fatalf("Subject decodes to %q, want %q", got, m.Subject)
			}
		case "From", "To":
			if strings.Contains(src, "=?") && !strings.Contains(decoded, src) {
				t.Fatalf("%s decodes to %q, without the literal name %q", f.name, decoded, src)
			}
		}
	}
}

// spoofEvent is a valid event of type typ whose header-bound text fields all
// carry text.
func spoofEvent(typ event.Type, text string) *event.Event {
	ev := &event.Event{
		ID:         "01JD3N6Q9W4ZK2V8X5T7R1M0PA",
		Type:       typ,
		OccurredAt: time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC),
		Recipient:  event.Recipient{ID: "u1", Email: "ann@example.com", Name: text},
		Workspace:  &event.Workspace{ID: "w1", Name: text},
		Actor:      &event.Actor{ID: "u2", Name: text},
		Task:       event.Task{ID: "t-1001", Title: text, Project: "HQ"},
	}
	switch typ {
	case event.TaskComment, event.Mention:
		ev.Comment = &event.Comment{Body: text}
	case event.TaskDateChanged:
		from := "2026-12-01"
		ev.Change = &event.Change{Field: "planned_start", From: &from}
	case event.TaskBlocked:
		ev.BlockedBy = &event.TaskRef{ID: "t-0", Title: text}
	}
	return ev
}

// spoofCases are the inputs of the spoofing tests, each with the text a
// reader must show for it once the header rule is applied.
var spoofCases = []struct {
	name, in, want string
}{
	{"q word with CRLF and Bcc", spoofBcc, spoofBcc},
	{"q word with RLO", spoofRLO, spoofRLO},
	{"b word with CRLF", spoofB64, spoofB64},
	{"word inside text", "Re: " + spoofRLO + " due", "Re: " + spoofRLO + " due"},
	{"two words", spoofRLO + " " + spoofBcc, spoofRLO + " " + spoofBcc},
	{"not quite a word", "a =? b ?= c =?x", "a =? b ?= c =?x"},
	{"invisibles removed", "In" + invisible + "voice", "Invoice"},
	{"invisibles inside a word", "=?UTF-8?q?x?=" + invisible, "=?UTF-8?q?x?="},
	{"quotes and specials", `"=?UTF-8?q?a?=" <x@y> \ (c)`, `"=?UTF-8?q?a?=" <x@y> \ (c)`},
	{"non-ASCII with a word", "Zoë " + spoofRLO, "Zoë " + spoofRLO},
}

func spoofConfig(fromName string) compose.Config {
	return compose.Config{From: compose.Address{Name: fromName, Email: "notify@example.com"}, BaseURL: "https://app.example.com"}
}

func composeSpoof(t testing.TB, typ event.Type, in string) *compose.Message {
	t.Helper()
	m, err := compose.Compose(spoofEvent(typ, in), spoofConfig(in), time.Date(2026, 11, 26, 9, 31, 0, 0, time.UTC))
	if err != nil {
		t.Fatalf("Compose: %v", err)
	}
	return m
}

// TestSpoofedHeadersGo: Go's mime.WordDecoder reads every spoofing input
// back literally, in Subject, To and From, for every type.
func TestSpoofedHeadersGo(t *testing.T) {
	for _, tc := range spoofCases {
		for _, typ := range event.Types {
			t.Run(tc.name+"/"+string(typ), func(t *testing.T) {
				m := composeSpoof(t, typ, tc.in)
				if m.To.Name != tc.want || m.From.Name != tc.want {
					t.Errorf("names To %q From %q, want %q", m.To.Name, m.From.Name, tc.want)
				}
				// The subject cuts the workspace name at 40 characters.
				if utf8.RuneCountInString(tc.want) <= 39 && !strings.Contains(m.Subject, tc.want) {
					t.Errorf("Subject %q lacks %q", m.Subject, tc.want)
				}
				checkRendered(t, m)
			})
		}
	}
}

// TestSpoofedBody: the body removes the bidi and invisible characters but
// keeps the joiners ZWNJ and ZWJ (an emoji sequence stays whole); the
// subject drops them too.
func TestSpoofedBody(t *testing.T) {
	m := composeSpoof(t, event.TaskComment, "Pour"+invisible+" 👩🏽\u200d🔧")
	for _, r := range m.Body {
		if r != '\n' && headers.IsControl(r) {
			t.Errorf("body holds %U: %q", r, m.Body)
			break
		}
	}
	if !strings.Contains(m.Body, "Pour\u200c\u200d 👩🏽\u200d🔧") {
		t.Errorf("body lost the joiners or kept other invisibles: %q", m.Body)
	}
	if strings.ContainsAny(m.Subject, "\u200c\u200d") {
		t.Errorf("subject kept a joiner: %q", m.Subject)
	}
}

// pythonDecode is run by python3 on every .eml file of a directory: it prints
// one JSON object a file with the field names and the decoded Subject, To and
// From as Python's email package (policy.default) reads them.
const pythonDecode = `
import email, email.policy, json, os, sys
d = sys.argv[1]
for name in sorted(os.listdir(d)):
    with open(os.path.join(d, name), "rb") as f:
        m = email.message_from_bytes(f.read(), policy=email.policy.default)
    out = {"file": name}
    try:
        out["fields"] = list(m.keys())
        out["subject"] = str(m["Subject"]).strip()
        for h in ("From", "To"):
            out[h] = [[a.display_name, a.addr_spec] for a in m[h].addresses]
    except Exception as e:  # a header Python refuses, say one with CR LF
        out["error"] = repr(e)
    print(json.dumps(out))
`

// python3 returns the path of python3, or skips (fails when CI is set).
func python3(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("python3 not found (CI is set, so this fails): %v", err)
		}
		t.Skipf("python3 not found: %v", err)
	}
	return p
}

// TestSpoofedHeadersPython: Python's email package, which decodes
// encoded-words even inside quoted strings, reads every spoofing input back
// literally: no Bcc field, no CR, LF, invisible or bidi character.
func TestSpoofedHeadersPython(t *testing.T) {
	py := python3(t)
	dir := t.TempDir()
	want := make(map[string]*compose.Message)
	for i, tc := range spoofCases {
		for _, typ := range event.Types {
			m := composeSpoof(t, typ, tc.in)
			name := fmt.Sprintf("%02d-%s.eml", i, typ)
			if err := os.WriteFile(filepath.Join(dir, name), rendered(t, m), 0o600); err != nil {
				t.Fatal(err)
			}
			want[name] = m
		}
	}
	cmd := exec.Command(py, "-c", pythonDecode, dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(want) {
		t.Fatalf("python3 read %d messages, want %d:\n%s", len(lines), len(want), out)
	}
	for _, line := range lines {
		var got struct {
			File     string
			Fields   []string
			Subject  string
			From, To [][2]string
			Error    string
		}
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("python3 output %q: %v", line, err)
		}
		m := want[got.File]
		if got.Error != "" {
			t.Errorf("%s: Python cannot read it: %s", got.File, got.Error)
			continue
		}
		for _, f := range got.Fields {
			if strings.EqualFold(f, "Bcc") || strings.EqualFold(f, "Cc") {
				t.Errorf("%s: Python sees a %s field", got.File, f)
			}
		}
		check := func(what, value, want string) {
			t.Helper()
			if value != want {
				t.Errorf("%s: Python reads %s as %q, want %q", got.File, what, value, want)
			}
			for _, r := range value {
				if headers.IsControl(r) || headers.IsInvisible(r) {
					t.Errorf("%s: Python reads %s with %U: %q", got.File, what, r, value)
				}
			}
		}
		check("Subject", got.Subject, m.Subject)
		for _, a := range []struct {
			what string
			got  [][2]string
			want compose.Address
		}{{"From", got.From, m.From}, {"To", got.To, m.To}} {
			if len(a.got) != 1 {
				t.Errorf("%s: Python reads %d %s addresses: %q", got.File, len(a.got), a.what, a.got)
				continue
			}
			check(a.what+" name", a.got[0][0], a.want.Name)
			check(a.what+" address", a.got[0][1], a.want.Email)
		}
	}
}
