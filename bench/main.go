// Command bench is mailrelay's end-to-end benchmark (make bench). It starts
// everything it needs on 127.0.0.1 with free ports — a real nats-server
// with file storage (bin/nats-server, or the embedded server when that is
// missing) and a discarding SMTP sink (tools/smtpsink/sink) — and measures:
//
//  1. limit:   a bare go-mail client, N mails over K persistent connections
//     straight into the sink (no JetStream, no composing): the ceiling;
//  2. drain:   N notifications pre-published, the relay (in-process, K =
//     MAILRELAY_CONCURRENCY) timed from start to the last mail accepted;
//  3. latency: a steady 200/s for 30 s, publish to SMTP acceptance;
//  4. memory:  peak RSS (VmHWM) of the built relay binary, a separate
//     process, draining a 100,000 and a 10,000 backlog;
//  5. remote:  the sink waits 20 ms per mail; throughput at K = 16;
//  7. rtt:     relay and go-mail alone through a latency proxy
//     (tools/latencyproxy) at RTT 0, 20 and 80 ms, K = 1, 8, 16;
//  8. batch:   a 2 s batching window, 100 recipients × 50 notifications:
//     mails/s, notifications/s, flush latency (volume.go);
//  9. held:    100,000 notifications held for 10,000 recipients (1 h
//     window): the relay process's peak RSS after 10,000 and 100,000.
//
// Then it runs the Go micro-benchmarks (decode, decide, compose, render)
// and prints a table, which it also writes to -out (bench/RESULTS.md).
package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/embedded"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/relay"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/mailrelay/mailrelay/tools/latencyproxy/proxy"
	"github.com/mailrelay/mailrelay/tools/smtpsink/sink"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/wneessen/go-mail"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var (
	flagOut        = flag.String("out", "bench/RESULTS.md", "write the results here (\"\" to skip)")
	flagNATS       = flag.String("nats-server", "bin/nats-server", "nats-server binary; embedded server when missing")
	flagCPUProfile = flag.String("cpuprofile", "", "write a CPU profile of the drain with K = -profile-k here")
	flagProfileK   = flag.Int("profile-k", 8, "the drain concurrency -cpuprofile profiles")
	flagNATSProf   = flag.String("nats-cpuprofile", "", "write a CPU profile of nats-server (its --profile port) during the profiled drain here")
	flagOnly       = flag.String("only", "", "comma-separated scenarios to run: limit,drain,latency,memory,remote,rtt,optout,batch,held,gobench (default all)")
	flagScale      = flag.Float64("scale", 1, "multiply every N by this (quick trials; results are not comparable)")
	flagVerbose    = flag.Bool("v", false, "log progress")
	flagKs         = flag.String("k", "1,4,8,16", "concurrencies of the limit and drain runs")
	flagStallDump  = flag.String("stall-dump", "", "when a run stalls, write the goroutines of this process here")
	flagRuns       = flag.Int("runs", 3, "limit and drain runs per K (the table shows medians and the range)")
)

// Fixed sizes: change them and the figures are no longer comparable.
const (
	drainN      = 20_000
	latencyRate = 200
	latencyFor  = 30 * time.Second
	memBig      = 100_000
	memSmall    = 10_000
	remoteN     = 8_000
	remoteLat   = 20 * time.Millisecond
	remoteK     = 16
	warmN       = 2_000
)

var drainKs = []int{1, 4, 8, 16}

func main() {
	flag.Parse()
	if *flagRuns < 1 {
		fmt.Fprintln(os.Stderr, "bench: -runs wants a positive number")
		os.Exit(2)
	}
	drainKs = nil
	for _, f := range strings.Split(*flagKs, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			fmt.Fprintln(os.Stderr, "bench: -k wants a list of positive numbers")
			os.Exit(2)
		}
		drainKs = append(drainKs, k)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func scaled(n int) int { return max(100, int(float64(n)**flagScale)) }

func want(name string) bool {
	if *flagOnly == "" {
		return true
	}
	return slices.Contains(strings.Split(*flagOnly, ","), name)
}

func logf(format string, args ...any) {
	if *flagVerbose {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}

// report collects what the run found.
type report struct {
	machine []string
	rows    [][]string // scenario, K, N, result, vs limit, target, ok
	notes   []string
	gobench []string
}

func (r *report) row(cols ...string) {
	r.rows = append(r.rows, cols)
	fmt.Printf("  %-28s %3s %7s  %-50s %-8s %-16s %s\n", cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6])
}

func run() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	r := &report{}
	r.machine = machineInfo()
	for _, l := range r.machine {
		fmt.Println(l)
	}
	start := time.Now()
	fmt.Println()
	fmt.Printf("  %-28s %3s %7s  %-50s %-8s %-16s %s\n", "scenario", "K", "N", "result", "vs limit", "target", "")

	// Warm-up: one short limit and drain run, not reported.
	if want("limit") || want("drain") {
		logf("warm-up")
		if _, err := limitRun(4, scaled(warmN), 0); err != nil {
			return fmt.Errorf("warm-up limit: %w", err)
		}
		if _, err := drainRun(4, scaled(warmN), 0, ""); err != nil {
			return fmt.Errorf("warm-up drain: %w", err)
		}
	}

	// Limit and drain alternate per K, so that each ratio compares runs
	// made under the same conditions.
	if want("limit") || want("drain") {
		for _, k := range drainKs {
			n := scaled(drainN)
			// Each K runs the limit and the drain *flagRuns times, in
			// turn, and reports the medians: single runs on a shared
			// 2-core machine move by ±20%.
			var lims, drains []rateResult
			for run := range *flagRuns {
				lim, err := limitRun(k, n, 0)
				if err != nil {
					return fmt.Errorf("limit K=%d: %w", k, err)
				}
				lims = append(lims, lim)
				if !want("drain") {
					continue
				}
				prof := ""
				if k == *flagProfileK && run == 0 {
					prof = *flagCPUProfile
				}
				res, err := drainRun(k, n, 0, prof)
				if err != nil {
					return fmt.Errorf("drain K=%d: %w", k, err)
				}
				drains = append(drains, res)
			}
			lim := median(lims)
			r.row("1 limit: go-mail → sink", strconv.Itoa(k), strconv.Itoa(n),
				fmt.Sprintf("%s; CPU/mail %s", rateSpread(lims), us(lim.selfCPU)), "1.00", "", "")
			if k == 8 {
				// For reference: the same with go-mail's NOOP and RSET per message.
				ref, err := limitRunOpts(k, n, 0, true)
				if err != nil {
					return fmt.Errorf("limit K=%d (go-mail defaults): %w", k, err)
				}
				r.row("1 limit, +NOOP +RSET (ref.)", strconv.Itoa(k), strconv.Itoa(n),
					fmt.Sprintf("%.0f mails/s; CPU/mail %s", ref.rate, us(ref.selfCPU)), fmt.Sprintf("%.2f", ref.rate/lim.rate), "", "")
			}
			if !want("drain") {
				continue
			}
			res := median(drains)
			ratio := res.rate / lim.rate
			target, ok := "", ""
			if k == 8 {
				target, ok = "≥ 0.70 of limit", mark(ratio >= 0.70)
			}
			r.row("2 drain: relay, backlog", strconv.Itoa(k), strconv.Itoa(n),
				fmt.Sprintf("%s; CPU/mail relay %s, nats %s", rateSpread(drains), us(res.selfCPU), us(res.natsCPU)),
				fmt.Sprintf("%.2f", ratio), target, ok)
		}
	}
	if want("latency") {
		res, err := latencyRun(8, latencyRate, latencyFor)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		r.row("3 latency: 200/s for 30s", "8", strconv.Itoa(res.n),
			fmt.Sprintf("p50 %s p90 %s p99 %s max %s", ms(res.p50), ms(res.p90), ms(res.p99), ms(res.max)), "",
			"p99 < 25ms", mark(res.p99 < 25*time.Millisecond))
	}
	if want("memory") {
		bin, cleanup, err := buildRelay()
		if err != nil {
			return err
		}
		for _, n := range []int{scaled(memSmall), scaled(memBig)} {
			res, err := memoryRun(bin, 8, n)
			if err != nil {
				cleanup()
				return fmt.Errorf("memory N=%d: %w", n, err)
			}
			target, ok := "", ""
			if n == scaled(memBig) {
				target, ok = "< 64 MiB", mark(res.hwm < 64<<20)
			}
			r.row("4 memory: relay process RSS", "8", strconv.Itoa(n),
				fmt.Sprintf("peak %.1f MiB (%.0f mails/s)", float64(res.hwm)/(1<<20), res.rate), "", target, ok)
		}
		cleanup()
	}
	if want("remote") {
		n := scaled(remoteN)
		lim, err := limitRun(remoteK, n, remoteLat)
		if err != nil {
			return fmt.Errorf("remote limit: %w", err)
		}
		ideal := float64(remoteK) / remoteLat.Seconds()
		r.row("5 remote limit: 20ms/mail", strconv.Itoa(remoteK), strconv.Itoa(n), fmt.Sprintf("%.0f mails/s", lim.rate),
			"1.00", fmt.Sprintf("K/20ms = %.0f", ideal), "")
		res, err := drainRun(remoteK, n, remoteLat, "")
		if err != nil {
			return fmt.Errorf("remote drain: %w", err)
		}
		r.row("5 remote drain: 20ms/mail", strconv.Itoa(remoteK), strconv.Itoa(n),
			fmt.Sprintf("%.0f mails/s (%.2fs)", res.rate, res.elapsed.Seconds()), fmt.Sprintf("%.2f", res.rate/lim.rate),
			"≥ 600 mails/s", mark(res.rate >= 600))
	}
	if want("rtt") {
		for _, delay := range rttDelays {
			rtt := 2 * delay
			for _, k := range rttKs {
				n := rttN(k, rtt)
				gm, err := limitRunVia(k, n, 0, false, delay)
				if err != nil {
					return fmt.Errorf("rtt %s go-mail K=%d: %w", rtt, k, err)
				}
				res, err := drainVia(k, n, delay)
				if err != nil {
					return fmt.Errorf("rtt %s drain K=%d: %w", rtt, k, err)
				}
				ideal, target, ok := "", "", ""
				if rtt > 0 {
					kr := float64(k) / rtt.Seconds()
					ideal = fmt.Sprintf("; K/RTT %.0f", kr)
					if rtt == 20*time.Millisecond && k > 1 {
						target, ok = fmt.Sprintf("≥ %.0f mails/s", 0.8*kr), mark(res.rate >= 0.8*kr)
					}
				}
				r.row(fmt.Sprintf("7 rtt %s: relay via proxy", ms(rtt)), strconv.Itoa(k), strconv.Itoa(n),
					fmt.Sprintf("%.0f mails/s; go-mail alone %.0f%s", res.rate, gm.rate, ideal),
					fmt.Sprintf("%.2f", res.rate/gm.rate), target, ok)
			}
		}
	}
	if want("optout") {
		n := scaled(drainN)
		var rs []rateResult
		for range *flagRuns {
			res, err := optedOutRun(8, n)
			if err != nil {
				return fmt.Errorf("opted-out drain: %w", err)
			}
			rs = append(rs, res)
		}
		res := median(rs)
		r.row("6 drain, all opted out", "8", strconv.Itoa(n),
			fmt.Sprintf("%s; CPU/notif. relay %s, nats %s", strings.Replace(rateSpread(rs), "mails/s", "notifications/s", 1),
				us(res.selfCPU), us(res.natsCPU)), "", "", "")
	}
	if want("batch") {
		res, err := batchRun(batchK, batchUsers, batchEach, batchWindow)
		if err != nil {
			return fmt.Errorf("batch: %w", err)
		}
		r.batchRows(res, batchUsers, batchEach)
	}
	if want("held") {
		bin, cleanup, err := buildRelay()
		if err != nil {
			return err
		}
		users := scaled(heldUsers)
		res, err := heldRun(bin, heldK, users, heldEach)
		cleanup()
		if err != nil {
			return fmt.Errorf("held: %w", err)
		}
		r.heldRows(res)
	}
	if want("gobench") {
		logf("go benchmarks")
		lines, err := goBench()
		if err != nil {
			return fmt.Errorf("go benchmarks: %w", err)
		}
		r.gobench = lines
		fmt.Println()
		for _, l := range lines {
			fmt.Println(l)
		}
	}
	total := time.Since(start)
	fmt.Printf("\ntotal %s\n", total.Round(time.Second))
	r.notes = append(r.notes, fmt.Sprintf("total bench time %s; load average at the end: %s", total.Round(time.Second), loadAvg()))
	if *flagOut != "" {
		if err := r.write(*flagOut); err != nil {
			return err
		}
		fmt.Println("wrote", *flagOut)
	}
	return nil
}

func mark(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// ---------------------------------------------------------------- machine

func moduleRoot() (string, error) {
	out, err := exec.Command(goCmd(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the mailrelay module")
	}
	return filepath.Dir(mod), nil
}

func goCmd() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

func machineInfo() []string {
	cpu := "?"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if _, v, ok := strings.Cut(strings.SplitN(string(b), "\n", 2)[0], ":"); ok {
			if kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB")); err == nil {
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	ns := "embedded (nats-server/v2 package)"
	if _, err := os.Stat(*flagNATS); err == nil {
		if out, err := exec.Command(*flagNATS, "--version").Output(); err == nil {
			ns = strings.TrimSpace(string(out)) + " (" + *flagNATS + ", file storage)"
		}
	}
	return []string{
		fmt.Sprintf("load:        %s (other work on the machine skews every figure)", loadAvg()),
		fmt.Sprintf("machine:     %d CPUs (GOMAXPROCS %d), %s, %s RAM, %s/%s", runtime.NumCPU(), runtime.GOMAXPROCS(0), cpu, mem, runtime.GOOS, runtime.GOARCH),
		fmt.Sprintf("go:          %s", runtime.Version()),
		fmt.Sprintf("nats-server: %s", ns),
		fmt.Sprintf("date:        %s", time.Now().UTC().Format(time.RFC3339)),
	}
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// ---------------------------------------------------------------- services

// natsServer is a JetStream server with file storage in a temp dir.
type natsServer struct {
	url      string
	pid      int // 0 when embedded
	profPort int // nats-server's pprof HTTP port (0: none)
	stop     func()
}

// profileNATS fetches a CPU profile of d from nats-server's pprof port into
// file; wait returns when it is written.
func (ns *natsServer) profileNATS(file string, d time.Duration) (wait func() error) {
	if ns.profPort == 0 || file == "" {
		return func() error { return nil }
	}
	errc := make(chan error, 1)
	go func() {
		url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", ns.profPort, int(d.Seconds()))
		resp, err := http.Get(url)
		if err != nil {
			errc <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(file)
		if err != nil {
			errc <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		errc <- err
	}()
	return func() error { return <-errc }
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startNATS() (*natsServer, error) {
	dir, err := os.MkdirTemp("", "mailrelay-bench-js-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	if _, err := os.Stat(*flagNATS); err != nil {
		srv, err := embedded.Start(embedded.Options{Port: port, StoreDir: dir, Name: "bench"})
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		return &natsServer{url: url, stop: func() { srv.Shutdown(); srv.WaitForShutdown(); os.RemoveAll(dir) }}, nil
	}
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir, "-n", "bench"}
	profPort := 0
	if *flagNATSProf != "" {
		if profPort, err = freePort(); err != nil {
			return nil, err
		}
		args = append(args, "--profile", strconv.Itoa(profPort))
	}
	cmd := exec.Command(*flagNATS, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(dir)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
			nc.Close()
			if err == nil {
				return &natsServer{url: url, pid: cmd.Process.Pid, profPort: profPort, stop: stop}, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("nats-server on %s not ready: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// recorder counts accepted mails and keeps when each was accepted.
type recorder struct {
	target   int64
	count    atomic.Int64
	done     chan struct{}
	doneOnce sync.Once
	accAt    []atomic.Int64 // unix nanos by event index; nil: not kept
	last     atomic.Int64
}

func newRecorder(target int, keep bool) *recorder {
	r := &recorder{target: int64(target), done: make(chan struct{})}
	if keep {
		r.accAt = make([]atomic.Int64, target)
	}
	return r
}

func (r *recorder) accept(rcpt string, at time.Time) {
	if r.accAt != nil {
		if i := indexOf(rcpt); i >= 0 && i < len(r.accAt) {
			r.accAt[i].CompareAndSwap(0, at.UnixNano())
		}
	}
	r.last.Store(at.UnixNano())
	if r.count.Add(1) >= r.target {
		r.doneOnce.Do(func() { close(r.done) })
	}
}

// wait waits until the target count is reached, failing when nothing was
// accepted for stall.
func (r *recorder) wait(stall time.Duration) error {
	last, lastAt := int64(-1), time.Now()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return nil
		case <-t.C:
			if c := r.count.Load(); c != last {
				last, lastAt = c, time.Now()
				logf("accepted %d/%d", c, r.target)
			} else if time.Since(lastAt) > stall {
				if *flagStallDump != "" {
					if f, err := os.Create(*flagStallDump); err == nil {
						_ = pprof.Lookup("goroutine").WriteTo(f, 2)
						f.Close()
					}
				}
				return fmt.Errorf("stalled at %d of %d mails", c, r.target)
			}
		}
	}
}

// ---------------------------------------------------------------- 1 limit

// median returns the run with the median rate (the lower middle one for an
// even count).
func median(rs []rateResult) rateResult {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b rateResult) int { return cmp.Compare(a.rate, b.rate) })
	return s[(len(s)-1)/2]
}

// rateSpread prints the median rate and, for several runs, their range.
func rateSpread(rs []rateResult) string {
	m := median(rs)
	if len(rs) == 1 {
		return fmt.Sprintf("%.0f mails/s", m.rate)
	}
	lo, hi := rs[0].rate, rs[0].rate
	for _, r := range rs[1:] {
		lo, hi = min(lo, r.rate), max(hi, r.rate)
	}
	return fmt.Sprintf("%.0f mails/s (%.0f–%.0f)", m.rate, lo, hi)
}

type rateResult struct {
	rate    float64
	elapsed time.Duration
	selfCPU time.Duration // CPU of this process (relay or client, and the sink) per mail
	natsCPU time.Duration // CPU of nats-server per mail (0: not measured)
}

// cpuMeter measures CPU time used by this process and by nats-server.
type cpuMeter struct {
	pid        int
	self, nats time.Duration
}

func startCPU(natsPid int) cpuMeter {
	return cpuMeter{pid: natsPid, self: selfCPU(), nats: procCPU(natsPid)}
}

// perMail returns the CPU used since start, per mail.
func (m cpuMeter) perMail(n int) (self, nats time.Duration) {
	self = (selfCPU() - m.self) / time.Duration(n)
	if m.pid != 0 {
		nats = (procCPU(m.pid) - m.nats) / time.Duration(n)
	}
	return self, nats
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is utime+stime of a process from /proc (clock ticks of 10 ms).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }

// limitRun sends n mails over k persistent go-mail connections into a
// fresh sink, with the relay's client options (no NOOP, no RSET).
func limitRun(k, n int, latency time.Duration) (rateResult, error) {
	return limitRunOpts(k, n, latency, false)
}

// limitRunOpts is limitRun; with goMailDefaults the client keeps go-mail's
// NOOP before and RSET after each message (what a plain go-mail client
// does, and what the figures were taken with).
func limitRunOpts(k, n int, latency time.Duration, goMailDefaults bool) (rateResult, error) {
	return limitRunVia(k, n, latency, goMailDefaults, -1)
}

// limitRunVia is limitRunOpts through a latency proxy that delays each
// direction by delay (none when delay < 0).
func limitRunVia(k, n int, latency time.Duration, goMailDefaults bool, delay time.Duration) (rateResult, error) {
	rec := newRecorder(n, false)
	s, err := sink.Start(sink.Options{Latency: latency, OnAccept: rec.accept})
	if err != nil {
		return rateResult{}, err
	}
	defer s.Close()
	addr := s.Addr()
	if delay >= 0 {
		p, err := proxy.Start(addr, delay)
		if err != nil {
			return rateResult{}, err
		}
		defer p.Close()
		addr = p.Addr()
	}
	host, portS, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portS)

	var next atomic.Int64
	errs := make(chan error, k)
	meter := startCPU(0)
	start := time.Now()
	for range k {
		go func() {
			errs <- func() error {
				opts := []mail.Option{mail.WithPort(port), mail.WithTLSPolicy(mail.NoTLS),
					mail.WithHELO("bench.localhost"), mail.WithTimeout(30 * time.Second)}
				if !goMailDefaults {
					opts = append(opts, mail.WithoutNoop(), mail.WithoutRset())
				}
				c, err := mail.NewClient(host, opts...)
				if err != nil {
					return err
				}
				if err := c.DialWithContext(context.Background()); err != nil {
					return err
				}
				defer c.Close()
				for {
					i := next.Add(1) - 1
					if i >= int64(n) {
						return nil
					}
					m := mail.NewMsg()
					_ = m.From("Acme <notify@example.com>")
					_ = m.To(rcptOf(int(i)))
					m.Subject("Bob Stone commented on Pour foundation, east wing")
					m.SetMessageIDWithValue(fmt.Sprintf("limit-%d@example.com", i))
					m.SetBodyString(mail.TypeTextPlain, comment+"\n\n"+comment+"\n")
					if err := c.Send(m); err != nil {
						return err
					}
				}
			}()
		}()
	}
	for range k {
		if err := <-errs; err != nil {
			return rateResult{}, err
		}
	}
	if err := rec.wait(30 * time.Second); err != nil {
		return rateResult{}, err
	}
	el := time.Duration(rec.last.Load() - start.UnixNano())
	self, _ := meter.perMail(n)
	logf("limit K=%d N=%d: %s", k, n, el)
	return rateResult{rate: float64(n) / el.Seconds(), elapsed: el, selfCPU: self}, nil
}

// ---------------------------------------------------------------- relay

// relayVars is the relay's environment for a run.
func relayVars(natsURL, smtpAddr string, k int) map[string]string {
	host, port, _ := net.SplitHostPort(smtpAddr)
	return map[string]string{
		"NATS_URL":              natsURL,
		"EMAIL_HOST":            host,
		"EMAIL_PORT":            port,
		"EMAIL_TIMEOUT":         "15",
		"DEFAULT_FROM_EMAIL":    "Acme <notify@example.com>",
		"FRONTEND_BASE_URL":     "https://app.example.com",
		"MAILRELAY_HTTP_ADDR":   "127.0.0.1:0",
		"MAILRELAY_CONCURRENCY": strconv.Itoa(k),
		"MAILRELAY_LOG_LEVEL":   "info",
	}
}

func loadConfig(vars map[string]string) (*config.Config, error) {
	return config.Load(func(k string) string { return vars[k] })
}

// prepare provisions like the relay does, opts every bench user in to
// every type (unless optIn is false: Email stays off, the default, and
// every notification is skipped_opted_out) and publishes n events
// (asynchronously, waiting for every ack). It returns the JetStream
// handles for later publishing.
func prepare(ctx context.Context, natsURL string, cfg *config.Config, run string, n int, optIn bool) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2048))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	h, err := provision.Provision(ctx, js, relay.ProvisionOptions(cfg))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	all := map[event.Type]bool{}
	for _, t := range event.Types {
		all[t] = true
	}
	ps := prefs.New(h.Prefs)
	for u := range benchUsers {
		if !optIn {
			break // Email stays off, the default
		}
		if _, err := ps.Set(ctx, userID(u), all); err != nil {
			nc.Close()
			return nil, nil, err
		}
	}
	if err := publishAsync(ctx, js, run, 0, n); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func publishAsync(ctx context.Context, js jetstream.JetStream, run string, from, n int) error {
	now := time.Now()
	return publishEvents(ctx, js, from, n, func(i int) *event.Event { return benchEvent(run, i, now) })
}

// publishEvents publishes events from to from+n (gen builds each)
// asynchronously, waits for every ack and checks that NOTIFY holds at
// least from+n messages.
func publishEvents(ctx context.Context, js jetstream.JetStream, from, n int, gen func(i int) *event.Event) error {
	for i := from; i < from+n; i++ {
		ev := gen(i)
		subj, data := encode(ev)
		msg := nats.NewMsg(subj)
		msg.Data = data
		msg.Header.Set(event.MsgIDHeader, ev.ID)
		if _, err := js.PublishMsgAsync(msg); err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
		if (i-from)%1000 == 999 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return errors.New("publish acks did not arrive within a minute")
	}
	st, err := js.Stream(ctx, provision.Stream)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if got := info.State.Msgs; got < uint64(from+n) {
		return fmt.Errorf("stream holds %d messages, want %d", got, from+n)
	}
	return nil
}

// relayLogger is the relay's production logger (JSON, info) writing to
// nowhere, so the per-notification log line costs what it costs in
// production minus the write.
func relayLogger() *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey, enc.EncodeTime = "ts", zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(io.Discard), zapcore.InfoLevel))
}

// inProcessRelay runs relay.Run until stop is called.
func inProcessRelay(cfg *config.Config) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx, cfg, relay.Options{Log: relayLogger(), Version: "bench"}) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(40 * time.Second):
			return errors.New("relay did not stop within 40s")
		}
	}
}

// ---------------------------------------------------------------- 2 drain

// stack is a nats-server, a sink, and the environment and configuration
// of a relay with concurrency k against them (extra added to it), with a
// client connection once a scenario makes one.
type stack struct {
	ns   *natsServer
	sink *sink.Sink
	vars map[string]string // the relay's environment
	cfg  *config.Config
	nc   *nats.Conn
	js   jetstream.JetStream
}

func newStack(k int, so sink.Options, extra map[string]string) (st *stack, err error) {
	st = &stack{}
	defer func() {
		if err != nil {
			st.close()
		}
	}()
	if st.ns, err = startNATS(); err != nil {
		return nil, err
	}
	if st.sink, err = sink.Start(so); err != nil {
		return nil, err
	}
	st.vars = relayVars(st.ns.url, st.sink.Addr(), k)
	maps.Copy(st.vars, extra)
	if st.cfg, err = loadConfig(st.vars); err != nil {
		return nil, err
	}
	return st, nil
}

func (st *stack) close() {
	if st.nc != nil {
		st.nc.Close()
	}
	if st.sink != nil {
		_ = st.sink.Close()
	}
	if st.ns != nil {
		st.ns.stop()
	}
}

// backlog is a stack and n notifications published for a relay with
// concurrency k (recipients opted in, or not).
type backlog struct{ *stack }

func newBacklog(k, n int, so sink.Options, run string, optIn bool) (*backlog, error) {
	st, err := newStack(k, so, nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if st.nc, st.js, err = prepare(ctx, st.ns.url, st.cfg, run, n, optIn); err != nil {
		st.close()
		return nil, err
	}
	return &backlog{st}, nil
}

// drainRun pre-publishes n notifications and times an in-process relay
// with concurrency k from its start to the last mail accepted.
func drainRun(k, n int, latency time.Duration, cpuprofile string) (rateResult, error) {
	rec := newRecorder(n, false)
	d, err := newBacklog(k, n, sink.Options{Latency: latency, OnAccept: rec.accept}, "d", true)
	if err != nil {
		return rateResult{}, err
	}
	defer d.close()
	ns, s, cfg := d.ns, d.sink, d.cfg
	logf("drain K=%d: %d published", k, n)
	runtime.GC()

	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return rateResult{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return rateResult{}, err
		}
		defer pprof.StopCPUProfile()
	}
	waitProf := func() error { return nil }
	if cpuprofile != "" {
		waitProf = ns.profileNATS(*flagNATSProf, 3*time.Second)
	}
	meter := startCPU(ns.pid)
	start := time.Now()
	stop := inProcessRelay(cfg)
	werr := rec.wait(30 * time.Second)
	if err := waitProf(); err != nil {
		logf("nats-server profile: %v", err)
	}
	el := time.Duration(rec.last.Load() - start.UnixNano())
	self, natsCPU := meter.perMail(n)
	if err := stop(); err != nil {
		return rateResult{}, err
	}
	if werr != nil {
		return rateResult{}, werr
	}
	if got := s.Count(); got != int64(n) {
		return rateResult{}, fmt.Errorf("sink accepted %d mails, want %d (duplicates?)", got, n)
	}
	logf("drain K=%d N=%d: %s", k, n, el)
	return rateResult{rate: float64(n) / el.Seconds(), elapsed: el, selfCPU: self, natsCPU: natsCPU}, nil
}

// ---------------------------------------------------------------- 7 rtt

// The round trips of scenario 7: a proxy delays each direction by one of
// these (RTT 0, 20 and 80 ms), for each concurrency.
var (
	rttDelays = []time.Duration{0, 10 * time.Millisecond, 40 * time.Millisecond}
	rttKs     = []int{1, 8, 16}
)

// rttN is about 3 s of mail at one round trip a mail (a fixed backlog at
// RTT 0).
func rttN(k int, rtt time.Duration) int {
	if rtt == 0 {
		return scaled(drainN / 4)
	}
	return max(60, int(3*float64(k)/rtt.Seconds()))
}

// drainVia is drainRun with the relay sending through a latency proxy
// that delays each direction by delay.
func drainVia(k, n int, delay time.Duration) (rateResult, error) {
	rec := newRecorder(n, false)
	d, err := newBacklog(k, n, sink.Options{OnAccept: rec.accept}, "r", true)
	if err != nil {
		return rateResult{}, err
	}
	defer d.close()
	p, err := proxy.Start(d.sink.Addr(), delay)
	if err != nil {
		return rateResult{}, err
	}
	defer p.Close()
	_, portS, _ := net.SplitHostPort(p.Addr())
	d.cfg.Email.Port, _ = strconv.Atoi(portS)
	runtime.GC()
	start := time.Now()
	stop := inProcessRelay(d.cfg)
	werr := rec.wait(60 * time.Second)
	el := time.Duration(rec.last.Load() - start.UnixNano())
	if err := stop(); err != nil {
		return rateResult{}, err
	}
	if werr != nil {
		return rateResult{}, werr
	}
	if got := d.sink.Count(); got != int64(n) {
		return rateResult{}, fmt.Errorf("sink accepted %d mails, want %d (duplicates?)", got, n)
	}
	logf("rtt drain K=%d N=%d delay %s: %s", k, n, delay, el)
	return rateResult{rate: float64(n) / el.Seconds(), elapsed: el}, nil
}

// ---------------------------------------------------------------- 6 opted out

// optedOutRun pre-publishes n notifications whose recipients have Email
// off (the default) and times an in-process relay with concurrency k from
// its start until every one is recorded and acked.
func optedOutRun(k, n int) (rateResult, error) {
	d, err := newBacklog(k, n, sink.Options{}, "o", false)
	if err != nil {
		return rateResult{}, err
	}
	defer d.close()
	ns, s, cfg := d.ns, d.sink, d.cfg
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cons, err := d.js.Consumer(ctx, provision.Stream, provision.Consumer)
	if err != nil {
		return rateResult{}, err
	}
	runtime.GC()
	meter := startCPU(ns.pid)
	start := time.Now()
	stop := inProcessRelay(cfg)
	// Polled every 20 ms: each poll is a request to the server measured,
	// so rarely enough to cost well under 1% of its CPU (some hundred
	// requests against ~100k writes and acks), often enough to time the
	// end within 1%.
	var el time.Duration
	var floor uint64
	moved := time.Now()
	for {
		ci, err := cons.Info(ctx)
		if err != nil {
			_ = stop()
			return rateResult{}, err
		}
		if ci.AckFloor.Stream >= uint64(n) {
			el = time.Since(start)
			break
		}
		if ci.AckFloor.Stream != floor {
			floor, moved = ci.AckFloor.Stream, time.Now()
		} else if time.Since(moved) > 30*time.Second {
			_ = stop()
			return rateResult{}, fmt.Errorf("stalled: %d of %d acked, none for 30s", floor, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	self, natsCPU := meter.perMail(n)
	if err := stop(); err != nil {
		return rateResult{}, err
	}
	if got := s.Count(); got != 0 {
		return rateResult{}, fmt.Errorf("sink accepted %d mails for opted-out recipients", got)
	}
	return rateResult{rate: float64(n) / el.Seconds(), elapsed: el, selfCPU: self, natsCPU: natsCPU}, nil
}

// ---------------------------------------------------------------- 3 latency

type latencyResult struct {
	n                  int
	p50, p90, p99, max time.Duration
}

// latencyRun runs a relay (concurrency k) and publishes at rate per second
// for d after a 2 s warm-up; it reports publish-to-acceptance latency.
func latencyRun(k, rate int, d time.Duration) (latencyResult, error) {
	warm := 2 * rate
	n := int(d.Seconds()*float64(rate)) + warm
	n = scaled(n)
	rec := newRecorder(n, true)
	b, err := newBacklog(k, 0, sink.Options{OnAccept: rec.accept}, "l", true)
	if err != nil {
		return latencyResult{}, err
	}
	defer b.close()
	cfg, js := b.cfg, b.js
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stop := inProcessRelay(cfg)
	defer func() { _ = stop() }()
	if err := waitBound(ctx, js); err != nil {
		return latencyResult{}, err
	}

	pubAt := make([]int64, n)
	interval := time.Second / time.Duration(rate)
	begin := time.Now()
	now := time.Now()
	for i := range n {
		if wait := time.Until(begin.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		ev := benchEvent("l", i, now)
		subj, data := encode(ev)
		msg := nats.NewMsg(subj)
		msg.Data = data
		msg.Header.Set(event.MsgIDHeader, ev.ID)
		pubAt[i] = time.Now().UnixNano()
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			return latencyResult{}, err
		}
	}
	if err := rec.wait(30 * time.Second); err != nil {
		return latencyResult{}, err
	}
	lat := make([]time.Duration, 0, n-warm)
	for i := min(warm, n/2); i < n; i++ {
		lat = append(lat, time.Duration(rec.accAt[i].Load()-pubAt[i]))
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	res := latencyResult{n: len(lat), p50: q(0.50), p90: q(0.90), p99: q(0.99), max: lat[len(lat)-1]}
	logf("latency: %+v", res)
	return res, nil
}

// waitBound waits until the relay's pull is waiting on the consumer.
func waitBound(ctx context.Context, js jetstream.JetStream) error {
	for {
		c, err := js.Consumer(ctx, provision.Stream, provision.Consumer)
		if err == nil {
			if info, err := c.Info(ctx); err == nil && info.NumWaiting > 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("relay not bound: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ---------------------------------------------------------------- 4 memory

func buildRelay() (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "mailrelay-bench-bin-")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, "mailrelay")
	cmd := exec.Command(goCmd(), "build", "-o", bin, "./cmd/mailrelay")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("go build: %w", err)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

type memResult struct {
	hwm  int64 // bytes
	rate float64
}

// memoryRun drains an n backlog with the relay binary as its own process
// and reads its peak RSS (VmHWM) before stopping it.
func memoryRun(bin string, k, n int) (memResult, error) {
	rec := newRecorder(n, false)
	b, err := newBacklog(k, n, sink.Options{OnAccept: rec.accept}, "m", true)
	if err != nil {
		return memResult{}, err
	}
	defer b.close()
	vars := b.vars
	logf("memory N=%d: published", n)

	cmd := exec.Command(bin, "serve")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard // the log goes through a pipe, as to a collector
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return memResult{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	werr := rec.wait(30 * time.Second)
	el := time.Duration(rec.last.Load() - start.UnixNano())
	hwm, herr := vmHWM(cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(40 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	if werr != nil {
		return memResult{}, werr
	}
	if herr != nil {
		return memResult{}, herr
	}
	logf("memory N=%d: VmHWM %d kB in %s", n, hwm>>10, el)
	return memResult{hwm: hwm, rate: float64(n) / el.Seconds()}, nil
}

func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// ---------------------------------------------------------------- go bench

func goBench() ([]string, error) {
	cmd := exec.Command(goCmd(), "test", "-run", "^$", "-bench", ".", "-benchmem", "-count", "1",
		"./event/", "./compose/", "./bench/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Benchmark") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	return lines, nil
}

// ---------------------------------------------------------------- output

func (r *report) write(path string) error {
	var b strings.Builder
	b.WriteString("# mailrelay benchmark results\n\n")
	b.WriteString("Written by `make bench` (bench/main.go). Everything runs on 127.0.0.1 on this machine:\n")
	b.WriteString("a real nats-server with file storage, the discarding SMTP sink of tools/smtpsink,\n")
	b.WriteString("the relay (in-process for 2, 3, 5, 6, 7 and 8; the built binary as its own process for 4 and 9).\n\n")
	b.WriteString("```\n")
	for _, l := range r.machine {
		b.WriteString(l + "\n")
	}
	b.WriteString("```\n\n")
	b.WriteString("| scenario | K | N | result | vs limit | target | |\n|---|---:|---:|---|---:|---|---|\n")
	for _, row := range r.rows {
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	if len(r.gobench) > 0 {
		b.WriteString("\nGo micro-benchmarks (`go test -bench . -benchmem ./event ./compose ./bench`):\n\n```\n")
		for _, l := range r.gobench {
			b.WriteString(l + "\n")
		}
		b.WriteString("```\n")
	}
	if len(r.notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.notes {
			b.WriteString("- " + n + "\n")
		}
	}
	if extra, err := os.ReadFile(filepath.Join(filepath.Dir(path), "ANALYSIS.md")); err == nil {
		b.WriteString("\n")
		b.Write(extra)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
