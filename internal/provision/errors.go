package provision

import (
	"errors"
	"net/http"

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
