package doctor_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/mailrelay/mailrelay/internal/dkim"
	"github.com/mailrelay/mailrelay/internal/doctor"
	"github.com/mailrelay/mailrelay/internal/doctor/dnstest"
)

// txt formats a TXT record in zone-file syntax, split into 255-octet strings.
func txt(name, value string) string {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, `"`+value[:255]+`"`)
		value = value[255:]
	}
	parts = append(parts, `"`+value+`"`)
	return name + ". 300 IN TXT " + strings.Join(parts, " ")
}

func record(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	r, err := dkim.Record(pub)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Zones shares the test zones with cmd/mailrelay's tests: good, broken and
// missing domains, an SPF of 11 lookups and a DMARC without alignment.
func zones(t *testing.T, good, other crypto.PublicKey) []string {
	return []string{
		// good.test: everything right. The relay's server is smtp.good.test.
		"good.test. 300 IN MX 10 mx.good.test.",
		"mx.good.test. 300 IN A 192.0.2.1",
		"smtp.good.test. 300 IN A 192.0.2.10",
		txt("good.test", "v=spf1 mx include:_spf.provider.test -all"),
		txt("_spf.provider.test", "v=spf1 ip4:192.0.2.0/28 ~all"),
		txt("good.test", "google-site-verification=abc"),
		txt("mr1._domainkey.good.test", record(t, good)),
		txt("_dmarc.good.test", "v=DMARC1; p=quarantine; rua=mailto:d@good.test"),

		// lookups.test: an SPF of 11 lookups (a, mx, ptr, exists, include = 5,
		// and 6 in the include), else fine.
		"lookups.test. 300 IN MX 10 mx.good.test.",
		txt("lookups.test", "v=spf1 a mx ptr exists:x.lookups.test include:inc.lookups.test ip4:192.0.2.10 -all"),
		txt("inc.lookups.test", "v=spf1 a mx a:a1.lookups.test a:a2.lookups.test a:a3.lookups.test a:a4.lookups.test -all"),
		txt("mr1._domainkey.lookups.test", record(t, good)),
		txt("_dmarc.lookups.test", "v=DMARC1; p=none"),

		// noalign.test: DMARC present, but SPF does not pass for the
		// relay's server and DKIM signs for another organisation.
		"noalign.test. 300 IN MX 10 mx.good.test.",
		txt("noalign.test", "v=spf1 ip4:203.0.113.5 -all"),
		txt("mr1._domainkey.esp.example.net", record(t, good)),
		txt("_dmarc.noalign.test", "v=DMARC1; p=reject"),

		// broken.test: null MX, SPF that does not parse, another key
		// published, two DMARC records.
		"broken.test. 300 IN MX 0 .",
		txt("broken.test", "v=spf1 ip4:300.1.1.1 foo -all"),
		txt("mr1._domainkey.broken.test", record(t, other)),
		txt("_dmarc.broken.test", "v=DMARC1; p=none"),
		txt("_dmarc.broken.test", "v=DMARC1; p=reject"),
	}
}

func run(t *testing.T, srv *dnstest.Server, from, host string, key *doctor.DKIMKey, oc *doctor.OneClick) *doctor.Report {
	t.Helper()
	rep, err := doctor.Run(context.Background(), doctor.Options{
		From: from, SMTPHost: host, DKIM: key, OneClick: oc,
		Resolver: &doctor.Resolver{Server: srv.Addr},
	})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", b.String())
	return rep
}

func want(t *testing.T, rep *doctor.Report, name string, status doctor.Status, detail, fix string) {
	t.Helper()
	c := rep.Check(name)
	if c.Status != status || !strings.Contains(c.Detail, detail) || !strings.Contains(c.Fix, fix) {
		t.Errorf("%s: %s %q fix %q; want %s with %q, fix with %q", name, c.Status, c.Detail, c.Fix, status, detail, fix)
	}
}

func TestDoctor(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	epub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv := dnstest.Start(t, zones(t, rk.Public(), epub)...)
	oneClick := &doctor.OneClick{PublicURL: "https://relay.good.test", KeysSet: true}

	t.Run("good", func(t *testing.T) {
		rep := run(t, srv, "notify@good.test", "smtp.good.test", &doctor.DKIMKey{Selector: "mr1", Domain: "good.test", Public: rk.Public()}, oneClick)
		if rep.Failed {
			t.Error("a good domain failed")
		}
		for _, c := range rep.Checks {
			if c.Status != doctor.Pass {
				t.Errorf("%s: %s %s", c.Name, c.Status, c.Detail)
			}
		}
		want(t, rep, "spf-lookups", doctor.Pass, "2 DNS lookups", "")
		want(t, rep, "alignment", doctor.Pass, "SPF", "")
		want(t, rep, "alignment", doctor.Pass, "DKIM (d=good.test)", "")
	})

	t.Run("eleven lookups", func(t *testing.T) {
		rep := run(t, srv, "notify@lookups.test", "smtp.good.test", &doctor.DKIMKey{Selector: "mr1", Domain: "lookups.test", Public: rk.Public()}, oneClick)
		want(t, rep, "spf", doctor.Pass, "v=spf1", "")
		want(t, rep, "spf-lookups", doctor.Fail, "11 DNS lookups", "flatten")
		want(t, rep, "dmarc", doctor.Pass, "p=none", "")
		if !rep.Failed {
			t.Error("not failed")
		}
	})

	t.Run("dmarc without alignment", func(t *testing.T) {
		rep := run(t, srv, "notify@noalign.test", "smtp.good.test", &doctor.DKIMKey{Selector: "mr1", Domain: "esp.example.net", Public: rk.Public()}, nil)
		want(t, rep, "dmarc", doctor.Pass, "p=reject", "")
		want(t, rep, "spf-host", doctor.Warn, "192.0.2.10: fail", "ip4:")
		want(t, rep, "dkim", doctor.Pass, "mr1._domainkey.esp.example.net matches", "")
		want(t, rep, "alignment", doctor.Fail, "DKIM d=esp.example.net does not align with noalign.test", "MAILRELAY_DKIM_KEY_FILE")
		if !rep.Failed {
			t.Error("not failed")
		}
		if rep.Check("one-click").Name != "" {
			t.Error("one-click checked without its configuration")
		}
	})

	t.Run("broken", func(t *testing.T) {
		rep := run(t, srv, "notify@broken.test", "smtp.good.test", &doctor.DKIMKey{Selector: "mr1", Domain: "broken.test", Public: rk.Public()},
			&doctor.OneClick{PublicURL: "http://relay.broken.test", KeysSet: true})
		want(t, rep, "mx", doctor.Fail, "null MX", "IN MX 10")
		want(t, rep, "spf", doctor.Fail, "does not parse", `broken.test. IN TXT "v=spf1 ip4:192.0.2.10 -all"`)
		want(t, rep, "dkim", doctor.Fail, "not the configured key", `mr1._domainkey.broken.test. IN TXT "v=DKIM1; k=rsa; p=`)
		want(t, rep, "dmarc", doctor.Fail, "2 DMARC records", "_dmarc.broken.test. IN TXT")
		want(t, rep, "alignment", doctor.Fail, "neither SPF nor DKIM", "mr1._domainkey.broken.test. IN TXT")
		want(t, rep, "one-click", doctor.Warn, "not an https URL", "")
	})

	t.Run("missing", func(t *testing.T) {
		rep := run(t, srv, "notify@missing.test", "", &doctor.DKIMKey{Selector: "s2", Domain: "missing.test", Public: epub},
			&doctor.OneClick{})
		want(t, rep, "mx", doctor.Fail, "neither MX nor A/AAAA", "missing.test. IN MX")
		want(t, rep, "spf", doctor.Fail, "no SPF record", `missing.test. IN TXT "v=spf1 mx -all"`)
		want(t, rep, "dkim", doctor.Fail, "no DKIM key record at s2._domainkey.missing.test", `s2._domainkey.missing.test. IN TXT "v=DKIM1; k=ed25519; p=`)
		want(t, rep, "dmarc", doctor.Fail, "no DMARC record", `_dmarc.missing.test. IN TXT "v=DMARC1; p=none`)
		want(t, rep, "one-click", doctor.Warn, "MAILRELAY_PUBLIC_URL is not set", "")
		var b bytes.Buffer
		if err := rep.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		var back doctor.Report
		if err := json.Unmarshal(b.Bytes(), &back); err != nil || !back.Failed || len(back.Checks) != len(rep.Checks) {
			t.Errorf("JSON round trip: %v %+v", err, back)
		}
	})

	t.Run("no dkim key", func(t *testing.T) {
		rep := run(t, srv, "notify@good.test", "smtp.good.test", nil, nil)
		want(t, rep, "dkim", doctor.Warn, "does not sign", "MAILRELAY_DKIM_KEY_FILE")
		want(t, rep, "alignment", doctor.Pass, "SPF", "")
		if rep.Failed {
			t.Error("failed")
		}
	})
}

// TestTextReport: the table lists every check and the fixes.
func TestTextReport(t *testing.T) {
	srv := dnstest.Start(t)
	rep := run(t, srv, "notify@nowhere.test", "", nil, nil)
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	p, w, f := rep.Counts()
	for _, s := range []string{"CHECK", "RESULT", "DETAIL", "mx", "FAIL", "To fix:", `nowhere.test. IN TXT "v=spf1 mx -all"`,
		fmt.Sprintf("summary: %d pass, %d warn, %d fail", p, w, f)} {
		if !strings.Contains(out, s) {
			t.Errorf("report lacks %q:\n%s", s, out)
		}
	}
}
