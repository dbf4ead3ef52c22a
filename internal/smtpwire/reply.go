// Package smtpwire owns the SMTP mail transaction on the wire: it sends one
// message's envelope and content over a session that is already set up
// (greeting, EHLO, STARTTLS, AUTH are the caller's business), lockstep or
// pipelined (RFC 2920), with the content after DATA or in one BDAT chunk
// (RFC 3030), and matches every reply to its command. It knows nothing of
// retries or of what a failure means to a notification: it says which
// command failed, with which reply, and whether the server may have the
// message.
package smtpwire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Limits of a reply the parser accepts. RFC 5321 allows 512 octets a line;
// real servers stay well under these.
const (
	maxLineLen    = 4096
	maxReplyLines = 256
)

// ErrMalformed is wrapped by ReadReply's error for text that is not an SMTP
// reply.
var ErrMalformed = errors.New("smtpwire: malformed reply")

// Reply is one SMTP reply: its code and the text of each line, without the
// code and separator.
type Reply struct {
	Code  int
	Lines []string
}

// Positive reports a 2xx reply.
func (r Reply) Positive() bool { return r.Code/100 == 2 }

// Text returns the lines joined by newlines.
func (r Reply) Text() string { return strings.Join(r.Lines, "\n") }

// String returns the reply as its first line reads: "550 5.1.1 no such user".
func (r Reply) String() string {
	if len(r.Lines) == 0 || r.Lines[0] == "" {
		return fmt.Sprintf("%03d", r.Code)
	}
	return fmt.Sprintf("%03d %s", r.Code, r.Text())
}

// ReadReply reads one reply, single- or multi-line ("250-a", "250 b"). Every
// line must start with the same three-digit code, 2xx to 5xx, followed by
// a space, a hyphen or the end of the line; a bare LF ends a line as CRLF
// does. A line over 4096 octets or a reply over 256 lines is malformed. An
// end of input inside a reply is io.ErrUnexpectedEOF; before it, io.EOF.
func ReadReply(r *bufio.Reader) (Reply, error) {
	var rep Reply
	for {
		line, err := readLine(r)
		if err != nil {
			if err == io.EOF && len(rep.Lines) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return Reply{}, err
		}
		code, more, text, err := parseLine(line)
		if err != nil {
			return Reply{}, err
		}
		if len(rep.Lines) > 0 && code != rep.Code {
			return Reply{}, fmt.Errorf("%w: code %03d inside a %03d reply", ErrMalformed, code, rep.Code)
		}
		rep.Code = code
		rep.Lines = append(rep.Lines, text)
		if !more {
			return rep, nil
		}
		if len(rep.Lines) >= maxReplyLines {
			return Reply{}, fmt.Errorf("%w: more than %d lines", ErrMalformed, maxReplyLines)
		}
	}
}

// readLine returns one line without its line ending.
func readLine(r *bufio.Reader) (string, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxLineLen+2 {
			return "", fmt.Errorf("%w: a line longer than %d octets", ErrMalformed, maxLineLen)
		}
		switch {
		case err == nil:
			buf = buf[:len(buf)-1]
			if n := len(buf); n > 0 && buf[n-1] == '\r' {
				buf = buf[:n-1]
			}
			return string(buf), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(buf) > 0:
			return "", io.ErrUnexpectedEOF
		default:
			return "", err
		}
	}
}

// parseLine splits "250-text" into its code, whether more lines follow,
// and its text.
func parseLine(line string) (code int, more bool, text string, err error) {
	if len(line) < 3 {
		return 0, false, "", fmt.Errorf("%w: %q", ErrMalformed, line)
	}
	for i := 0; i < 3; i++ {
		c := line[i]
		if c < '0' || c > '9' {
			return 0, false, "", fmt.Errorf("%w: %q", ErrMalformed, line)
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code > 599 {
		return 0, false, "", fmt.Errorf("%w: code %03d", ErrMalformed, code)
	}
	if len(line) == 3 {
		return code, false, "", nil
	}
	switch line[3] {
	case ' ':
		return code, false, line[4:], nil
	case '-':
		return code, true, line[4:], nil
	}
	return 0, false, "", fmt.Errorf("%w: %q", ErrMalformed, line)
}
