// Command latencyproxy forwards TCP connections to a target with each
// direction delayed, so that an SMTP server on this machine looks remote:
//
//	latencyproxy -to 127.0.0.1:2525 -delay 10ms   # RTT 20 ms
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mailrelay/mailrelay/tools/latencyproxy/proxy"
)

func main() {
	target := flag.String("to", "127.0.0.1:2525", "address to forward to")
	delay := flag.Duration("delay", 0, "delay of each direction (the round trip is twice this)")
	flag.Parse()
	p, err := proxy.Start(*target, *delay)
	if err != nil {
		fmt.Fprintln(os.Stderr, "latencyproxy:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s, forwarding to %s, %s each way\n", p.Addr(), *target, *delay)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = p.Close()
}
