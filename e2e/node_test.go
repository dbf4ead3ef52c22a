package e2e

// The Node side: examples/node run as a Node team would run them (npm ci from
// the committed lock file, the official `nats` client) against a real
// nats-server and the relay, and event/event.schema.json checked by ajv
// (draft 2020-12, ajv-formats, strict mode) against the event corpus.
//
// node and npm are looked up in PATH. When they are missing the tests skip,
// except when CI is set: then they fail, like a missing tool.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// nodeMinMajor is the oldest Node the examples support (package.json engines).
const nodeMinMajor = 20

// npmTimeout bounds `npm ci` (it downloads from the npm registry).
const npmTimeout = 5 * time.Minute

// requireNode returns the paths of node and npm. When either is missing, or
// node is older than nodeMinMajor, the test is skipped, or fails with CI set.
func requireNode(t testing.TB) (node, npm string) {
	t.Helper()
	missing := func(msg string) {
		t.Helper()
		if inCI() {
			t.Fatal("e2e: " + msg + "; CI is set, so Node is required")
		}
		t.Skip("e2e: " + msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node not found in PATH (install Node " + strconv.Itoa(nodeMinMajor) + " or later)")
	}
	npm, err = exec.LookPath("npm")
	if err != nil {
		missing("npm not found in PATH (it comes with Node)")
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		missing(fmt.Sprintf("%s --version: %v", node, err))
	}
	v := strings.TrimSpace(string(out))
	m := regexp.MustCompile(`^v(\d+)\.`).FindStringSubmatch(v)
	if m == nil {
		missing(fmt.Sprintf("node --version says %q, not vN.N.N", v))
	}
	if major, _ := strconv.Atoi(m[1]); major < nodeMinMajor {
		missing(fmt.Sprintf("node %s is older than %d", v, nodeMinMajor))
	}
	return node, npm
}

// nodeExample is examples/node installed once per test binary: its
// package.json, package-lock.json and scripts are copied to a scratch
// directory and `npm ci` runs there, so the source tree is not touched (no
// node_modules appears in it, and concurrent test runs do not share one).
var nodeExample struct {
	once sync.Once
	dir  string
	err  error
}

// nodeExampleDir returns the installed copy of examples/node.
func nodeExampleDir(t testing.TB) string {
	t.Helper()
	_, npm := requireNode(t)
	src := filepath.Join(mustRepoRoot(t), "examples", "node")
	nodeExample.once.Do(func() {
		nodeExample.dir, nodeExample.err = installNodeExample(src, npm)
	})
	if nodeExample.err != nil {
		t.Fatal(nodeExample.err)
	}
	return nodeExample.dir
}

func installNodeExample(src, npm string) (string, error) {
	dst := filepath.Join(scratchDir, "examples-node")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return "", err
	}
	copied := 0
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !(strings.HasSuffix(name, ".js") || strings.HasSuffix(name, ".json")) {
			continue // node_modules, README ...
		}
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
			return "", err
		}
		copied++
	}
	if _, err := os.Stat(filepath.Join(dst, "package-lock.json")); err != nil {
		return "", fmt.Errorf("examples/node: no committed package-lock.json: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), npmTimeout)
	defer cancel()
	// npm keeps the user's environment: its configuration (registry, proxy,
	// CA file) and its download cache live there.
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dst
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci in a copy of examples/node (%d files): %w\n%s", copied, err, out)
	}
	return dst, nil
}

// nodeResult is the outcome of one node command.
type nodeResult struct {
	stdout, stderr string
	code           int
}

func (r nodeResult) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// runNode runs `node args...` in dir with a clean environment plus env
// ("KEY=value" entries). A node that cannot be started, or runs longer than
// cliTimeout, fails the test; a non-zero exit is returned.
func runNode(t testing.TB, dir string, env []string, args ...string) nodeResult {
	t.Helper()
	node, _ := requireNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv(t.TempDir(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := nodeResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && ctx.Err() == nil:
		res.code = exit.ExitCode()
	default:
		t.Fatalf("node %s: %v (%s)", strings.Join(args, " "), err, res)
	}
	return res
}

// runNodeOK is runNode that fails the test on a non-zero exit.
func runNodeOK(t testing.TB, dir string, env []string, args ...string) nodeResult {
	t.Helper()
	res := runNode(t, dir, env, args...)
	if res.code != 0 {
		t.Fatalf("node %s: %s", strings.Join(args, " "), res)
	}
	return res
}

// ---------------------------------------------------------------------------
// The examples against a real nats-server and relay.

// nodeAck is what publish.js prints.
type nodeAck struct {
	ID        json.RawMessage `json:"id"` // 9001 or "n-9001", as published
	Stream    string          `json:"stream"`
	Seq       uint64          `json:"seq"`
	Duplicate bool            `json:"duplicate"`
}

// TestNodeExamplesE2E runs examples/node as its README says: before any
// relay has run publish.js fails loudly (no stream stores notify.> yet) and
// stores nothing; with the relay running, prefs.js opts a user in (keeping
// their other preferences), publish.js publishes with a JetStream ack
// (a repeat is a duplicate), the mail reaches Mailpit once, and state.js
// prints the ledger record "sent". Both id forms run: the integers a Django
// primary key gives, and strings.
func TestNodeExamplesE2E(t *testing.T) {
	t.Parallel()
	dir := nodeExampleDir(t)
	s := newStack(t)
	url := s.ns.URL()
	env := []string{"NATS_URL=" + url}

	// 1. No stream yet: a JetStream publish fails with a hint, nothing stored.
	res := runNode(t, dir, env, "publish.js", "--id", "1", "--user", "1")
	if res.code == 0 || !strings.Contains(res.stderr, "mailrelay provision") {
		t.Fatalf("publish.js before any relay ran: %s; want a failure that says to run `mailrelay provision`", res)
	}

	startReadyRelay(t, s.env())
	if n := streamInfo(t, url, "NOTIFY").State.Msgs; n != 0 {
		t.Fatalf("NOTIFY holds %d messages once the relay created it, want 0 (the failed publish stored nothing)", n)
	}

	kinds := []struct {
		name, ids, id, user string
	}{
		{"integer ids", "int", "9001", "4242"}, // as Django primary keys (contract §9.1)
		{"string ids", "string", "n-node-1", "u-node-1"},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			// 2. Opt in, keeping what the user had.
			prefsPut(t, url, k.user, `{"email":{"mention":true},"time_zone":"Europe/Berlin"}`)
			runNodeOK(t, dir, env, "prefs.js", k.user, "task.comment", "on")
			raw, _ := kvGet(t, url, "notify_prefs", k.user)
			var prefs struct {
				Email    map[string]any `json:"email"`
				TimeZone string         `json:"time_zone"`
			}
			decodeJSON(t, raw, &prefs)
			if prefs.Email["task.comment"] != true || prefs.Email["mention"] != true || prefs.TimeZone != "Europe/Berlin" {
				t.Fatalf("notify_prefs %s after prefs.js: %s; want task.comment and mention true, time_zone kept", k.user, raw)
			}

			// 3. Publish, then publish the same notification again.
			args := []string{"publish.js", "--ids", k.ids, "--id", k.id, "--user", k.user, "--email", "ann@example.com"}
			var ack nodeAck
			decodeJSON(t, runNodeOK(t, dir, env, args...).stdout, &ack)
			wantID := strconv.Quote(k.id)
			if k.ids == "int" {
				wantID = k.id
			}
			if ack.Stream != "NOTIFY" || ack.Seq == 0 || ack.Duplicate || string(ack.ID) != wantID {
				t.Fatalf("publish.js: ack %+v (id %s), want id %s stored in NOTIFY", ack, ack.ID, wantID)
			}
			msg := streamGet(t, url, "NOTIFY", ack.Seq)
			if got := msg.Header["Nats-Msg-Id"]; msg.Subject != "notify.task.comment" || len(got) != 1 || got[0] != k.id {
				t.Fatalf("stored message %d: subject %s, Nats-Msg-Id %q; want notify.task.comment, %q", ack.Seq, msg.Subject, got, k.id)
			}
			if k.ids == "int" && !bytes.Contains(msg.Data, []byte(`"id":`+k.id+`,`)) {
				t.Fatalf("stored event %s: want the integer id %s in it", msg.Data, k.id)
			}
			var again nodeAck
			decodeJSON(t, runNodeOK(t, dir, env, args...).stdout, &again)
			if !again.Duplicate || again.Seq != ack.Seq {
				t.Fatalf("publish.js again: ack %+v, want a duplicate of seq %d", again, ack.Seq)
			}

			// 4. One mail, and the ledger says sent.
			eventually(t, settleTimeout, func() (bool, string) {
				n := countByMessageID(s.mp.Messages(t))[mailID(k.id)]
				return n >= 1, fmt.Sprintf("%d mails with Message-ID %s", n, mailID(k.id))
			})
			var st emailState
			var last nodeResult
			eventually(t, settleTimeout, func() (bool, string) {
				last = runNode(t, dir, env, "state.js", k.id)
				if last.code != 0 {
					return false, "state.js: " + last.String()
				}
				return strings.Contains(last.stdout, `"state":"sent"`), "state.js: " + last.String()
			})
			decodeJSON(t, last.stdout, &st)
			if st.Type != "task.comment" || st.Recipient != k.user || st.Attempts != 1 || st.MessageID != "<"+mailID(k.id)+">" {
				t.Fatalf("state.js %s: %s; want type task.comment, recipient %s, attempts 1, message_id <%s>", k.id, last.stdout, k.user, mailID(k.id))
			}
			if n := countByMessageID(s.mp.Messages(t))[mailID(k.id)]; n != 1 {
				t.Fatalf("%d mails for %s, want 1", n, k.id)
			}
		})
	}

	// state.js for an id without a record: exit code 2, said on stderr.
	if res := runNode(t, dir, env, "state.js", "no-such-id"); res.code != 2 || !strings.Contains(res.stderr, "no record") {
		t.Fatalf("state.js no-such-id: %s, want exit 2 and \"no record\"", res)
	}
}

// TestNodeExamplesNATSConf runs the examples under the shipped nats.conf, as
// a deployment would: the relay as mailrelay, publish.js as notify-publisher
// (the default inbox), prefs.js and state.js as notify-webapp (its own
// inbox prefix). No permission stands in their way.
func TestNodeExamplesNATSConf(t *testing.T) {
	t.Parallel()
	dir := nodeExampleDir(t)
	buildMailrelay(t)
	ns := startConfNATS(t)
	mp := startMailpit(t, mailpitOptions{})
	env := ns.relayEnv()
	for k, v := range map[string]string{
		"EMAIL_HOST": mp.SMTPHost(), "EMAIL_PORT": itoa(mp.SMTPPort()),
		"DEFAULT_FROM_EMAIL": e2eFromEmail, "FRONTEND_BASE_URL": e2eBaseURL, "MAILRELAY_RETRY_DELAYS": "100ms",
	} {
		env[k] = v
	}
	startReadyRelay(t, env)

	url := "NATS_URL=" + ns.URL()
	webapp := []string{url, "NATS_USER=" + confWebAppUser, "NATS_PASSWORD=" + ns.webAppPassword, "NATS_INBOX_PREFIX=" + confWebAppInbox}
	publisher := []string{url, "NATS_USER=" + confPublisherUser, "NATS_PASSWORD=" + ns.publisherPassword}

	runNodeOK(t, dir, webapp, "prefs.js", "77", "task.comment", "on")
	runNodeOK(t, dir, webapp, "prefs.js", "77", "mention", "on") // an update of an existing entry
	var ack nodeAck
	decodeJSON(t, runNodeOK(t, dir, publisher, "publish.js", "--id", "7001", "--user", "77").stdout, &ack)
	if ack.Stream != "NOTIFY" || ack.Duplicate {
		t.Fatalf("publish.js as %s: %+v", confPublisherUser, ack)
	}
	// The web app may publish too.
	decodeJSON(t, runNodeOK(t, dir, webapp, "publish.js", "--id", "7002", "--user", "77").stdout, &ack)
	if ack.Stream != "NOTIFY" || ack.Duplicate {
		t.Fatalf("publish.js as %s: %+v", confWebAppUser, ack)
	}
	for _, id := range []string{"7001", "7002"} {
		eventually(t, settleTimeout, func() (bool, string) {
			res := runNode(t, dir, webapp, "state.js", id)
			return strings.Contains(res.stdout, `"state":"sent"`), "state.js as notify-webapp: " + res.String()
		})
	}
	if n := countByMessageID(mp.Messages(t)); n[mailID("7001")] != 1 || n[mailID("7002")] != 1 {
		t.Fatalf("mails by Message-ID: %v, want one each for 7001 and 7002", n)
	}
	// The publisher may not read the ledger.
	res := runNode(t, dir, publisher, "state.js", "7001")
	if res.code == 0 {
		t.Fatalf("state.js as %s: %s; want a refusal", confPublisherUser, res)
	}
	t.Logf("state.js as %s: %s", confPublisherUser, res)
}

// ---------------------------------------------------------------------------
// The JSON Schema under ajv against the event corpus.

// nodeCorpusCase is one case of event/testdata/corpus, read here
// independently of examples/node/schema.js: valid/NAME.json must be
// accepted, invalid/NAME.json refused unless NAME.problems.json says
// "schema": false (only the relay can tell).
type nodeCorpusCase struct {
	name       string // "valid/contract-example"
	valid      bool
	schemaLegs bool
}

func readCorpus(t *testing.T, dir string) []nodeCorpusCase {
	t.Helper()
	var cases []nodeCorpusCase
	for _, kind := range []string{"valid", "invalid"} {
		files, err := filepath.Glob(filepath.Join(dir, kind, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, ".problems.json") {
				continue
			}
			base := strings.TrimSuffix(f, ".json")
			c := nodeCorpusCase{name: kind + "/" + filepath.Base(base), valid: kind == "valid", schemaLegs: true}
			if !c.valid {
				var meta struct {
					Schema *bool `json:"schema"`
				}
				decodeJSON(t, readFile(base+".problems.json"), &meta)
				if meta.Schema != nil {
					c.schemaLegs = *meta.Schema
				}
			}
			cases = append(cases, c)
		}
	}
	if len(cases) == 0 {
		t.Fatalf("no corpus cases under %s", dir)
	}
	return cases
}

// TestNodeSchemaCorpus installs examples/node with npm ci, then has ajv
// (ajv/dist/2020 + ajv-formats, strict mode) compile event/event.schema.json
// and judge every corpus case (node schema.js): the compile must succeed and
// every verdict must be the corpus's. `npm test` (node --test) must pass too.
func TestNodeSchemaCorpus(t *testing.T) {
	t.Parallel()
	dir := nodeExampleDir(t)
	root := mustRepoRoot(t)
	corpus := filepath.Join(root, "event", "testdata", "corpus")
	env := []string{
		"MAILRELAY_SCHEMA=" + filepath.Join(root, "event", "event.schema.json"),
		"MAILRELAY_CORPUS=" + corpus,
	}

	res := runNode(t, dir, env, "schema.js")
	var sum struct {
		Ajv          string `json:"ajv"`
		AjvFormats   string `json:"ajvFormats"`
		Compiled     bool   `json:"compiled"`
		CompileError string `json:"compileError"`
		Cases        map[string]struct {
			Valid  bool     `json:"valid"`
			Errors []string `json:"errors"`
		} `json:"cases"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &sum); err != nil {
		t.Fatalf("node schema.js: %v (%s)", err, res)
	}
	if !sum.Compiled {
		t.Fatalf("ajv %s (ajv-formats %s) in strict mode does not compile event/event.schema.json: %s", sum.Ajv, sum.AjvFormats, sum.CompileError)
	}
	t.Logf("ajv %s, ajv-formats %s, strict mode: %d cases judged", sum.Ajv, sum.AjvFormats, len(sum.Cases))

	cases := readCorpus(t, corpus)
	judged := 0
	for _, c := range cases {
		got, ok := sum.Cases[c.name]
		switch {
		case !ok:
			t.Errorf("%s: not judged by schema.js", c.name)
		case !c.schemaLegs:
			// Only the relay can tell (a key given twice, the subject ...).
		case c.valid && !got.Valid:
			t.Errorf("%s: ajv refuses a valid event: %q", c.name, got.Errors)
		case !c.valid && got.Valid:
			t.Errorf("%s: ajv accepts an invalid event", c.name)
		default:
			judged++
		}
	}
	if len(sum.Cases) != len(cases) {
		t.Errorf("schema.js judged %d cases, the corpus has %d", len(sum.Cases), len(cases))
	}
	t.Logf("%d of %d cases agree (the rest are relay-only)", judged, len(cases))
	if res.code != 0 && !t.Failed() {
		t.Errorf("node schema.js: %s", res)
	}

	if res := runNode(t, dir, env, "--test", "schema.test.js"); res.code != 0 {
		t.Errorf("node --test schema.test.js: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
}
