package transport

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailrelay/mailrelay/internal/dkim"
	"github.com/mailrelay/mailrelay/internal/dkim/dkimtest"
	"github.com/mailrelay/mailrelay/internal/smtptest"
)

// TestSignedBackends: with a signer, the SMTP, file and console backends
// send exactly the signed bytes, and dkimpy verifies what arrived (RSA and
// Ed25519), with the List-Unsubscribe pair among the signed fields.
func TestSignedBackends(t *testing.T) {
	dkimtest.Require(t)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  interface{ Public() crypto.PublicKey }
	}{{"rsa", rk}, {"ed25519", ek}} {
		name := tc.name
		s, err := dkim.NewWithKey(tc.key.(crypto.Signer), "mr-"+name, "example.com")
		if err != nil {
			t.Fatal(err)
		}
		check := func(backend string, got []byte) {
			t.Helper()
			if !bytes.HasPrefix(got, []byte("DKIM-Signature:")) {
				t.Errorf("%s/%s: no DKIM-Signature first:\n%s", name, backend, got)
			}
			ok, h := dkimtest.Verify(t, got, s.RecordName(), s.Record())
			if !ok {
				t.Errorf("%s/%s: dkimpy does not verify what was sent:\n%s", name, backend, got)
				return
			}
			for _, f := range []string{"from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe", "list-unsubscribe-post"} {
				if !slices.Contains(h, f) {
					t.Errorf("%s/%s: %s not signed (h=%v)", name, backend, f, h)
				}
			}
		}

		srv := smtptest.Start(t)
		cfg := smtpConfig(srv)
		cfg.Signer = s
		send(t, newSMTP(t, cfg, nil))
		check("smtp", srv.WaitFor(t, 1, wait)[0].Data)

		dir := t.TempDir()
		f, err := NewFile(dir, WithSigner(s))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Send(context.Background(), testMessage()); err != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
		if len(files) != 1 {
			t.Fatalf("files: %v", files)
		}
		data, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		check("file", data)

		var out bytes.Buffer
		if err := NewConsole(&out, WithSigner(s)).Send(context.Background(), testMessage()); err != nil {
			t.Fatal(err)
		}
		check("console", bytes.TrimSuffix(out.Bytes(), []byte(consoleSeparator)))
	}
}

type failingSigner struct{}

func (failingSigner) Sign([]byte) ([]byte, error) { return nil, errors.New("no From") }

// TestSignFailureIsPermanent: a message that cannot be signed is not sent,
// and the failure is permanent at StepRender.
func TestSignFailureIsPermanent(t *testing.T) {
	srv := smtptest.Start(t)
	cfg := smtpConfig(srv)
	cfg.Signer = failingSigner{}
	dir := t.TempDir()
	f, err := NewFile(dir, WithSigner(failingSigner{}))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for name, sender := range map[string]Sender{"smtp": newSMTP(t, cfg, nil), "file": f, "console": NewConsole(&out, WithSigner(failingSigner{}))} {
		err := sender.Send(context.Background(), testMessage())
		var e *Error
		if !errors.As(err, &e) || e.Temporary || e.Step != StepRender || !strings.Contains(err.Error(), "signing") {
			t.Errorf("%s: %v; want a permanent render failure", name, err)
		}
	}
	if n := len(srv.Messages()); n != 0 || out.Len() != 0 {
		t.Errorf("sent %d messages, wrote %d bytes", n, out.Len())
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.eml")); len(files) != 0 {
		t.Errorf("files: %v", files)
	}
}
