// Command mailrelay relays notification events from NATS JetStream to
// email. docs/contract.md is the contract it implements.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	// The IANA zone database is built in, so a user's time_zone and quiet
	// hours work in an image without /usr/share/zoneinfo.
	_ "time/tzdata"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mailrelay:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for wrong usage, 1 for everything else.
func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// usageError marks a command line the parser refused.
type usageError struct{ error }

// env bundles what run gets from the process, so tests can supply their own.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}
