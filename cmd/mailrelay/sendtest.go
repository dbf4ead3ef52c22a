package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/relay"
	"github.com/mailrelay/mailrelay/internal/transport"
)

type sendTestCmd struct {
	To string `required:"" placeholder:"ADDRESS" help:"Recipient of the test message: an address, optionally with a name (\"Ann Lee <ann@example.com>\")."`
}

// Names of the synthetic notification a test message is composed from.
const (
	sendTestRecipientID = "mailrelay-send-test"
	sendTestTaskID      = "mailrelay-send-test"
	sendTestReason      = "send-test"
)

// errNotConfigured is the send-test failure when no transport is configured.
var errNotConfigured = errors.New("email is not configured: EMAIL_BACKEND is smtp and EMAIL_HOST is empty, so the relay records notifications as skipped_not_configured; nothing was sent")

// sendTest composes a short test message for c.To and sends it now through
// the transport the relay would use, then says what happened: the server that
// accepted it, or the step that failed with the server's reply.
func (a *app) sendTest(ctx context.Context, c sendTestCmd) error {
	to, err := parseRecipient(c.To)
	if err != nil {
		return usageError{err}
	}
	if !a.cfg.Configured() {
		return errNotConfigured
	}
	composeCfg, err := relay.ComposeConfig(a.cfg)
	if err != nil {
		return err
	}
	now := time.Now()
	msg, err := testMessage(composeCfg, to, now)
	if err != nil {
		return err
	}
	sender, err := relay.NewSender(a.cfg, a.stdout, a.log)
	if err != nil {
		return err
	}
	defer sender.Close()

	// The relay's own bound on one send.
	sctx, cancel := context.WithTimeout(ctx, 2*a.cfg.Email.Timeout)
	defer cancel()
	start := time.Now()
	err = sender.Send(sctx, msg)
	took := time.Since(start)
	if err != nil {
		return sendTestFailure(a.cfg, err, took)
	}
	fmt.Fprintf(a.stdout, "accepted by %s in %s, Message-ID %s\n", destination(a.cfg), roundDuration(took), msg.MessageID)
	return nil
}

// parseRecipient reads --to: an address, or a name and an address.
func parseRecipient(s string) (compose.Address, error) {
	s = strings.TrimSpace(s)
	a, err := mail.ParseAddress(s)
	if err != nil || strings.ContainsAny(s, "\r\n") || strings.Count(a.Address, "@") != 1 {
		return compose.Address{}, fmt.Errorf("--to %q is not an email address (want ann@example.com or \"Ann Lee <ann@example.com>\")", s)
	}
	return compose.Address{Name: a.Name, Email: a.Address}, nil
}

// testMessage composes a task.assigned notification for to with the relay's
// composer, so the test message carries exactly the headers notifications
// carry (From, Message-ID, List-Id, List-Unsubscribe, Auto-Submitted, …),
// then replaces the subject and body with a short explanation. The
// notification id is new on every run, so every test message has its own
// Message-ID.
func testMessage(cfg compose.Config, to compose.Address, now time.Time) (*compose.Message, error) {
	ev := &event.Event{
		ID:         "send-test-" + now.UTC().Format("20060102T150405Z") + "-" + randomHex(4),
		Type:       event.TaskAssigned,
		OccurredAt: now,
		Recipient:  event.Recipient{ID: sendTestRecipientID, Email: to.Email, Name: to.Name},
		Actor:      &event.Actor{ID: "mailrelay", Name: "mailrelay"},
		Task:       event.Task{ID: sendTestTaskID, Title: "mailrelay test message"},
	}
	m, err := compose.Compose(ev, cfg, now)
	if errors.Is(err, event.ErrInvalid) {
		return nil, usageError{fmt.Errorf("--to %q: %w", to.Email, err)}
	}
	if err != nil {
		return nil, fmt.Errorf("compose the test message: %w", err)
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "an unnamed host"
	}
	m.Subject = "mailrelay test message"
	m.Body = strings.Join([]string{
		"This is a test message sent by `mailrelay send-test` from",
		headers.Sanitize(host, 60) + " at " + now.UTC().Format(time.RFC3339) + ".",
		"",
		"It went through the same mail transport and carries the same headers",
		"as notification mail. If you can read it, email from mailrelay works.",
		"No reply is needed.",
		"",
	}, "\n")
	for i, h := range m.Headers {
		if h.Name == headers.Reason {
			m.Headers[i].Value = sendTestReason
		}
	}
	return m, nil
}

// destination names where the message goes: "HOST:PORT (security)" for
// SMTP, the backend otherwise.
func destination(cfg *config.Config) string {
	switch cfg.Mode() {
	case config.ModeSMTP:
		return net.JoinHostPort(cfg.Email.Host, strconv.Itoa(cfg.Email.Port)) + " (" + cfg.Security().String() + ")"
	case config.ModeFile:
		return "the file backend (" + cfg.Email.FilePath + ")"
	default:
		return "the " + cfg.Mode() + " backend"
	}
}

// sendTestFailure explains a failed send: the step, the server's reply code
// and whether a retry could help, and what to check. transport errors never
// hold the password.
func sendTestFailure(cfg *config.Config, err error, took time.Duration) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return fmt.Errorf("send to %s failed after %s: %w", destination(cfg), roundDuration(took), err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "send to %s failed at step %s after %s", destination(cfg), te.Step, roundDuration(took))
	var facts []string
	if te.Code != 0 {
		reply := "server replied " + strconv.Itoa(te.Code)
		if te.Enhanced != "" {
			reply += " " + te.Enhanced
		}
		facts = append(facts, reply)
	}
	if te.Temporary {
		facts = append(facts, "temporary: the relay would retry")
	} else {
		facts = append(facts, "permanent: the relay would not retry")
	}
	fmt.Fprintf(&b, " (%s): ", strings.Join(facts, "; "))
	if te.Err != nil {
		b.WriteString(te.Err.Error())
	} else {
		b.WriteString("failed")
	}
	if hint := stepHint(te.Step); hint != "" {
		b.WriteString("\nhint: " + hint)
	}
	return errors.New(b.String())
}

// stepHint says what to check when a step fails.
func stepHint(step string) string {
	switch step {
	case transport.StepDNS:
		return "check EMAIL_HOST: the name does not resolve"
	case transport.StepConnect:
		return "check EMAIL_HOST and EMAIL_PORT, and that the server is up and reachable from here"
	case transport.StepTLS:
		return "check EMAIL_USE_TLS (STARTTLS) or EMAIL_USE_SSL (implicit TLS) against what the port speaks, and that the server's certificate is trusted (SSL_CERT_FILE or SSL_CERT_DIR for a private CA)"
	case transport.StepHelo:
		return "the server refused the EHLO greeting"
	case transport.StepAuth:
		return "check EMAIL_HOST_USER and EMAIL_HOST_PASSWORD (or EMAIL_HOST_PASSWORD_FILE)"
	case transport.StepMail:
		return "check DEFAULT_FROM_EMAIL: the server refused the sender (and whether it wants AUTH)"
	case transport.StepRcpt:
		return "the server refused the recipient: check --to, and whether the server relays to that domain"
	case transport.StepData:
		return "the server refused the message itself"
	}
	return ""
}

// roundDuration keeps durations readable: 123ms, 1.2s.
func roundDuration(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
