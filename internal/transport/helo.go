package transport

import (
	"context"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

// The name the SMTP backend gives in EHLO (MAILRELAY_EHLO_NAME): the rule
// for a configured name lives here, so that NewSMTP and config apply the
// same one, and so does the default, this host's fully qualified name as
// Django finds it.

// heloPattern is an RFC 5321 Domain: dot-separated labels of letters,
// digits and "-", neither first nor last a "-" (no "_", no trailing dot).
var heloPattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)

// NormalizeHeloName returns name as EHLO sends it, and whether it is one:
// a host name (RFC 5321 Domain; an internationalised one becomes its
// A-label) or an address literal. An address literal is "[192.0.2.1]" or
// "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3); a bare or bracketed IP address
// ("192.0.2.1", "::1", "[::1]") is written as that literal, since a bare
// address is not a valid EHLO argument. ok is false for anything else:
// empty, white space, "_", a port, a label over 63 or a name over 253
// octets.
func NormalizeHeloName(name string) (helo string, ok bool) {
	if inner, bracketed := strings.CutPrefix(name, "["); bracketed {
		inner, closed := strings.CutSuffix(inner, "]")
		if !closed {
			return "", false
		}
		if tag, v6, tagged := strings.Cut(inner, ":"); tagged && strings.EqualFold(tag, "IPv6") {
			inner = v6
			if a, err := netip.ParseAddr(inner); err != nil || !a.Is6() || a.Zone() != "" {
				return "", false
			}
		}
		return addressLiteral(inner)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return addressLiteral(name)
	}
	a, err := ASCIIDomain(name)
	if err != nil || len(a) > maxDomain || !heloPattern.MatchString(a) {
		return "", false
	}
	for _, label := range strings.Split(a, ".") {
		if len(label) > maxLabel {
			return "", false
		}
	}
	return a, true
}

// addressLiteral returns the RFC 5321 address literal of the IP address s.
func addressLiteral(s string) (string, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", false
	}
	if a.Is4() {
		return "[" + a.String() + "]", true
	}
	return "[IPv6:" + a.String() + "]", true
}

// fqdnTimeout bounds the name look-ups of DefaultHeloName.
const fqdnTimeout = 3 * time.Second

// DefaultHeloName returns this host's fully qualified name, the EHLO name
// when MAILRELAY_EHLO_NAME is not set. It finds it as Django does
// (DNS_NAME, Python's socket.getfqdn() turned into an A-label): the host
// name, resolved to an address, and that address's names (the hosts file,
// then reverse DNS), the first that holds a dot, else the host name's
// canonical name (CNAME), else the host name itself. "localhost" and its
// variants are passed over whenever a better name exists; "localhost" is
// what it returns only when the machine has no name at all. It looks once
// per process, bounded by a few seconds, and remembers the answer.
func DefaultHeloName() string { return defaultHeloName() }

var defaultHeloName = sync.OnceValue(func() string {
	ctx, cancel := context.WithTimeout(context.Background(), fqdnTimeout)
	defer cancel()
	return fqdn(ctx, resolver{os.Hostname, net.DefaultResolver})
})

// resolver is what fqdn asks; tests give it fixed answers.
type resolver struct {
	hostname func() (string, error)
	dns      interface {
		LookupHost(ctx context.Context, host string) ([]string, error)
		LookupAddr(ctx context.Context, addr string) ([]string, error)
		LookupCNAME(ctx context.Context, host string) (string, error)
	}
}

// fqdn is DefaultHeloName's search, with its sources given.
func fqdn(ctx context.Context, r resolver) string {
	host, _ := r.hostname()
	host = strings.TrimSuffix(strings.TrimSpace(host), ".")
	// usable is a candidate name that EHLO can carry and says more than
	// "localhost".
	usable := func(name string) (string, bool) {
		name = strings.TrimSuffix(name, ".")
		if name == "" || isLocalhost(name) {
			return "", false
		}
		a, err := ASCIIDomain(name)
		if err != nil || strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return "", false
		}
		return a, true
	}
	if host != "" && !isLocalhost(host) {
		// socket.getfqdn: gethostbyaddr(hostname) resolves the name and
		// returns the primary name and aliases of its first address; the
		// first of them with a dot wins.
		if addrs, err := r.dns.LookupHost(ctx, host); err == nil && len(addrs) > 0 {
			if names, err := r.dns.LookupAddr(ctx, addrs[0]); err == nil {
				for _, n := range names {
					if a, ok := usable(n); ok && strings.Contains(a, ".") {
						return a
					}
				}
			}
		}
		if cname, err := r.dns.LookupCNAME(ctx, host); err == nil {
			if a, ok := usable(cname); ok && strings.Contains(a, ".") {
				return a
			}
		}
	}
	if a, ok := usable(host); ok {
		return a
	}
	return "localhost"
}

// isLocalhost reports whether name is "localhost" or a name like
// "localhost.localdomain" or "ip6-localhost" that hosts files give loopback
// addresses.
func isLocalhost(name string) bool {
	name = strings.ToLower(name)
	first, _, _ := strings.Cut(name, ".")
	return first == "localhost" || first == "ip6-localhost" || first == "ip6-loopback"
}
