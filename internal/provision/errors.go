package provision

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/nats-io/nats.go/jetstream"
)

// The answers of a JetStream cluster that is still forming, for which
// nats.go has no sentinel. They are *jetstream.APIError values because
// APIError.Is matches on ErrorCode alone: errors.Is(err, ErrNoSuitablePeers)
// finds the server's answer anywhere in err's chain, whatever its text.
var (
	// ErrNoSuitablePeers is JetStream error 10005 (the server's
	// JSClusterNoPeersErrF): no peers to place a replicated asset on yet,
	// as right after a cluster starts.
	ErrNoSuitablePeers = &jetstream.APIError{ErrorCode: 10005, Code: http.StatusBadRequest, Description: "no suitable peers for placement"}
	// ErrClusterNotAvailable is JetStream error 10008 (JSClusterNotAvailErr):
	// the meta leader is not elected yet.
	ErrClusterNotAvailable = &jetstream.APIError{ErrorCode: 10008, Code: http.StatusServiceUnavailable, Description: "JetStream system temporarily unavailable"}
)

// NotReady reports whether err is a JetStream API answer that says "not
// now" rather than "no": no suitable peers, the cluster not available, or
// any other 503. Provisioning retries those; any other API error is a real
// refusal (a bad configuration, missing permissions).
func NotReady(err error) bool {
	if errors.Is(err, ErrNoSuitablePeers) || errors.Is(err, ErrClusterNotAvailable) {
		return true
	}
	apiErr, ok := errors.AsType[*jetstream.APIError](err)
	return ok && apiErr.Code == http.StatusServiceUnavailable
}

// ErrNoMsgSchedules is in the error of Provision when the server cannot
// keep NOTIFY_HELD because it has no message schedules (ADR-51,
// nats-server ≥ 2.12): it refused the stream's allow_msg_schedules (error
// 10188, or "unknown field" from a strict 2.11), or an older server
// created or kept the stream without it. Holding mail needs them, so this
// is final, not a reason to retry. The error names the server's version.
var ErrNoMsgSchedules = errors.New(hold.Stream + " needs nats-server ≥ 2.12 for message schedules")

// errSchedulesDropped stands in for the server's answer when a server
// silently dropped allow_msg_schedules (one older than 2.11 ignores fields
// it does not know): JetStream error 10188, "message schedules is
// disabled", which is what that stream would answer a schedule. Being a
// *jetstream.APIError that is not NotReady, it makes callers that stop on a
// refusal stop on this too, rather than retry for ever.
var errSchedulesDropped = &jetstream.APIError{ErrorCode: jetstream.JSErrCodeMessageSchedulesDisabled,
	Code: http.StatusBadRequest, Description: "message schedules is disabled"}

// noSchedules turns the outcome of provisioning NOTIFY_HELD (s, or err)
// into ErrNoMsgSchedules when the server lacks message schedules, and
// returns err otherwise.
func noSchedules(js jetstream.JetStream, s jetstream.Stream, err error) error {
	version := "of unknown version"
	if nc := js.Conn(); nc != nil && nc.ConnectedServerVersion() != "" {
		version = nc.ConnectedServerVersion()
	}
	if err != nil {
		apiErr, ok := errors.AsType[*jetstream.APIError](err)
		if ok && (apiErr.ErrorCode == jetstream.JSErrCodeMessageSchedulesDisabled ||
			strings.Contains(strings.ToLower(apiErr.Description), "unknown field")) {
			return fmt.Errorf("%w (the server is nats-server %s): %w", ErrNoMsgSchedules, version, err)
		}
		return err
	}
	if s == nil || s.CachedInfo() == nil || !s.CachedInfo().Config.AllowMsgSchedules {
		return fmt.Errorf("%w (the server, nats-server %s, keeps stream %s without them): %w",
			ErrNoMsgSchedules, version, hold.Stream, errSchedulesDropped)
	}
	return nil
}
