package transport

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/internal/smtptest"
)

const (
	mailCmd = "MAIL FROM:<notify@example.com> BODY=8BITMIME"
	rcptCmd = "RCPT TO:<ann@example.com>"
)

var (
	pipelining = []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"}
	chunking   = []string{"PIPELINING", "CHUNKING", "8BITMIME", "ENHANCEDSTATUSCODES"}
)

// TestPipelinedFailures runs every way a pipelined transaction can fail
// against a scripted server, and checks the outcome the consumer gets:
// permanent (5xx), temporary (4xx, or no reply before the content went),
// or temporary and maybe delivered (no reply after the content went: Step
// data, code 0), and that the session was left as RFC 2920 wants.
func TestPipelinedFailures(t *testing.T) {
	tests := []struct {
		name      string
		keywords  []string
		script    func(c *scriptConn)
		temporary bool
		code      int
		enhanced  string
		step      string
	}{
		{
			name: "rejected RCPT: DATA refused too, then RSET", keywords: pipelining,
			script: func(c *scriptConn) {
				c.group(3)
				c.reply("250 2.1.0 ok", "550 5.1.1 no such user", "554 5.5.1 no valid recipients")
				c.expect("RSET")
				c.reply("250 2.0.0 reset")
				c.ensureQuit()
			},
			temporary: false, code: 550, enhanced: "5.1.1", step: StepRcpt,
		},
		{
			name: "rejected RCPT but DATA accepted: a lone dot, no content", keywords: pipelining,
			script: func(c *scriptConn) {
				c.group(3)
				c.reply("250 2.1.0 ok", "550 5.1.1 no such user", "354 go ahead")
				c.expect(".")
				c.reply("554 5.5.1 no valid recipients")
				c.ensureQuit()
			},
			temporary: false, code: 550, enhanced: "5.1.1", step: StepRcpt,
		},
		{
			name: "rejected MAIL", keywords: pipelining,
			script: func(c *scriptConn) {
				c.group(3)
				c.reply("553 5.7.1 sender refused", "503 5.5.1 MAIL first", "503 5.5.1 MAIL first")
				c.expect("RSET")
				c.reply("250 2.0.0 reset")
				c.ensureQuit()
			},
			temporary: false, code: 553, enhanced: "5.7.1", step: StepMail,
		},
		{
			name: "DATA refused after the group: RSET", keywords: pipelining,
			script: func(c *scriptConn) {
				c.group(3)
				c.reply("250 2.1.0 ok", "250 2.1.5 ok", "451 4.3.0 try later")
				c.expect("RSET")
				c.reply("250 2.0.0 reset")
				c.ensureQuit()
			},
			temporary: true, code: 451, enhanced: "4.3.0", step: StepData,
		},
		{
			name: "421 mid-group", keywords: pipelining,
			script: func(c *scriptConn) {
				c.group(3)
				c.reply("250 2.1.0 ok", "421 4.7.0 closing")
			},
			temporary: true, code: 421, enhanced: "4.7.0", step: StepRcpt,
		},
		{
			name: "dropped mid-group, before any reply", keywords: pipelining,
			script: func(c *scriptConn) {
				c.group(3)
			},
			temporary: true, code: 0, step: StepMail,
		},
		{
			name: "dropped after the content (maybe delivered)", keywords: pipelining,
			script: func(c *scriptConn) {
				c.group(3)
				c.reply("250 2.1.0 ok", "250 2.1.5 ok", "354 go ahead")
				c.content()
			},
			temporary: true, code: 0, step: StepData,
		},
		{
			name: "content refused", keywords: pipelining,
			script: func(c *scriptConn) {
				c.group(3)
				c.reply("250 2.1.0 ok", "250 2.1.5 ok", "354 go ahead")
				c.content()
				c.reply("552 5.3.4 too big")
				c.ensureQuit()
			},
			temporary: false, code: 552, enhanced: "5.3.4", step: StepData,
		},
		{
			name: "BDAT: rejected RCPT, chunk discarded, RSET", keywords: chunking,
			script: func(c *scriptConn) {
				g := c.group(3)
				if len(g) == 3 {
					c.chunk(bdatSize(c.t, g[2]))
				}
				c.reply("250 2.1.0 ok", "550 5.1.1 no such user", "503 5.5.1 no valid recipients")
				c.expect("RSET")
				c.reply("250 2.0.0 reset")
				c.ensureQuit()
			},
			temporary: false, code: 550, enhanced: "5.1.1", step: StepRcpt,
		},
		{
			name: "BDAT refused", keywords: chunking,
			script: func(c *scriptConn) {
				g := c.group(3)
				if len(g) == 3 {
					c.chunk(bdatSize(c.t, g[2]))
				}
				c.reply("250 2.1.0 ok", "250 2.1.5 ok", "452 4.3.1 queue full")
				c.expect("RSET")
				c.reply("250 2.0.0 reset")
				c.ensureQuit()
			},
			temporary: true, code: 452, enhanced: "4.3.1", step: StepData,
		},
		{
			name: "BDAT: 421 mid-group", keywords: chunking,
			script: func(c *scriptConn) {
				g := c.group(3)
				if len(g) == 3 {
					c.chunk(bdatSize(c.t, g[2]))
				}
				c.reply("250 2.1.0 ok", "421 4.3.2 shutting down")
			},
			temporary: true, code: 421, enhanced: "4.3.2", step: StepRcpt,
		},
		{
			name: "BDAT: dropped after MAIL's reply (maybe delivered)", keywords: chunking,
			script: func(c *scriptConn) {
				g := c.group(3)
				if len(g) == 3 {
					c.chunk(bdatSize(c.t, g[2]))
				}
				c.reply("250 2.1.0 ok")
			},
			temporary: true, code: 0, step: StepData,
		},
		{
			name: "BDAT: dropped before any reply (maybe delivered: the content went)", keywords: chunking,
			script: func(c *scriptConn) {
				g := c.group(3)
				if len(g) == 3 {
					c.chunk(bdatSize(c.t, g[2]))
				}
			},
			temporary: true, code: 0, step: StepData,
		},
		{
			name: "no enhanced code without ENHANCEDSTATUSCODES", keywords: []string{"PIPELINING"},
			script: func(c *scriptConn) {
				c.group(3)
				c.reply("250 ok", "550 5.1.1 no such user", "554 no valid recipients")
				c.expect("RSET")
				c.reply("250 reset")
				c.ensureQuit()
			},
			temporary: false, code: 550, enhanced: "", step: StepRcpt,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScript(t, tc.keywords, func(n int, c *scriptConn) {
				if n == 1 {
					tc.script(c)
					return
				}
				acceptOne(c) // the next send, on a new connection
			})
			s := newSMTP(t, srv.config(), nil)
			err := s.Send(context.Background(), testMessage())
			e := asError(t, err)
			if e.Temporary != tc.temporary || e.Code != tc.code || e.Enhanced != tc.enhanced || e.Step != tc.step {
				t.Errorf("Error{Temporary: %v, Code: %d, Enhanced: %q, Step: %q}, want {%v, %d, %q, %q}; %v",
					e.Temporary, e.Code, e.Enhanced, e.Step, tc.temporary, tc.code, tc.enhanced, tc.step, err)
			}
			if IsPermanent(err) == tc.temporary {
				t.Errorf("IsPermanent = %v, want %v", IsPermanent(err), !tc.temporary)
			}
			// A failed connection is not reused.
			send(t, s)
			if got := srv.connections(); got != 2 {
				t.Errorf("server saw %d connections, want 2", got)
			}
		})
	}
}

// acceptOne takes one pipelined or lockstep DATA transaction, or a BDAT one,
// and then QUIT.
func acceptOne(c *scriptConn) {
	for {
		l := c.line()
		switch {
		case l == "":
			return
		case strings.HasPrefix(l, "MAIL"), strings.HasPrefix(l, "RCPT"), l == "RSET", l == "NOOP":
			c.reply("250 2.0.0 ok")
		case l == "DATA":
			c.reply("354 go ahead")
			c.content()
			c.reply("250 2.0.0 queued")
		case strings.HasPrefix(l, "BDAT"):
			c.chunk(bdatSize(c.t, l))
			c.reply("250 2.0.0 queued")
		case l == "QUIT":
			c.reply("221 2.0.0 bye")
			return
		default:
			c.reply("500 5.5.2 what?")
		}
	}
}

// TestPipelinedGroups checks what goes over the wire with each set of
// keywords: one group and then the content with PIPELINING, one group
// carrying the content with PIPELINING and CHUNKING, one command at a time
// without PIPELINING or with MAILRELAY_SMTP_PIPELINING=off; and that the
// content is the rendered message, byte for byte.
func TestPipelinedGroups(t *testing.T) {
	want, err := renderBytes(testMessage())
	if err != nil {
		t.Fatal(err)
	}
	lockstep := func(c *scriptConn) {
		for _, cmd := range []string{mailCmd, rcptCmd, "DATA"} {
			c.expect(cmd)
			if !c.quiet() {
				c.t.Errorf("script: the client sent more after %q before its reply", cmd)
				return
			}
			if cmd == "DATA" {
				c.reply("354 go ahead")
			} else {
				c.reply("250 2.0.0 ok")
			}
		}
		checkContent(c.t, c.content(), want)
		c.reply("250 2.0.0 queued")
	}
	tests := []struct {
		name       string
		keywords   []string
		pipelining Pipelining
		script     func(c *scriptConn)
	}{
		{name: "PIPELINING: envelope in one group", keywords: pipelining, script: func(c *scriptConn) {
			g := c.group(3)
			if strings.Join(g, "|") != mailCmd+"|"+rcptCmd+"|DATA" {
				c.t.Errorf("group = %q", g)
			}
			c.reply("250 2.1.0 ok", "250 2.1.5 ok", "354 go ahead")
			checkContent(c.t, c.content(), want)
			c.reply("250 2.0.0 queued")
		}},
		{name: "PIPELINING and CHUNKING: one group with BDAT LAST", keywords: chunking, script: func(c *scriptConn) {
			g := c.group(3)
			if len(g) != 3 || g[0] != mailCmd || g[1] != rcptCmd {
				c.t.Errorf("group = %q", g)
				return
			}
			if got := c.chunk(bdatSize(c.t, g[2])); !bytes.Equal(got, want) {
				c.t.Errorf("chunk differs from the rendered message:\n%q\nwant\n%q", got, want)
			}
			c.reply("250 2.1.0 ok", "250 2.1.5 ok", "250 2.0.0 queued")
		}},
		{name: "neither: lockstep", keywords: []string{"8BITMIME", "ENHANCEDSTATUSCODES"}, script: lockstep},
		{name: "CHUNKING without PIPELINING: lockstep DATA", keywords: []string{"CHUNKING", "8BITMIME"}, script: lockstep},
		{name: "MAILRELAY_SMTP_PIPELINING=off", keywords: chunking, pipelining: PipeliningOff, script: lockstep},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScript(t, tc.keywords, func(_ int, c *scriptConn) {
				tc.script(c)
				tc.script(c) // a second message over the same connection
				c.ensureQuit()
			})
			cfg := srv.config()
			cfg.Pipelining = tc.pipelining
			s := newSMTP(t, cfg, nil)
			send(t, s)
			send(t, s)
			if got := srv.connections(); got != 1 {
				t.Errorf("server saw %d connections, want 1", got)
			}
		})
	}
}

// checkContent compares dot-unstuffed content lines with the rendered
// message.
func checkContent(t *testing.T, lines []string, want []byte) {
	t.Helper()
	var got []byte
	for _, l := range lines {
		got = append(got, strings.TrimPrefix(l, ".")...)
		got = append(got, "\r\n"...)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("content differs from the rendered message:\n%q\nwant\n%q", got, want)
	}
}

// TestPipelinedIdleConnectionClosedByServer: a server that says 421 and
// closes an idle connection costs the next send nothing, and no command is
// written to the dead connection.
func TestPipelinedIdleConnectionClosedByServer(t *testing.T) {
	idle := make(chan struct{})
	srv := startScript(t, chunking, func(n int, c *scriptConn) {
		if n == 1 {
			g := c.group(3)
			if len(g) == 3 {
				c.chunk(bdatSize(c.t, g[2]))
			}
			c.reply("250 2.1.0 ok", "250 2.1.5 ok", "250 2.0.0 queued")
			<-idle
			c.reply("421 4.4.2 idle too long")
			if l := c.line(); l != "" && l != "QUIT" {
				c.t.Errorf("client sent %q to a connection closed with 421", l)
			}
			return
		}
		acceptOne(c)
	})
	s := newSMTP(t, srv.config(), nil)
	send(t, s)
	close(idle)
	time.Sleep(50 * time.Millisecond) // let the 421 arrive: what is tested is the client's look before writing
	send(t, s)
	if got := srv.connections(); got != 2 {
		t.Errorf("server saw %d connections, want 2", got)
	}
}

// TestGoSMTPExtensions sends through the go-smtp server with each of
// PIPELINING and CHUNKING offered or not, over one connection, and checks
// the messages and the commands the server saw.
func TestGoSMTPExtensions(t *testing.T) {
	tests := []struct {
		name   string
		hidden []string
		want   string // the command that carried the content
	}{
		{name: "both offered", want: "BDAT"},
		{name: "no CHUNKING", hidden: []string{"CHUNKING"}, want: "DATA"},
		{name: "no PIPELINING", hidden: []string{"PIPELINING"}, want: "DATA"},
		{name: "neither", hidden: []string{"PIPELINING", "CHUNKING"}, want: "DATA"},
		{name: "neither, nor 8BITMIME", hidden: []string{"PIPELINING", "CHUNKING", "8BITMIME", "ENHANCEDSTATUSCODES"}, want: "DATA"},
	}
	want, err := renderBytes(testMessage())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.WithoutExtensions(tc.hidden...))
			s := newSMTP(t, smtpConfig(srv), nil)
			const n = 5
			for range n {
				send(t, s)
			}
			msgs := srv.WaitFor(t, n, wait)
			for _, m := range msgs {
				if !bytes.Equal(m.Data, want) {
					t.Errorf("received message differs from the rendered one:\n%q", m.Data)
				}
			}
			var carriers []string
			for _, c := range srv.Commands() {
				if verb, _, _ := strings.Cut(c, " "); verb == "BDAT" || verb == "DATA" {
					carriers = append(carriers, verb)
				} else if strings.HasPrefix(c, "MAIL") && strings.Contains(c, "BODY=8BITMIME") == contains(tc.hidden, "8BITMIME") {
					t.Errorf("MAIL FROM %q with 8BITMIME hidden = %v", c, contains(tc.hidden, "8BITMIME"))
				}
			}
			if len(carriers) != n || carriers[0] != tc.want || carriers[n-1] != tc.want {
				t.Errorf("content went by %q, want %d × %s", carriers, n, tc.want)
			}
			if got := srv.Connections(); got != 1 {
				t.Errorf("server saw %d connections, want 1", got)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestOneMailPerConnectionInFlight pins what the consumer's duplicate bound
// rests on at the wire: a connection carries one mail at a time. With
// PIPELINING and CHUNKING offered, each mail's group (MAIL, RCPT, BDAT LAST
// and the content) is sent, and then nothing more goes over that connection
// until the mail's final reply; so with PoolSize K, at most K mails are sent
// and unanswered. RFC 2920 section 3.1 would allow the next mail's group to
// follow the previous content at once; docs/operations.md ("Pipelining to
// the SMTP server") says why the relay does not.
func TestOneMailPerConnectionInFlight(t *testing.T) {
	const poolSize, mails = 2, 6
	srv := startScript(t, chunking, func(_ int, c *scriptConn) {
		for {
			l := c.line()
			switch {
			case l == "" || l == "QUIT":
				if l == "QUIT" {
					c.reply("221 2.0.0 bye")
				}
				return
			case strings.HasPrefix(l, "MAIL"):
				g := append([]string{l}, c.group(2)...)
				if len(g) != 3 {
					return
				}
				c.chunk(bdatSize(c.t, g[2]))
				if !c.quiet() {
					c.t.Errorf("script: the client sent more on this connection before the mail's replies")
				}
				c.reply("250 2.1.0 ok", "250 2.1.5 ok", "250 2.0.0 queued")
			default:
				c.t.Errorf("script: client sent %q, want MAIL FROM", l)
				return
			}
		}
	})
	cfg := srv.config()
	cfg.PoolSize = poolSize
	s := newSMTP(t, cfg, nil)
	var wg sync.WaitGroup
	for range mails {
		wg.Go(func() {
			if err := s.Send(context.Background(), testMessage()); err != nil {
				t.Errorf("Send: %v", err)
			}
		})
	}
	wg.Wait()
	if got := srv.connections(); got > poolSize {
		t.Errorf("server saw %d connections, want at most %d", got, poolSize)
	}
}
