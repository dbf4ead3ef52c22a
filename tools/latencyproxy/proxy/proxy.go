// Package proxy is a TCP proxy that delays each direction by a fixed time,
// to measure an SMTP client as if its server were across a network: with
// Delay d every byte arrives d after it was sent, both ways, so a round
// trip costs 2d however much is in flight (bandwidth is not limited).
package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards every connection to its target with the delay.
type Proxy struct {
	ln     net.Listener
	target string
	delay  time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Start listens on 127.0.0.1 and a free port and forwards to target, each
// direction delayed by delay (the round trip is 2 × delay).
func Start(target string, delay time.Duration) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, delay: delay, conns: make(map[net.Conn]struct{})}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr returns the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting, closes every connection and waits for the
// forwarding goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(client) {
			return
		}
		p.wg.Go(func() {
			server, err := net.Dial("tcp", p.target)
			if err != nil || !p.track(server) {
				_ = client.Close()
				return
			}
			var both sync.WaitGroup
			both.Go(func() { p.pipe(server, client) })
			both.Go(func() { p.pipe(client, server) })
			both.Wait()
			_ = client.Close()
			_ = server.Close()
		})
	}
}

// packet is what one read returned, due at a time.
type packet struct {
	data []byte
	due  time.Time
	eof  bool
}

// pipe copies from src to dst, each read delivered delay after it was
// read, in order.
func (p *Proxy) pipe(dst, src net.Conn) {
	q := make(chan packet, 4096)
	var w sync.WaitGroup
	w.Go(func() {
		for pk := range q {
			if d := time.Until(pk.due); d > 0 {
				time.Sleep(d)
			}
			if pk.eof {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				} else {
					_ = dst.Close()
				}
				continue
			}
			if _, err := dst.Write(pk.data); err != nil {
				_ = src.Close()
				for range q { // drain
				}
				return
			}
		}
	})
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- packet{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(p.delay)}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				q <- packet{eof: true, due: time.Now().Add(p.delay)}
			} else {
				_ = dst.Close()
			}
			break
		}
	}
	close(q)
	w.Wait()
}
