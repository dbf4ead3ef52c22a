package unsubscribe

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate limit per client address. A person clicking twice and a mailbox
// provider retrying stay far below it (at least 10 requests a minute from
// one address always pass); a script walking tokens does not.
const (
	// DefaultPerMinute is the sustained rate a client may keep up.
	DefaultPerMinute = 30
	// DefaultBurst is how many requests a client may send at once.
	DefaultBurst = 30
	// maxClients bounds the table; idle clients are dropped first.
	maxClients = 10000
)

// limiter is a token bucket per client address.
type limiter struct {
	mu      sync.Mutex
	every   rate.Limit
	burst   int
	now     func() time.Time
	clients map[netip.Addr]*client
	swept   time.Time
}

type client struct {
	l    *rate.Limiter
	seen time.Time
}

func newLimiter(perMinute, burst int, now func() time.Time) *limiter {
	return &limiter{
		every:   rate.Limit(float64(perMinute) / 60),
		burst:   burst,
		now:     now,
		clients: map[netip.Addr]*client{},
	}
}

// allow reports whether one more request from addr may go on now, and if
// not how long to wait.
func (l *limiter) allow(addr netip.Addr) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.clients) >= maxClients || now.Sub(l.swept) > time.Minute {
		l.sweep(now)
	}
	c := l.clients[addr]
	if c == nil {
		c = &client{l: rate.NewLimiter(l.every, l.burst)}
		l.clients[addr] = c
	}
	c.seen = now
	r := c.l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep drops clients whose bucket has refilled: forgetting them changes
// nothing. When the table is still full, it is cleared (a flood of
// addresses must not grow memory).
func (l *limiter) sweep(now time.Time) {
	l.swept = now
	full := time.Duration(float64(l.burst)/float64(l.every)*float64(time.Second)) + time.Second
	for a, c := range l.clients {
		if now.Sub(c.seen) > full {
			delete(l.clients, a)
		}
	}
	if len(l.clients) >= maxClients {
		clear(l.clients)
	}
}

// clientAddr is the address a request is counted against: the peer, or,
// when the peer is a loopback or private address (a reverse proxy in
// front, as MAILRELAY_PUBLIC_URL expects), the last address in
// X-Forwarded-For, the one that proxy saw. An IPv6 client is counted by
// its /64, which one host can fill alone.
func clientAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	peer = peer.Unmap()
	a := peer
	if peer.IsLoopback() || peer.IsPrivate() {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			last := xff[len(xff)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if fwd, err := netip.ParseAddr(strings.TrimSpace(last)); err == nil {
				a = fwd.Unmap()
			}
		}
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		a = p.Addr()
	}
	return a
}
