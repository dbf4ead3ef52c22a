package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/relay"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// provisionCmd creates or updates every stream, consumer and bucket, as
// `serve` does at start-up, and exits: a deployment runs it before any
// publisher starts, so that no notification is published into nothing.
type provisionCmd struct {
	Timeout time.Duration `default:"30s" help:"How long to wait for NATS and JetStream (a server still starting, a cluster still forming) before giving up."`
}

func (c provisionCmd) Run(ctx context.Context, a *app) error { return a.provision(ctx, c) }

// reconnectPause is the pause between connection attempts while NATS is
// not reachable yet.
const reconnectPause = 250 * time.Millisecond

func (a *app) provision(ctx context.Context, c provisionCmd) error {
	if c.Timeout <= 0 {
		return usageError{fmt.Errorf("--timeout must be positive, not %v", c.Timeout)}
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	nc, err := a.connectWithin(ctx, c.Timeout)
	if err != nil {
		return err
	}
	defer nc.Close()

	// A request NATS refuses for lack of a permission gets no answer, only
	// an asynchronous error: watch for it, so that the command says so at
	// once instead of timing out.
	pctx, refuse := context.WithCancelCause(ctx)
	defer refuse(nil)
	var refusal refusalLog
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		a.log.Warn("NATS error", zap.Error(err))
		if errors.Is(err, nats.ErrPermissionViolation) {
			refusal.set(err)
			refuse(err)
		}
	})
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	po := relay.ProvisionOptions(a.cfg)
	var h *provision.Handles
	for {
		h, err = provision.Provision(pctx, js, po)
		if err == nil || !provision.NotReady(err) || pctx.Err() != nil {
			break
		}
		select { // a forming cluster said "not now"
		case <-pctx.Done():
		case <-time.After(reconnectPause):
		}
	}
	if v := refusal.get(); v != nil {
		return fmt.Errorf("NATS refused a request: %w (the identity mailrelay connects with lacks this permission; "+
			"nats.conf lists what the mailrelay user needs)", v)
	}
	if err != nil {
		return provisionError(err, c.Timeout, po.Replicas)
	}
	return a.printProvisioned(ctx, nc, js, h)
}

// connectWithin dials NATS, retrying while no server is reachable until ctx
// ends; a refused authentication ends it at once.
func (a *app) connectWithin(ctx context.Context, timeout time.Duration) (*nats.Conn, error) {
	for {
		nc, err := relay.Connect(a.cfg.NATS, "mailrelay-provision", a.log, false)
		if err == nil {
			return nc, nil
		}
		if authRefused(err) {
			return nil, fmt.Errorf("NATS at %s: %w", a.cfg.NATS.Redacted(), err)
		}
		a.log.Debug("NATS not reachable yet, retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no NATS server reachable at %s within %v: %w%s",
				a.cfg.NATS.Redacted(), timeout, err, dialCauses(a.cfg.NATS.Servers()))
		case <-time.After(reconnectPause):
		}
	}
}

// authRefused reports whether err is the server refusing the credentials.
func authRefused(err error) bool {
	for _, e := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired} {
		if errors.Is(err, e) {
			return true
		}
	}
	return strings.Contains(strings.ToLower(err.Error()), "authorization violation")
}

// dialCauses says why each server could not be reached ("connection
// refused", "no such host"), which nats.go folds into "no servers
// available". It dials plain TCP only; it never sends anything.
func dialCauses(servers []string) string {
	var causes []string
	for _, s := range servers {
		addr := hostPort(s)
		if addr == "" {
			continue
		}
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			causes = append(causes, err.Error())
			continue
		}
		_ = conn.Close()
	}
	if len(causes) == 0 {
		return ""
	}
	return " (" + strings.Join(causes, "; ") + ")"
}

// hostPort is the TCP address of a NATS URL (port 4222 when none is
// given), or "" for a URL it cannot take apart or a websocket URL.
func hostPort(s string) string {
	if !strings.Contains(s, "://") {
		s = "nats://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Hostname() == "" {
		return ""
	}
	switch u.Scheme {
	case "nats", "tls":
	default:
		return ""
	}
	port := u.Port()
	if port == "" {
		port = "4222"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// provisionError adds what to do to the common failures.
func provisionError(err error, timeout time.Duration, replicas int) error {
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w (JetStream is not enabled for this account: start nats-server with -js or a jetstream block, as in nats.conf)", err)
	case provision.NotReady(err):
		return fmt.Errorf("%w (JetStream was still not ready after %v; with MAILRELAY_STREAM_REPLICAS=%d the cluster needs that many servers with JetStream)", err, timeout, replicas)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w (JetStream did not answer within %v)", err, timeout)
	}
	return err
}

// refusalLog keeps the first permissions violation of a connection.
type refusalLog struct {
	mu  sync.Mutex
	err error
}

func (r *refusalLog) set(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

func (r *refusalLog) get() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// printProvisioned prints what exists now, read back from the server:
// each stream with its consumer (NOTIFY and mailrelay, NOTIFY_ADVISORIES
// and mailrelay_advisories, NOTIFY_HELD and mailrelay_flush), then each
// bucket (notify_prefs, notify_email_state, notify_seen,
// notify_suppressed).
func (a *app) printProvisioned(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, h *provision.Handles) error {
	fmt.Fprintf(a.stdout, "provisioned on %s (server %s, nats-server %s):\n",
		nc.ConnectedUrlRedacted(), nc.ConnectedServerName(), nc.ConnectedServerVersion())
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  KIND\tNAME\tREPLICAS\tSETTINGS\tNOW")
	adv, err := js.Stream(ctx, provision.AdvisoryStream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", provision.AdvisoryStream, err)
	}
	pairs := []struct {
		stream   jetstream.Stream
		consumer jetstream.Consumer
	}{{h.Stream, h.Consumer}, {adv, h.AdvisoryConsumer}, {h.Held, h.Flush}}
	if h.NoHolding != nil {
		pairs = pairs[:2]
		defer fmt.Fprintf(a.stdout, "not provisioned: stream %s and consumer %s: %v\n"+
			"  volume control is unavailable: every notification is mailed at once, as in v1; "+
			"MAILRELAY_BATCH_WINDOW and MAILRELAY_SEEN_DELAY need nats-server 2.12 or later\n", hold.Stream, hold.Consumer, h.NoHolding)
	}
	for _, p := range pairs {
		si, err := p.stream.Info(ctx)
		if err != nil {
			return fmt.Errorf("stream %s: %w", p.stream.CachedInfo().Config.Name, err)
		}
		cfg := si.Config
		settings := "subjects " + strings.Join(cfg.Subjects, " ")
		if cfg.MaxAge > 0 {
			settings += fmt.Sprintf(", max age %v", cfg.MaxAge)
		} else {
			settings += ", no max age"
		}
		if cfg.Duplicates > 0 && cfg.Name != provision.AdvisoryStream {
			settings += fmt.Sprintf(", duplicate window %v", cfg.Duplicates)
		}
		if cfg.AllowMsgSchedules {
			settings += ", message schedules"
		}
		fmt.Fprintf(w, "  stream\t%s\t%d\t%s\t%d messages\n", cfg.Name, cfg.Replicas, settings, si.State.Msgs)
		ci, err := p.consumer.Info(ctx)
		if err != nil {
			return fmt.Errorf("consumer on %s: %w", cfg.Name, err)
		}
		replicas := ci.Config.Replicas
		if replicas == 0 {
			replicas = cfg.Replicas // inherited from the stream
		}
		maxDeliver := "unlimited"
		if ci.Config.MaxDeliver > 0 {
			maxDeliver = fmt.Sprint(ci.Config.MaxDeliver)
		}
		filter := ""
		if ci.Config.FilterSubject != "" {
			filter = "filter " + ci.Config.FilterSubject + ", "
		}
		fmt.Fprintf(w, "  consumer\t%s on %s\t%d\t%smax deliver %s, ack wait %v\t%d pending, %d unacked\n",
			ci.Name, cfg.Name, replicas, filter, maxDeliver, ci.Config.AckWait, ci.NumPending, ci.NumAckPending)
	}
	for _, kv := range []jetstream.KeyValue{h.Prefs, h.State, h.Seen, h.Suppressed} {
		st, err := kv.Status(ctx)
		if err != nil {
			return fmt.Errorf("bucket %s: %w", kv.Bucket(), err)
		}
		replicas := 0
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
			replicas = bs.StreamInfo().Config.Replicas
		}
		settings := fmt.Sprintf("history %d", st.History())
		if st.TTL() > 0 {
			settings += fmt.Sprintf(", ttl %v", st.TTL())
		}
		fmt.Fprintf(w, "  bucket\t%s\t%d\t%s\t%d values\n", st.Bucket(), replicas, settings, st.Values())
	}
	return w.Flush()
}
