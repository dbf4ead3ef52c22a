package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts shared by the helpers. They are generous because CI runs on two
// cores with the race detector on.
const (
	startTimeout = 30 * time.Second // a tool process becomes ready
	stopTimeout  = 15 * time.Second // SIGTERM before SIGKILL
	cliTimeout   = 60 * time.Second // one nats CLI or one-shot mailrelay command
	logTailBytes = 32 << 10         // how much of a log is dumped on failure
)

// errTimeout is returned by waits that ran out of time.
var errTimeout = errors.New("timed out")

// ---------------------------------------------------------------------------
// Ports and polling

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago and has
// not been handed out before in this test binary. Another process may still
// take it before it is used; the start helpers retry on "address in use".
func freePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("freePort: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			t.Fatalf("freePort: close: %v", err)
		}
		portsMu.Lock()
		seen := portsUsed[port]
		portsUsed[port] = true
		portsMu.Unlock()
		if !seen {
			return port
		}
	}
	t.Fatal("freePort: no unused port after 100 tries")
	return 0
}

// poll calls cond until it reports true or timeout passes, backing off from
// 10ms to 250ms between calls. It returns cond's last message and whether the
// condition was met.
func poll(timeout time.Duration, cond func() (bool, string)) (string, bool) {
	deadline := time.Now().Add(timeout)
	interval := 10 * time.Millisecond
	for {
		ok, msg := cond()
		if ok {
			return msg, true
		}
		if time.Now().After(deadline) {
			return msg, false
		}
		time.Sleep(interval)
		interval = min(interval*2, 250*time.Millisecond)
	}
}

// eventually fails the test unless cond reports true within timeout. cond
// runs on the test goroutine and explains itself with its message, which is
// reported on failure ("2 messages, want 3"). Use it instead of sleeping.
func eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	if msg, ok := poll(timeout, cond); !ok {
		t.Fatalf("condition not met within %v: %s", timeout, msg)
	}
}

// consistently fails the test if cond reports false at any poll during d,
// for example "still exactly one mail" after a redelivery.
func consistently(t testing.TB, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if ok, msg := cond(); !ok {
			t.Fatalf("condition stopped holding after %v: %s", d-time.Until(deadline), msg)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(min(100*time.Millisecond, max(time.Until(deadline), time.Millisecond)))
	}
}

// httpStatus returns the status code of a GET, or an error.
func httpStatus(url string) (int, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// ---------------------------------------------------------------------------
// Child processes

// procSpec describes a child process to start.
type procSpec struct {
	name   string    // for messages: "nats-server", "mailpit", "mailrelay"
	bin    string    // executable path
	args   []string  // arguments, without the executable
	env    []string  // the complete environment (nothing is inherited)
	dir    string    // working directory
	stdout string    // file that receives stdout (appended)
	stderr string    // file that receives stderr; may equal stdout
	stdin  io.Reader // nil means /dev/null
}

// process is a started child process.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited

	// Set before done is closed.
	state   *os.ProcessState
	waitErr error
}

// startProcess starts spec and registers a cleanup that stops it (SIGTERM,
// then SIGKILL after stopTimeout). Output goes straight to the log files.
func startProcess(t testing.TB, spec procSpec) *process {
	t.Helper()
	openLog := func(path string) *os.File {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatalf("%s: open log: %v", spec.name, err)
		}
		return f
	}
	stdout := openLog(spec.stdout)
	stderr := stdout
	if spec.stderr != spec.stdout {
		stderr = openLog(spec.stderr)
	}

	cmd := exec.Command(spec.bin, spec.args...)
	cmd.Env = spec.env
	cmd.Dir = spec.dir
	cmd.Stdin = spec.stdin
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.SysProcAttr = sysProcAttr()
	err := cmd.Start()
	// The child holds its own descriptors now.
	_ = stdout.Close()
	if stderr != stdout {
		_ = stderr.Close()
	}
	if err != nil {
		t.Fatalf("%s: start %s: %v", spec.name, spec.bin, err)
	}

	p := &process{name: spec.name, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.state, p.waitErr = cmd.ProcessState, err
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.stop(stopTimeout) {
			t.Logf("%s (pid %d) ignored SIGTERM for %v and was killed", p.name, p.pid(), stopTimeout)
		}
	})
	return p
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig; signalling a process that has exited is not an error.
func (p *process) signal(sig os.Signal) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s: signal %v: %w", p.name, sig, err)
	}
	return nil
}

// wait waits up to timeout for the process to end and returns its state.
func (p *process) wait(timeout time.Duration) (*os.ProcessState, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.state, nil
	case <-timer.C:
		return nil, fmt.Errorf("%s (pid %d) still running after %v: %w", p.name, p.pid(), timeout, errTimeout)
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs. It reports whether
// the kill was needed. Stopping a process that has ended does nothing.
func (p *process) stop(grace time.Duration) (killed bool) {
	if p.exited() {
		return false
	}
	_ = p.signal(syscall.SIGTERM)
	if _, err := p.wait(grace); err == nil {
		return false
	}
	p.kill()
	return true
}

// kill sends SIGKILL and waits for the process to end.
func (p *process) kill() {
	_ = p.signal(syscall.SIGKILL)
	<-p.done
}

// exitDescription says how the process ended, for error messages.
func (p *process) exitDescription() string {
	if !p.exited() {
		return "still running"
	}
	if p.waitErr != nil {
		return p.waitErr.Error()
	}
	return p.state.String()
}

// ---------------------------------------------------------------------------
// Logs

// dumpOnFailure registers a cleanup that logs the tail of each file when the
// test has failed. Register it before starting the process that writes the
// files, so the process is stopped (and its log complete) when it runs.
func dumpOnFailure(t testing.TB, name string, paths ...string) {
	t.Helper()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, path := range paths {
			t.Logf("---- %s: %s ----\n%s", name, path, readTail(path, logTailBytes))
		}
	})
}

// readTail returns up to n bytes from the end of the file at path.
func readTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot stat: %v)", err)
	}
	prefix := ""
	if fi.Size() > n {
		if _, err := f.Seek(-n, io.SeekEnd); err != nil {
			return fmt.Sprintf("(cannot seek: %v)", err)
		}
		prefix = fmt.Sprintf("[... %d earlier bytes omitted ...]\n", fi.Size()-n)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return prefix + string(b)
}

// readFile returns the file's contents, or "" if it cannot be read.
func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

// addressInUse reports whether a log says a listener could not bind.
func addressInUse(log string) bool {
	return strings.Contains(log, "address already in use")
}

// cleanEnv is the minimal environment for a child process: PATH and a private
// HOME (so no user configuration leaks in), plus kv ("KEY=value") entries.
func cleanEnv(home string, kv ...string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + home + "/.config",
		"XDG_DATA_HOME=" + home + "/.local/share",
		"XDG_CACHE_HOME=" + home + "/.cache",
	}
	return append(env, kv...)
}
