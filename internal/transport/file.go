package transport

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailrelay/mailrelay/compose"
)

// maxNameID bounds the Message-ID part of a file name.
const maxNameID = 120

// File is the file backend (EMAIL_BACKEND=file): it writes each message as
// one .eml file (RFC 5322, CRLF) into a directory. The name comes from the
// message's Date (UTC) and its Message-ID, reduced to [A-Za-z0-9._@-], like
// 20261126T093000Z_n.01JD3N6Q@example.com.eml. A file is never overwritten:
// a second message with the same name (a redelivered notification) gets
// "-1", "-2", … before ".eml". Each file appears atomically, complete or
// not at all: it is written and synced under a temporary name starting with
// a dot, then hard-linked to its final name (which fails rather than
// replaces an existing file) or, on file systems without hard links,
// renamed after checking the name is free.
type File struct {
	dir  string
	opts options    // WithSigner
	mu   sync.Mutex // serialises the choice of names within the process
}

// NewFile returns a file backend writing into dir, creating it (mode 0750)
// when missing.
func NewFile(dir string, opts ...Option) (*File, error) {
	if dir == "" {
		return nil, errors.New("file backend: no directory given (EMAIL_FILE_PATH)")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("file backend: %w", err)
	}
	return &File{dir: dir, opts: applyOptions(opts)}, nil
}

// Send writes m into a new file. A render failure is permanent; a file
// system failure is temporary with Step "write".
func (f *File) Send(ctx context.Context, m *compose.Message) error {
	if err := ctx.Err(); err != nil {
		return &Error{Temporary: true, Step: StepWrite, Err: err}
	}
	data, err := renderBytes(m)
	if err != nil {
		return err
	}
	if data, err = signBytes(f.opts.signer, data); err != nil {
		return err
	}
	if _, err := f.write(fileBase(m), data); err != nil {
		return &Error{Temporary: true, Step: StepWrite, Err: err}
	}
	return nil
}

// Close does nothing.
func (f *File) Close() error { return nil }

// write stores data under base.eml (or base-N.eml) and returns the path.
func (f *File) write(base string, data []byte) (string, error) {
	tmp, err := os.CreateTemp(f.dir, ".tmp-*.eml")
	if err != nil {
		return "", err
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // the final name is a second link, or the rename moved it
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o640); err != nil {
		_ = tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	for i := 0; i < 10000; i++ {
		name := base + ".eml"
		if i > 0 {
			name = base + "-" + strconv.Itoa(i) + ".eml"
		}
		path := filepath.Join(f.dir, name)
		err := os.Link(tmpName, path)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			// No hard links here (some network or FAT file systems):
			// rename, after making sure the name is free.
			if _, statErr := os.Lstat(path); !errors.Is(statErr, fs.ErrNotExist) {
				continue
			}
			if err := os.Rename(tmpName, path); err != nil {
				return "", err
			}
		}
		syncDir(f.dir)
		return path, nil
	}
	return "", fmt.Errorf("no free file name for %s.eml in %s", base, f.dir)
}

// syncDir makes the new directory entry durable, where the platform allows.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// fileBase is the file name of m without extension: its date and its
// Message-ID, sanitised.
func fileBase(m *compose.Message) string {
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	id := strings.TrimSuffix(strings.TrimPrefix(m.MessageID, "<"), ">")
	var b strings.Builder
	for _, r := range id {
		if b.Len() >= maxNameID {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '.', r == '_', r == '@', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	if strings.Trim(name, "._") == "" {
		name = "message"
	}
	return date.UTC().Format("20060102T150405Z") + "_" + name
}
