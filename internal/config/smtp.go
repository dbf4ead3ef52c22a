package config

import (
	"errors"
	"net"
	"strings"
)

// The rules for the SMTP host and credentials live here, once: Load applies
// them to EMAIL_*, and the SMTP backend (transport.NewSMTP) calls the same
// functions on its options, so the two cannot disagree.

// NormalizeHost returns EMAIL_HOST as the SMTP backend dials it: a host name,
// or an IP address, an IPv6 literal losing the brackets it may be written
// with ("[::1]" becomes "::1", the form net.JoinHostPort and TLS server names
// take). ok is false for anything else: empty, a scheme, a port, a path,
// white space, unbalanced brackets, or brackets around a host name.
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

// The ways SMTP credentials can be refused (SMTPAuth.Check). Their texts
// name the variables; they never hold a credential.
var (
	// ErrSMTPPasswordWithoutUser: a password but no user. Django would
	// silently send without AUTH; mailrelay refuses, since a password says
	// the operator meant to authenticate.
	ErrSMTPPasswordWithoutUser = errors.New("EMAIL_HOST_PASSWORD is set but EMAIL_HOST_USER is not: SMTP AUTH needs both; set EMAIL_HOST_USER, or unset the password to send without AUTH")
	// ErrSMTPUserWithoutPassword: a user but no password, which would
	// either skip AUTH silently or send an empty password.
	ErrSMTPUserWithoutPassword = errors.New("EMAIL_HOST_USER is set but EMAIL_HOST_PASSWORD is not: SMTP AUTH needs both; set the password (or EMAIL_HOST_PASSWORD_FILE), or unset EMAIL_HOST_USER to send without AUTH")
	// ErrSMTPInsecureAuth: credentials would travel in clear text to a host
	// that is not loopback.
	ErrSMTPInsecureAuth = errors.New("SMTP credentials would travel in clear text: enable EMAIL_USE_TLS or EMAIL_USE_SSL, or set MAILRELAY_SMTP_INSECURE_AUTH=true to allow it")
)

// SMTPAuth is what decides whether mailrelay authenticates to the SMTP relay,
// and whether it may.
type SMTPAuth struct {
	Host         string // EMAIL_HOST (brackets allowed)
	User         string // EMAIL_HOST_USER
	HasPassword  bool   // EMAIL_HOST_PASSWORD, or the content of EMAIL_HOST_PASSWORD_FILE, is not empty
	TLS          bool   // EMAIL_USE_TLS or EMAIL_USE_SSL: the session is encrypted before AUTH
	InsecureAuth bool   // MAILRELAY_SMTP_INSECURE_AUTH
}

// Enabled reports whether the relay authenticates: user and password are
// both set. Check refuses one without the other, so after it Enabled is
// simply "credentials are configured".
func (a SMTPAuth) Enabled() bool { return a.User != "" && a.HasPassword }

// Check applies the credential rule: user and password go together (both:
// AUTH, neither: no AUTH, one alone: ErrSMTPPasswordWithoutUser or
// ErrSMTPUserWithoutPassword), and credentials are sent in clear text only
// to a loopback host or with InsecureAuth (else ErrSMTPInsecureAuth).
func (a SMTPAuth) Check() error {
	switch {
	case a.User == "" && a.HasPassword:
		return ErrSMTPPasswordWithoutUser
	case a.User != "" && !a.HasPassword:
		return ErrSMTPUserWithoutPassword
	case a.Enabled() && !a.TLS && !a.InsecureAuth && !IsLoopback(a.Host):
		return ErrSMTPInsecureAuth
	}
	return nil
}
