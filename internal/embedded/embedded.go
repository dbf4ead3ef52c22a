// Package embedded runs an in-process NATS server with JetStream, for
// `mailrelay serve --embedded` and for tests.
package embedded

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options of the embedded server.
type Options struct {
	Host     string // listen host; 127.0.0.1 by default
	Port     int    // client port; -1 picks a free one
	StoreDir string // JetStream storage directory
	Name     string // server name
	// Cluster, when set, joins a cluster (tests of replicated setups).
	ClusterName  string
	ClusterPort  int
	Routes       []string // nats-route://host:port of the other nodes
	StartTimeout time.Duration
}

// Start starts the server and waits until it accepts clients.
func Start(o Options) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 15 * time.Second
	}
	opts := &server.Options{
		ServerName: o.Name,
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      true,
	}
	if o.ClusterName != "" {
		opts.Cluster = server.ClusterOpts{Name: o.ClusterName, Host: o.Host, Port: o.ClusterPort}
		for _, r := range o.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	if o.Port > 0 {
		// nats-server reports a busy port only in its log: say it now.
		l, err := net.Listen("tcp", net.JoinHostPort(o.Host, strconv.Itoa(o.Port)))
		if err != nil {
			return nil, fmt.Errorf("embedded nats-server cannot listen on %s:%d (set NATS_URL to a free address): %w", o.Host, o.Port, err)
		}
		l.Close()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(o.StartTimeout) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats-server did not become ready on %s:%d within %s", o.Host, o.Port, o.StartTimeout)
	}
	return s, nil
}

// HostPort extracts the host and port of the first URL of a NATS_URL value
// (nats://host:port, host:port, or a comma-separated list).
func HostPort(natsURL string) (string, int, error) {
	first := strings.TrimSpace(strings.Split(natsURL, ",")[0])
	if !strings.Contains(first, "://") {
		first = "nats://" + first
	}
	u, err := url.Parse(first)
	if err != nil {
		return "", 0, fmt.Errorf("NATS_URL %q: %w", natsURL, err)
	}
	host, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, portStr = u.Host, "4222"
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("NATS_URL %q: bad port", natsURL)
	}
	if host == "" || host == "localhost" {
		host = "127.0.0.1"
	}
	return host, port, nil
}
