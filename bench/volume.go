package main

// Scenarios 8 and 9: volume control (issue 14, contract §9.3).
//
//  8. batch: MAILRELAY_BATCH_WINDOW=2s, K = 8, 100 recipients × 50
//     notifications published as fast as possible into a running
//     (in-process) relay; mails/s and notifications/s from the first
//     window close to the last acceptance, the mails' sizes, and the
//     flush latency from window close (the `until` of the deferred
//     records) to SMTP acceptance (the sink reads each mail's Message-ID).
//  9. held: MAILRELAY_BATCH_WINDOW=1h, K = 8, 100,000 notifications for
//     10,000 recipients (10 each) held by the relay binary as its own
//     process; its peak RSS (VmHWM) after 10,000 and after 100,000 held,
//     how fast it holds, NOTIFY_HELD's items and /metrics
//     mailrelay_deferred.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/relay"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/mailrelay/mailrelay/tools/smtpsink/sink"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Fixed sizes of scenarios 8 and 9.
const (
	batchUsers  = 100
	batchEach   = 50
	batchWindow = 2 * time.Second
	batchK      = 8
	heldUsers   = 10_000
	heldEach    = 10
	heldWindow  = time.Hour
	heldK       = 8
	// maxBatch is consumer.MaxBatch: the most notifications one mail carries.
	maxBatch = 50
)

// volumeUser is recipient u of the volume scenarios (one address each).
func volumeUser(u int) string { return fmt.Sprintf("v%05d", u) }

// volumeEvent is notification i of a volume scenario with users
// recipients: recipient i mod users, so each one's notifications are
// spread over the run; each recipient gets the five types in turn, about
// seven tasks of their own (date changes to one task collapse in a batch).
func volumeEvent(run string, i, users int, now time.Time) *event.Event {
	u, j := i%users, i/users
	ev := benchEvent(run, j, now) // type j mod 5, with its parts
	ev.ID = fmt.Sprintf("%s-%08d", run, i)
	ev.Recipient = event.Recipient{ID: volumeUser(u), Email: volumeUser(u) + "@" + rcptDomain, Name: "Ann Lee"}
	ev.Task.ID = fmt.Sprintf("t-%d-%d", u, j%7)
	if ev.Comment != nil {
		ev.Comment.ID = "c" + strconv.Itoa(i)
	}
	return ev
}

// volumeEnv is a nats-server, a sink, provisioned objects and users
// recipients opted in to every type, for a relay with concurrency k and
// the given batching window.
type volumeEnv struct {
	*stack
	h *provision.Handles
}

func newVolumeEnv(k, users int, window time.Duration, so sink.Options) (e *volumeEnv, err error) {
	st, err := newStack(k, so, map[string]string{"MAILRELAY_BATCH_WINDOW": window.String()})
	if err != nil {
		return nil, err
	}
	e = &volumeEnv{stack: st}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.cfg.Relay.BatchWindow != window {
		return nil, fmt.Errorf("config: batch window %s, want %s", e.cfg.Relay.BatchWindow, window)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if e.nc, err = nats.Connect(e.ns.url); err != nil {
		return nil, err
	}
	if e.js, err = jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(2048)); err != nil {
		return nil, err
	}
	if e.h, err = provision.Provision(ctx, e.js, relay.ProvisionOptions(e.cfg)); err != nil {
		return nil, err
	}
	all := map[event.Type]bool{}
	for _, t := range event.Types {
		all[t] = true
	}
	ps := prefs.New(e.h.Prefs)
	var next atomic.Int64
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			for {
				u := int(next.Add(1) - 1)
				if u >= users {
					errs <- nil
					return
				}
				if _, err := ps.Set(ctx, volumeUser(u), all); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			return nil, fmt.Errorf("opt in: %w", err)
		}
	}
	logf("volume: %d users opted in", users)
	return e, nil
}

// publish publishes notifications from to from+n of a run with users
// recipients, asynchronously, and waits for every ack.
func (e *volumeEnv) publish(ctx context.Context, run string, from, n, users int) error {
	now := time.Now()
	return publishEvents(ctx, e.js, from, n, func(i int) *event.Event { return volumeEvent(run, i, users, now) })
}

// waitAcked waits until the relay has acked the first n messages of NOTIFY
// (the consumer's ack floor), failing when it does not move for stall or
// alive reports an error.
func (e *volumeEnv) waitAcked(ctx context.Context, n int, stall time.Duration, alive func() error) error {
	cons, err := e.js.Consumer(ctx, provision.Stream, provision.Consumer)
	if err != nil {
		return err
	}
	var floor uint64
	moved := time.Now()
	for {
		ci, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if ci.AckFloor.Stream >= uint64(n) {
			return nil
		}
		if ci.AckFloor.Stream != floor {
			floor, moved = ci.AckFloor.Stream, time.Now()
			logf("acked %d/%d", floor, n)
		} else if time.Since(moved) > stall {
			return fmt.Errorf("stalled: %d of %d acked, none for %s", floor, n, stall)
		}
		if alive != nil {
			if err := alive(); err != nil {
				return err
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- 8 batch

// ledgerTap follows every write to notify_email_state (a plain
// subscription to the bucket's subjects: it sees each record as written,
// which a KV watch of a history-1 bucket would not guarantee).
type ledgerTap struct {
	mu     sync.Mutex
	until  map[string]time.Time // notification id → until of its deferred record
	sent   map[string]tapSent   // notification id → its sent record
	other  map[string]string    // notification id → another final state
	heldAt time.Time            // when the last deferred record was seen
	sub    *nats.Subscription
}

type tapSent struct {
	messageID string
	batch     int
}

func startLedgerTap(nc *nats.Conn, bucket string) (*ledgerTap, error) {
	t := &ledgerTap{until: map[string]time.Time{}, sent: map[string]tapSent{}, other: map[string]string{}}
	prefix := "$KV." + bucket + "."
	sub, err := nc.Subscribe(prefix+">", func(m *nats.Msg) {
		if len(m.Data) == 0 {
			return // a delete or purge marker
		}
		var r state.Record
		if json.Unmarshal(m.Data, &r) != nil {
			return
		}
		id := strings.TrimPrefix(m.Subject, prefix)
		t.mu.Lock()
		defer t.mu.Unlock()
		switch {
		case r.State == state.Deferred:
			t.until[id] = r.Until
			t.heldAt = time.Now()
		case r.State == state.Sent:
			t.sent[id] = tapSent{messageID: strings.Trim(r.MessageID, "<>"), batch: r.Batch}
			delete(t.other, id)
		case r.State.Final():
			t.other[id] = string(r.State)
		}
	})
	if err != nil {
		return nil, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	t.sub = sub
	return t, nil
}

// decided is how many notifications have a final record.
func (t *ledgerTap) decided() (sent, other int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sent), len(t.other)
}

// acceptLog keeps the acceptance time of each mail by Message-ID.
type acceptLog struct {
	mu    sync.Mutex
	at    map[string]time.Time
	noID  int
	dupID int
}

func (a *acceptLog) accept(id string, at time.Time) {
	id = strings.Trim(id, "<>")
	a.mu.Lock()
	defer a.mu.Unlock()
	switch _, ok := a.at[id]; {
	case id == "":
		a.noID++
	case ok:
		a.dupID++
	default:
		a.at[id] = at
	}
}

type batchResult struct {
	notes, mails        int
	mailRate, noteRate  float64
	span                time.Duration // first window close → last acceptance
	sizes               string        // the mails' sizes, most frequent first
	p50, p99, max, min  time.Duration // flush latency
	holdRate            float64       // notifications deferred per second (publish start → last deferred record)
	windows             int           // distinct window-close times
	mixedDue, missingTo int           // mails whose notifications had different dues; notifications without a seen until
	other               map[string]int
}

// batchRun runs scenario 8.
func batchRun(k, users, each int, window time.Duration) (batchResult, error) {
	n := users * each
	acc := &acceptLog{at: map[string]time.Time{}}
	e, err := newVolumeEnv(k, users, window, sink.Options{OnMessageID: acc.accept})
	if err != nil {
		return batchResult{}, err
	}
	defer e.close()
	tapConn, err := nats.Connect(e.ns.url)
	if err != nil {
		return batchResult{}, err
	}
	defer tapConn.Close()
	tap, err := startLedgerTap(tapConn, e.h.State.Bucket())
	if err != nil {
		return batchResult{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stop := inProcessRelay(e.cfg)
	stopped := false
	defer func() {
		if !stopped {
			_ = stop()
		}
	}()
	if err := waitBound(ctx, e.js); err != nil {
		return batchResult{}, err
	}
	pubStart := time.Now()
	if err := e.publish(ctx, "b", 0, n, users); err != nil {
		return batchResult{}, err
	}
	logf("batch: %d published in %s", n, time.Since(pubStart).Round(time.Millisecond))

	// Every notification decided (sent, or another final state) and every
	// mail the records name accepted.
	lastSent, lastAcc, moved := -1, int64(-1), time.Now()
	for {
		s, o := tap.decided()
		a := e.sink.Count()
		if s+o >= n {
			tap.mu.Lock()
			ids := map[string]bool{}
			for _, r := range tap.sent {
				ids[r.messageID] = true
			}
			tap.mu.Unlock()
			if a >= int64(len(ids)) {
				break
			}
		}
		if s != lastSent || a != lastAcc {
			lastSent, lastAcc, moved = s, a, time.Now()
			logf("batch: %d/%d sent, %d other, %d mails", s, n, o, a)
		} else if time.Since(moved) > 30*time.Second {
			return batchResult{}, fmt.Errorf("stalled: %d of %d sent, %d other, %d mails accepted", s, n, o, a)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopped = true
	if err := stop(); err != nil {
		return batchResult{}, err
	}
	_ = tapConn.Flush()

	tap.mu.Lock()
	defer tap.mu.Unlock()
	acc.mu.Lock()
	defer acc.mu.Unlock()
	res := batchResult{notes: len(tap.sent), mails: int(e.sink.Count()), other: map[string]int{}}
	for _, st := range tap.other {
		res.other[st]++
	}
	if acc.noID > 0 || acc.dupID > 0 {
		return res, fmt.Errorf("sink: %d mails without a Message-ID, %d with one seen before", acc.noID, acc.dupID)
	}
	// Each mail: its notifications, the window that closed (their until).
	type mailInfo struct {
		n        int
		lo, hi   time.Time // earliest and latest until of its notifications
		accepted time.Time
	}
	mails := map[string]*mailInfo{}
	for id, r := range tap.sent {
		m := mails[r.messageID]
		if m == nil {
			at, ok := acc.at[r.messageID]
			if !ok {
				return res, fmt.Errorf("%s was recorded sent in %s, which the sink did not accept", id, r.messageID)
			}
			m = &mailInfo{accepted: at}
			mails[r.messageID] = m
		}
		m.n++
		u, ok := tap.until[id]
		if !ok || u.IsZero() {
			res.missingTo++
			continue
		}
		if m.lo.IsZero() || u.Before(m.lo) {
			m.lo = u
		}
		if u.After(m.hi) {
			m.hi = u
		}
	}
	if len(mails) != res.mails {
		return res, fmt.Errorf("the records name %d mails, the sink accepted %d", len(mails), res.mails)
	}
	var first, last time.Time
	var lat []time.Duration
	sizes := map[int]int{}
	closes := map[time.Time]bool{}
	for id, m := range mails {
		sizes[m.n]++
		if m.n != tapBatch(tap, id) {
			return res, fmt.Errorf("mail %s carried %d notifications, its records say batch %d", id, m.n, tapBatch(tap, id))
		}
		if m.hi.IsZero() {
			continue
		}
		if !m.lo.Equal(m.hi) {
			res.mixedDue++
		}
		closes[m.hi] = true
		// The window that flushed the mail closed at the latest due of
		// what it carried (they are all due then, normally the same time).
		lat = append(lat, m.accepted.Sub(m.hi))
		if first.IsZero() || m.hi.Before(first) {
			first = m.hi
		}
		if m.accepted.After(last) {
			last = m.accepted
		}
	}
	if len(lat) == 0 {
		return res, errors.New("no mail with a known window close")
	}
	res.windows = len(closes)
	res.span = last.Sub(first)
	res.mailRate = float64(res.mails) / res.span.Seconds()
	res.noteRate = float64(res.notes) / res.span.Seconds()
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	res.p50, res.p99, res.min, res.max = q(0.50), q(0.99), lat[0], lat[len(lat)-1]
	res.holdRate = float64(len(tap.until)) / tap.heldAt.Sub(pubStart).Seconds()
	type sz struct{ size, count int }
	var ss []sz
	for s, c := range sizes {
		ss = append(ss, sz{s, c})
	}
	slices.SortFunc(ss, func(a, b sz) int {
		if a.count != b.count {
			return b.count - a.count
		}
		return b.size - a.size
	})
	var parts []string
	for i, s := range ss {
		if i == 4 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%d of %d", s.count, s.size))
	}
	res.sizes = strings.Join(parts, ", ")
	logf("batch: %+v", res)
	return res, nil
}

// tapBatch is the batch figure of the sent records of mail id.
func tapBatch(t *ledgerTap, id string) int {
	for _, r := range t.sent {
		if r.messageID == id {
			return r.batch
		}
	}
	return 0
}

// ---------------------------------------------------------------- 9 held

type heldResult struct {
	hwmIdle              int64         // VmHWM bound, before anything is published (preferences of every user cached)
	hwmSmall, hwmBig     int64         // VmHWM after the first and after all were held
	rssBig               int64         // VmRSS at the end
	small, big           int           // how many were held at each reading
	tSmall, tRest        time.Duration // holding the first small, then the rest
	heldItems, heldRcpts int           // NOTIFY_HELD: items and their recipients (subjects)
	heldMsgs             uint64        // NOTIFY_HELD: every message (items, window schedules)
	metric               float64       // /metrics mailrelay_deferred at the end
	metricWait           time.Duration // how long /metrics took to show it after the last was held
	mails                int64
}

// heldRun runs scenario 9 with the relay binary bin as its own process.
func heldRun(bin string, k, users, each int) (heldResult, error) {
	total := users * each
	e, err := newVolumeEnv(k, users, heldWindow, sink.Options{})
	if err != nil {
		return heldResult{}, err
	}
	defer e.close()
	port, err := freePort()
	if err != nil {
		return heldResult{}, err
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", port)
	e.vars["MAILRELAY_HTTP_ADDR"] = httpAddr

	cmd := exec.Command(bin, "serve")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range e.vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return heldResult{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	alive := func() error {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("the relay exited: %v", err)
		default:
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if err := waitBound(ctx, e.js); err != nil {
		return heldResult{}, err
	}

	res := heldResult{small: min(users, total), big: total}
	time.Sleep(time.Second) // the preference cache loaded, the first sweep made
	if res.hwmIdle, err = vmHWM(cmd.Process.Pid); err != nil {
		return res, err
	}
	// Phase 1: one notification for each recipient (each opens a window).
	start := time.Now()
	if err := e.publish(ctx, "h", 0, res.small, users); err != nil {
		return res, err
	}
	if err := e.waitAcked(ctx, res.small, 30*time.Second, alive); err != nil {
		return res, err
	}
	res.tSmall = time.Since(start)
	logf("held: %d in %s", res.small, res.tSmall)
	if _, _, err := waitDeferredMetric(ctx, httpAddr, res.small, alive); err != nil {
		return res, err
	}
	if res.hwmSmall, err = vmHWM(cmd.Process.Pid); err != nil {
		return res, err
	}
	logf("held: VmHWM %d kB with %d held", res.hwmSmall>>10, res.small)

	// Phase 2: the other nine for each, joining the windows.
	start = time.Now()
	if err := e.publish(ctx, "h", res.small, total-res.small, users); err != nil {
		return res, err
	}
	if err := e.waitAcked(ctx, total, 30*time.Second, alive); err != nil {
		return res, err
	}
	res.tRest = time.Since(start)
	logf("held: %d in %s", total, res.tSmall+res.tRest)
	v, waited, err := waitDeferredMetric(ctx, httpAddr, total, alive)
	if err != nil {
		return res, err
	}
	res.metric, res.metricWait = v, waited
	if res.hwmBig, err = vmHWM(cmd.Process.Pid); err != nil {
		return res, err
	}
	res.rssBig, _ = procStatus(cmd.Process.Pid, "VmRSS:")
	info, err := e.h.Held.Info(ctx, jetstream.WithSubjectFilter(hold.ItemPrefix+">"))
	if err != nil {
		return res, fmt.Errorf("NOTIFY_HELD info: %w", err)
	}
	res.heldMsgs = info.State.Msgs
	for _, c := range info.State.Subjects {
		res.heldItems += int(c)
		res.heldRcpts++
	}
	res.mails = e.sink.Count()
	if res.heldItems != total || res.heldRcpts != users {
		return res, fmt.Errorf("NOTIFY_HELD holds %d items for %d recipients, want %d for %d", res.heldItems, res.heldRcpts, total, users)
	}
	if res.mails != 0 {
		return res, fmt.Errorf("the sink accepted %d mails: nothing should go out within the 1h window", res.mails)
	}
	logf("held: %+v", res)
	return res, nil
}

// waitDeferredMetric polls the relay's /metrics until mailrelay_deferred
// is want (the sweeper refreshes it every 15 s); it returns the value and
// how long it took.
func waitDeferredMetric(ctx context.Context, addr string, want int, alive func() error) (float64, time.Duration, error) {
	start := time.Now()
	last := -1.0
	for {
		v, err := deferredMetric(ctx, addr)
		if err == nil && v == float64(want) {
			return v, time.Since(start), nil
		}
		if err == nil {
			last = v
		}
		if time.Since(start) > 60*time.Second {
			return last, time.Since(start), fmt.Errorf("/metrics mailrelay_deferred is %v (error %v), want %d after 60s", last, err, want)
		}
		if err := alive(); err != nil {
			return last, 0, err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func deferredMetric(ctx context.Context, addr string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "mailrelay_deferred "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no mailrelay_deferred in /metrics")
}

// procStatus reads a "kB" field of /proc/<pid>/status in bytes.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc status", field)
}

// ---------------------------------------------------------------- rows

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (r *report) batchRows(res batchResult, users, each int) {
	n := users * each
	ideal := users * ((each + maxBatch - 1) / maxBatch)
	other := ""
	for st, c := range res.other {
		other += fmt.Sprintf("; %d %s", c, st)
	}
	r.row("8 batch: 2s window, 100×50", strconv.Itoa(batchK), strconv.Itoa(n),
		fmt.Sprintf("%.0f mails/s, %.0f notifications/s (%d carried in %s); %d mails (%d if one window each): %s%s",
			res.mailRate, res.noteRate, res.notes, ms(res.span), res.mails, ideal, res.sizes, other), "", "", "")
	extra := ""
	if res.mixedDue > 0 || res.missingTo > 0 {
		extra = fmt.Sprintf("; %d mails with mixed dues, %d notifications without an until", res.mixedDue, res.missingTo)
	}
	r.row("8 batch: flush latency", strconv.Itoa(batchK), strconv.Itoa(res.mails),
		fmt.Sprintf("window close → SMTP acceptance: p50 %s p99 %s (min %s max %s); %d window closes; held at %.0f notifications/s%s",
			ms(res.p50), ms(res.p99), ms(res.min), ms(res.max), res.windows, res.holdRate, extra), "", "", "")
}

func (r *report) heldRows(res heldResult) {
	r.row("9 held: relay RSS, 1h window", strconv.Itoa(heldK), strconv.Itoa(res.small),
		fmt.Sprintf("peak %s with %d held (one per recipient; %s before any), held in %.1fs (%.0f/s)", mib(res.hwmSmall), res.small, mib(res.hwmIdle),
			res.tSmall.Seconds(), float64(res.small)/res.tSmall.Seconds()), "", "< 64 MiB", mark(res.hwmSmall < 64<<20))
	flat := float64(res.hwmBig) / float64(res.hwmSmall)
	r.row("9 held: relay RSS, 1h window", strconv.Itoa(heldK), strconv.Itoa(res.big),
		fmt.Sprintf("peak %s (×%.2f; RSS now %s) with %d held; all held in %.1fs (%.0f notifications/s deferred); NOTIFY_HELD %d items for %d recipients (%d msgs); /metrics mailrelay_deferred %.0f (%.1fs after the last); %d mails",
			mib(res.hwmBig), flat, mib(res.rssBig), res.big, (res.tSmall+res.tRest).Seconds(),
			float64(res.big)/(res.tSmall+res.tRest).Seconds(), res.heldItems, res.heldRcpts, res.heldMsgs,
			res.metric, res.metricWait.Seconds(), res.mails),
		"", "< 64 MiB, flat", mark(res.hwmBig < 64<<20 && flat < 1.25))
}
