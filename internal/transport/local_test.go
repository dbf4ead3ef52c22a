package transport

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mailrelay/mailrelay/compose"
)

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestConsole(t *testing.T) {
	var out syncBuffer
	c := NewConsole(&out)
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			m := testMessage()
			m.Subject = strings.Repeat("x", i+1)
			if err := c.Send(context.Background(), m); err != nil {
				t.Errorf("Send: %v", err)
			}
		})
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	parts := strings.Split(out.buf.String(), consoleSeparator)
	if len(parts) != n+1 || parts[n] != "" {
		t.Fatalf("got %d separators, want %d, the last at the very end", len(parts)-1, n)
	}
	var subjects []string
	for _, p := range parts[:n] {
		msg := parse(t, []byte(p))
		subjects = append(subjects, msg.Header.Get("Subject"))
	}
	slices.Sort(subjects)
	for i, s := range subjects {
		if s != strings.Repeat("x", i+1) {
			t.Errorf("messages interleaved or lost: subjects %q", subjects)
			break
		}
	}
}

func TestConsoleErrors(t *testing.T) {
	tests := []struct {
		name      string
		w         func() *Console
		m         *compose.Message
		ctx       func() context.Context
		step      string
		permanent bool
	}{
		{name: "write fails", w: func() *Console { return NewConsole(failingWriter{}) }, m: testMessage(), step: StepWrite},
		{name: "cannot render", w: func() *Console { return NewConsole(&bytes.Buffer{}) }, m: &compose.Message{}, step: StepRender, permanent: true},
		{
			name: "context ended", w: func() *Console { return NewConsole(&bytes.Buffer{}) }, m: testMessage(), step: StepWrite,
			ctx: func() context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			err := tc.w().Send(ctx, tc.m)
			if e := asError(t, err); e.Step != tc.step || IsPermanent(err) != tc.permanent {
				t.Errorf("err = %v (step %q, permanent %v), want step %q, permanent %v", err, e.Step, IsPermanent(err), tc.step, tc.permanent)
			}
		})
	}
}

func TestFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox", "mail") // created by NewFile
	f, err := NewFile(dir)
	if err != nil {
		t.Fatalf("NewFile: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })

	const n = 5 // the same notification again and again: names must not collide
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := f.Send(context.Background(), testMessage()); err != nil {
				t.Errorf("Send: %v", err)
			}
		})
	}
	wg.Wait()

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{"20261126T093000Z_n.01JD3N6Q9W4ZK2V8X5T7R1M0PA@example.com.eml"}
	for i := 1; i < n; i++ {
		want = append(want, "20261126T093000Z_n.01JD3N6Q9W4ZK2V8X5T7R1M0PA@example.com-"+string(rune('0'+i))+".eml")
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("files = %q\nwant %q (and no temporary files)", names, want)
	}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		msg := parse(t, data)
		if got := msg.Header.Get("Message-Id"); got != "<n.01JD3N6Q9W4ZK2V8X5T7R1M0PA@example.com>" {
			t.Errorf("%s: Message-ID = %q", name, got)
		}
		if !bytes.HasSuffix(data, []byte("\r\n")) || bytes.Contains(bytes.ReplaceAll(data, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("%s: not CRLF text", name)
		}
	}
}

func TestFileNames(t *testing.T) {
	tests := []struct {
		name      string
		messageID string
		want      string
	}{
		{name: "typical", messageID: "<n.abc_1-2@example.com>", want: "20261126T093000Z_n.abc_1-2@example.com.eml"},
		{name: "path traversal", messageID: "<../../etc/passwd@x>", want: "20261126T093000Z_.._.._etc_passwd@x.eml"},
		{name: "only dots", messageID: "<..@..>", want: "20261126T093000Z_..@...eml"},
		{name: "no message-id", messageID: "", want: "20261126T093000Z_message.eml"},
		{name: "unicode", messageID: "<ü@é>", want: "20261126T093000Z__@_.eml"},
		{name: "very long", messageID: "<" + strings.Repeat("a", 300) + "@x>", want: "20261126T093000Z_" + strings.Repeat("a", maxNameID) + ".eml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := testMessage()
			m.MessageID = tc.messageID
			if got := fileBase(m) + ".eml"; got != tc.want {
				t.Errorf("name = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFileErrors(t *testing.T) {
	if _, err := NewFile(""); err == nil {
		t.Error("NewFile(\"\") succeeded")
	}
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFile(notDir); err == nil {
		t.Error("NewFile on a regular file succeeded")
	}

	dir := t.TempDir()
	f, err := NewFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err != nil { // the directory disappears under it
		t.Fatal(err)
	}
	err = f.Send(context.Background(), testMessage())
	if e := asError(t, err); e.Step != StepWrite || !e.Temporary {
		t.Errorf("err = %v, want a temporary write error", err)
	}
}

func TestDummy(t *testing.T) {
	d := NewDummy()
	for range 3 {
		send(t, d)
	}
	if got := d.Count(); got != 3 {
		t.Errorf("Count() = %d, want 3", got)
	}
	if err := d.Send(context.Background(), nil); !IsPermanent(err) {
		t.Errorf("Send(nil) = %v, want a permanent error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Send(ctx, testMessage()); !errors.Is(err, context.Canceled) {
		t.Errorf("Send with a cancelled context = %v", err)
	}
	if got := d.Count(); got != 3 {
		t.Errorf("Count() = %d after failed sends, want 3", got)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
