// Package hold keeps notifications that wait (for a batching window, quiet
// hours or the seen delay, contract §9.3) in JetStream, not in a process:
//
//   - NOTIFY_HELD, subjects notify_held.>, holds them;
//   - notify_held.item.<recipient id>: one message per held notification
//     (the event as published, with headers saying when it is due);
//   - notify_held.window.<recipient id>: one message schedule per
//     recipient ("Nats-Schedule: @at <time>"), the end of the open window;
//   - notify_held.due.<recipient id>: what the schedule publishes when it
//     fires, consumed by the durable pull consumer mailrelay_flush that
//     every relay serves, so that any relay may send a window another
//     relay opened.
//
// See docs/volume.md.
package hold

// Names of the objects (documented in docs/contract.md §9.3 and docs/volume.md).
const (
	Stream   = "NOTIFY_HELD"
	Subjects = "notify_held.>"
	Consumer = "mailrelay_flush"

	ItemPrefix   = "notify_held.item."
	WindowPrefix = "notify_held.window."
	DuePrefix    = "notify_held.due."
	// DueSubjects is the flush consumer's filter.
	DueSubjects = DuePrefix + ">"
)

// ItemSubject is the subject of recipient's held notifications.
func ItemSubject(recipient string) string { return ItemPrefix + recipient }

// WindowSubject is the subject of recipient's schedule.
func WindowSubject(recipient string) string { return WindowPrefix + recipient }

// DueSubject is where recipient's schedule fires.
func DueSubject(recipient string) string { return DuePrefix + recipient }
