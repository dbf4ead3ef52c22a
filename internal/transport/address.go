package transport

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/idna"
)

// International addresses (contract §9.4). A domain with non-ASCII
// characters (an IDN) always leaves as its A-label, in the envelope and in
// the From and To fields: Render converts it with the IDNA2008 lookup
// profile, and a domain that does not convert is a permanent failure
// naming why. A non-ASCII local part cannot be converted: such an address
// goes only to a server that offers SMTPUTF8 (RFC 6531), on a MAIL FROM
// with the SMTPUTF8 parameter (go-mail adds it whenever the server offers
// it); to any other server the send ends, before MAIL FROM, as a permanent
// failure wrapping ErrNoSMTPUTF8. Everything else Render writes is 7-bit
// (RFC 2047 words, quoted-printable body), so no raw 8-bit header or
// envelope ever goes to a server that did not offer SMTPUTF8.

// ErrNoSMTPUTF8 is wrapped by the permanent failure of a message whose
// recipient (or sender) address has a non-ASCII local part, to a server
// that does not offer SMTPUTF8. Nothing was sent.
var ErrNoSMTPUTF8 = errors.New("the server does not offer SMTPUTF8 (RFC 6531)")

// Most octets of a domain name and of one of its labels (RFC 1035 §2.3.4).
const (
	maxDomain = 253
	maxLabel  = 63
)

// ASCIIDomain returns domain with every label as DNS sees it: an ASCII
// domain (a domain literal such as "[192.0.2.1]" included) unchanged, and
// one holding non-ASCII characters converted to its A-label with the
// IDNA2008 lookup profile (idna.Lookup: UTS #46 mapping, so "Exämple.COM"
// becomes "xn--exmple-cua.com"). The error says why a domain cannot be
// converted: a disallowed character, a bidi rule broken, or a label or
// the whole name too long once converted.
func ASCIIDomain(domain string) (string, error) {
	if isASCII(domain) {
		return domain, nil
	}
	a, err := idna.Lookup.ToASCII(domain)
	if err != nil {
		return "", fmt.Errorf("the domain %q is not a valid internationalised domain name (IDNA2008): %w", domain, err)
	}
	if n := len(strings.TrimSuffix(a, ".")); n > maxDomain {
		return "", fmt.Errorf("the domain %q is %d octets as an A-label (%s), over the limit of %d", domain, n, a, maxDomain)
	}
	for _, label := range strings.Split(strings.TrimSuffix(a, "."), ".") {
		switch {
		case label == "":
			return "", fmt.Errorf("the domain %q has an empty label", domain)
		case len(label) > maxLabel:
			return "", fmt.Errorf("the domain %q has a label of %d octets as an A-label (%s), over the limit of %d", domain, len(label), label, maxLabel)
		}
	}
	return a, nil
}

// ASCIIAddress returns addr (local@domain) with its domain converted by
// ASCIIDomain; the local part is left as it is.
func ASCIIAddress(addr string) (string, error) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr, nil
	}
	domain, err := ASCIIDomain(addr[at+1:])
	if err != nil {
		return "", err
	}
	return addr[:at+1] + domain, nil
}

// localPartIsASCII reports whether the local part of addr (what precedes
// its last "@") is plain ASCII, that is whether the address can reach a
// server that does not offer SMTPUTF8 once its domain is an A-label.
func localPartIsASCII(addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return isASCII(addr)
	}
	return isASCII(addr[:at])
}

// smtputf8Needed returns the permanent failure that a server without
// SMTPUTF8 must give a message from "from" to "to" (a non-ASCII local
// part), or nil when both addresses go to any server.
func smtputf8Needed(from, to string) error {
	switch {
	case !localPartIsASCII(to):
		return fmt.Errorf("the recipient address has a non-ASCII local part and %w", ErrNoSMTPUTF8)
	case !localPartIsASCII(from):
		return fmt.Errorf("the sender address (DEFAULT_FROM_EMAIL) has a non-ASCII local part and %w", ErrNoSMTPUTF8)
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
