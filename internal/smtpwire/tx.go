package smtpwire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
)

// Mode is how a transaction goes over the wire.
type Mode int

// The modes of Send.
const (
	// Lockstep sends each command and waits for its reply (RFC 5321): four
	// round trips a message (MAIL, RCPT, DATA, the content).
	Lockstep Mode = iota
	// Pipelined sends MAIL, RCPT and DATA as one group and reads their
	// replies in order (RFC 2920, the server offers PIPELINING), then the
	// content: two round trips.
	Pipelined
	// Chunked sends MAIL, RCPT and "BDAT <n> LAST" with the content as one
	// group (RFC 2920 and RFC 3030, the server offers PIPELINING and
	// CHUNKING): one round trip.
	Chunked
)

// String returns "lockstep", "pipelined" or "chunked".
func (m Mode) String() string {
	switch m {
	case Lockstep:
		return "lockstep"
	case Pipelined:
		return "pipelined"
	case Chunked:
		return "chunked"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Stage is the part of the transaction a failure belongs to.
type Stage int

// The stages of a transaction.
const (
	StageMail Stage = iota // MAIL FROM
	StageRcpt              // RCPT TO
	StageData              // DATA or BDAT, the content, and the reply after it
)

// Envelope is what a transaction says before the content.
type Envelope struct {
	From       string   // reverse-path with its brackets: "<a@example.com>"
	To         []string // forward-paths with their brackets, at least one
	MailParams []string // MAIL FROM parameters: "BODY=8BITMIME", "SMTPUTF8"
}

// ErrLine is the cause of a failure for an envelope that holds CR, LF or no
// recipient: nothing was sent.
var ErrLine = errors.New("smtpwire: envelope holds CR or LF, or has no recipient")

// Error is a failed transaction: the first command whose reply was not
// positive, or the reply that never came.
type Error struct {
	Stage   Stage
	Command string // "MAIL FROM", "RCPT TO", "DATA", "BDAT" or "end of data"
	Reply   Reply  // the refusal; Code 0 when no reply came
	Err     error  // why no reply came (I/O, malformed reply); nil with a reply
	// Clean says the session is between transactions (the refusal was
	// answered by RSET, or by a lone dot when DATA was accepted anyway), so
	// a QUIT may follow; false means the connection must be dropped.
	Clean bool
}

// Error returns "<command>: <reply>" or "<command>: no reply: <cause>".
func (e *Error) Error() string {
	if e.Reply.Code == 0 {
		return fmt.Sprintf("%s: no reply: %v", e.Command, e.Err)
	}
	return e.Command + ": " + e.Reply.String()
}

// Unwrap returns the I/O cause, nil for a refusal.
func (e *Error) Unwrap() error { return e.Err }

// command is one command of the group and what a success looks like.
type command struct {
	stage Stage
	name  string
	line  string
	want  int // 354 for DATA, else 0: any 2xx
}

// Send runs one mail transaction for msg (RFC 5322 text) over a session
// that is ready for MAIL, writing to w and reading the replies from r, and
// returns nil only once the server said 250 to the content. Otherwise it
// returns an *Error naming the first command that failed; the replies after
// a refusal are still read, each matched to its command, and the session is
// brought back to its idle state (RSET, or a lone dot after a 354) whenever
// the connection still answers. Deadlines are the caller's (on the
// connection under r and w). In Lockstep and Pipelined modes the content is
// dot-stuffed; in Chunked mode it goes as it is, with bare LFs made CRLF.
func Send(r *bufio.Reader, w *bufio.Writer, mode Mode, env Envelope, msg []byte) error {
	if err := env.check(); err != nil {
		return &Error{Stage: StageMail, Command: "MAIL FROM", Err: err, Clean: true}
	}
	t := tx{r: r, w: w}
	if mode == Lockstep {
		return t.lockstep(env, msg)
	}
	return t.pipelined(env, msg, mode == Chunked)
}

func (env Envelope) check() error {
	if len(env.To) == 0 || strings.ContainsAny(env.From, "\r\n") || strings.ContainsAny(strings.Join(env.MailParams, " "), "\r\n") {
		return ErrLine
	}
	for _, to := range env.To {
		if strings.ContainsAny(to, "\r\n") {
			return ErrLine
		}
	}
	return nil
}

// commands returns the envelope commands followed by last.
func (env Envelope) commands(last command) []command {
	mail := "MAIL FROM:" + env.From
	if len(env.MailParams) > 0 {
		mail += " " + strings.Join(env.MailParams, " ")
	}
	cmds := []command{{stage: StageMail, name: "MAIL FROM", line: mail}}
	for _, to := range env.To {
		cmds = append(cmds, command{stage: StageRcpt, name: "RCPT TO", line: "RCPT TO:" + to})
	}
	return append(cmds, last)
}

type tx struct {
	r *bufio.Reader
	w *bufio.Writer
}

var dataCommand = command{stage: StageData, name: "DATA", line: "DATA", want: 354}

func (c command) accepts(rep Reply) bool {
	if c.want != 0 {
		return rep.Code == c.want
	}
	return rep.Positive()
}

// lockstep sends one command at a time.
func (t tx) lockstep(env Envelope, msg []byte) error {
	for _, c := range env.commands(dataCommand) {
		t.w.WriteString(c.line + "\r\n")
		if err := t.w.Flush(); err != nil {
			return &Error{Stage: c.stage, Command: c.name, Err: err}
		}
		rep, err := ReadReply(t.r)
		if err != nil {
			return &Error{Stage: c.stage, Command: c.name, Err: err}
		}
		if !c.accepts(rep) {
			return &Error{Stage: c.stage, Command: c.name, Reply: rep, Clean: t.reset()}
		}
	}
	return t.content(msg)
}

// pipelined sends the envelope as one group ending in DATA, or in BDAT with
// the content when chunked, and reads the replies in order.
func (t tx) pipelined(env Envelope, msg []byte, chunked bool) error {
	last := dataCommand
	var body []byte
	if chunked {
		body = crlf(msg)
		last = command{stage: StageData, name: "BDAT", line: "BDAT " + strconv.Itoa(len(body)) + " LAST"}
	}
	cmds := env.commands(last)
	for _, c := range cmds {
		t.w.WriteString(c.line + "\r\n")
	}
	t.w.Write(body)
	if err := t.w.Flush(); err != nil {
		stage := StageMail
		if chunked {
			stage = StageData // some of the content may have gone
		}
		return &Error{Stage: stage, Command: cmds[0].name, Err: err}
	}

	var fail *Error
	dataOpen := false // the server answered DATA with 354
	for _, c := range cmds {
		rep, err := ReadReply(t.r)
		if err != nil {
			if fail != nil {
				return fail // refused before: the server cannot have the message
			}
			e := &Error{Stage: c.stage, Command: c.name, Err: err}
			if chunked {
				// The content went with the group: without its reply, the
				// server may or may not have the message.
				e.Stage = StageData
			}
			return e
		}
		if fail == nil && !c.accepts(rep) {
			fail = &Error{Stage: c.stage, Command: c.name, Reply: rep}
		}
		dataOpen = c.want == 354 && rep.Code == 354
	}
	if fail != nil {
		if dataOpen {
			// DATA was accepted although the transaction had failed: end
			// the content at once, so that no message is made of it.
			fail.Clean = t.endData()
		} else {
			fail.Clean = t.reset()
		}
		return fail
	}
	if chunked {
		return nil
	}
	return t.content(msg)
}

// content writes msg dot-stuffed after an accepted DATA, ends it with a lone
// dot and reads the verdict.
func (t tx) content(msg []byte) error {
	dw := textproto.NewWriter(t.w).DotWriter()
	_, err := dw.Write(msg)
	if cerr := dw.Close(); err == nil {
		err = cerr // Close writes the final dot and flushes
	}
	if err != nil {
		return &Error{Stage: StageData, Command: "end of data", Err: err}
	}
	rep, err := ReadReply(t.r)
	if err != nil {
		return &Error{Stage: StageData, Command: "end of data", Err: err}
	}
	if !rep.Positive() {
		return &Error{Stage: StageData, Command: "end of data", Reply: rep, Clean: true}
	}
	return nil
}

// reset ends a failed transaction with RSET and reports whether the
// server answered it.
func (t tx) reset() bool {
	return t.roundTrip("RSET\r\n")
}

// endData sends the lone dot that ends content the client never sent
// (RFC 2920 section 3.1) and reports whether the server answered it, with
// whatever code: either way the transaction is over.
func (t tx) endData() bool {
	return t.roundTrip(".\r\n")
}

func (t tx) roundTrip(line string) bool {
	t.w.WriteString(line)
	if t.w.Flush() != nil {
		return false
	}
	_, err := ReadReply(t.r)
	return err == nil
}

// crlf returns msg with every line ended by CRLF, the last one included.
func crlf(msg []byte) []byte {
	if !bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) && bytes.HasSuffix(msg, []byte("\r\n")) {
		return msg
	}
	lines := bytes.SplitAfter(msg, []byte("\n"))
	out := make([]byte, 0, len(msg)+len(lines)+2)
	for _, l := range lines {
		if len(l) == 0 {
			continue
		}
		l = bytes.TrimSuffix(bytes.TrimSuffix(l, []byte("\n")), []byte("\r"))
		out = append(append(out, l...), '\r', '\n')
	}
	return out
}
