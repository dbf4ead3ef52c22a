package embedded

import (
	"net"
	"strings"
	"testing"
)

func TestHostPort(t *testing.T) {
	cases := []struct {
		in   string
		host string
		port int
		err  bool
	}{
		{in: "nats://127.0.0.1:4222", host: "127.0.0.1", port: 4222},
		{in: "nats://localhost:5222,nats://other:4222", host: "127.0.0.1", port: 5222},
		{in: "127.0.0.1:6222", host: "127.0.0.1", port: 6222},
		{in: "nats://10.0.0.5", host: "10.0.0.5", port: 4222},
		{in: "nats://127.0.0.1:0", err: true},
		{in: "nats://127.0.0.1:99999", err: true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			host, port, err := HostPort(tc.in)
			if tc.err {
				if err == nil {
					t.Fatalf("HostPort(%q) = %s:%d, want an error", tc.in, host, port)
				}
				return
			}
			if err != nil || host != tc.host || port != tc.port {
				t.Fatalf("HostPort(%q) = %s:%d, %v; want %s:%d", tc.in, host, port, err, tc.host, tc.port)
			}
		})
	}
}

func TestStartRefusesBusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, err = Start(Options{Port: port, StoreDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "NATS_URL") {
		t.Fatalf("Start on a busy port: %v, want an error naming NATS_URL", err)
	}
}
