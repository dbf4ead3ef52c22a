package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// relayBuild is the one build of ./cmd/mailrelay shared by all tests.
var relayBuild struct {
	once sync.Once
	path string
	err  error
}

// buildMailrelay returns the mailrelay binary under test: the file named by
// $MAILRELAY_E2E_MAILRELAY, else ./cmd/mailrelay built once per test binary
// (with -race when the tests run with -race).
func buildMailrelay(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MAILRELAY_E2E_MAILRELAY"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("MAILRELAY_E2E_MAILRELAY: %v", err)
		}
		return p
	}
	root := mustRepoRoot(t)
	relayBuild.once.Do(func() {
		out := filepath.Join(scratchDir, "mailrelay")
		args := []string{"build"}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "-o", out, "./cmd/mailrelay")
		// go test puts $GOROOT/bin first in PATH.
		goBin, err := exec.LookPath("go")
		if err != nil {
			relayBuild.err = fmt.Errorf("build mailrelay: %w", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = root
		if output, err := cmd.CombinedOutput(); err != nil {
			relayBuild.err = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, output)
			return
		}
		relayBuild.path = out
	})
	if relayBuild.err != nil {
		t.Fatal(relayBuild.err)
	}
	return relayBuild.path
}

// relayEnv is the environment for a mailrelay process: PATH and a private
// HOME, then env (which may override them). An entry with an empty value is
// passed as set-but-empty.
func relayEnv(home string, env map[string]string) []string {
	// A race-built binary sleeps 1 s at exit unless told not to.
	m := map[string]string{"GORACE": "atexit_sleep_ms=0"}
	for _, kv := range cleanEnv(home) {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	for k, v := range env {
		m[k] = v
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// checkNoRace fails the test if a race-enabled mailrelay reported a data race.
func checkNoRace(t testing.TB, output, where string) {
	t.Helper()
	if strings.Contains(output, "WARNING: DATA RACE") {
		t.Errorf("mailrelay reported a data race (see %s)", where)
	}
}

// relayProc is a running `mailrelay serve`.
type relayProc struct {
	t          testing.TB
	proc       *process
	dir        string // working directory
	stdoutPath string
	stderrPath string
	httpAddr   string
}

// startRelay starts `mailrelay serve [args...]` with a minimal environment:
// PATH, a private HOME and env. MAILRELAY_HTTP_ADDR defaults to a free
// loopback port. The working directory is a fresh temporary directory, so
// relative paths stay inside it. Set NATS_URL (the default 127.0.0.1:4222 is
// shared between tests). It does not wait for readiness: call WaitReady.
// Standard output and standard error go to separate files; both are printed
// if the test fails, and a data race report fails the test.
func startRelay(t testing.TB, env map[string]string, args ...string) *relayProc {
	t.Helper()
	bin := buildMailrelay(t)
	dir := t.TempDir()
	r := &relayProc{
		t:          t,
		dir:        dir,
		stdoutPath: filepath.Join(dir, "stdout.log"),
		stderrPath: filepath.Join(dir, "stderr.log"),
		httpAddr:   env["MAILRELAY_HTTP_ADDR"],
	}
	if r.httpAddr == "" {
		r.httpAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		env = mapWith(env, "MAILRELAY_HTTP_ADDR", r.httpAddr)
	}
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	dumpOnFailure(t, "mailrelay", r.stdoutPath, r.stderrPath)
	t.Cleanup(func() { checkNoRace(t, readFile(r.stderrPath), r.stderrPath) })
	r.proc = startProcess(t, procSpec{
		name:   "mailrelay",
		bin:    bin,
		args:   append([]string{"serve"}, args...),
		env:    relayEnv(dir, env),
		dir:    work,
		stdout: r.stdoutPath,
		stderr: r.stderrPath,
	})
	return r
}

// mapWith returns a copy of m with k set to v.
func mapWith(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for mk, mv := range m {
		out[mk] = mv
	}
	out[k] = v
	return out
}

// HTTPURL is the base URL of the relay's HTTP listener.
func (r *relayProc) HTTPURL() string { return "http://" + r.httpAddr }

// Dir is the relay's working directory.
func (r *relayProc) Dir() string { return filepath.Join(r.dir, "work") }

// WaitReady waits until GET /readyz answers 200. It fails at once if the
// process exits.
func (r *relayProc) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() (bool, string) {
		if r.proc.exited() {
			t.Fatalf("mailrelay exited before becoming ready: %s", r.proc.exitDescription())
		}
		code, err := httpStatus(r.HTTPURL() + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		return code == 200, fmt.Sprintf("/readyz answered %d", code)
	})
}

// Signal sends sig to the relay (syscall.SIGTERM for a graceful stop).
func (r *relayProc) Signal(sig os.Signal) error { return r.proc.signal(sig) }

// Stop sends SIGTERM and waits for the exit (SIGKILL after stopTimeout).
func (r *relayProc) Stop() (killed bool) { return r.proc.stop(stopTimeout) }

// Kill ends the relay with SIGKILL, as in a crash.
func (r *relayProc) Kill() { r.proc.kill() }

// Exited reports whether the relay has ended.
func (r *relayProc) Exited() bool { return r.proc.exited() }

// Wait waits up to timeout for the relay to exit and returns how it ended
// (state.ExitCode()); the error wraps errTimeout if it is still running.
func (r *relayProc) Wait(timeout time.Duration) (*os.ProcessState, error) {
	return r.proc.wait(timeout)
}

// Stdout is everything the relay wrote to standard output so far (the
// console backend writes the mails there).
func (r *relayProc) Stdout() string { return readFile(r.stdoutPath) }

// Stderr is everything the relay wrote to standard error so far (its logs).
func (r *relayProc) Stderr() string { return readFile(r.stderrPath) }

// Output is Stdout followed by Stderr, for "never appears anywhere" checks.
func (r *relayProc) Output() string { return r.Stdout() + r.Stderr() }

// WaitForOutput waits until substr appears in the relay's output.
func (r *relayProc) WaitForOutput(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() (bool, string) {
		return strings.Contains(r.Output(), substr), fmt.Sprintf("%q not in mailrelay output yet", substr)
	})
}

// relayResult is the outcome of a one-shot mailrelay command.
type relayResult struct {
	Stdout   string
	Stderr   string
	ExitCode int
}

// runMailrelay runs a one-shot command (`publish`, `prefs get u42`, `state
// get ID`, `status` ...) with the same minimal environment as startRelay and
// stdin as standard input, and returns its outputs and exit code. It fails
// the test only if the command cannot run or takes longer than cliTimeout.
func runMailrelay(t testing.TB, env map[string]string, stdin string, args ...string) relayResult {
	t.Helper()
	bin := buildMailrelay(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = relayEnv(dir, env)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := relayResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("mailrelay %s: no exit within %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), cliTimeout, res.Stdout, res.Stderr)
	case errors.As(err, &exitErr):
		res.ExitCode = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("mailrelay %s: %v", strings.Join(args, " "), err)
	}
	checkNoRace(t, res.Stderr, "mailrelay "+strings.Join(args, " "))
	return res
}
