package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// natsOptions configures startNATSServer. The zero value is a plain
// JetStream server without authentication.
type natsOptions struct {
	// Config is the text of a nats-server configuration file (accounts,
	// users, permissions ...), written to a temporary file and passed with -c.
	Config string
	// ConfigFile is an existing configuration file, passed with -c.
	ConfigFile string
	// Args are extra command-line arguments.
	Args []string
	// Debug adds -D (debug logging) to the server log.
	Debug bool
}

// natsProc is a nats-server child process with JetStream enabled, listening on
// 127.0.0.1. Its store directory outlives Stop/Kill, so Restart brings the
// same streams back on the same port.
type natsProc struct {
	t        testing.TB
	bin      string
	args     []string
	port     int
	monPort  int
	storeDir string
	logPath  string

	mu   sync.Mutex
	proc *process
}

// startNATSServer starts bin/nats-server with -js on free ports and waits
// until it is healthy (/healthz?js-enabled-only=true answers 200 and the
// client port greets). It is stopped when the test ends; on failure its log
// is printed.
func startNATSServer(t testing.TB, opts natsOptions) *natsProc {
	t.Helper()
	dir := t.TempDir()
	n := &natsProc{
		t:        t,
		bin:      requireTool(t, "nats-server"),
		storeDir: filepath.Join(dir, "jetstream"),
		logPath:  filepath.Join(dir, "nats-server.log"),
	}
	var extra []string
	switch {
	case opts.Config != "" && opts.ConfigFile != "":
		t.Fatal("startNATSServer: set Config or ConfigFile, not both")
	case opts.Config != "":
		conf := filepath.Join(dir, "nats-server.conf")
		if err := os.WriteFile(conf, []byte(opts.Config), 0o600); err != nil {
			t.Fatalf("startNATSServer: write config: %v", err)
		}
		extra = append(extra, "-c", conf)
	case opts.ConfigFile != "":
		extra = append(extra, "-c", opts.ConfigFile)
	}
	if opts.Debug {
		extra = append(extra, "-D")
	}
	extra = append(extra, opts.Args...)

	dumpOnFailure(t, "nats-server", n.logPath)
	for attempt := 1; ; attempt++ {
		n.port, n.monPort = freePort(t), freePort(t)
		// Command-line flags win over the config file.
		n.args = append([]string{
			"-a", "127.0.0.1", "-p", strconv.Itoa(n.port),
			"-m", strconv.Itoa(n.monPort),
			"-js", "-sd", n.storeDir,
		}, extra...)
		err := n.start()
		if err == nil {
			return n
		}
		if attempt < 3 && addressInUse(readFile(n.logPath)) {
			t.Logf("nats-server: %v; retrying on other ports", err)
			continue
		}
		t.Fatalf("nats-server: %v", err)
	}
}

// start runs the server with n.args and waits until it is healthy.
func (n *natsProc) start() error {
	n.t.Helper()
	p := startProcess(n.t, procSpec{
		name:   "nats-server",
		bin:    n.bin,
		args:   n.args,
		env:    cleanEnv(filepath.Dir(n.storeDir)),
		dir:    filepath.Dir(n.storeDir),
		stdout: n.logPath,
		stderr: n.logPath,
	})
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()

	health := fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", n.monPort)
	msg, ok := poll(startTimeout, func() (bool, string) {
		if p.exited() {
			return true, "exited: " + p.exitDescription()
		}
		code, err := httpStatus(health)
		if err != nil {
			return false, err.Error()
		}
		if code != 200 {
			return false, fmt.Sprintf("%s answered %d", health, code)
		}
		if err := natsGreets(n.port); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	switch {
	case !ok:
		p.kill()
		return fmt.Errorf("not healthy within %v: %s", startTimeout, msg)
	case p.exited():
		return fmt.Errorf("%s before becoming healthy", msg)
	}
	return nil
}

// natsGreets dials the client port and expects the server's INFO line.
func natsGreets(port int) error {
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read INFO: %w", err)
	}
	if !strings.HasPrefix(line, "INFO ") {
		return fmt.Errorf("unexpected greeting %q", line)
	}
	return nil
}

// URL is the client URL, nats://127.0.0.1:<port>.
func (n *natsProc) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// Port is the client port.
func (n *natsProc) Port() int { return n.port }

// MonitorURL is the HTTP monitoring endpoint, http://127.0.0.1:<port>.
func (n *natsProc) MonitorURL() string { return fmt.Sprintf("http://127.0.0.1:%d", n.monPort) }

// StoreDir is the JetStream store directory.
func (n *natsProc) StoreDir() string { return n.storeDir }

// LogPath is the server's log file (all starts append to it).
func (n *natsProc) LogPath() string { return n.logPath }

func (n *natsProc) current() *process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// Stop shuts the server down with SIGTERM and waits for it to exit (SIGKILL
// after stopTimeout). Safe to call from any goroutine.
func (n *natsProc) Stop() {
	n.current().stop(stopTimeout)
}

// Kill ends the server with SIGKILL, as in a crash. Safe to call from any goroutine.
func (n *natsProc) Kill() {
	n.current().kill()
}

// Restart stops the server if it is running and starts it again on the same
// ports with the same store directory, then waits until it is healthy.
func (n *natsProc) Restart() {
	n.t.Helper()
	n.Stop()
	if err := n.start(); err != nil {
		n.t.Fatalf("nats-server restart: %v", err)
	}
}

// ---------------------------------------------------------------------------
// nats CLI

// natsCLI runs bin/nats -s serverURL args... with a private HOME, so no user
// context or NATS_* variable leaks in, and returns its standard output. The
// error includes the standard error text.
func natsCLI(t testing.TB, serverURL string, args ...string) (string, error) {
	t.Helper()
	stdout, _, err := runNATSCLI(t, serverURL, "", args...)
	return stdout, err
}

// natsCLIOK is natsCLI that fails the test on error.
func natsCLIOK(t testing.TB, serverURL string, args ...string) string {
	t.Helper()
	out, err := natsCLI(t, serverURL, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runNATSCLI runs the nats CLI with stdin as standard input and returns both
// outputs. The nats CLI reports progress ("Stored in Stream ...") on stderr.
func runNATSCLI(t testing.TB, serverURL, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bin := requireTool(t, "nats")
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-s", serverURL}, args...)...)
	cmd.Env = cleanEnv(home)
	cmd.Dir = home
	cmd.Stdin = strings.NewReader(stdin)
	var outBuf, errBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	if err := cmd.Run(); err != nil {
		return outBuf.String(), errBuf.String(), fmt.Errorf("nats %s: %w: %s",
			strings.Join(args, " "), err, strings.TrimSpace(errBuf.String()))
	}
	return outBuf.String(), errBuf.String(), nil
}

// pubAck is what the server answered to a JetStream publish.
type pubAck struct {
	Stream    string
	Seq       uint64
	Duplicate bool // the Nats-Msg-Id was seen within the duplicate window
}

var storedRE = regexp.MustCompile(`Stored in Stream: (\S+) Sequence: (\d+)( Duplicate: true)?`)

// natsPub publishes body to subject with JetStream acknowledgement
// (nats pub -J), setting Nats-Msg-Id to msgID unless it is empty. The body is
// sent on stdin with --no-templates, so it arrives byte for byte. It fails the
// test unless a stream stored (or de-duplicated) the message.
func natsPub(t testing.TB, serverURL, subject, body, msgID string) pubAck {
	t.Helper()
	args := []string{"pub", "--jetstream", "--no-templates", "--force-stdin", subject}
	if msgID != "" {
		args = append(args, "-H", "Nats-Msg-Id:"+msgID)
	}
	_, stderr, err := runNATSCLI(t, serverURL, body, args...)
	if err != nil {
		t.Fatal(err)
	}
	m := storedRE.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("nats pub %s: no JetStream acknowledgement in output:\n%s", subject, stderr)
	}
	seq, _ := strconv.ParseUint(m[2], 10, 64)
	return pubAck{Stream: m[1], Seq: seq, Duplicate: m[3] != ""}
}

// kvGet returns the value of key in bucket (nats kv get --raw) and whether
// the key exists. Any other error fails the test.
func kvGet(t testing.TB, serverURL, bucket, key string) (string, bool) {
	t.Helper()
	out, stderr, err := runNATSCLI(t, serverURL, "", "kv", "get", "--raw", bucket, key)
	if err != nil {
		if strings.Contains(stderr, "key not found") {
			return "", false
		}
		t.Fatal(err)
	}
	return out, true
}

// kvPut stores value under key in bucket (nats kv put). The value is sent on
// stdin, so it may hold anything (a leading "-", invalid JSON ...).
func kvPut(t testing.TB, serverURL, bucket, key, value string) {
	t.Helper()
	if _, _, err := runNATSCLI(t, serverURL, value, "kv", "put", bucket, key); err != nil {
		t.Fatal(err)
	}
}

// prefsPut writes a user's preferences to notify_prefs, for example
// `{"email": {"task.assigned": true}}`.
func prefsPut(t testing.TB, serverURL, userID, prefsJSON string) {
	t.Helper()
	kvPut(t, serverURL, "notify_prefs", userID, prefsJSON)
}

// emailState is a notify_email_state record (docs/contract.md §4).
type emailState struct {
	State     string    `json:"state"`
	Type      string    `json:"type"`
	Recipient string    `json:"recipient"`
	Attempts  int       `json:"attempts"`
	Error     string    `json:"error"`
	MessageID string    `json:"message_id"`
	UpdatedAt time.Time `json:"updated_at"`
	Until     string    `json:"until"` // deferred: when its window closes (§9.2)
	Batch     int       `json:"batch"` // sent in a mail that carried this many
}

// stateGet reads and decodes the notify_email_state record for a
// notification id (or "seq.<n>"); found is false when there is none. A record
// that is not valid JSON fails the test.
func stateGet(t testing.TB, serverURL, id string) (st emailState, raw string, found bool) {
	t.Helper()
	raw, found = kvGet(t, serverURL, "notify_email_state", id)
	if !found {
		return emailState{}, "", false
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("notify_email_state %s: %v in %q", id, err, raw)
	}
	return st, raw, true
}

// waitState waits until the notify_email_state record for id has the given
// state and returns it.
func waitState(t testing.TB, serverURL, id, state string, timeout time.Duration) emailState {
	t.Helper()
	var st emailState
	eventually(t, timeout, func() (bool, string) {
		var found bool
		var raw string
		st, raw, found = stateGet(t, serverURL, id)
		if !found {
			return false, fmt.Sprintf("no notify_email_state record for %s", id)
		}
		return st.State == state, fmt.Sprintf("state of %s is %s, want %s", id, raw, state)
	})
	return st
}

// streamInfo returns nats stream info <stream> --json.
func streamInfo(t testing.TB, serverURL, stream string) jetstream.StreamInfo {
	t.Helper()
	var info jetstream.StreamInfo
	decodeJSON(t, natsCLIOK(t, serverURL, "stream", "info", stream, "--json"), &info)
	return info
}

// consumerInfo returns nats consumer info <stream> <consumer> --json.
func consumerInfo(t testing.TB, serverURL, stream, consumer string) jetstream.ConsumerInfo {
	t.Helper()
	var info jetstream.ConsumerInfo
	decodeJSON(t, natsCLIOK(t, serverURL, "consumer", "info", stream, consumer, "--json"), &info)
	return info
}

// storedMsg is one message read back from a stream.
type storedMsg struct {
	Subject string
	Seq     uint64
	Header  map[string][]string // keys as published; nil without headers
	Data    []byte
	Time    time.Time
}

// streamGet reads the message with sequence seq from stream (nats stream get
// --json; nats stream view needs a terminal and so is unusable here).
func streamGet(t testing.TB, serverURL, stream string, seq uint64) storedMsg {
	t.Helper()
	var raw struct {
		Subject string    `json:"subject"`
		Seq     uint64    `json:"seq"`
		Hdrs    []byte    `json:"hdrs"` // base64 in JSON
		Data    []byte    `json:"data"` // base64 in JSON
		Time    time.Time `json:"time"`
	}
	decodeJSON(t, natsCLIOK(t, serverURL, "stream", "get", stream, strconv.FormatUint(seq, 10), "--json"), &raw)
	msg := storedMsg{Subject: raw.Subject, Seq: raw.Seq, Data: raw.Data, Time: raw.Time}
	if len(raw.Hdrs) > 0 {
		h, err := parseNATSHeader(raw.Hdrs)
		if err != nil {
			t.Fatalf("stream %s seq %d: headers %q: %v", stream, seq, raw.Hdrs, err)
		}
		msg.Header = h
	}
	return msg
}

// parseNATSHeader parses a "NATS/1.0\r\nKey: value\r\n\r\n" header block,
// keeping the keys as they were published.
func parseNATSHeader(b []byte) (map[string][]string, error) {
	lines := strings.Split(string(b), "\r\n")
	if !strings.HasPrefix(lines[0], "NATS/1.0") {
		return nil, fmt.Errorf("bad status line %q", lines[0])
	}
	h := map[string][]string{}
	for _, line := range lines[1:] {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("bad header line %q", line)
		}
		h[k] = append(h[k], strings.TrimSpace(v))
	}
	return h, nil
}

// decodeJSON decodes s into v or fails the test.
func decodeJSON(t testing.TB, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %T: %v in:\n%s", v, err, s)
	}
}
