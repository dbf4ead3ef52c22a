package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"regexp"

	"github.com/mailrelay/mailrelay/internal/smtpwire"
)

// Steps name where a send failed (Error.Step).
const (
	StepRender  = "render"  // the message could not be turned into RFC 5322 text
	StepPool    = "pool"    // waiting for a free connection (context ended, or the sender was closed)
	StepDNS     = "dns"     // resolving the SMTP host
	StepConnect = "connect" // TCP connect, or the server's greeting
	StepTLS     = "tls"     // implicit TLS handshake, STARTTLS, certificate verification
	StepHelo    = "helo"    // EHLO/HELO
	StepAuth    = "auth"    // SMTP AUTH
	StepMail    = "mail"    // MAIL FROM
	StepRcpt    = "rcpt"    // RCPT TO
	StepData    = "data"    // DATA, and the server's reply after the message
	StepWrite   = "write"   // writing the message (to the server, a file or a stream)
	StepReset   = "reset"   // RSET after the message
)

var (
	// ErrClosed is the cause (Error.Err) of a Send on a closed Sender.
	ErrClosed = errors.New("transport: sender is closed")

	// ErrStartTLSUnsupported is the cause of the failure when STARTTLS is
	// required (SecurityStartTLS) and the server does not offer it. The mail
	// is never sent in plain text instead.
	ErrStartTLSUnsupported = errors.New("server does not offer STARTTLS, which EMAIL_USE_TLS requires; nothing was sent in plain text")

	// The ways SMTP credentials are refused (SMTPAuth.Check), by NewSMTP
	// and, in its own words for the variables, by config.Load. Their texts
	// name the variables; they never hold a credential.

	// ErrPasswordWithoutUser: a password but no user. Django would
	// silently send without AUTH; mailrelay refuses, since a password says
	// the operator meant to authenticate.
	ErrPasswordWithoutUser = errors.New("EMAIL_HOST_PASSWORD is set but EMAIL_HOST_USER is not: SMTP AUTH needs both; set EMAIL_HOST_USER, or unset the password to send without AUTH")
	// ErrUserWithoutPassword: a user but no password, which would either
	// skip AUTH silently or send an empty password.
	ErrUserWithoutPassword = errors.New("EMAIL_HOST_USER is set but EMAIL_HOST_PASSWORD is not: SMTP AUTH needs both; set the password (or EMAIL_HOST_PASSWORD_FILE), or unset EMAIL_HOST_USER to send without AUTH")
	// ErrInsecureAuth: credentials would travel in clear text to a host
	// that is not loopback.
	ErrInsecureAuth = errors.New("SMTP credentials would travel in clear text: enable EMAIL_USE_TLS or EMAIL_USE_SSL, or set MAILRELAY_SMTP_INSECURE_AUTH=true to allow it")
)

// codeAuthRequired is the reply to MAIL FROM when the relay wants AUTH and
// none was configured.
const codeAuthRequired = 530

// Error is every failure a Sender returns, so that callers can classify it
// with errors.As instead of matching strings.
//
// Temporary is false only when retrying the same message cannot help: the
// server rejected this message with a 5xx reply during the mail transaction
// (MAIL, RCPT, DATA), or it cannot be rendered. Everything else is temporary:
// 4xx replies, code 0 (a dropped connection, where the outcome is ambiguous),
// DNS, connect, timeout and TLS failures, a cancelled context, and failures
// while setting up the session (greeting, EHLO, STARTTLS — including a
// server that does not offer it —, AUTH), even with a 5xx code, as well as
// 530 "authentication required" at MAIL: those say nothing about the
// message, and fixing the relay or the configuration makes the retry
// succeed (after MaxDeliver attempts the notification ends inbox_only
// anyway). Code and Enhanced are filled in whatever the class.
type Error struct {
	Temporary bool   // retry later
	Code      int    // SMTP reply code, 0 when none
	Enhanced  string // enhanced status code (RFC 3463) such as "5.1.1", "" when none
	Step      string // where it failed: one of the Step constants
	Err       error  // the cause; its text never contains the SMTP password
}

// Error returns "<step>: <cause>".
func (e *Error) Error() string {
	if e.Err == nil {
		return e.Step + ": failed"
	}
	return e.Step + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err is an *Error that retrying cannot fix: a
// 5xx rejection of the message, or a message that cannot be rendered.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && !e.Temporary
}

// enhancedRe finds an RFC 3463 enhanced status code at the start of a reply
// text.
var enhancedRe = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}\b`)

// sessionError classifies a failure while setting up a connection (dial,
// greeting, TLS, EHLO, AUTH): always temporary, with the reply code when the
// server sent one.
func sessionError(step string, err error) *Error {
	e := &Error{Temporary: true, Step: step, Err: err}
	var tp *textproto.Error
	if errors.As(err, &tp) {
		e.Code = tp.Code
		e.Enhanced = enhancedRe.FindString(tp.Msg)
	}
	return e
}

// dialStep tells a DNS failure from a connect failure.
func dialStep(err error) string {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return StepDNS
	}
	return StepConnect
}

// wireError classifies a failed mail transaction (smtpwire.Send). Only a
// 5xx reply is permanent: a 4xx is temporary, and code 0 means no reply
// (connection dropped, timeout), where the server may or may not have the
// message, so retry. 530 (authentication required, RFC 4954) is about the
// configuration, not the message. The enhanced status code is read only
// from a server that offered ENHANCEDSTATUSCODES.
func wireError(err error, enhanced bool) *Error {
	var we *smtpwire.Error
	if !errors.As(err, &we) {
		return &Error{Temporary: true, Step: StepData, Err: err}
	}
	e := &Error{Code: we.Reply.Code, Err: err}
	switch we.Stage {
	case smtpwire.StageMail:
		e.Step = StepMail
	case smtpwire.StageRcpt:
		e.Step = StepRcpt
	default:
		e.Step = StepData
	}
	if enhanced && len(we.Reply.Lines) > 0 {
		e.Enhanced = enhancedRe.FindString(we.Reply.Lines[0])
	}
	e.Temporary = e.Code/100 != 5 || e.Code == codeAuthRequired
	return e
}

// withContext marks e as caused by the end of ctx when ctx ended and the
// server gave no reply of its own.
func withContext(ctx context.Context, e *Error) *Error {
	if ctx.Err() == nil || e.Code != 0 {
		return e
	}
	e.Temporary = true
	if !errors.Is(e.Err, ctx.Err()) {
		e.Err = fmt.Errorf("%w: %w", ctx.Err(), e.Err)
	}
	return e
}
