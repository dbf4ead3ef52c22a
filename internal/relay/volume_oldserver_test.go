package relay_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/relay"
	"github.com/mailrelay/mailrelay/internal/state"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// oldServerProxy stands between clients and the NATS server at target
// (host:port) and plays a server older than 2.11, which drops the stream
// setting it does not know: allow_msg_schedules is removed from every
// create or update of NOTIFY_HELD, so the stream is kept without message
// schedules. Everything else passes through untouched. It returns the
// proxy's URL.
func oldServerProxy(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			go func() { _, _ = io.Copy(c, s); _ = c.Close() }()
			go func() { _ = dropSchedules(bufio.NewReader(c), s); _ = s.Close() }()
		}
	}()
	return "nats://" + ln.Addr().String()
}

// dropSchedules copies the client's protocol from r to w, rewriting the
// payload of PUB and HPUB to the NOTIFY_HELD create and update subjects.
func dropSchedules(r *bufio.Reader, w io.Writer) error {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		f := strings.Fields(line)
		if len(f) < 3 || (f[0] != "PUB" && f[0] != "HPUB") {
			if _, err := io.WriteString(w, line); err != nil {
				return err
			}
			continue
		}
		total, err := strconv.Atoi(f[len(f)-1])
		if err != nil {
			return err
		}
		payload := make([]byte, total+2) // and its CRLF
		if _, err := io.ReadFull(r, payload); err != nil {
			return err
		}
		payload = payload[:total]
		subj := f[1]
		if subj == "$JS.API.STREAM.CREATE."+hold.Stream || subj == "$JS.API.STREAM.UPDATE."+hold.Stream {
			hdrLen := 0
			if f[0] == "HPUB" {
				hdrLen, _ = strconv.Atoi(f[len(f)-2])
			}
			var cfg map[string]any
			if json.Unmarshal(payload[hdrLen:], &cfg) == nil {
				delete(cfg, "allow_msg_schedules")
				body, _ := json.Marshal(cfg)
				payload = append(append([]byte{}, payload[:hdrLen]...), body...)
				f[len(f)-1] = strconv.Itoa(len(payload))
				line = strings.Join(f, " ") + "\r\n"
			}
		}
		if _, err := io.WriteString(w, line); err != nil {
			return err
		}
		if _, err := w.Write(append(payload, '\r', '\n')); err != nil {
			return err
		}
	}
}

// TestOldServerRunsAsV1: on a server without message schedules (older than
// 2.12) a relay with every volume setting at its default still starts and
// mails every notification at once, as v1 did, a user's quiet hours
// included (ignored, and said at start-up); the status says why nothing
// can be held.
func TestOldServerRunsAsV1(t *testing.T) {
	e := newEnv(t)
	proxy := oldServerProxy(t, strings.TrimPrefix(e.url, "nats://"))
	addr := freeAddr(t)
	e.startRelay(map[string]string{"NATS_URL": proxy, "MAILRELAY_HTTP_ADDR": addr, "MAILRELAY_ADMIN_TOKEN": "an-admin-token-for-tests"})
	// quiet hours all day long, but for the last minute before midnight
	e.putPrefs("u1", `{"email":{"task.assigned":true},"quiet_hours":{"start":"00:00","end":"23:59"}}`)
	e.publish(newEvent("old1", event.TaskAssigned, "u1"), "old1")
	rec := e.waitState("old1", state.Sent, 10*time.Second)
	if rec.Batch != 0 || !rec.Until.IsZero() {
		t.Fatalf("sent %+v: want a v1 record (no batch, no until)", rec)
	}
	if e.smtp.Count() != 1 {
		t.Fatalf("%d mails, want 1", e.smtp.Count())
	}
	s, err := e.js.Stream(context.Background(), hold.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if s.CachedInfo().Config.AllowMsgSchedules {
		t.Fatal("the proxy did not play an old server: NOTIFY_HELD has message schedules")
	}
	if s.CachedInfo().State.Msgs != 0 {
		t.Fatalf("NOTIFY_HELD holds %d messages: something was held", s.CachedInfo().State.Msgs)
	}
	code, body := adminGet(addr, "/v1/status/email", "an-admin-token-for-tests")
	if code != 200 || !strings.Contains(body, "volume control unavailable") || !strings.Contains(body, "2.12") {
		t.Fatalf("status does not say volume control is unavailable: %s", body)
	}
	readyFor(t, addr, 12*time.Second) // the healer does not miss NOTIFY_HELD's consumer
}

// TestOldServerRefusesAWindow: with MAILRELAY_BATCH_WINDOW set, a server
// without message schedules is a refusal: the relay stops, naming the
// server version it needs.
func TestOldServerRefusesAWindow(t *testing.T) {
	e := newEnv(t)
	proxy := oldServerProxy(t, strings.TrimPrefix(e.url, "nats://"))
	vars := e.vars(map[string]string{"NATS_URL": proxy, "MAILRELAY_BATCH_WINDOW": "2s", "MAILRELAY_HTTP_ADDR": freeAddr(t)})
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = relay.Run(ctx, cfg, relay.Options{Log: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), Version: "test"})
	if ctx.Err() != nil {
		t.Fatal("the relay kept running on a server without message schedules, with a window configured")
	}
	if err == nil || !strings.Contains(err.Error(), "NOTIFY_HELD needs nats-server ≥ 2.12") {
		t.Fatalf("relay.Run: %v, want the NOTIFY_HELD refusal", err)
	}
}

// readyFor checks /readyz answers 200 throughout d.
func readyFor(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if c := readyz(addr); c != 200 {
			t.Fatalf("/readyz = %d, want 200 throughout", c)
		}
	}
}
