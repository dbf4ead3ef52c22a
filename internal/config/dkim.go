package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/mailrelay/mailrelay/internal/dkim"
	"github.com/mailrelay/mailrelay/internal/transport"
)

// DKIMEnabled reports whether mail is DKIM-signed (MAILRELAY_DKIM_KEY_FILE).
func (c *Config) DKIMEnabled() bool { return c.Message.DKIMKeyFile != "" }

// DKIMSigningDomain returns the DKIM signing domain: MAILRELAY_DKIM_DOMAIN,
// lower-cased, or the From domain.
func (c *Config) DKIMSigningDomain() string {
	if d := strings.TrimSuffix(strings.ToLower(c.Message.DKIMDomain), "."); d != "" {
		return d
	}
	return c.FromDomain()
}

// DKIMSigner returns the signer for the configured key, or nil, nil when
// MAILRELAY_DKIM_KEY_FILE is unset. Its error names the variable at fault,
// never the key.
func (c *Config) DKIMSigner() (transport.Signer, error) {
	s, err := c.DKIMKeySigner()
	if s == nil || err != nil {
		return nil, err // never a typed nil in the interface
	}
	return s, nil
}

// DKIMKeySigner is DKIMSigner with the concrete type, for mailrelay doctor:
// it compares the public key with the one published in DNS.
func (c *Config) DKIMKeySigner() (*dkim.Signer, error) {
	m := c.Message
	if m.DKIMKeyFile == "" {
		return nil, nil
	}
	key, err := dkim.LoadKey(m.DKIMKeyFile)
	if err != nil {
		return nil, fmt.Errorf("MAILRELAY_DKIM_KEY_FILE: %w", err)
	}
	if err := dkim.CheckSelector(m.DKIMSelector); err != nil {
		return nil, fmt.Errorf("MAILRELAY_DKIM_SELECTOR: %w", err)
	}
	s, err := dkim.NewWithKey(key, m.DKIMSelector, c.DKIMSigningDomain())
	if err != nil {
		return nil, fmt.Errorf("MAILRELAY_DKIM_DOMAIN: %w", err)
	}
	return s, nil
}

// checkDKIM checks the DKIM variables: a key that cannot be read or used, a
// missing or malformed selector, a malformed domain, or a selector or
// domain without a key (the operator meant to sign).
func (c *Config) checkDKIM(k *checker) {
	m := c.Message
	if m.DKIMKeyFile == "" {
		if m.DKIMSelector != "" || m.DKIMDomain != "" {
			k.addf([]string{"MAILRELAY_DKIM_KEY_FILE"},
				"MAILRELAY_DKIM_KEY_FILE: required when MAILRELAY_DKIM_SELECTOR or MAILRELAY_DKIM_DOMAIN is set: without a key no mail is signed; set the key file, or unset the others")
		}
		return
	}
	if _, err := dkim.LoadKey(m.DKIMKeyFile); err != nil {
		k.addf([]string{"MAILRELAY_DKIM_KEY_FILE"}, "MAILRELAY_DKIM_KEY_FILE: %v", err)
	}
	switch {
	case m.DKIMSelector == "":
		k.addf([]string{"MAILRELAY_DKIM_SELECTOR"}, "MAILRELAY_DKIM_SELECTOR: required when MAILRELAY_DKIM_KEY_FILE is set (the s= of the signature: the key is published at SELECTOR._domainkey.DOMAIN)")
	case dkim.CheckSelector(m.DKIMSelector) != nil:
		k.add(notA("MAILRELAY_DKIM_SELECTOR", m.DKIMSelector))
	}
	if m.DKIMDomain != "" && dkim.CheckDomain(strings.TrimSuffix(strings.ToLower(m.DKIMDomain), ".")) != nil {
		k.add(notA("MAILRELAY_DKIM_DOMAIN", m.DKIMDomain))
	}
}

// dkimWarnings returns what Warnings says about DKIM: a signing domain
// that does not align with the From domain, and a key file that every user
// may read.
func (c *Config) dkimWarnings() []string {
	var ws []string
	if !c.DKIMEnabled() {
		// Not a warning: many relays (EMAIL_HOST) sign for the From domain
		// themselves. mailrelay doctor checks what receivers see.
		return ws
	}
	d, from := c.DKIMSigningDomain(), c.FromDomain()
	if d != from && !strings.HasSuffix(from, "."+d) {
		ws = append(ws, fmt.Sprintf("MAILRELAY_DKIM_DOMAIN (%s) is not the domain of DEFAULT_FROM_EMAIL (%s) nor a parent of it: the signature does not align for DMARC", d, from))
	}
	if fi, err := os.Stat(c.Message.DKIMKeyFile); err == nil && fi.Mode().Perm()&0o004 != 0 {
		ws = append(ws, fmt.Sprintf("MAILRELAY_DKIM_KEY_FILE (%s) is readable by every user: chmod 600 or 640", c.Message.DKIMKeyFile))
	}
	return ws
}
