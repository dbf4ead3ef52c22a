// Package natstest starts embedded JetStream servers for tests: one helper,
// a free port, storage in t.TempDir, cleanup registered with t.Cleanup.
package natstest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/embedded"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a running test server that can be restarted on the same port
// and storage.
type Server struct {
	*server.Server
	t    testing.TB
	opts embedded.Options
}

// Start runs a JetStream server on 127.0.0.1 and a free port.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, opts: embedded.Options{Port: -1, StoreDir: t.TempDir()}}
	s.start()
	s.opts.Port = s.Server.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func (s *Server) start() {
	s.t.Helper()
	srv, err := embedded.Start(s.opts)
	if err != nil {
		s.t.Fatalf("start nats-server: %v", err)
	}
	s.Server = srv
}

// URL is the client URL.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port) }

// Restart stops the server and starts it again on the same port and storage.
func (s *Server) Restart() {
	s.t.Helper()
	s.Shutdown()
	s.WaitForShutdown()
	s.start()
}

// Connect returns a client connection and its JetStream context, closed on cleanup.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Eventually polls cond until it returns true or timeout passes, then fails
// the test with the last description cond gave.
func Eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	for {
		var ok bool
		if ok, why = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", timeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Ctx is a context for one test step, cancelled on cleanup.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
