package smtpwire

import (
	"bufio"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		code  int
		lines []string
		err   error // matched with errors.Is; nil: success
	}{
		{name: "one line", in: "250 2.0.0 ok\r\n", code: 250, lines: []string{"2.0.0 ok"}},
		{name: "code only", in: "250\r\n", code: 250, lines: []string{""}},
		{name: "bare LF", in: "354 go\n", code: 354, lines: []string{"go"}},
		{name: "multi-line", in: "250-a.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n", code: 250, lines: []string{"a.test", "PIPELINING", "CHUNKING"}},
		{name: "codes differ", in: "250-a\r\n251 b\r\n", err: ErrMalformed},
		{name: "not a code", in: "hello\r\n", err: ErrMalformed},
		{name: "1xx", in: "199 x\r\n", err: ErrMalformed},
		{name: "bad separator", in: "250_x\r\n", err: ErrMalformed},
		{name: "short", in: "25\r\n", err: ErrMalformed},
		{name: "empty input", in: "", err: io.EOF},
		{name: "cut inside a line", in: "250 o", err: io.ErrUnexpectedEOF},
		{name: "cut inside a reply", in: "250-a\r\n", err: io.ErrUnexpectedEOF},
		{name: "line too long", in: "250 " + strings.Repeat("x", maxLineLen) + "\r\n", err: ErrMalformed},
		{name: "too many lines", in: strings.Repeat("250-x\r\n", maxReplyLines+1) + "250 x\r\n", err: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := ReadReply(bufio.NewReaderSize(strings.NewReader(tc.in), 16))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || rep.Code != tc.code || !slices.Equal(rep.Lines, tc.lines) {
				t.Fatalf("ReadReply = %+v, %v; want %d %q", rep, err, tc.code, tc.lines)
			}
		})
	}
}

// TestReadReplyInOrder reads a pipelined answer: each reply in turn.
func TestReadReplyInOrder(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("250 2.1.0 ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n354 go\r\n"))
	var codes []int
	for {
		rep, err := ReadReply(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, rep.Code)
	}
	if !slices.Equal(codes, []int{250, 550, 354}) {
		t.Errorf("codes = %v", codes)
	}
}

// FuzzReadReply feeds arbitrary reply streams to the parser: it never
// panics, never loops, and whatever it accepts is a reply that reads back
// the same when written out again.
func FuzzReadReply(f *testing.F) {
	for _, seed := range []string{
		"250 ok\r\n",
		"250-smtp.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SIZE 10240000\r\n",
		"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n",
		"250 2.1.0 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n",
		"421 4.7.0 closing\r\n",
		"250-a\r\n251 b\r\n",
		"250\n354\n",
		"250-" + strings.Repeat("x", 5000),
		"\r\n\r\n",
		"2500 x\r\n",
		"999 x\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReaderSize(strings.NewReader(string(in)), 16)
		for range len(in) + 1 {
			rep, err := ReadReply(r)
			if err != nil {
				return
			}
			if rep.Code < 200 || rep.Code > 599 || len(rep.Lines) == 0 || len(rep.Lines) > maxReplyLines {
				t.Fatalf("accepted %+v", rep)
			}
			var sb strings.Builder
			for i, l := range rep.Lines {
				if strings.ContainsAny(l, "\n") {
					t.Fatalf("line holds LF: %q", l)
				}
				sep := "-"
				if i == len(rep.Lines)-1 {
					sep = " "
				}
				sb.WriteString(rep.String()[:3] + sep + l + "\r\n")
			}
			again, err := ReadReply(bufio.NewReader(strings.NewReader(sb.String())))
			if err != nil || again.Code != rep.Code || !slices.Equal(again.Lines, rep.Lines) {
				t.Fatalf("%+v does not read back: %+v, %v", rep, again, err)
			}
		}
		t.Fatalf("more replies than input octets")
	})
}
