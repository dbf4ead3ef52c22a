// Command smtpsink is a fast local SMTP server that accepts every message
// and discards it, for benchmarks of mailrelay (make bench). It listens on
// loopback only by default and prints how many messages it accepted every
// -every interval and at exit (SIGINT/SIGTERM).
//
//	smtpsink [-addr 127.0.0.1:2525] [-latency 20ms] [-every 5s]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mailrelay/mailrelay/tools/smtpsink/sink"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2525", "listen address")
	latency := flag.Duration("latency", 0, "delay before the reply to each message's data (a remote relay)")
	every := flag.Duration("every", 0, "print the count this often (0: only at exit)")
	flag.Parse()

	s, err := sink.Start(sink.Options{Addr: *addr, Latency: *latency})
	if err != nil {
		fmt.Fprintln(os.Stderr, "smtpsink:", err)
		os.Exit(1)
	}
	fmt.Printf("smtpsink listening on %s (latency %s)\n", s.Addr(), *latency)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var tick <-chan time.Time
	if *every > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			fmt.Printf("accepted %d messages on %d connections\n", s.Count(), s.Connections())
			continue
		case <-ctx.Done():
		}
		break
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "smtpsink:", err)
	}
	fmt.Printf("accepted %d messages on %d connections\n", s.Count(), s.Connections())
}
