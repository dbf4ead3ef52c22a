package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// scratchDir is a per-test-binary temporary directory for artefacts that are
// shared between tests (the mailrelay build). It is removed when the tests end.
var scratchDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mailrelay-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: create scratch dir:", err)
		os.Exit(2)
	}
	scratchDir = dir
	code := m.Run()
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: remove scratch dir:", err)
	}
	os.Exit(code)
}

// repoRoot is the directory holding the module's go.mod, found by walking up
// from the working directory (go test runs in the package directory).
var repoRoot = sync.OnceValues(func() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
})

// mustRepoRoot returns repoRoot or fails the test.
func mustRepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("e2e: locate repository root: %v", err)
	}
	return root
}

// toolDir is where the tool binaries live: $MAILRELAY_E2E_BIN_DIR, else <repo>/bin.
func toolDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("MAILRELAY_E2E_BIN_DIR"); d != "" {
		return d
	}
	return filepath.Join(mustRepoRoot(t), "bin")
}

// inCI reports whether the CI environment variable holds a true value.
func inCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// requireTool returns the path of the named tool binary. When it is missing the
// test is skipped, or fails when running in CI, where the tools must be present.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	path := filepath.Join(toolDir(t), name)
	fi, err := os.Stat(path)
	if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return path
	}
	msg := fmt.Sprintf("e2e: tool %s not found at %s (run `make tools`, or set MAILRELAY_E2E_BIN_DIR)", name, path)
	if inCI() {
		t.Fatal(msg + "; CI is set, so the tools are required")
	}
	t.Skip(msg)
	return ""
}
