package transport

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptServer is an SMTP server whose every reply a test writes itself, for
// the failures a real server will not produce on demand. Each connection is
// greeted and its EHLO answered with the given keywords; then the test's
// function runs the rest of the session.
type scriptServer struct {
	host string
	port int
	mu   sync.Mutex
	n    int // connections accepted
}

// scriptConn is one session of a scriptServer, seen from the server.
type scriptConn struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
	w  *bufio.Writer
}

// startScript runs a scriptServer until the test ends. script gets each
// connection in turn, by its number from 1.
func startScript(t *testing.T, keywords []string, script func(n int, c *scriptConn)) *scriptServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	s := &scriptServer{host: "127.0.0.1", port: addr.Port}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			s.mu.Lock()
			s.n++
			n := s.n
			s.mu.Unlock()
			wg.Go(func() {
				defer nc.Close()
				c := &scriptConn{t: t, nc: nc, r: bufio.NewReader(nc), w: bufio.NewWriter(nc)}
				c.reply("220 script.test ESMTP")
				if l := c.line(); !strings.HasPrefix(l, "EHLO ") {
					t.Errorf("script: got %q, want EHLO", l)
					return
				}
				lines := append([]string{"script.test"}, keywords...)
				for i, l := range lines {
					sep := "-"
					if i == len(lines)-1 {
						sep = " "
					}
					c.w.WriteString("250" + sep + l + "\r\n")
				}
				c.w.Flush()
				script(n, c)
			})
		}
	})
	return s
}

func (s *scriptServer) config() SMTPConfig {
	return SMTPConfig{Host: s.host, Port: s.port, Timeout: wait, HeloName: "client.test"}
}

func (s *scriptServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// line reads one line the client sent; "" once the connection is gone or
// nothing came within the wait.
func (c *scriptConn) line() string {
	l, _ := c.readLine()
	return l
}

// readLine reads one line; ok is false once the connection is gone.
func (c *scriptConn) readLine() (string, bool) {
	_ = c.nc.SetReadDeadline(time.Now().Add(wait))
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "", false
	}
	return strings.TrimRight(l, "\r\n"), true
}

// group reads n lines the client sent before any reply: a pipelined
// group. A lockstep client would wait for a reply, and the test fails.
func (c *scriptConn) group(n int) []string {
	var got []string
	for range n {
		l := c.line()
		if l == "" {
			c.t.Errorf("script: the group ended after %q, want %d commands sent before any reply", got, n)
			return got
		}
		got = append(got, l)
	}
	return got
}

// quiet reports whether the client sends nothing more for a while: it waits
// for a reply.
func (c *scriptConn) quiet() bool {
	_ = c.nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err := c.r.Peek(1)
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// chunk reads n octets of a BDAT chunk.
func (c *scriptConn) chunk(n int) []byte {
	_ = c.nc.SetReadDeadline(time.Now().Add(wait))
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		c.t.Errorf("script: reading a %d-octet chunk: %v", n, err)
	}
	return b
}

// content reads message data up to the lone dot, without the dot.
func (c *scriptConn) content() []string {
	var lines []string
	for {
		l, ok := c.readLine()
		if l == "." || !ok {
			return lines
		}
		lines = append(lines, l)
	}
}

func (c *scriptConn) reply(lines ...string) {
	for _, l := range lines {
		c.w.WriteString(l + "\r\n")
	}
	c.w.Flush()
}

// expect reads one line and fails the test unless it is want.
func (c *scriptConn) expect(want string) {
	if got := c.line(); got != want {
		c.t.Errorf("script: client sent %q, want %q", got, want)
	}
}

// bdatSize returns n of "BDAT <n> LAST".
func bdatSize(t *testing.T, cmd string) int {
	f := strings.Fields(cmd)
	if len(f) != 3 || f[0] != "BDAT" || f[2] != "LAST" {
		t.Errorf("script: %q, want BDAT <n> LAST", cmd)
		return 0
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Errorf("script: %q: %v", cmd, err)
	}
	return n
}

// ensureQuit answers a QUIT, if the client sends one, then closes.
func (c *scriptConn) ensureQuit() {
	if l := c.line(); l == "QUIT" {
		c.reply("221 2.0.0 bye")
	} else if l != "" {
		c.t.Errorf("script: client sent %q, want QUIT or nothing", l)
	}
}

func (c *scriptConn) String() string { return fmt.Sprintf("scriptConn(%s)", c.nc.RemoteAddr()) }
