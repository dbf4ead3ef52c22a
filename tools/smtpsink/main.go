// Command smtpsink is a fast local SMTP server that accepts every message
// and discards it, for benchmarks of mailrelay (make bench). It listens on
// loopback only by default and prints how many messages it accepted every
// -every interval and at exit (SIGINT/SIGTERM).
//
//	smtpsink [-addr 127.0.0.1:2525] [-latency 20ms] [-every 5s] [-ids accepted.txt]
//
// With -ids it appends one line per accepted message to the file,
// "<unix nanoseconds> <message-id>" (the time of acceptance, just before
// the 250 reply, and the Message-ID header's value, "-" when it has none),
// flushed every second and at exit: what a benchmark needs to time a mail
// from when it was due to when it was accepted.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mailrelay/mailrelay/tools/smtpsink/sink"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2525", "listen address")
	latency := flag.Duration("latency", 0, "delay before the reply to each message's data (a remote relay)")
	every := flag.Duration("every", 0, "print the count this often (0: only at exit)")
	ids := flag.String("ids", "", `append "<unix-nanos> <message-id>" per accepted message to this file`)
	flag.Parse()

	opts := sink.Options{Addr: *addr, Latency: *latency}
	var idLog *acceptLog
	if *ids != "" {
		f, err := os.OpenFile(*ids, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "smtpsink:", err)
			os.Exit(1)
		}
		idLog = &acceptLog{f: f, w: bufio.NewWriterSize(f, 64<<10)}
		opts.OnMessageID = idLog.add
	}
	s, err := sink.Start(opts)
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
	flushTick := time.NewTicker(time.Second)
	defer flushTick.Stop()
	for {
		select {
		case <-tick:
			fmt.Printf("accepted %d messages on %d connections\n", s.Count(), s.Connections())
			continue
		case <-flushTick.C:
			if idLog != nil {
				idLog.flush()
			}
			continue
		case <-ctx.Done():
		}
		break
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "smtpsink:", err)
	}
	if idLog != nil {
		if err := idLog.close(); err != nil {
			fmt.Fprintln(os.Stderr, "smtpsink:", err)
		}
	}
	fmt.Printf("accepted %d messages on %d connections\n", s.Count(), s.Connections())
}

// acceptLog writes the -ids lines.
type acceptLog struct {
	mu  sync.Mutex
	f   *os.File
	w   *bufio.Writer
	err error
}

func (l *acceptLog) add(id string, at time.Time) {
	if id == "" {
		id = "-"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var b [20]byte
	l.w.Write(strconv.AppendInt(b[:0], at.UnixNano(), 10))
	l.w.WriteByte(' ')
	l.w.WriteString(id)
	if err := l.w.WriteByte('\n'); err != nil && l.err == nil {
		l.err = err
	}
}

func (l *acceptLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.w.Flush(); err != nil && l.err == nil {
		l.err = err
	}
}

func (l *acceptLog) close() error {
	l.flush()
	if err := l.f.Close(); err != nil && l.err == nil {
		l.err = err
	}
	return l.err
}
