package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/transport"
	"go.uber.org/zap"
)

// errNotTried: the send was given up (shutdown) before the mail went to
// the backend.
var errNotTried = errors.New("not sent: shutting down")

// errStale: the notification went stale before it could be sent.
var errStale = errors.New("notification went stale before it could be sent")

// sendRecovered is send, with a panic of the backend turned into a
// temporary failure: the event is not at fault, the mail may or may not be
// out, and the outcome is recorded under the id like any other attempt's.
// It serves a notification's mail and a window's (occurred is the latest
// occurred_at it carries); ref names the mail in the log.
func (h *Handler) sendRecovered(ctx context.Context, mail *compose.Message, occurred time.Time, ref zap.Field) (res SendResult) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("panic while sending a mail", ref, zap.Any("panic", p), zap.Stack("stack"))
			res = SendResult{Err: fmt.Errorf("send panicked: %v", p), Stopping: ctx.Err() != nil, At: h.now()}
		}
	}()
	err := h.send(ctx, mail, occurred)
	return SendResult{Err: err, NotTried: errors.Is(err, errNotTried), WentStale: errors.Is(err, errStale),
		Stopping: ctx.Err() != nil, At: h.now()}
}

// send hands mail to the backend, waiting out process-wide slow-down
// pauses (within the policy's SlowDownBudget) and the rate limit.
// Staleness (of a notification that occurred at occurred: the latest one
// of a batch) is judged again before each try, as a pause can outlast
// StaleAfter's margin: errStale means nothing was sent.
func (h *Handler) send(ctx context.Context, mail *compose.Message, occurred time.Time) error {
	deadline := time.Now().Add(h.policy.SlowDownBudget)
	var slowed error // the last slow-down answer
	for {
		// The throttle fails only when ctx ends: before each try, a
		// shutdown gives up, reporting the last slow-down answer when the
		// server was tried, else that nothing went out.
		if err := h.throttle.Wait(ctx); err != nil || ctx.Err() != nil {
			if slowed != nil {
				return slowed
			}
			return errNotTried
		}
		if h.policy.Stale(occurred, h.now()) {
			return errStale
		}
		err := h.sendOnce(ctx, mail)
		if err == nil {
			h.throttle.Reset()
			return nil
		}
		if !policy.SlowDown(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		slowed = err
		pause := h.throttle.Trip()
		h.log.Warn("SMTP server asks to slow down: pausing sends", zap.Duration("pause", pause), zap.String("reply", failure(err)))
	}
}

func (h *Handler) sendOnce(ctx context.Context, mail *compose.Message) error {
	if h.limiter != nil {
		if err := h.limiter.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return errNotTried
			}
			return err
		}
	}
	if h.policy.SendTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.policy.SendTimeout)
		defer cancel()
	}
	start := time.Now()
	err := h.sender.Send(ctx, mail)
	h.obs.Sent(time.Since(start), err)
	return err
}

// replyCode is the SMTP reply code and enhanced status of err, "550 5.1.1".
func replyCode(err error) string {
	var te *transport.Error
	if !errors.As(err, &te) || te.Code == 0 {
		return ""
	}
	return strings.TrimSpace(strconv.Itoa(te.Code) + " " + te.Enhanced)
}

// failure describes a send error for the ledger and the logs, leading with
// the SMTP reply code when there is one.
func failure(err error) string {
	if err == nil {
		return ""
	}
	text := err.Error()
	if code := replyCode(err); code != "" && !strings.Contains(text, code) {
		text = code + " " + text
	}
	return text
}
