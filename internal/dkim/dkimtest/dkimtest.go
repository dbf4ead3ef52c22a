// Package dkimtest verifies DKIM signatures in tests with an independent
// verifier: Debian's python3-dkim (dkimpy), not the library that signs. The
// public key record is injected through dkim.verify's dnsfunc, so no DNS is
// involved.
//
// With CI=true a missing verifier fails the test; otherwise it is skipped
// (make test installs python3-dkim when it runs as root).
package dkimtest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// script reads the message on stdin and verifies its first DKIM-Signature,
// answering the key query for DKIM_NAME with DKIM_RECORD. It prints "pass"
// or "fail" and, on a pass, the h= tag (oversigned names included).
const script = `
import os, sys, dkim
msg = sys.stdin.buffer.read()
name = os.environ["DKIM_NAME"].encode().lower().rstrip(b".")
record = os.environ["DKIM_RECORD"].encode()
def dnsfunc(n, timeout=5):
    return record if n.lower().rstrip(b".") == name else None
d = dkim.DKIM(msg, minkey=2048)
try:
    ok = d.verify(dnsfunc=dnsfunc)
except Exception as e:
    print("fail", type(e).__name__, e)
    sys.exit(0)
if ok:
    import dkim.util
    sig = [v for k, v in d.headers if k.lower() == b"dkim-signature"][0]
    h = dkim.util.parse_tag_value(sig)[b"h"]
    print("pass", b"".join(h.split()).decode())
else:
    print("fail")
`

var (
	once   sync.Once
	python string
)

// Python returns the interpreter that has the dkim module, or "".
func Python() string {
	once.Do(func() {
		for _, p := range []string{"python3", "/usr/bin/python3"} {
			if exec.Command(p, "-c", "import dkim, nacl").Run() == nil {
				python = p
				return
			}
		}
	})
	return python
}

// Require skips the test without the verifier, or fails it with CI=true.
func Require(t testing.TB) string {
	t.Helper()
	p := Python()
	if p == "" {
		msg := "python3-dkim (dkimpy) with python3-nacl is not installed: apt-get install python3-dkim"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// Verify runs dkimpy over msg, answering the key query for name
// (selector._domainkey.domain) with record. It returns whether the
// signature verified and, when it did, the h= list as dkimpy reads it (lower case, in order, oversigned names
// included).
func Verify(t testing.TB, msg []byte, name, record string) (bool, []string) {
	t.Helper()
	p := Require(t)
	cmd := exec.Command(p, "-c", script)
	cmd.Stdin = bytes.NewReader(msg)
	cmd.Env = append(os.Environ(), "DKIM_NAME="+name, "DKIM_RECORD="+record)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, out)
	}
	fields := strings.Fields(string(out))
	if len(fields) == 0 {
		t.Fatalf("dkimpy said nothing")
	}
	if fields[0] != "pass" {
		t.Logf("dkimpy: %s", out)
		return false, nil
	}
	var signed []string
	if len(fields) > 1 {
		signed = strings.Split(strings.ToLower(fields[1]), ":")
	}
	return true, signed
}
