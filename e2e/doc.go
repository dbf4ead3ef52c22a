// Package e2e holds mailrelay's end-to-end tests: they run the real mailrelay
// binary against a real nats-server and a Mailpit SMTP server, and inspect the
// result with the nats CLI and Mailpit's HTTP API.
//
// Apart from this comment the package is all tests. Run it with
//
//	make test                 # installs the tools into ./bin first
//	go test -race ./e2e/      # uses ./bin, or $MAILRELAY_E2E_BIN_DIR
//
// The tools (nats-server, nats, mailpit) are looked up in
// $MAILRELAY_E2E_BIN_DIR, else in <repo>/bin. When they are missing the tests
// skip, except when CI is set: then a missing tool fails the run.
//
// Set MAILRELAY_E2E_MAILRELAY to a prebuilt binary to test it instead of
// building ./cmd/mailrelay.
package e2e
