package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// noEnv is an empty environment.
func noEnv(string) string { return "" }

// envFrom returns a getenv over m.
func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// runCLI runs the command line in-process and returns its outputs.
func runCLI(t *testing.T, getenv func(string) string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, getenv, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

// commandPaths lists every command and subcommand of the CLI, such as
// ["prefs"], ["prefs", "get"], read from kong's model so that a new command
// is covered without touching the test.
func commandPaths(t *testing.T) [][]string {
	t.Helper()
	p, err := kong.New(&cli{}, kong.Name("mailrelay"), helpVars())
	if err != nil {
		t.Fatal(err)
	}
	var paths [][]string
	var walk func(n *kong.Node, prefix []string)
	walk = func(n *kong.Node, prefix []string) {
		for _, c := range n.Children {
			if c.Type != kong.CommandNode {
				continue
			}
			path := append(append([]string(nil), prefix...), c.Name)
			paths = append(paths, path)
			walk(c, path)
		}
	}
	walk(p.Model.Node, nil)
	return paths
}

// TestHelpEveryCommand: `mailrelay --help` and `mailrelay <cmd> --help` for
// every command print the command's usage on stdout and succeed (exit 0),
// without reading the configuration (an invalid one does not matter).
func TestHelpEveryCommand(t *testing.T) {
	badConfig := envFrom(map[string]string{"EMAIL_USE_TLS": "true", "EMAIL_USE_SSL": "true", "EMAIL_PORT": "nope"})
	paths := commandPaths(t)
	want := []string{"serve", "provision", "publish", "prefs", "prefs get", "prefs set", "state", "state get", "status", "send-test", "version"}
	var got []string
	for _, p := range paths {
		got = append(got, strings.Join(p, " "))
	}
	for _, w := range want {
		if !strings.Contains("\x00"+strings.Join(got, "\x00")+"\x00", "\x00"+w+"\x00") {
			t.Errorf("command %q missing from the CLI model (have %q)", w, got)
		}
	}
	cases := append([][]string{{}}, paths...)
	for _, path := range cases {
		for _, flag := range []string{"--help", "-h"} {
			args := append(append([]string(nil), path...), flag)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				stdout, stderr, err := runCLI(t, badConfig, args...)
				if err != nil {
					t.Fatalf("err = %v (exit %d), want nil; stderr:\n%s", err, exitCode(err), stderr)
				}
				usage := strings.TrimSpace("Usage: mailrelay " + strings.Join(path, " "))
				if !strings.Contains(stdout, usage) {
					t.Errorf("stdout does not contain %q:\n%s", usage, stdout)
				}
				if stderr != "" {
					t.Errorf("stderr = %q, want nothing", stderr)
				}
			})
		}
	}
}

// TestVersion: `mailrelay version` prints the version and needs no
// configuration.
func TestVersion(t *testing.T) {
	stdout, _, err := runCLI(t, envFrom(map[string]string{"EMAIL_USE_TLS": "yes", "EMAIL_USE_SSL": "yes"}), "version")
	if err != nil {
		t.Fatal(err)
	}
	if stdout != "mailrelay "+version+"\n" {
		t.Errorf("stdout = %q, want %q", stdout, "mailrelay "+version+"\n")
	}
}

// TestWrongUsageExits2: an unknown command or a missing required flag is a
// usage error (exit 2).
func TestWrongUsageExits2(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {"send-test"}, {"prefs", "get"}, {"status", "--bogus"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, _, err := runCLI(t, noEnv, args...)
			if err == nil || exitCode(err) != 2 {
				t.Fatalf("err = %v (exit %d), want a usage error (exit 2)", err, exitCode(err))
			}
		})
	}
}
