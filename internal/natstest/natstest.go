// Package natstest starts embedded JetStream servers for tests: one helper,
// a free port, storage in t.TempDir, cleanup registered with t.Cleanup.
package natstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/embedded"
	"github.com/mailrelay/mailrelay/internal/provision"
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

// RestartEmpty stops the server, wipes its storage and starts it again on
// the same port: a server that comes back without its streams and buckets.
func (s *Server) RestartEmpty() {
	s.t.Helper()
	s.Shutdown()
	s.WaitForShutdown()
	entries, err := os.ReadDir(s.opts.StoreDir)
	if err != nil {
		s.t.Fatalf("wipe %s: %v", s.opts.StoreDir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.opts.StoreDir, e.Name())); err != nil {
			s.t.Fatalf("wipe: %v", err)
		}
	}
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

// StartProvisioned starts a JetStream server with the relay's stream,
// consumer and buckets (provision.Provision with zero options) and returns
// it, a client's JetStream context and the handles.
func StartProvisioned(t testing.TB) (*Server, jetstream.JetStream, *provision.Handles) {
	t.Helper()
	ns := Start(t)
	_, js := Connect(t, ns.URL())
	h, err := provision.Provision(context.Background(), js, provision.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return ns, js, h
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

// Cluster is a JetStream cluster of in-process servers.
type Cluster struct {
	Servers []*Server
}

// StartCluster runs n clustered JetStream servers on 127.0.0.1 with free
// client and cluster ports, each with its own storage.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	ports := freePorts(t, 2*n)
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i]))
	}
	c := &Cluster{}
	for i := range n {
		s := &Server{t: t, opts: embedded.Options{Port: ports[i], StoreDir: t.TempDir(), Name: fmt.Sprintf("n%d", i+1),
			ClusterName: "mailrelay-test", ClusterPort: ports[n+i], Routes: routes, StartTimeout: 30 * time.Second}}
		c.Servers = append(c.Servers, s)
	}
	// start all at once: each waits for the others' routes
	errs := make(chan error, n)
	for _, s := range c.Servers {
		go func() {
			srv, err := embedded.Start(s.opts)
			s.Server = srv
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("start cluster: %v", err)
		}
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			if s.Server != nil {
				s.Shutdown()
				s.WaitForShutdown()
			}
		}
	})
	Eventually(t, 30*time.Second, func() (bool, string) {
		for _, s := range c.Servers {
			if !s.JetStreamIsCurrent() {
				return false, s.Name() + " not current"
			}
		}
		return c.Leader() != nil, "no meta leader"
	})
	return c
}

// URLs is the comma-separated client URL list of the running servers.
func (c *Cluster) URLs() string {
	var urls []string
	for _, s := range c.Servers {
		urls = append(urls, s.URL())
	}
	return strings.Join(urls, ",")
}

// Leader is the JetStream meta leader, nil when there is none.
func (c *Cluster) Leader() *Server {
	for _, s := range c.Servers {
		if s.Server != nil && s.Running() && s.JetStreamIsLeader() {
			return s
		}
	}
	return nil
}

// StreamLeader is the server leading the named stream, nil when none.
func (c *Cluster) StreamLeader(account, stream string) *Server {
	for _, s := range c.Servers {
		if s.Server != nil && s.Running() && s.JetStreamIsStreamLeader(account, stream) {
			return s
		}
	}
	return nil
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
