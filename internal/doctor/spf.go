package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// SPF (RFC 7208): enough of check_host() to tell whether an address passes,
// and a static count of the DNS lookups a record costs.

// maxLookups is RFC 7208 §4.6.4's limit on the terms that cause DNS
// lookups (include, a, mx, ptr, exists, redirect) in one evaluation;
// past it, receivers return permerror and SPF fails.
const maxLookups = 10

// SPF results.
const (
	spfPass      = "pass"
	spfFail      = "fail"
	spfSoftFail  = "softfail"
	spfNeutral   = "neutral"
	spfNone      = "none"
	spfPermError = "permerror"
	spfTempError = "temperror"
)

type spfTerm struct {
	qual   byte   // '+', '-', '~', '?'
	mech   string // all, include, a, mx, ptr, ip4, ip6, exists
	arg    string // domain-spec or address, "" when absent
	cidr4  int    // -1 when absent
	cidr6  int    // -1 when absent
	source string
}

type spfRecord struct {
	terms    []spfTerm
	redirect string
}

// parseSPF parses an SPF record ("v=spf1 …"), refusing what receivers
// would answer permerror for.
func parseSPF(s string) (*spfRecord, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 || !strings.EqualFold(fields[0], "v=spf1") {
		return nil, errors.New("does not start with v=spf1")
	}
	rec := &spfRecord{}
	for _, f := range fields[1:] {
		name, value, isMod := strings.Cut(f, "=")
		if isMod && !strings.ContainsAny(name, ":/") {
			switch strings.ToLower(name) {
			case "redirect":
				if rec.redirect != "" {
					return nil, errors.New("redirect= given twice")
				}
				if value == "" {
					return nil, errors.New("redirect= without a domain")
				}
				rec.redirect = value
			case "exp":
			default: // unknown modifiers are ignored (RFC 7208 §6)
			}
			continue
		}
		t := spfTerm{qual: '+', cidr4: -1, cidr6: -1, source: f}
		if strings.ContainsRune("+-~?", rune(f[0])) {
			t.qual, f = f[0], f[1:]
		}
		mech := f
		rest := ""
		if i := strings.IndexAny(f, ":/"); i >= 0 {
			mech, rest = f[:i], f[i:]
		}
		t.mech = strings.ToLower(mech)
		if strings.HasPrefix(rest, ":") {
			rest = rest[1:]
			t.arg = rest
			if i := strings.Index(rest, "/"); i >= 0 && t.mech != "ip6" && t.mech != "ip4" {
				t.arg, rest = rest[:i], rest[i:]
			} else {
				rest = ""
			}
		}
		switch t.mech {
		case "all":
			if t.arg != "" || rest != "" {
				return nil, fmt.Errorf("%q: all takes no argument", t.source)
			}
		case "include", "exists":
			if t.arg == "" || rest != "" {
				return nil, fmt.Errorf("%q: %s needs a domain", t.source, t.mech)
			}
		case "a", "mx":
			if rest != "" {
				var err error
				if t.cidr4, t.cidr6, err = parseDualCIDR(rest); err != nil {
					return nil, fmt.Errorf("%q: %w", t.source, err)
				}
			}
		case "ptr":
		case "ip4", "ip6":
			_, n, err := net.ParseCIDR(withPrefix(t.arg, t.mech))
			if err != nil || (t.mech == "ip4") != (n.IP.To4() != nil) {
				return nil, fmt.Errorf("%q: not an %s address or network", t.source, t.mech)
			}
		default:
			return nil, fmt.Errorf("%q: unknown mechanism %q", t.source, t.mech)
		}
		rec.terms = append(rec.terms, t)
	}
	return rec, nil
}

// withPrefix adds /32 or /128 to an address without one.
func withPrefix(s, mech string) string {
	if strings.Contains(s, "/") {
		return s
	}
	if mech == "ip4" {
		return s + "/32"
	}
	return s + "/128"
}

// parseDualCIDR reads "/24", "//64" or "/24//64".
func parseDualCIDR(s string) (int, int, error) {
	c4, c6 := -1, -1
	v4, v6, dual := strings.Cut(strings.TrimPrefix(s, "/"), "//")
	if strings.HasPrefix(s, "//") {
		v4, v6, dual = "", strings.TrimPrefix(s, "//"), true
	}
	if v4 != "" {
		n, err := strconv.Atoi(v4)
		if err != nil || n < 0 || n > 32 {
			return 0, 0, errors.New("bad IPv4 prefix length")
		}
		c4 = n
	}
	if dual {
		n, err := strconv.Atoi(v6)
		if err != nil || n < 0 || n > 128 {
			return 0, 0, errors.New("bad IPv6 prefix length")
		}
		c6 = n
	}
	return c4, c6, nil
}

// all returns the qualifier of the record's "all" mechanism, or 0.
func (r *spfRecord) all() byte {
	for _, t := range r.terms {
		if t.mech == "all" {
			return t.qual
		}
	}
	return 0
}

// spfRecordAt returns the one SPF record at domain: "" when there is none,
// an error when there are several or the lookup failed.
func (d *doctor) spfRecordAt(ctx context.Context, domain string) (string, error) {
	txts, err := d.r.TXT(ctx, domain)
	if err != nil {
		return "", err
	}
	var recs []string
	for _, t := range txts {
		if f := strings.Fields(t); len(f) > 0 && strings.EqualFold(f[0], "v=spf1") {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return "", nil
	case 1:
		return recs[0], nil
	}
	return "", fmt.Errorf("%d SPF records at %s: receivers answer permerror; merge them into one", len(recs), domain)
}

// countLookups returns how many DNS-querying terms evaluating domain's SPF
// record can cost, following include and redirect (RFC 7208 §4.6.4).
func (d *doctor) countLookups(ctx context.Context, domain string, depth int) (int, error) {
	if depth > maxLookups {
		return 0, errors.New("include/redirect loop")
	}
	txt, err := d.spfRecordAt(ctx, domain)
	if err != nil {
		return 0, err
	}
	if txt == "" {
		return 0, fmt.Errorf("%s has no SPF record", domain)
	}
	rec, err := parseSPF(txt)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", domain, err)
	}
	n := 0
	for _, t := range rec.terms {
		switch t.mech {
		case "a", "mx", "ptr", "exists":
			n++
		case "include":
			n++
			if strings.Contains(t.arg, "%") {
				continue // a macro: known only at evaluation
			}
			m, err := d.countLookups(ctx, t.arg, depth+1)
			if err != nil {
				return n, fmt.Errorf("include:%s: %w", t.arg, err)
			}
			n += m
		}
	}
	if rec.redirect != "" && rec.all() == 0 {
		n++
		if !strings.Contains(rec.redirect, "%") {
			m, err := d.countLookups(ctx, rec.redirect, depth+1)
			if err != nil {
				return n, fmt.Errorf("redirect=%s: %w", rec.redirect, err)
			}
			n += m
		}
	}
	return n, nil
}

// spfEval is one check_host() evaluation with its lookup budget.
type spfEval struct {
	d       *doctor
	ip      net.IP
	sender  string // the MAIL FROM address
	lookups int
}

var errTooManyLookups = errors.New("more than 10 DNS lookups")

func (e *spfEval) spend() error {
	e.lookups++
	if e.lookups > maxLookups {
		return errTooManyLookups
	}
	return nil
}

// check evaluates domain's SPF policy for e.ip; the error says why a
// permerror or temperror came about.
func (e *spfEval) check(ctx context.Context, domain string) (string, error) {
	txt, err := e.d.spfRecordAt(ctx, domain)
	if err != nil {
		var se errServer
		if errors.As(err, &se) {
			return spfTempError, err
		}
		return spfPermError, err
	}
	if txt == "" {
		return spfNone, nil
	}
	rec, err := parseSPF(txt)
	if err != nil {
		return spfPermError, err
	}
	for _, t := range rec.terms {
		match, res, err := e.match(ctx, domain, t)
		if err != nil {
			return res, err
		}
		if match {
			return qualResult(t.qual), nil
		}
	}
	if rec.redirect != "" {
		if err := e.spend(); err != nil {
			return spfPermError, err
		}
		target, err := e.expand(rec.redirect, domain)
		if err != nil {
			return spfPermError, err
		}
		res, err := e.check(ctx, target)
		if res == spfNone {
			return spfPermError, fmt.Errorf("redirect=%s has no SPF record", target)
		}
		return res, err
	}
	return spfNeutral, nil
}

func qualResult(q byte) string {
	switch q {
	case '-':
		return spfFail
	case '~':
		return spfSoftFail
	case '?':
		return spfNeutral
	}
	return spfPass
}

// match reports whether term t matches; a non-nil error ends the
// evaluation with the result returned.
func (e *spfEval) match(ctx context.Context, domain string, t spfTerm) (bool, string, error) {
	target := domain
	if t.arg != "" && t.mech != "ip4" && t.mech != "ip6" {
		var err error
		if target, err = e.expand(t.arg, domain); err != nil {
			return false, spfPermError, err
		}
	}
	temp := func(err error) (bool, string, error) {
		var se errServer
		if errors.As(err, &se) {
			return false, spfTempError, err
		}
		return false, spfPermError, err
	}
	switch t.mech {
	case "all":
		return true, "", nil
	case "ip4", "ip6":
		_, n, _ := net.ParseCIDR(withPrefix(t.arg, t.mech))
		return n.Contains(e.ip), "", nil
	case "a":
		if err := e.spend(); err != nil {
			return false, spfPermError, err
		}
		ips, err := e.d.r.IPs(ctx, target)
		if err != nil {
			return temp(err)
		}
		return e.inAny(ips, t), "", nil
	case "mx":
		if err := e.spend(); err != nil {
			return false, spfPermError, err
		}
		mxs, err := e.d.r.MX(ctx, target)
		if err != nil {
			return temp(err)
		}
		for i, mx := range mxs {
			if i >= 10 {
				return false, spfPermError, errors.New("more than 10 MX names")
			}
			ips, err := e.d.r.IPs(ctx, mx.Mx)
			if err != nil {
				return temp(err)
			}
			if e.inAny(ips, t) {
				return true, "", nil
			}
		}
		return false, "", nil
	case "ptr":
		// Deprecated (RFC 7208 §5.5) and slow: counted, never matched here.
		if err := e.spend(); err != nil {
			return false, spfPermError, err
		}
		return false, "", nil
	case "exists":
		if err := e.spend(); err != nil {
			return false, spfPermError, err
		}
		rrs, err := e.d.r.query(ctx, target, dns.TypeA)
		if err != nil {
			return temp(err)
		}
		return len(rrs) > 0, "", nil
	case "include":
		if err := e.spend(); err != nil {
			return false, spfPermError, err
		}
		res, err := e.check(ctx, target)
		switch res {
		case spfPass:
			return true, "", nil
		case spfFail, spfSoftFail, spfNeutral:
			return false, "", nil
		case spfNone:
			return false, spfPermError, fmt.Errorf("include:%s has no SPF record", target)
		}
		return false, res, err
	}
	return false, spfPermError, fmt.Errorf("unknown mechanism %q", t.mech)
}

// inAny reports whether e.ip is in one of ips under t's prefix lengths.
func (e *spfEval) inAny(ips []net.IP, t spfTerm) bool {
	for _, ip := range ips {
		bits, c := 128, t.cidr6
		if ip.To4() != nil {
			bits, c = 32, t.cidr4
			ip = ip.To4()
		}
		if c < 0 {
			c = bits
		}
		n := &net.IPNet{IP: ip.Mask(net.CIDRMask(c, bits)), Mask: net.CIDRMask(c, bits)}
		if n.Contains(e.ip) {
			return true
		}
	}
	return false
}

// expand expands the simple macros of a domain-spec (RFC 7208 §7): %{d},
// %{i}, %{s}, %{l}, %{o}, %{h}, %%, %_ and %-. Transformers are refused.
func (e *spfEval) expand(spec, domain string) (string, error) {
	if !strings.Contains(spec, "%") {
		return spec, nil
	}
	local, senderDomain, _ := strings.Cut(e.sender, "@")
	var b strings.Builder
	for i := 0; i < len(spec); i++ {
		if spec[i] != '%' {
			b.WriteByte(spec[i])
			continue
		}
		if i+1 >= len(spec) {
			return "", fmt.Errorf("%q: a lone %%", spec)
		}
		i++
		switch spec[i] {
		case '%':
			b.WriteByte('%')
		case '_':
			b.WriteByte(' ')
		case '-':
			b.WriteString("%20")
		case '{':
			end := strings.IndexByte(spec[i:], '}')
			if end != 2 {
				return "", fmt.Errorf("%q: macro transformers are not evaluated by mailrelay doctor", spec)
			}
			switch spec[i+1] {
			case 'd', 'D':
				b.WriteString(domain)
			case 'i', 'I':
				b.WriteString(e.ip.String())
			case 's', 'S':
				b.WriteString(e.sender)
			case 'l', 'L':
				b.WriteString(local)
			case 'o', 'O':
				b.WriteString(senderDomain)
			case 'h', 'H':
				b.WriteString(senderDomain)
			default:
				return "", fmt.Errorf("%q: macro %%{%c} is not evaluated by mailrelay doctor", spec, spec[i+1])
			}
			i += end
		default:
			return "", fmt.Errorf("%q: bad macro", spec)
		}
	}
	return b.String(), nil
}
