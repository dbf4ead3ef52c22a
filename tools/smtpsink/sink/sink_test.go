package sink

import (
	"bufio"
	"net"
	"net/smtp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAcceptAndClose(t *testing.T) {
	var mu sync.Mutex
	var rcpts []string
	s, err := Start(Options{Addr: "127.0.0.1:0", OnAccept: func(rcpt string, _ time.Time) {
		mu.Lock()
		rcpts = append(rcpts, rcpt)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: notify@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
	if err := smtp.SendMail(s.Addr(), nil, "notify@example.com", []string{"bob@example.com"}, []byte(msg)); err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	if got := s.Count(); got != 1 {
		t.Errorf("Count = %d, want 1", got)
	}
	if got := s.Connections(); got != 1 {
		t.Errorf("Connections = %d, want 1", got)
	}
	mu.Lock()
	if len(rcpts) != 1 || rcpts[0] != "bob@example.com" {
		t.Errorf("OnAccept recipients = %q, want [bob@example.com]", rcpts)
	}
	mu.Unlock()
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("sink still accepts connections after Close")
	}
}

// A client that never quits does not hold Close up: its connection is
// closed and Close returns nil.
func TestCloseClosesIdleConnection(t *testing.T) {

	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("greeting %q, %v", line, err)
	}

	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("connection still open after Close, read %q", line)
	}
}
