package transport

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"

	"github.com/mailrelay/mailrelay/compose"
)

// consoleSeparator follows every message the console backend writes, like
// Django's console backend (79 dashes).
var consoleSeparator = strings.Repeat("-", 79) + "\r\n"

// Console is the console backend (EMAIL_BACKEND=console): it writes each
// whole message, as RFC 5322 text with CRLF line endings, to a stream such as
// standard output, followed by a separator line of dashes. Each message is
// written with one Write under a mutex, so concurrent sends never
// interleave.
type Console struct {
	mu   sync.Mutex
	w    io.Writer
	opts options // WithSigner
}

// NewConsole returns a console backend writing to w.
func NewConsole(w io.Writer, opts ...Option) *Console {
	return &Console{w: w, opts: applyOptions(opts)}
}

// Send writes m to the stream. A render failure is permanent; a write
// failure is temporary with Step "write".
func (c *Console) Send(ctx context.Context, m *compose.Message) error {
	if err := ctx.Err(); err != nil {
		return &Error{Temporary: true, Step: StepWrite, Err: err}
	}
	data, err := renderBytes(m)
	if err != nil {
		return err
	}
	if data, err = signBytes(c.opts.signer, data); err != nil {
		return err
	}
	if !bytes.HasSuffix(data, []byte("\n")) {
		data = append(data, '\r', '\n')
	}
	data = append(data, consoleSeparator...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.w.Write(data); err != nil {
		return &Error{Temporary: true, Step: StepWrite, Err: err}
	}
	return nil
}

// Close does nothing: the stream belongs to the caller.
func (c *Console) Close() error { return nil }
