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

// With OnMessageID the sink reports each message's Message-ID (folded or
// not, any case of the field name; "" when there is none) with the same
// acceptance time as OnAccept.
func TestOnMessageID(t *testing.T) {
	var mu sync.Mutex
	var ids []string
	var accAt, idAt []time.Time
	s, err := Start(Options{
		OnAccept: func(_ string, at time.Time) { mu.Lock(); accAt = append(accAt, at); mu.Unlock() },
		OnMessageID: func(id string, at time.Time) {
			mu.Lock()
			ids, idAt = append(ids, id), append(idAt, at)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msgs := []string{
		"From: a@example.com\r\nMessage-ID: <one@example.com>\r\nSubject: hi\r\n\r\nMessage-ID: <body@example.com>\r\n",
		"From: a@example.com\r\nmessage-id:\r\n <two@example.com>\r\n\r\nhello\r\n",
		"From: a@example.com\r\nSubject: none\r\n\r\nMessage-ID: <body@example.com>\r\n",
	}
	for _, m := range msgs {
		if err := smtp.SendMail(s.Addr(), nil, "a@example.com", []string{"b@example.com"}, []byte(m)); err != nil {
			t.Fatalf("SendMail: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"<one@example.com>", "<two@example.com>", ""}
	if strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Errorf("ids %q, want %q", ids, want)
	}
	for i := range idAt {
		if i >= len(accAt) || !idAt[i].Equal(accAt[i]) {
			t.Errorf("message %d: OnMessageID time %v, OnAccept time %v", i, idAt[i], accAt)
		}
	}
}

// messageID copes with header lines longer than its reader's buffer.
func TestMessageIDLongLines(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"X-Long: " + strings.Repeat("x", 100) + "\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n", "<a@b>"},
		{"Message-ID: <" + strings.Repeat("y", 40) + "@b>\r\n\r\n", "<" + strings.Repeat("y", 40) + "@b>"},
		{"X-Long: Message-ID: <no@b>" + strings.Repeat("z", 40) + "\r\n\r\nMessage-ID: <body@b>\r\n", ""},
		{"Subject: no blank line\r\nMessage-ID: <c@d>", "<c@d>"},
	} {
		if got := messageID(bufio.NewReaderSize(strings.NewReader(c.in), 16)); got != c.want {
			t.Errorf("messageID(%.30q…) = %q, want %q", c.in, got, c.want)
		}
	}
}
