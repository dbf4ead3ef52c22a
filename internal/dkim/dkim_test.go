package dkim_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wneessen/go-mail"

	"github.com/mailrelay/mailrelay/internal/dkim"
	"github.com/mailrelay/mailrelay/internal/dkim/dkimtest"
)

var rsaKey = sync1(func() crypto.Signer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func sync1(f func() crypto.Signer) func() crypto.Signer {
	var k crypto.Signer
	return func() crypto.Signer {
		if k == nil {
			k = f()
		}
		return k
	}
}

func edKey() crypto.Signer {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// writeKey writes key as PKCS#8 PEM (PKCS#1 with pkcs1) and returns the path.
func writeKey(t *testing.T, key crypto.Signer, pkcs1 bool) string {
	t.Helper()
	var block *pem.Block
	if rk, ok := key.(*rsa.PrivateKey); ok && pkcs1 {
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}
	} else {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	path := filepath.Join(t.TempDir(), "dkim.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rendered returns a message as go-mail renders it for the transport
// (transport.Render's options: UTF-8, quoted-printable, go-mail's folding and
// order), with the one-click pair when oneClick. It builds the go-mail
// message itself so that this package's tests do not depend on compose.
func rendered(t *testing.T, oneClick bool) []byte {
	t.Helper()
	msg := mail.NewMsg(mail.WithCharset(mail.CharsetUTF8), mail.WithEncoding(mail.EncodingQP), mail.WithNoDefaultUserAgent())
	if err := msg.From(`"Acme Tasks" <notify@example.com>`); err != nil {
		t.Fatal(err)
	}
	if err := msg.To(`=?utf-8?q?J=C3=B6rg_M=C3=BCller-L=C3=BCdenscheidt?= <joerg@example.org>`); err != nil {
		t.Fatal(err)
	}
	msg.Subject("Ada commented on “Ship the quarterly report before the board meeting on Friday” — please have a look")
	msg.SetDateWithValue(time.Date(2026, 12, 5, 9, 30, 0, 0, time.UTC))
	msg.SetMessageIDWithValue("n.01JD3N6Q@example.com")
	msg.SetGenHeader(mail.HeaderInReplyTo, "<task.42@example.com>")
	msg.SetGenHeader(mail.HeaderReferences, "<task.42@example.com>")
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	msg.SetGenHeader("X-Auto-Response-Suppress", "All")
	msg.SetGenHeader("List-Id", "mailrelay notifications <notifications.example.com>")
	msg.SetGenHeader("List-Unsubscribe", "<https://relay.example.com/u/AbCdEf0123456789-_xyz>")
	if oneClick {
		msg.SetGenHeader("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
	}
	msg.SetBodyString(mail.TypeTextPlain, "Ada wrote:\n\n> Looks good to me.   Trailing spaces   \n\nhttps://app.example.com/tasks/42\n\n\n")
	var b bytes.Buffer
	if _, err := msg.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func signer(t *testing.T, key crypto.Signer) *dkim.Signer {
	t.Helper()
	s, err := dkim.New(writeKey(t, key, false), "mr2026", "Example.COM")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSignVerifiesWithDkimpy signs go-mail's rendering with RSA and Ed25519
// and has dkimpy verify it; the signed fields cover contract §9.4's list.
func TestSignVerifiesWithDkimpy(t *testing.T) {
	dkimtest.Require(t)
	for _, tc := range []struct {
		name string
		key  crypto.Signer
	}{{"rsa2048", rsaKey()}, {"ed25519", edKey()}} {
		t.Run(tc.name, func(t *testing.T) {
			s := signer(t, tc.key)
			raw := rendered(t, true)
			signed, err := s.Sign(raw)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasSuffix(signed, raw) || !bytes.HasPrefix(signed, []byte("DKIM-Signature: ")) {
				t.Fatalf("Sign must prepend one field and keep the message byte for byte:\n%s", signed)
			}
			head, _, _ := bytes.Cut(signed, []byte("\r\n\r\n"))
			for _, line := range strings.Split(string(head), "\r\n") {
				if len(line) > 998 {
					t.Errorf("header line of %d octets", len(line))
				}
			}
			if !bytes.Contains(head, []byte("a="+map[string]string{"rsa2048": "rsa", "ed25519": "ed25519"}[tc.name]+"-sha256")) ||
				!bytes.Contains(head, []byte("c=relaxed/relaxed")) || !bytes.Contains(head, []byte("d=example.com")) {
				t.Errorf("signature tags:\n%s", head)
			}
			ok, fields := dkimtest.Verify(t, signed, s.RecordName(), s.Record())
			if !ok {
				t.Fatalf("dkimpy did not verify:\n%s", signed)
			}
			for _, want := range []string{"from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe", "list-unsubscribe-post",
				"mime-version", "content-type", "content-transfer-encoding", "auto-submitted", "in-reply-to", "references"} {
				if !slices.Contains(fields, want) {
					t.Errorf("%s is not signed; h=%v", want, fields)
				}
			}
			// Oversigned: listed once more than present.
			for _, f := range []string{"from", "subject", "list-unsubscribe", "list-unsubscribe-post"} {
				if n := count(fields, f); n != 2 {
					t.Errorf("%s is listed %d times in h=, want 2 (signed and oversigned)", f, n)
				}
			}
			t.Logf("h=%s", strings.Join(fields, ":"))
		})
	}
}

func count(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

// TestAlteredAfterSigningFails: any change to a signed field or the body,
// or an added field of an oversigned name, fails dkimpy's verification.
func TestAlteredAfterSigningFails(t *testing.T) {
	dkimtest.Require(t)
	s := signer(t, rsaKey())
	for _, oneClick := range []bool{true, false} {
		signed, err := s.Sign(rendered(t, oneClick))
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := dkimtest.Verify(t, signed, s.RecordName(), s.Record()); !ok {
			t.Fatalf("unaltered mail (one-click %v) does not verify", oneClick)
		}
		head, body, _ := strings.Cut(string(signed), "\r\n\r\n")
		alter := map[string]string{
			"body":                      head + "\r\n\r\n" + strings.Replace(body, "Looks good", "Looks bad", 1),
			"list-unsubscribe url":      strings.Replace(string(signed), "relay.example.com/u/", "evil.example.net/u/", 1),
			"to":                        strings.Replace(string(signed), "joerg@example.org", "jorg@example.org", 1),
			"second from":               "From: <boss@example.com>\r\n" + string(signed),
			"second subject":            "Subject: urgent\r\n" + string(signed),
			"added list-unsubscribe":    "List-Unsubscribe: <https://evil.example.net/x>\r\n" + string(signed),
			"body appended":             string(signed) + "P.S. click here\r\n",
			"date":                      strings.Replace(string(signed), "05 Dec 2026", "06 Dec 2026", 1),
			"message-id":                strings.Replace(string(signed), "n.01JD3N6Q@", "n.01JD3N6R@", 1),
			"list-id":                   strings.Replace(string(signed), "<notifications.example.com>", "<other.example.com>", 1),
			"list-unsubscribe-post add": strings.Replace(string(signed), "\r\n\r\n", "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n", 1),
		}
		if oneClick {
			alter["list-unsubscribe-post removed"] = strings.Replace(string(signed), "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", "", 1)
			delete(alter, "list-unsubscribe-post add")
		}
		for name, m := range alter {
			if m == string(signed) {
				t.Errorf("%s: the alteration changed nothing", name)
				continue
			}
			if ok, _ := dkimtest.Verify(t, []byte(m), s.RecordName(), s.Record()); ok {
				t.Errorf("one-click %v, %s: altered mail still verifies", oneClick, name)
			}
		}
	}
}

// TestRelaxedCanonicalization: refolding a header and trailing whitespace in
// the body, which relays may do, keep the signature valid.
func TestRelaxedCanonicalization(t *testing.T) {
	dkimtest.Require(t)
	s := signer(t, edKey())
	signed, err := s.Sign(rendered(t, true))
	if err != nil {
		t.Fatal(err)
	}
	m := strings.Replace(string(signed), "List-Id: mailrelay notifications", "List-Id:   mailrelay\r\n\tnotifications", 1)
	m = strings.Replace(m, "Looks good to me.", "Looks good to me.  ", 1)
	if m == string(signed) {
		t.Fatal("nothing changed")
	}
	if ok, _ := dkimtest.Verify(t, []byte(m), s.RecordName(), s.Record()); !ok {
		t.Error("a refolded header or trailing whitespace broke a relaxed/relaxed signature")
	}
}

func TestHeaderKeys(t *testing.T) {
	keys := dkim.HeaderKeys(rendered(t, false))
	if count(keys, "List-Unsubscribe-Post") != 1 || count(keys, "List-Unsubscribe") != 2 || count(keys, "From") != 2 {
		t.Errorf("h= without one-click: %v", keys)
	}
	if slices.Contains(keys, "X-Auto-Response-Suppress") || slices.Contains(keys, "Sender") {
		t.Errorf("h= signs fields it should not: %v", keys)
	}
	if keys[0] != "From" {
		t.Errorf("h= starts with %s", keys[0])
	}
	s := signer(t, edKey())
	if _, err := s.Sign([]byte("To: a@example.org\r\nSubject: x\r\n\r\nbody\r\n")); err == nil {
		t.Error("a message without From was signed")
	}
}

func TestKeys(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, pkcs1 := range []bool{true, false} {
		if _, err := dkim.LoadKey(writeKey(t, rsaKey(), pkcs1)); err != nil {
			t.Errorf("RSA 2048 (PKCS#1 %v): %v", pkcs1, err)
		}
	}
	if _, err := dkim.LoadKey(writeKey(t, edKey(), false)); err != nil {
		t.Errorf("Ed25519: %v", err)
	}
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	secretText := "not-a-key-but-secret-material-XYZZY"
	if err := os.WriteFile(garbage, []byte(secretText), 0o600); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken.pem")
	if err := os.WriteFile(broken, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte(secretText)}), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ path, want string }{
		"rsa1024": {writeKey(t, small, true), "at least 2048"},
		"ecdsa":   {writeKey(t, ec, false), "RSA or Ed25519"},
		"missing": {filepath.Join(dir, "nope.pem"), "no such file"},
		"garbage": {garbage, "no PEM block"},
		"broken":  {broken, "does not parse"},
		"dir":     {dir, "cannot read"},
	} {
		_, err := dkim.LoadKey(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: %v; want an error naming the file and %q", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "XYZZY") {
			t.Errorf("%s: the error shows the file's content: %v", name, err)
		}
	}
	if _, err := dkim.New(writeKey(t, edKey(), false), "bad selector", "example.com"); err == nil {
		t.Error("a selector with a space was accepted")
	}
	if _, err := dkim.New(writeKey(t, edKey(), false), "s1", "localhost"); err == nil {
		t.Error("a single-label domain was accepted")
	}
}

// TestSignerNeverPrintsKey: no verb prints the private key.
func TestSignerNeverPrintsKey(t *testing.T) {
	key := rsaKey().(*rsa.PrivateKey)
	s := signer(t, key)
	d := key.D.String()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		if out := fmt.Sprintf(verb, s); strings.Contains(out, d) || strings.Contains(out, key.Primes[0].String()) {
			t.Errorf("%s prints the key", verb)
		}
	}
	if got := s.String(); got != "dkim signer d=example.com s=mr2026 k=rsa" {
		t.Errorf("String() = %q", got)
	}
	if !strings.HasPrefix(s.Record(), "v=DKIM1; k=rsa; p=MII") {
		t.Errorf("Record() = %q", s.Record())
	}
}
