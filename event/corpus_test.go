package event_test

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailrelay/mailrelay/event"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// corpusCase is one event of testdata/corpus (README.md there says the
// format, which the Node and Python tests read too).
type corpusCase struct {
	name  string // e.g. "invalid/id-null"
	file  string
	data  []byte
	valid bool
	// For invalid cases, from NAME.problems.json:
	problems []string // the paths Decode names, in any order
	schema   bool     // the schema legs apply (false: only the relay can tell)
	subject  string   // the subject to decode on; "" means notify.<type>
}

func loadCorpus(t *testing.T) []corpusCase {
	t.Helper()
	var cases []corpusCase
	for _, dir := range []string{"valid", "invalid"} {
		files, err := filepath.Glob(filepath.Join("testdata", "corpus", dir, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, ".problems.json") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			base := strings.TrimSuffix(f, ".json")
			c := corpusCase{name: dir + "/" + filepath.Base(base), file: f, data: data, valid: dir == "valid", schema: true}
			meta, err := os.ReadFile(base + ".problems.json")
			switch {
			case c.valid && err == nil:
				t.Fatalf("%s: a valid case has %s.problems.json", c.name, base)
			case !c.valid && err != nil:
				t.Fatalf("%s: an invalid case needs %s.problems.json: %v", c.name, base, err)
			case !c.valid:
				var m struct {
					Problems []string `json:"problems"`
					Schema   *bool    `json:"schema"`
					Subject  string   `json:"subject"`
					Why      string   `json:"why"`
				}
				dec := json.NewDecoder(bytes.NewReader(meta))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&m); err != nil || len(m.Problems) == 0 {
					t.Fatalf("%s.problems.json: %v (want {\"problems\": [path, …]})", base, err)
				}
				c.problems, c.subject = m.Problems, m.Subject
				if m.Schema != nil {
					c.schema = *m.Schema
					if !c.schema && m.Why == "" {
						t.Errorf("%s.problems.json: \"schema\": false needs a \"why\"", base)
					}
				}
			}
			cases = append(cases, c)
		}
	}
	// Every sidecar belongs to an event.
	sidecars, _ := filepath.Glob(filepath.Join("testdata", "corpus", "*", "*.problems.json"))
	for _, s := range sidecars {
		if _, err := os.Stat(strings.TrimSuffix(s, ".problems.json") + ".json"); err != nil {
			t.Errorf("%s has no event beside it", s)
		}
	}
	if len(cases) < 100 {
		t.Fatalf("corpus has %d cases", len(cases))
	}
	return cases
}

// subjectOf is the subject a case is decoded on.
func subjectOf(c corpusCase) string {
	if c.subject != "" {
		return c.subject
	}
	var probe struct {
		Type any `json:"type"`
	}
	_ = json.Unmarshal(c.data, &probe)
	if s, ok := probe.Type.(string); ok {
		return "notify." + s
	}
	return ""
}

// TestCorpusDecode: the relay's decoder accepts every valid case and
// names exactly the expected paths of every invalid one.
func TestCorpusDecode(t *testing.T) {
	for _, c := range loadCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			ev, err := event.Decode(subjectOf(c), c.data, 0)
			if c.valid {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if err := ev.Validate(); err != nil {
					t.Errorf("decoded event does not validate: %v", err)
				}
				return
			}
			var ps event.Problems
			if !errors.Is(err, event.ErrInvalid) || !errors.As(err, &ps) {
				t.Fatalf("Decode = %v, want Problems wrapping ErrInvalid", err)
			}
			got, want := slices.Sorted(slices.Values(ps.Paths())), slices.Sorted(slices.Values(c.problems))
			if !slices.Equal(got, want) {
				t.Errorf("problems at %q, want %q\n%v", got, want, err)
			}
		})
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open("event.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("event.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("event.schema.json")
	if err != nil {
		t.Fatalf("compile event.schema.json: %v", err)
	}
	return s
}

// TestCorpusSchema: the shipped schema, under an independent validator
// with format assertions on, gives every case the corpus's verdict.
func TestCorpusSchema(t *testing.T) {
	s := compileSchema(t)
	for _, c := range loadCorpus(t) {
		if !c.schema {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(c.data))
			if err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			err = s.Validate(inst)
			if c.valid && err != nil {
				t.Errorf("the schema refuses a valid event: %v", err)
			}
			if !c.valid && err == nil {
				t.Errorf("the schema accepts an invalid event (the relay names %q)", c.problems)
			}
		})
	}
}

//go:embed testdata/corpus_python.py
var pythonLeg []byte

// TestCorpusPython: Python's jsonschema (Draft202012Validator with its
// FORMAT_CHECKER, as a Django service would run it) gives every case the
// corpus's verdict. Without a python3 that imports jsonschema the test
// skips, and fails under CI=true (`make test` installs python3-jsonschema).
func TestCorpusPython(t *testing.T) {
	python := ""
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(p, "-c", "import jsonschema").Run() == nil {
			python = p
			break
		}
	}
	if python == "" {
		msg := "no python3 that imports jsonschema (tried python3 and /usr/bin/python3): pip install jsonschema, or apt-get install python3-jsonschema"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	var files []string
	byFile := map[string]corpusCase{}
	for _, c := range loadCorpus(t) {
		if c.schema {
			files = append(files, c.file)
			byFile[c.file] = c
		}
	}
	cmd := exec.Command(python, append([]string{"-", "event.schema.json"}, files...)...)
	cmd.Stdin = bytes.NewReader(pythonLeg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", python, err, stderr.String())
	}
	var res struct {
		Version string              `json:"version"`
		Formats []string            `json:"formats"`
		Errors  map[string][]string `json:"errors"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("python output: %v\n%s", err, out)
	}
	t.Logf("%s: jsonschema %s, format checkers %v", python, res.Version, res.Formats)
	if len(res.Errors) != len(files) {
		t.Fatalf("python judged %d cases, want %d", len(res.Errors), len(files))
	}
	for _, f := range files {
		c := byFile[f]
		errs, ok := res.Errors[f]
		switch {
		case !ok:
			t.Errorf("%s: not judged", c.name)
		case c.valid && len(errs) > 0:
			t.Errorf("%s: Python's jsonschema refuses a valid event: %q", c.name, errs)
		case !c.valid && len(errs) == 0:
			t.Errorf("%s: Python's jsonschema accepts an invalid event (the relay names %q)", c.name, c.problems)
		}
	}
}

// TestProblemsInWords: no problem of any broken input speaks in Go's
// terms; each names a path and the error lists them all.
func TestProblemsInWords(t *testing.T) {
	inputs := [][]byte{
		[]byte(``), []byte(`{`), []byte(`nul`), []byte(`{"id": 1`), []byte(`{"id":}`), []byte(`{"id": "a",}`),
		[]byte(`{"id": 12345678901234567890}`), []byte(`{"recipient": {"id": 1.5e-3}}`), []byte(`{"task": {"id": true, "title": []}}`),
		[]byte(`{"occurred_at": "2026-12-05 23:18:28"}`), []byte(`{"occurred_at": "2026-12-05T23:18:28.123456789012+05:30x"}`),
		[]byte(`{"occurred_at": {"t": 1}}`), []byte(`{"change": "x", "type": "task.date_changed"}`),
		[]byte(`{"type": "task.date_changed", "change": {"field": 1, "from": 2, "to": "2026-02-31"}}`),
		[]byte(`{"recipient": {"id": "u1", "email": ["a@b.c"], "name": {}, "locale": "??"}}`),
		[]byte(`{"workspace": 1, "actor": "x", "comment": [], "blocked_by": false}`), []byte(`"event"`), []byte(`123`), []byte(`null`),
		[]byte("{\"id\":\"\xff\"}"), []byte(strings.Repeat("[", 5000)),
	}
	for _, c := range loadCorpus(t) {
		if !c.valid {
			inputs = append(inputs, c.data)
		}
	}
	forbidden := []string{"Go struct", "unmarshal", "Unmarshal", "string into", "of type", "json:", "2006-01-02", "15:04:05", "Z07:00", "event.", "*event", "[]", "map["}
	for _, in := range inputs {
		_, err := event.Decode("notify.mention", in, 0)
		var ps event.Problems
		if !errors.As(err, &ps) || len(ps) == 0 {
			t.Errorf("Decode(%.60q) = %v, want Problems", in, err)
			continue
		}
		msgs := make([]string, len(ps))
		for i, p := range ps {
			msgs[i] = p.String()
			for _, w := range forbidden {
				if strings.Contains(p.Message, w) {
					t.Errorf("Decode(%.60q): problem %q speaks Go (%q)", in, p, w)
				}
			}
		}
		if want := "invalid event: " + strings.Join(msgs, "; "); err.Error() != want {
			t.Errorf("error text %q, want %q", err, want)
		}
	}
}

// TestSchemaPatternsAreGo: the schema's patterns, integer bounds and key
// lists are the decoder's own, so that the two cannot drift.
func TestSchemaPatternsAreGo(t *testing.T) {
	b, err := os.ReadFile("event.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	at := func(path ...any) any {
		var v any = s
		for _, p := range path {
			switch k := p.(type) {
			case string:
				m, _ := v.(map[string]any)
				v = m[k]
			case int:
				a, _ := v.([]any)
				if k >= len(a) {
					return nil
				}
				v = a[k]
			}
		}
		return v
	}
	for _, c := range []struct {
		path []any
		want any
	}{
		{[]any{"properties", "id", "anyOf", 0, "pattern"}, event.IDPattern},
		{[]any{"properties", "recipient", "properties", "id", "anyOf", 0, "pattern"}, event.IDPattern},
		{[]any{"properties", "task", "properties", "id", "anyOf", 0, "pattern"}, event.TaskIDPattern},
		{[]any{"properties", "occurred_at", "pattern"}, event.OccurredAtPattern},
		{[]any{"properties", "recipient", "properties", "email", "allOf", 0, "pattern"}, event.EmailPattern},
		{[]any{"properties", "recipient", "properties", "email", "allOf", 1, "pattern"}, event.EmailLengthPattern},
		{[]any{"properties", "recipient", "properties", "locale", "pattern"}, event.LocalePattern},
		{[]any{"$defs", "visibleText", "pattern"}, event.VisiblePattern},
		{[]any{"$defs", "dateOrNull", "anyOf", 1, "pattern"}, event.DatePattern},
		{[]any{"$defs", "dateOrNull", "anyOf", 2, "pattern"}, event.DateTimePattern},
		{[]any{"$defs", "integerId", "maximum"}, float64(event.MaxIntegerID)},
		{[]any{"$defs", "integerId", "minimum"}, float64(0)},
	} {
		if got := at(c.path...); got != c.want {
			t.Errorf("schema %v = %+q, want %+q", c.path, got, c.want)
		}
	}
	for obj, keys := range event.ContractKeys {
		base := []any{}
		if obj != "" {
			base = []any{"properties", obj}
		}
		names := at(append(base, "propertyNames", "anyOf", 0, "enum")...)
		pattern := at(append(base, "propertyNames", "anyOf", 1, "not", "pattern")...)
		var got []string
		for _, n := range names.([]any) {
			got = append(got, n.(string))
		}
		if !slices.Equal(got, keys) {
			t.Errorf("schema keys of %q = %q, decoder's %q", obj, got, keys)
		}
		if want := event.CaseVariantPattern(keys); pattern != want {
			t.Errorf("schema case-variant pattern of %q = %+q, want %+q", obj, pattern, want)
		}
		props, _ := at(append(base, "properties")...).(map[string]any)
		for _, k := range keys {
			if _, ok := props[k]; !ok {
				t.Errorf("schema object %q lacks property %q", obj, k)
			}
		}
	}
}
