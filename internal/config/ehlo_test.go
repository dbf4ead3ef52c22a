package config

import (
	"strings"
	"testing"
)

// MAILRELAY_EHLO_NAME (contract §9.5): unset means the host's fully
// qualified name, chosen by the transport; a host name or an address literal
// is taken (an IDN as its A-label, a bare IP as a literal); anything else
// refuses start-up, naming the variable.
func TestEHLOName(t *testing.T) {
	if c := mustLoad(t, map[string]string{}); c.Email.EHLOName != "" {
		t.Errorf("default EHLOName = %q, want \"\" (the transport's DefaultHeloName)", c.Email.EHLOName)
	}
	for in, want := range map[string]string{
		"mx-out.example.org":   "mx-out.example.org",
		" mx-out.example.org ": "mx-out.example.org",
		"bücher.example":       "xn--bcher-kva.example",
		"192.0.2.7":            "[192.0.2.7]",
		"[192.0.2.7]":          "[192.0.2.7]",
		"[IPv6:2001:db8::1]":   "[IPv6:2001:db8::1]",
	} {
		c := mustLoad(t, map[string]string{"MAILRELAY_EHLO_NAME": in})
		if c.Email.EHLOName != want {
			t.Errorf("MAILRELAY_EHLO_NAME=%q: EHLOName = %q, want %q", in, c.Email.EHLOName, want)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("MAILRELAY_EHLO_NAME=%q: Validate after Load: %v", in, err)
		}
	}
	for _, bad := range []string{"mx out.example.org", "mx.example.org:25", "host_name", "[mx.example.org]", "smtp://mx.example.org", "-mx.example.org"} {
		ps := problemsOf(t, map[string]string{"MAILRELAY_EHLO_NAME": bad})
		if len(ps) != 1 || len(ps[0].Vars) != 1 || ps[0].Vars[0] != "MAILRELAY_EHLO_NAME" ||
			ps[0].Msg != `MAILRELAY_EHLO_NAME: "`+bad+`" is not a host name or [IP literal]` {
			t.Errorf("MAILRELAY_EHLO_NAME=%q: problems %q, want one naming MAILRELAY_EHLO_NAME", bad, ps)
		}
	}
}

// An internationalised DEFAULT_FROM_EMAIL domain is used as its A-label
// (envelope, From field, Message-IDs, List-Id); one that IDNA2008 refuses
// stops start-up saying why.
func TestFromIDN(t *testing.T) {
	for in, want := range map[string]string{
		"notify@exämple.com":            "notify@xn--exmple-cua.com",
		"Bücher Bau <notify@bücher.de>": "Bücher Bau <notify@xn--bcher-kva.de>",
		"zoë@example.com":               "zoë@example.com", // the local part stays: it needs SMTPUTF8
		"Acme <notify@example.com>":     "Acme <notify@example.com>",
	} {
		c := mustLoad(t, map[string]string{"DEFAULT_FROM_EMAIL": in})
		if c.Message.From != want {
			t.Errorf("DEFAULT_FROM_EMAIL=%q: From = %q, want %q", in, c.Message.From, want)
		}
	}
	if d := mustLoad(t, map[string]string{"DEFAULT_FROM_EMAIL": "notify@Exämple.com"}).FromDomain(); d != "xn--exmple-cua.com" {
		t.Errorf("FromDomain = %q, want xn--exmple-cua.com", d)
	}
	ps := problemsOf(t, map[string]string{"DEFAULT_FROM_EMAIL": "notify@ex_ämple.com"})
	if len(ps) != 1 || ps[0].Vars[0] != "DEFAULT_FROM_EMAIL" || !strings.Contains(ps[0].Msg, "IDNA2008") {
		t.Errorf("problems %q, want one naming DEFAULT_FROM_EMAIL and IDNA2008", ps)
	}
}
