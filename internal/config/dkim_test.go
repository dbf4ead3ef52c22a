package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func pemKey(t *testing.T, key any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func TestDKIMConfig(t *testing.T) {
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := writeFile(t, "dkim.pem", pemKey(t, ed))

	c := mustLoad(t, map[string]string{"DEFAULT_FROM_EMAIL": "Acme <notify@Mail.Example.com>",
		"MAILRELAY_DKIM_KEY_FILE": good, "MAILRELAY_DKIM_SELECTOR": "mr2026"})
	if c.DKIMSigningDomain() != "mail.example.com" {
		t.Errorf("signing domain %q, want the From domain", c.DKIMSigningDomain())
	}
	s, err := c.DKIMSigner()
	if err != nil || s == nil {
		t.Fatalf("DKIMSigner: %v, %v", s, err)
	}
	if w := strings.Join(c.Warnings(), "\n"); strings.Contains(w, "DKIM") {
		t.Errorf("warnings: %s", w)
	}

	c = mustLoad(t, map[string]string{"DEFAULT_FROM_EMAIL": "notify@mail.example.com",
		"MAILRELAY_DKIM_KEY_FILE": good, "MAILRELAY_DKIM_SELECTOR": "mr2026", "MAILRELAY_DKIM_DOMAIN": "example.com"})
	if w := strings.Join(c.Warnings(), "\n"); strings.Contains(w, "align") {
		t.Errorf("a parent domain aligns (relaxed), but: %s", w)
	}
	c = mustLoad(t, map[string]string{"DEFAULT_FROM_EMAIL": "notify@example.com",
		"MAILRELAY_DKIM_KEY_FILE": good, "MAILRELAY_DKIM_SELECTOR": "mr2026", "MAILRELAY_DKIM_DOMAIN": "esp.example.net"})
	if w := strings.Join(c.Warnings(), "\n"); !strings.Contains(w, "does not align") {
		t.Errorf("no alignment warning: %s", w)
	}

	c = mustLoad(t, map[string]string{"EMAIL_HOST": "smtp.example.com", "DEFAULT_FROM_EMAIL": "notify@example.com"})
	if s, err := c.DKIMSigner(); s != nil || err != nil {
		t.Errorf("no key: DKIMSigner = %v, %v; want nil, nil", s, err)
	}

	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	secret := pemKey(t, small)
	weak := writeFile(t, "weak.pem", secret)
	for name, tc := range map[string]struct {
		env  map[string]string
		vars string
		want string
	}{
		"unreadable":   {map[string]string{"MAILRELAY_DKIM_KEY_FILE": "/nonexistent/dkim.pem", "MAILRELAY_DKIM_SELECTOR": "s1"}, "MAILRELAY_DKIM_KEY_FILE", "no such file"},
		"not a key":    {map[string]string{"MAILRELAY_DKIM_KEY_FILE": writeFile(t, "x.pem", "hello"), "MAILRELAY_DKIM_SELECTOR": "s1"}, "MAILRELAY_DKIM_KEY_FILE", "no PEM block"},
		"rsa 1024":     {map[string]string{"MAILRELAY_DKIM_KEY_FILE": weak, "MAILRELAY_DKIM_SELECTOR": "s1"}, "MAILRELAY_DKIM_KEY_FILE", "at least 2048"},
		"no selector":  {map[string]string{"MAILRELAY_DKIM_KEY_FILE": good}, "MAILRELAY_DKIM_SELECTOR", "required"},
		"bad selector": {map[string]string{"MAILRELAY_DKIM_KEY_FILE": good, "MAILRELAY_DKIM_SELECTOR": "a b"}, "MAILRELAY_DKIM_SELECTOR", "DKIM selector"},
		"bad domain":   {map[string]string{"MAILRELAY_DKIM_KEY_FILE": good, "MAILRELAY_DKIM_SELECTOR": "s1", "MAILRELAY_DKIM_DOMAIN": "not a domain"}, "MAILRELAY_DKIM_DOMAIN", "domain name"},
		"no key":       {map[string]string{"MAILRELAY_DKIM_SELECTOR": "s1"}, "MAILRELAY_DKIM_KEY_FILE", "required"},
	} {
		ps := problemsOf(t, tc.env)
		if len(ps) != 1 || ps[0].Vars[0] != tc.vars || !strings.Contains(ps[0].Msg, tc.want) || !strings.HasPrefix(ps[0].Msg, tc.vars+":") {
			t.Errorf("%s: %v; want one problem naming %s and %q", name, ps, tc.vars, tc.want)
		}
		if strings.Contains(ps.Error(), secret[40:80]) {
			t.Errorf("%s: the problem shows the key", name)
		}
	}
}
