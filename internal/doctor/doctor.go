// Package doctor checks a From domain's DNS as a receiving mail server
// would (mailrelay doctor): MX or A, SPF, the DKIM key record, DMARC and
// alignment, and whether one-click unsubscribe is configured. Each check is
// pass, warn or fail; a failure carries the record to publish.
package doctor

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"text/tabwriter"

	"golang.org/x/net/publicsuffix"

	"github.com/mailrelay/mailrelay/internal/dkim"
)

// Status is the outcome of one check.
type Status string

// The outcomes.
const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Check is one line of the report.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix is the DNS record to publish (zone-file syntax) or the setting to
	// change; empty when nothing needs doing.
	Fix string `json:"fix,omitempty"`
}

// Report is what Run found.
type Report struct {
	Domain   string  `json:"domain"`
	From     string  `json:"from"`
	Resolver string  `json:"resolver"`
	Checks   []Check `json:"checks"`
	Failed   bool    `json:"failed"`
}

// Counts returns how many checks passed, warned and failed.
func (r *Report) Counts() (pass, warn, fail int) {
	for _, c := range r.Checks {
		switch c.Status {
		case Pass:
			pass++
		case Warn:
			warn++
		case Fail:
			fail++
		}
	}
	return
}

// Check returns the check named name, or a zero Check.
func (r *Report) Check(name string) Check {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return Check{}
}

// DKIMKey is the configured signing key.
type DKIMKey struct {
	Selector string
	Domain   string
	Public   crypto.PublicKey
}

// OneClick is what the configuration says about one-click unsubscribe.
type OneClick struct {
	PublicURL string // MAILRELAY_PUBLIC_URL
	KeysSet   bool   // MAILRELAY_UNSUBSCRIBE_KEYS (or its _FILE) is set
}

// Options is what Run checks.
type Options struct {
	// From is the From address (DEFAULT_FROM_EMAIL's address); its domain
	// is checked. The relay uses it as the envelope sender (MAIL FROM) too.
	From string
	// SMTPHost is EMAIL_HOST: its addresses are checked against SPF. ""
	// skips that check.
	SMTPHost string
	// DKIM is the configured key; nil when the relay does not sign.
	DKIM *DKIMKey
	// OneClick is the one-click configuration; nil skips the check.
	OneClick *OneClick
	// Resolver asks the questions.
	Resolver *Resolver
}

type doctor struct {
	r    *Resolver
	opts Options
	rep  *Report

	domain    string
	spfHostOK bool // EMAIL_HOST's addresses pass SPF for the From domain
	dkimOK    bool // the key record matches the configured key
	hostIPs   []net.IP
}

// Run checks the From domain and returns the report. It fails only when
// opts is unusable; DNS problems are failed checks.
func Run(ctx context.Context, opts Options) (*Report, error) {
	at := strings.LastIndexByte(opts.From, '@')
	if at < 0 || at == len(opts.From)-1 {
		return nil, fmt.Errorf("%q is not an email address", opts.From)
	}
	if opts.Resolver == nil {
		opts.Resolver = &Resolver{Server: DefaultServer()}
	}
	d := &doctor{r: opts.Resolver, opts: opts, domain: strings.ToLower(strings.TrimSuffix(opts.From[at+1:], "."))}
	d.rep = &Report{Domain: d.domain, From: opts.From, Resolver: opts.Resolver.Server}
	d.checkMX(ctx)
	d.checkSPF(ctx)
	d.checkDKIM(ctx)
	d.checkDMARC(ctx)
	d.checkOneClick()
	for _, c := range d.rep.Checks {
		if c.Status == Fail {
			d.rep.Failed = true
		}
	}
	return d.rep, nil
}

func (d *doctor) add(name string, s Status, fix, format string, args ...any) {
	d.rep.Checks = append(d.rep.Checks, Check{Name: name, Status: s, Detail: fmt.Sprintf(format, args...), Fix: fix})
}

// txtRecord formats a TXT record in zone-file syntax, split into strings of
// at most 255 octets (a DKIM RSA key is longer than one string may be).
func txtRecord(name, value string) string {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, `"`+value[:255]+`"`)
		value = value[255:]
	}
	parts = append(parts, `"`+value+`"`)
	return name + ". IN TXT " + strings.Join(parts, " ")
}

// checkMX: receivers refuse mail From a domain that does not exist or says
// it takes no mail (null MX, RFC 7505).
func (d *doctor) checkMX(ctx context.Context) {
	fix := fmt.Sprintf("%s. IN MX 10 mail.%s.   (a server that accepts mail for %s: bounces and replies go there)", d.domain, d.domain, d.domain)
	mxs, err := d.r.MX(ctx, d.domain)
	if err != nil {
		d.add("mx", Fail, "", "cannot look up MX of %s: %v", d.domain, err)
		return
	}
	var names []string
	for _, mx := range mxs {
		if mx.Mx == "." {
			d.add("mx", Fail, fix, "%s has a null MX (RFC 7505): it says it takes no mail, and receivers reject mail From it", d.domain)
			return
		}
		names = append(names, fmt.Sprintf("%d %s", mx.Preference, strings.TrimSuffix(mx.Mx, ".")))
	}
	if len(names) > 0 {
		d.add("mx", Pass, "", "MX %s", strings.Join(names, ", "))
		return
	}
	ips, err := d.r.IPs(ctx, d.domain)
	if err == nil && len(ips) > 0 {
		d.add("mx", Pass, "", "no MX, but an address (%s): receivers accept that as the mail server (implicit MX)", ips[0])
		return
	}
	d.add("mx", Fail, fix, "%s has neither MX nor A/AAAA records: receivers reject mail From a domain that takes no mail", d.domain)
}

// checkSPF: present, parses, at most 10 lookups, ends in -all/~all, and
// EMAIL_HOST's addresses pass.
func (d *doctor) checkSPF(ctx context.Context) {
	if d.opts.SMTPHost != "" {
		d.hostIPs, _ = d.r.IPs(ctx, d.opts.SMTPHost)
	}
	fix := txtRecord(d.domain, d.suggestedSPF())
	txt, err := d.spfRecordAt(ctx, d.domain)
	switch {
	case err != nil:
		d.add("spf", Fail, fix, "%v", err)
		return
	case txt == "":
		d.add("spf", Fail, fix, "%s has no SPF record (TXT v=spf1 …): receivers cannot tell which servers may send for it", d.domain)
		return
	}
	rec, err := parseSPF(txt)
	if err != nil {
		d.add("spf", Fail, fix, "%q does not parse (receivers answer permerror): %v", txt, err)
		return
	}
	d.add("spf", Pass, "", "%s", txt)

	n, err := d.countLookups(ctx, d.domain, 0)
	switch {
	case err != nil:
		d.add("spf-lookups", Fail, "", "cannot follow the record: %v", err)
	case n > maxLookups:
		d.add("spf-lookups", Fail, "replace includes by the ip4:/ip6: networks they stand for (flatten), or drop senders you no longer use, until at most 10 remain",
			"%d DNS lookups (include, a, mx, ptr, exists, redirect, counted through every include): over the limit of %d, so receivers answer permerror and SPF fails", n, maxLookups)
	default:
		d.add("spf-lookups", Pass, "", "%d DNS lookups (at most %d)", n, maxLookups)
	}

	switch q := rec.all(); {
	case q == '-' || q == '~':
		d.add("spf-all", Pass, "", "ends in %call", q)
	case q == '+':
		d.add("spf-all", Fail, fix, "ends in +all: every server on the internet may send as %s", d.domain)
	case q == 0 && rec.redirect != "":
		d.add("spf-all", Pass, "", "redirect=%s decides the rest", rec.redirect)
	default:
		d.add("spf-all", Warn, "end the record in -all (or ~all)", "no -all or ~all: mail from other servers is neutral, not refused")
	}

	d.checkSPFHost(ctx)
}

// suggestedSPF is an SPF record covering EMAIL_HOST's addresses.
func (d *doctor) suggestedSPF() string {
	var mechs []string
	for _, ip := range d.hostIPs {
		if ip.IsLoopback() || ip.IsPrivate() {
			continue
		}
		if ip.To4() != nil {
			mechs = append(mechs, "ip4:"+ip.String())
		} else {
			mechs = append(mechs, "ip6:"+ip.String())
		}
	}
	if len(mechs) == 0 {
		mechs = []string{"mx"}
	}
	return "v=spf1 " + strings.Join(mechs, " ") + " -all"
}

// checkSPFHost evaluates SPF for each address of EMAIL_HOST, with the From
// address as the envelope sender, as the relay sends it.
func (d *doctor) checkSPFHost(ctx context.Context) {
	host := d.opts.SMTPHost
	if host == "" {
		d.add("spf-host", Warn, "", "EMAIL_HOST is not set: cannot tell whether the relay's server passes SPF")
		return
	}
	if len(d.hostIPs) == 0 {
		d.add("spf-host", Warn, "", "cannot resolve EMAIL_HOST %s: cannot tell whether it passes SPF", host)
		return
	}
	var bad []string
	for _, ip := range d.hostIPs {
		e := &spfEval{d: d, ip: ip, sender: d.opts.From}
		res, err := e.check(ctx, d.domain)
		if res != spfPass {
			s := fmt.Sprintf("%s: %s", ip, res)
			if err != nil {
				s += " (" + err.Error() + ")"
			}
			bad = append(bad, s)
		}
	}
	if len(bad) == 0 {
		d.spfHostOK = true
		d.add("spf-host", Pass, "", "EMAIL_HOST %s (%s) passes SPF for %s", host, joinIPs(d.hostIPs), d.domain)
		return
	}
	// A smarthost's own address is not always the one that delivers (a
	// provider relays onwards from other servers): a warning, not a
	// failure.
	d.add("spf-host", Warn, "add EMAIL_HOST's sending networks to the SPF record (ip4:/ip6:), or your mail provider's include:",
		"EMAIL_HOST %s does not pass SPF for %s: %s. If your provider delivers from other servers, its include: must be in the record", host, d.domain, strings.Join(bad, "; "))
}

func joinIPs(ips []net.IP) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}

// checkDKIM: the selector's key record exists, is a DKIM1 key and matches
// the configured key.
func (d *doctor) checkDKIM(ctx context.Context) {
	k := d.opts.DKIM
	if k == nil {
		d.add("dkim", Warn, "set MAILRELAY_DKIM_KEY_FILE and MAILRELAY_DKIM_SELECTOR (see README, Deliverability)",
			"the relay does not sign (MAILRELAY_DKIM_KEY_FILE is not set): mail passes DKIM only if EMAIL_HOST signs it for %s", d.domain)
		return
	}
	name := k.Selector + "._domainkey." + k.Domain
	want, err := dkim.Record(k.Public)
	if err != nil {
		d.add("dkim", Fail, "", "the configured key: %v", err)
		return
	}
	fix := txtRecord(name, want)
	txts, err := d.r.TXT(ctx, name)
	if err != nil {
		d.add("dkim", Fail, fix, "cannot look up %s: %v", name, err)
		return
	}
	var keys []map[string]string
	for _, t := range txts {
		tags := parseTags(t)
		if v, ok := tags["v"]; ok && v != "DKIM1" {
			continue
		}
		if _, ok := tags["p"]; ok {
			keys = append(keys, tags)
		}
	}
	wantP, wantK, _ := dkim.PublicKeyData(k.Public)
	switch {
	case len(keys) == 0:
		d.add("dkim", Fail, fix, "no DKIM key record at %s: receivers cannot verify the signature", name)
		return
	case len(keys) > 1:
		d.add("dkim", Fail, fix, "%d key records at %s: publish exactly one", len(keys), name)
		return
	}
	tags := keys[0]
	gotK := tags["k"]
	if gotK == "" {
		gotK = "rsa"
	}
	switch p := strings.Join(strings.Fields(tags["p"]), ""); {
	case p == "":
		d.add("dkim", Fail, fix, "the key at %s is revoked (empty p=)", name)
	case p != wantP || !strings.EqualFold(gotK, wantK):
		d.add("dkim", Fail, fix, "the key at %s is not the configured key (MAILRELAY_DKIM_KEY_FILE): signatures fail", name)
	default:
		d.dkimOK = true
		d.add("dkim", Pass, "", "%s matches the configured key (k=%s, d=%s)", name, wantK, k.Domain)
	}
}

// parseTags reads "a=b; c=d" tag lists (DKIM and DMARC records).
func parseTags(s string) map[string]string {
	tags := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		tags[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	return tags
}

// orgDomain is the organisational domain (the registrable domain, by the
// public suffix list) DMARC's relaxed alignment compares.
func orgDomain(domain string) string {
	if o, err := publicsuffix.EffectiveTLDPlusOne(domain); err == nil {
		return o
	}
	return domain
}

// aligned reports whether an authenticated domain aligns with the From
// domain: equal in strict mode, the same organisational domain in relaxed.
func aligned(auth, from string, strict bool) bool {
	auth, from = strings.ToLower(auth), strings.ToLower(from)
	if strict {
		return auth == from
	}
	return orgDomain(auth) == orgDomain(from)
}

// checkDMARC: the policy record exists (at the From domain or its
// organisational domain), parses, and SPF or DKIM aligns.
func (d *doctor) checkDMARC(ctx context.Context) {
	fix := txtRecord("_dmarc."+d.domain, "v=DMARC1; p=none; rua=mailto:dmarc-reports@"+d.domain) +
		"   (start with p=none and read the reports; then p=quarantine)"
	rec, at, err := d.dmarcRecord(ctx)
	var tags map[string]string
	switch {
	case err != nil:
		d.add("dmarc", Fail, fix, "%v", err)
	case rec == "":
		d.add("dmarc", Fail, fix, "no DMARC record at _dmarc.%s: Gmail and Yahoo require one from bulk senders", d.domain)
	default:
		tags = parseTags(rec)
		p := strings.ToLower(tags["p"])
		if at != d.domain {
			p = strings.ToLower(tags["sp"])
			if p == "" {
				p = strings.ToLower(tags["p"])
			}
		}
		switch p {
		case "none":
			d.add("dmarc", Pass, "", "_dmarc.%s: p=none (monitoring: receivers report but do not act; move to quarantine once reports show only your servers)", at)
		case "quarantine", "reject":
			d.add("dmarc", Pass, "", "_dmarc.%s: p=%s", at, p)
		default:
			d.add("dmarc", Fail, fix, "_dmarc.%s: %q has no valid p= (none, quarantine or reject)", at, rec)
			tags = nil
		}
	}
	d.checkAlignment(tags)
}

// dmarcRecord returns the DMARC record that applies and where it was
// found: _dmarc.<domain>, else _dmarc.<organisational domain>.
func (d *doctor) dmarcRecord(ctx context.Context) (string, string, error) {
	doms := []string{d.domain}
	if org := orgDomain(d.domain); org != d.domain {
		doms = append(doms, org)
	}
	for _, dom := range doms {
		txts, err := d.r.TXT(ctx, "_dmarc."+dom)
		if err != nil {
			return "", "", err
		}
		var recs []string
		for _, t := range txts {
			if strings.HasPrefix(strings.TrimSpace(t), "v=DMARC1") {
				recs = append(recs, t)
			}
		}
		if len(recs) > 1 {
			return "", "", fmt.Errorf("%d DMARC records at _dmarc.%s: receivers ignore them all; keep one", len(recs), dom)
		}
		if len(recs) == 1 {
			return recs[0], dom, nil
		}
	}
	return "", "", nil
}

// checkAlignment: DMARC passes when SPF passes for a domain aligned with
// From (the relay's envelope sender is the From address) or a valid DKIM
// signature's d= aligns.
func (d *doctor) checkAlignment(tags map[string]string) {
	// aspf does not matter: the envelope sender is the From address itself,
	// aligned in either mode.
	strictDKIM := strings.EqualFold(tags["adkim"], "s")
	var ok, why []string
	if d.spfHostOK {
		ok = append(ok, "SPF (EMAIL_HOST passes for the envelope sender "+d.opts.From+")")
	} else {
		why = append(why, "SPF does not pass for EMAIL_HOST")
	}
	if k := d.opts.DKIM; k != nil {
		switch {
		case !d.dkimOK:
			why = append(why, "the DKIM key record does not match")
		case !aligned(k.Domain, d.domain, strictDKIM):
			mode := "relaxed"
			if strictDKIM {
				mode = "strict"
			}
			why = append(why, fmt.Sprintf("DKIM d=%s does not align with %s (%s)", k.Domain, d.domain, mode))
		default:
			ok = append(ok, "DKIM (d="+k.Domain+")")
		}
	} else {
		why = append(why, "the relay does not sign with DKIM")
	}
	if len(ok) > 0 {
		d.add("alignment", Pass, "", "DMARC aligns through %s", strings.Join(ok, " and "))
		return
	}
	fix := "sign with a key for " + d.domain + " (MAILRELAY_DKIM_KEY_FILE, MAILRELAY_DKIM_SELECTOR; MAILRELAY_DKIM_DOMAIN unset) and publish its record"
	if k := d.opts.DKIM; k != nil {
		if r, err := dkim.Record(k.Public); err == nil && aligned(k.Domain, d.domain, strictDKIM) {
			fix = txtRecord(k.Selector+"._domainkey."+k.Domain, r)
		}
	}
	d.add("alignment", Fail, fix, "neither SPF nor DKIM aligns with %s, so DMARC fails: %s", d.domain, strings.Join(why, "; "))
}

// checkOneClick: RFC 8058 one-click needs MAILRELAY_PUBLIC_URL (https) and
// unsubscribe keys; Gmail and Yahoo require it of bulk senders.
func (d *doctor) checkOneClick() {
	oc := d.opts.OneClick
	if oc == nil {
		return
	}
	u, err := url.Parse(oc.PublicURL)
	switch {
	case oc.PublicURL == "":
		d.add("one-click", Warn, "set MAILRELAY_PUBLIC_URL (https) and MAILRELAY_UNSUBSCRIBE_KEYS, and route /u/ to MAILRELAY_PUBLIC_ADDR",
			"MAILRELAY_PUBLIC_URL is not set: no one-click unsubscribe (List-Unsubscribe is the preferences page, without List-Unsubscribe-Post); Gmail and Yahoo require one-click from bulk senders")
	case err != nil || u.Scheme != "https" || u.Host == "":
		d.add("one-click", Warn, "make MAILRELAY_PUBLIC_URL an https URL", "MAILRELAY_PUBLIC_URL %q is not an https URL: RFC 8058 one-click needs https", oc.PublicURL)
	case !oc.KeysSet:
		d.add("one-click", Warn, "set MAILRELAY_UNSUBSCRIBE_KEYS (or MAILRELAY_UNSUBSCRIBE_KEYS_FILE)", "MAILRELAY_UNSUBSCRIBE_KEYS is not set: no one-click unsubscribe")
	default:
		d.add("one-click", Pass, "", "one-click unsubscribe at %s", strings.TrimRight(oc.PublicURL, "/")+"/u/…")
	}
}

// WriteText writes the report as a table, each failure or warning followed
// by what to publish or change.
func (r *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "mailrelay doctor: %s (From %s), asking %s\n\n", r.Domain, r.From, r.Resolver)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, strings.ToUpper(string(c.Status)), c.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var fixes []Check
	for _, c := range r.Checks {
		if c.Fix != "" && c.Status != Pass {
			fixes = append(fixes, c)
		}
	}
	if len(fixes) > 0 {
		fmt.Fprintln(w, "\nTo fix:")
		for _, c := range fixes {
			fmt.Fprintf(w, "  %s (%s):\n    %s\n", c.Name, c.Status, c.Fix)
		}
	}
	p, wn, f := r.Counts()
	_, err := fmt.Fprintf(w, "\nsummary: %d pass, %d warn, %d fail\n", p, wn, f)
	return err
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ErrFailed is returned by callers when a report has a failure.
var ErrFailed = errors.New("mailrelay doctor found failures")
