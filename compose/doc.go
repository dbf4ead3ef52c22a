// Package compose turns one notification event into one plain-text mail
// (docs/contract.md §5): subject, body, and every header the relay sends, as a
// Message value that the transport renders.
//
// Compose is pure: the event, a Config and the time of sending go in, a
// *Message comes out; it does no I/O, never reads the clock and uses no
// randomness, so the same input always gives the same mail. The wording
// lives in text/template files embedded in the binary (templates/*.tmpl);
// LoadTemplates, called once at start-up, parses them and lets an operator
// override any of them from a directory. Whatever a template outputs, the
// rules of the contract are enforced afterwards: a one-line subject of at
// most 160 characters, body lines of at most 78 characters (except the line
// holding only the deep link), no control characters, valid UTF-8.
//
// PlanBatch and Composer.ComposeBatch do the same for a batching window
// (contract §9.3): several notifications for one recipient, ordered and
// with the changes of one date merged, in one mail.
package compose
