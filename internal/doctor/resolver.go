package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Resolver asks one DNS server (a recursive resolver, or in tests an
// in-process authoritative one) the questions a receiving mail server asks.
type Resolver struct {
	// Server is host:port of the DNS server.
	Server string
	// Timeout bounds each query; 0 means 5 s.
	Timeout time.Duration
}

// DefaultServer returns the first name server of /etc/resolv.conf as
// host:port, or 127.0.0.1:53.
func DefaultServer() string {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		return "127.0.0.1:53"
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port)
}

// errServer is a failure to get an answer (timeout, SERVFAIL, REFUSED): the
// record may exist, the check cannot tell.
type errServer struct{ err error }

func (e errServer) Error() string { return e.err.Error() }

// query asks for name's records of type qtype. A name that does not exist
// (NXDOMAIN) or has no such records gives no records and no error.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(4096, false)
	c := &dns.Client{Net: "udp", Timeout: timeout}
	in, _, err := c.ExchangeContext(ctx, m, r.Server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, r.Server)
	}
	if err != nil {
		return nil, errServer{fmt.Errorf("%s %s: %w", dns.TypeToString[qtype], name, err)}
	}
	switch in.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return nil, errServer{fmt.Errorf("%s %s: the server answered %s", dns.TypeToString[qtype], name, dns.RcodeToString[in.Rcode])}
	}
	var rrs []dns.RR
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype {
			rrs = append(rrs, rr)
		}
	}
	return rrs, nil
}

// TXT returns name's TXT records, each with its strings joined.
func (r *Resolver) TXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, err
}

// MX returns name's MX records.
func (r *Resolver) MX(ctx context.Context, name string) ([]*dns.MX, error) {
	rrs, err := r.query(ctx, name, dns.TypeMX)
	var out []*dns.MX
	for _, rr := range rrs {
		out = append(out, rr.(*dns.MX))
	}
	return out, err
}

// IPs returns name's A and AAAA addresses.
func (r *Resolver) IPs(ctx context.Context, name string) ([]net.IP, error) {
	if ip := net.ParseIP(name); ip != nil {
		return []net.IP{ip}, nil
	}
	var out []net.IP
	var errs []error
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.query(ctx, name, t)
		if err != nil {
			errs = append(errs, err)
		}
		for _, rr := range rrs {
			switch v := rr.(type) {
			case *dns.A:
				out = append(out, v.A)
			case *dns.AAAA:
				out = append(out, v.AAAA)
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	return nil, errors.Join(errs...)
}
