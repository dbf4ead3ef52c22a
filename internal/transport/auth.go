package transport

import (
	"net"
	"regexp"
	"strings"
)

// The rules for the SMTP host and credentials live here, once: NewSMTP
// applies them to its options, and config applies the same functions to
// EMAIL_* when it loads them, so the two cannot disagree.

// hostPattern is a DNS host name (labels of letters, digits, "_" and "-",
// an optional trailing dot).
var hostPattern = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$`)

// NormalizeHost returns an SMTP host (EMAIL_HOST) as the SMTP backend dials
// it: a host name, or an IP address, an IPv6 literal losing the brackets it
// may be written with ("[::1]" becomes "::1", the form net.JoinHostPort and
// TLS server names take). ok is false for anything else: empty, a scheme, a
// port, a path, white space, unbalanced brackets, or brackets around a host
// name.
func NormalizeHost(h string) (host string, ok bool) {
	if inner, bracketed := strings.CutPrefix(h, "["); bracketed {
		inner, closed := strings.CutSuffix(inner, "]")
		if !closed || net.ParseIP(inner) == nil {
			return "", false
		}
		return inner, true
	}
	if net.ParseIP(h) != nil || hostPattern.MatchString(h) {
		return h, true
	}
	return "", false
}

// IsLoopback reports whether host names this machine for sure: "localhost"
// or a loopback IP address (an IPv6 one with or without brackets).
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if h, ok := NormalizeHost(host); ok {
		host = h
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// SMTPAuth is what decides whether the SMTP backend authenticates to the
// relay, and whether it may.
type SMTPAuth struct {
	Host         string // EMAIL_HOST (brackets allowed)
	User         string // EMAIL_HOST_USER
	HasPassword  bool   // EMAIL_HOST_PASSWORD, or the content of EMAIL_HOST_PASSWORD_FILE, is not empty
	TLS          bool   // EMAIL_USE_TLS or EMAIL_USE_SSL: the session is encrypted before AUTH
	InsecureAuth bool   // MAILRELAY_SMTP_INSECURE_AUTH
}

// Enabled reports whether the backend authenticates: user and password are
// both set. Check refuses one without the other, so after it Enabled is
// simply "credentials are configured".
func (a SMTPAuth) Enabled() bool { return a.User != "" && a.HasPassword }

// Check applies the credential rule: user and password go together (both:
// AUTH, neither: no AUTH, one alone: ErrPasswordWithoutUser or
// ErrUserWithoutPassword), and credentials are sent in clear text only to a
// loopback host or with InsecureAuth (else ErrInsecureAuth).
func (a SMTPAuth) Check() error {
	switch {
	case a.User == "" && a.HasPassword:
		return ErrPasswordWithoutUser
	case a.User != "" && !a.HasPassword:
		return ErrUserWithoutPassword
	case a.Enabled() && !a.TLS && !a.InsecureAuth && !IsLoopback(a.Host):
		return ErrInsecureAuth
	}
	return nil
}
