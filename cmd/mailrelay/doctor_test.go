package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailrelay/mailrelay/internal/dkim"
	"github.com/mailrelay/mailrelay/internal/dkim/dkimtest"
	"github.com/mailrelay/mailrelay/internal/doctor"
	"github.com/mailrelay/mailrelay/internal/doctor/dnstest"
)

// TestDoctorCommand runs `mailrelay doctor` against an in-process DNS
// server: a good domain exits 0 (table and --json), a broken one exits 1
// with the records to publish.
func TestDoctorCommand(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "dkim.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	rec, err := dkim.Record(pub)
	if err != nil {
		t.Fatal(err)
	}
	srv := dnstest.Start(t,
		"good.test. 300 IN MX 10 mx.good.test.",
		"mx.good.test. 300 IN A 192.0.2.1",
		"smtp.good.test. 300 IN A 192.0.2.10",
		`good.test. 300 IN TXT "v=spf1 ip4:192.0.2.10 -all"`,
		`mr1._domainkey.good.test. 300 IN TXT "`+rec+`"`,
		`_dmarc.good.test. 300 IN TXT "v=DMARC1; p=reject"`,
	)
	env := map[string]string{
		"EMAIL_HOST": "smtp.good.test", "EMAIL_PORT": "587", "EMAIL_USE_TLS": "true",
		"DEFAULT_FROM_EMAIL":      "Acme <notify@good.test>",
		"MAILRELAY_DKIM_KEY_FILE": keyFile, "MAILRELAY_DKIM_SELECTOR": "mr1",
	}
	doctorRun := func(env map[string]string, args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append([]string{"doctor", "--resolver", srv.Addr}, args...),
			func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}

	out, stderr, err := doctorRun(env)
	if err != nil {
		t.Fatalf("good domain: %v\n%s%s", err, out, stderr)
	}
	for _, s := range []string{"mailrelay doctor: good.test", "dkim", "PASS", "one-click", "WARN", "summary: 8 pass, 1 warn, 0 fail"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}

	out, _, err = doctorRun(env, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep doctor.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Failed || rep.Domain != "good.test" || rep.Check("dkim").Status != doctor.Pass {
		t.Errorf("--json: %v %+v\n%s", err, rep, out)
	}

	env["DEFAULT_FROM_EMAIL"] = "notify@missing.test"
	out, _, err = doctorRun(env)
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("missing domain: err %v (exit %d), want exit 1", err, exitCode(err))
	}
	for _, s := range []string{"FAIL", "To fix:", `_dmarc.missing.test. IN TXT "v=DMARC1; p=none`, `mr1._domainkey.missing.test. IN TXT "v=DKIM1; k=ed25519; p=`} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}

	if _, _, err := doctorRun(env, "--resolver", "no-port"); err == nil || exitCode(err) != 2 {
		t.Errorf("--resolver without a port: %v", err)
	}
}

// TestSendTestSignsWithDKIM: from the environment through relay.NewSender
// to the file backend, a mail is DKIM-signed and dkimpy verifies the file.
func TestSendTestSignsWithDKIM(t *testing.T) {
	dkimtest.Require(t)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "dkim.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "mail")
	env := map[string]string{
		"EMAIL_BACKEND": "file", "EMAIL_FILE_PATH": out,
		"DEFAULT_FROM_EMAIL": "notify@example.com", "FRONTEND_BASE_URL": "https://app.example.com",
		"MAILRELAY_DKIM_KEY_FILE": keyFile, "MAILRELAY_DKIM_SELECTOR": "mr1",
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"send-test", "--to", "ann@example.org"},
		func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Fatalf("send-test: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	files, _ := filepath.Glob(filepath.Join(out, "*.eml"))
	if len(files) != 1 {
		t.Fatalf("files: %v", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := dkim.Record(pub)
	ok, h := dkimtest.Verify(t, data, "mr1._domainkey.example.com", rec)
	if !ok {
		t.Fatalf("dkimpy does not verify:\n%s", data)
	}
	if !slices.Contains(h, "list-unsubscribe") || !slices.Contains(h, "list-id") {
		t.Errorf("h=%v", h)
	}

	// A key that cannot be used refuses start-up, naming the variable.
	env["MAILRELAY_DKIM_KEY_FILE"] = filepath.Join(dir, "missing.pem")
	err = run(context.Background(), []string{"send-test", "--to", "ann@example.org"},
		func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "MAILRELAY_DKIM_KEY_FILE") {
		t.Errorf("missing key: %v", err)
	}
}
