// Package relay assembles a running mailrelay from its configuration: the
// NATS connection (or an embedded server), provisioning, the mail backend,
// the consumer, the advisory processor and the HTTP endpoints, and stops
// them in order.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/consumer"
	"github.com/mailrelay/mailrelay/headers"
	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/embedded"
	"github.com/mailrelay/mailrelay/internal/hold"
	"github.com/mailrelay/mailrelay/internal/httpapi"
	"github.com/mailrelay/mailrelay/internal/metrics"
	"github.com/mailrelay/mailrelay/internal/policy"
	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/suppress"
	"github.com/mailrelay/mailrelay/internal/transport"
	"github.com/mailrelay/mailrelay/internal/unsubscribe"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
)

// Options of one relay process beyond the environment.
type Options struct {
	Embedded bool      // run an in-process JetStream server
	Stdout   io.Writer // the console backend writes here
	Version  string
	Log      *zap.Logger

	// onPrefs, set by Run when the public unsubscribe listener runs, is
	// given the notify_prefs bucket once it is provisioned.
	onPrefs func(jetstream.KeyValue)
}

// Run runs the relay until ctx ends, then stops cleanly.
func Run(ctx context.Context, cfg *config.Config, o Options) error {
	log := o.Log
	log.Info("starting mailrelay", zap.String("version", o.Version), zap.Object("config", cfg))
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	composeCfg, err := ComposeConfig(cfg)
	if err != nil {
		return err
	}
	for _, w := range composeCfg.Templates.Warnings() { // a missing translation falls back to English
		log.Warn(w)
	}
	composer, err := compose.New(composeCfg) // checked once, not per mail
	if err != nil {
		return fmt.Errorf("compose config: %w", err)
	}
	sender, err := NewSender(cfg, o.Stdout, log)
	if err != nil {
		return err
	}
	defer sender.Close()

	if o.Embedded {
		srv, err := startEmbedded(cfg)
		if err != nil {
			return err
		}
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		log.Info("embedded JetStream server running", zap.String("url", srv.ClientURL()), zap.String("data_dir", cfg.JetStream.DataDir))
	}

	// The HTTP listener comes first: /healthz answers while the process
	// runs, and /readyz says why the relay is not ready yet (NATS
	// unreachable or refusing it, provisioning under way).
	m := metrics.New(o.Version)
	hl := newHealth(log, m.SetReady)
	var supp atomic.Pointer[suppress.Store] // set once provisioned
	api := httpapi.Handler(httpapi.Config{
		Ready:      hl.Ready,
		AdminToken: cfg.HTTP.AdminToken.Reveal(),
		Registry:   m.Registry,
		Status: func() any {
			return liveStatus{Status: cfg.Status(), ConsumerFigures: m.Figures(), LastSend: m.Last(), Deferred: m.HeldFigures()}
		},
		Suppressions: func() httpapi.Suppressions {
			if s := supp.Load(); s != nil {
				return s
			}
			return nil
		},
	})
	// --- One-click unsubscribe (contract §9.4, §9.6) ---------------------
	// The public listener serves /u/<token> only, never the admin paths
	// above; until NATS is reached a POST answers 503.
	log.Info("list-unsubscribe", zap.String("mode", cfg.UnsubscribeMode()),
		zap.String("public_url", cfg.HTTP.PublicURL), zap.String("public_addr", cfg.HTTP.PublicAddr))
	var public *unsubscribe.Handler
	if cfg.HTTP.PublicAddr != "" {
		signer, err := unsubscribe.NewSigner(cfg.HTTP.PublicURL, cfg.UnsubscribeKeyList())
		if err != nil {
			return fmt.Errorf("MAILRELAY_UNSUBSCRIBE_KEYS: %w", err)
		}
		settings := ""
		if cfg.Message.FrontendBaseURL != "" {
			settings = cfg.Message.FrontendBaseURL + headers.SettingsPath
		}
		public = unsubscribe.NewHandler(unsubscribe.Config{Signer: signer, SettingsURL: settings, Log: log.Named("unsubscribe")})
		o.onPrefs = func(kv jetstream.KeyValue) { public.SetPrefs(kv) }
	}
	// --- end one-click unsubscribe ---------------------------------------
	g, gctx := errgroup.WithContext(ctx)
	if public != nil { // one-click unsubscribe
		g.Go(func() error {
			if err := httpapi.Serve(gctx, cfg.HTTP.PublicAddr, public, log); err != nil {
				return fmt.Errorf("public listener %s: %w", cfg.HTTP.PublicAddr, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		err := httpapi.Serve(gctx, cfg.HTTP.Addr, api, log)
		if err != nil {
			return fmt.Errorf("http listener %s: %w", cfg.HTTP.Addr, err)
		}
		return nil
	})
	g.Go(func() error { hl.run(gctx); return nil })
	g.Go(func() error { return relay(gctx, cfg, o, log, m, hl, sender, composer, &supp) })
	return g.Wait()
}

// relay connects, provisions and runs the consumer, the advisory
// processor and the healer until ctx ends.
func relay(ctx context.Context, cfg *config.Config, o Options, log *zap.Logger, m *metrics.Metrics, hl *health,
	sender Sender, composer *compose.Composer, supp *atomic.Pointer[suppress.Store]) error {
	hr := newHealer(hl, ProvisionOptions(cfg), log) // its js is set once connected, before it runs
	hl.set(srcNATS, problem{"nats_connecting", "connecting to NATS at " + cfg.NATS.Redacted()})
	// On every (re)connect the healer looks for what is missing: a server
	// can come back empty.
	nc, err := Connect(cfg.NATS, "mailrelay", log, true, hl.connHooks(cfg.NATS, hr.connected))
	if err != nil {
		return err
	}
	defer func() { hl.stop(); nc.Close() }()
	// Ledger writes are published asynchronously (state.Store.PutAsync and
	// SwapAsync); the timeout ends every pending one, stored or not, after
	// which it is retried synchronously.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(policy.LedgerWriteTimeout))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	hr.js = js
	h, err := provisionUntil(ctx, js, ProvisionOptions(cfg), log, hl)
	if err != nil {
		return err
	}
	hl.set(srcProvision, problem{})
	hr.ready.Store(true)
	if o.onPrefs != nil { // one-click unsubscribe: the public listener may write now
		o.onPrefs(h.Prefs)
	}
	log.Info("provisioned", zap.String("stream", provision.Stream), zap.String("consumer", provision.Consumer),
		zap.Int("replicas", cfg.JetStream.Replicas))

	suppressions := suppress.New(h.Suppressed) // watch-backed; its watcher runs in the group below
	supp.Store(suppressions)
	hopts := []consumer.Option{consumer.WithLogger(log), consumer.WithObserver(m), consumer.WithHealer(hr),
		consumer.WithSuppressions(suppressions)}
	if cfg.Relay.MaxRate > 0 {
		hopts = append(hopts, consumer.WithLimiter(rate.NewLimiter(rate.Limit(cfg.Relay.MaxRate), max(1, int(cfg.Relay.MaxRate)))))
	}
	// Volume control (§9.3): held notifications live in NOTIFY_HELD; any
	// relay flushes any window. On a server without message schedules
	// (with every volume setting at its default) nothing is held.
	var holder *hold.Store
	if h.NoHolding == nil {
		holder = hold.New(js, h.Held)
		hopts = append(hopts, consumer.WithHolding(holder, hold.NewSeen(h.Seen), composer.ComposeBatch))
	} else {
		hr.noHolding.Store(true)
		m.SetHeld(metrics.Held{Error: "volume control unavailable: " + h.NoHolding.Error()}, time.Now())
		log.Warn("volume control unavailable: every notification is mailed at once, as in v1; users' quiet_hours and batch are ignored",
			zap.Error(h.NoHolding))
	}
	prefCache := prefs.NewCache(h.Prefs, nc) // watch-backed; its watcher runs in the group below
	handler := consumer.NewHandler(consumer.Config{
		Policy:        cfg.Policy(),
		MaxEventBytes: cfg.Relay.MaxEventBytes,
		Configured:    cfg.Configured(),
	}, sender, prefCache, state.New(h.State).WithAsync(js), composer.ComposeFor, hopts...)
	runner := consumer.NewRunner(h.Consumer, handler, cfg.Relay.Concurrency, cfg.Relay.ShutdownTimeout)
	advisories := consumer.NewAdvisories(h.AdvisoryConsumer, h.Stream, handler)
	var flusher *consumer.Flusher
	if holder != nil {
		flusher = consumer.NewFlusher(h.Flush, handler, cfg.Relay.Concurrency, cfg.Relay.ShutdownTimeout)
	}
	hl.setProbe(func() problem {
		if !runner.Bound() {
			return problem{"not_bound", "not bound to the consumer " + provision.Consumer}
		}
		return problem{}
	})
	var consuming, advising, flushing loop
	hr.restart = func() { consuming.restart(); advising.restart(); flushing.restart() }

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { hr.run(gctx); return nil })
	g.Go(func() error { m.PollConsumer(gctx, h.Consumer, 5*time.Second); return nil })
	g.Go(func() error { return prefCache.Run(gctx) })
	g.Go(func() error { return suppressions.Run(gctx) })
	g.Go(func() error { return advising.run(gctx, "advisories", log, advisories.Run) })
	if holder != nil {
		g.Go(func() error { return flushing.run(gctx, "flusher", log, flusher.Run) })
		g.Go(func() error { sweepHeld(gctx, holder, m, log, heldSweepEvery); return nil })
	}
	g.Go(func() error {
		log.Info("consuming", zap.Int("concurrency", cfg.Relay.Concurrency), zap.String("mode", cfg.Mode()))
		return consuming.run(gctx, "consumer", log, func(ctx context.Context) error {
			err := runner.Run(ctx)
			if err != nil {
				hr.check() // the consumer may have been deleted
			}
			return err
		})
	})
	err = g.Wait()
	// Make sure the server has the last acks and naks before the deferred
	// Close (Drain would only start draining in the background).
	_ = nc.FlushTimeout(2 * time.Second)
	log.Info("stopped")
	return err
}

// heldSweepEvery is how often a relay looks at what NOTIFY_HELD holds.
const heldSweepEvery = 15 * time.Second

// sweepHeld keeps the deferred figures current and gives orphaned held
// notifications (no window pending: a relay died between storing one and
// opening its window) a window that closes now.
func sweepHeld(ctx context.Context, holder *hold.Store, m *metrics.Metrics, log *zap.Logger, every time.Duration) {
	failing := false
	for {
		st, orphans, err := holder.Sweep(ctx, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			m.SetHeld(metrics.Held{Error: err.Error()}, time.Now())
			if !failing {
				log.Warn("could not look at the held notifications", zap.Error(err))
			}
			failing = true
		case err == nil:
			m.SetHeld(metrics.Held{Notifications: st.Notifications, Recipients: st.Recipients, Oldest: st.Oldest}, time.Now())
			if orphans > 0 {
				log.Warn("held notifications without a window: flushing them now", zap.Int("recipients", orphans))
			}
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// liveStatus is the §7 JSON plus live figures.
type liveStatus struct {
	config.Status
	metrics.ConsumerFigures
	LastSend metrics.LastSend `json:"last_send"`
	Deferred metrics.Held     `json:"deferred"`
}

// keepRunning runs f again (with a growing pause) whenever it fails, until
// ctx ends.
func keepRunning(ctx context.Context, name string, log *zap.Logger, f func(context.Context) error) error {
	pause := 250 * time.Millisecond
	for {
		err := f(ctx)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn(name+" stopped, restarting", zap.Error(err), zap.Duration("pause", pause))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Second)
	}
}

// provisionUntil provisions, retrying while the server is unreachable or
// not ready, until ctx ends.
func provisionUntil(ctx context.Context, js jetstream.JetStream, po provision.Options, log *zap.Logger, hl *health) (*provision.Handles, error) {
	pause := 250 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		h, err := provision.Provision(pctx, js, po)
		cancel()
		if err == nil {
			return h, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (while: %v)", ctx.Err(), err)
		}
		if _, isAPI := errors.AsType[*jetstream.APIError](err); isAPI && !provision.NotReady(err) {
			return nil, err // a real refusal: bad config, permissions
		}
		// Said once by the health log (and /readyz), not at every retry.
		if hl.get(srcNATS) == (problem{}) {
			hl.set(srcProvision, problem{"provisioning", "provisioning failed, retrying: " + err.Error()})
		}
		log.Debug("JetStream not ready, retrying", zap.Error(err), zap.Duration("pause", pause))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// ProvisionOptions maps the configuration to provisioning options.
func ProvisionOptions(cfg *config.Config) provision.Options {
	return provision.Options{
		Replicas:          cfg.JetStream.Replicas,
		MaxAge:            cfg.JetStream.MaxAge,
		DuplicateWindow:   cfg.JetStream.DuplicateWindow,
		AckWait:           cfg.JetStream.AckWait,
		StateTTL:          cfg.JetStream.StateTTL,
		RetryUntilTimeout: cfg.JetStream.Replicas > 1,
		// Without a window or a seen delay, a server without message
		// schedules still serves everything v1 did.
		HoldingOptional: cfg.Relay.BatchWindow == 0 && cfg.Relay.SeenDelay == 0,
	}
}

// ComposeConfig builds and validates the composer's configuration, loading
// templates (a broken one refuses start-up, naming file and line).
func ComposeConfig(cfg *config.Config) (compose.Config, error) {
	tpl, err := compose.LoadTemplates(cfg.Message.TemplateDir)
	if err != nil {
		return compose.Config{}, fmt.Errorf("MAILRELAY_TEMPLATE_DIR: %w", err)
	}
	name, addr := cfg.FromAddress()
	c := compose.Config{
		From:        compose.Address{Name: name, Email: addr},
		BaseURL:     cfg.Message.FrontendBaseURL,
		ListID:      cfg.Message.ListID,
		SnippetMax:  cfg.Message.SnippetMax,
		Templates:   tpl,
		HTML:        cfg.Message.HTML,
		ProductName: cfg.Message.ProductName,
	}
	// One-click unsubscribe (contract §9.4): signed links with
	// List-Unsubscribe-Post only with MAILRELAY_PUBLIC_URL and keys.
	if cfg.UnsubscribeMode() == config.UnsubscribeOneClick {
		signer, err := unsubscribe.NewSigner(cfg.HTTP.PublicURL, cfg.UnsubscribeKeyList())
		if err != nil {
			return compose.Config{}, fmt.Errorf("MAILRELAY_UNSUBSCRIBE_KEYS: %w", err)
		}
		c.OneClick = signer
	}
	if err := c.Validate(); err != nil {
		return compose.Config{}, err
	}
	return c, nil
}

// Sender is a mail backend.
type Sender interface {
	consumer.Sender
	Close() error
}

// NewSender builds the configured backend. With the smtp backend and no
// EMAIL_HOST it returns the dummy backend, which is never called: such
// notifications are skipped_not_configured before any send.
func NewSender(cfg *config.Config, stdout io.Writer, log *zap.Logger) (Sender, error) {
	signer, err := cfg.DKIMSigner() // nil without MAILRELAY_DKIM_KEY_FILE; the error names the variable
	if err != nil {
		return nil, err
	}
	switch cfg.Mode() {
	case config.ModeConsole:
		return transport.NewConsole(stdout, transport.WithSigner(signer)), nil
	case config.ModeFile:
		f, err := transport.NewFile(cfg.Email.FilePath, transport.WithSigner(signer))
		if err != nil {
			return nil, fmt.Errorf("EMAIL_FILE_PATH: %w", err)
		}
		return f, nil
	case config.ModeDummy:
		return transport.NewDummy(), nil
	case config.ModeNotConfigured:
		return transport.NewDummy(), nil
	}
	sc := SMTPConfig(cfg)
	sc.Signer = signer
	s, err := transport.NewSMTP(sc, log)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// SMTPConfig maps the configuration to the SMTP backend's.
func SMTPConfig(cfg *config.Config) transport.SMTPConfig {
	return transport.SMTPConfig{
		Host:         cfg.Email.Host,
		Port:         cfg.Email.Port,
		Security:     cfg.Security(),
		Username:     cfg.Email.User,
		Password:     cfg.Email.Password.Reveal(),
		InsecureAuth: cfg.Email.InsecureAuth,
		Timeout:      cfg.Email.Timeout,
		PoolSize:     cfg.Relay.Concurrency,
		HeloName:     cfg.Email.EHLOName,
		Pipelining:   cfg.SMTPPipelining(),
	}
}

func startEmbedded(cfg *config.Config) (interface {
	Shutdown()
	WaitForShutdown()
	ClientURL() string
}, error) {
	servers := cfg.NATS.Servers()
	if len(servers) == 0 {
		return nil, errors.New("NATS_URL: empty")
	}
	host, port, err := embedded.HostPort(servers[0])
	if err != nil {
		return nil, err
	}
	srv, err := embedded.Start(embedded.Options{Host: host, Port: port, StoreDir: cfg.JetStream.DataDir, Name: "mailrelay-embedded"})
	if err != nil {
		return nil, err
	}
	return srv, nil
}

// Connect dials NATS with the configured credentials. With wait, it keeps
// trying in the background when the server is not up yet, and always
// reconnects after a loss.
func Connect(c config.NATS, name string, log *zap.Logger, wait bool, hooks ...connHooks) (*nats.Conn, error) {
	var hk connHooks
	if len(hooks) > 0 {
		hk = hooks[0]
	}
	hk.defaults()
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// Credentials can be fixed on the server while the relay waits:
		// keep trying after a refusal (the health log says it once).
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: a close we asked for
				hk.lost(err)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { hk.failed(err) }),
		nats.ConnectHandler(func(*nats.Conn) { hk.connected() }),
		nats.ClosedHandler(func(*nats.Conn) { hk.closed() }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("NATS error", zap.String("subject", subject), zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", zap.String("server", nc.ConnectedUrlRedacted()))
			hk.connected()
		}),
	}
	if wait {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	switch {
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKey != "":
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY: %w", err)
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password.Reveal()))
	case c.Token.IsSet():
		opts = append(opts, nats.Token(c.Token.Reveal()))
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if c.Cert != "" {
		opts = append(opts, nats.ClientCert(c.Cert, c.Key))
	}
	nc, err := nats.Connect(strings.Join(c.Servers(), ","), opts...)
	if err != nil {
		if refused(err) {
			return nil, fmt.Errorf("connect to NATS: %s: %w", refusedText(c), err)
		}
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	if nc.IsConnected() {
		hk.connected()
	}
	return nc, nil
}

// connHooks are told what becomes of the connection.
type connHooks struct {
	connected func()          // connected, or reconnected
	lost      func(err error) // disconnected by an error
	failed    func(err error) // a connect or reconnect attempt failed
	closed    func()          // closed for good
}

func (h *connHooks) defaults() {
	if h.connected == nil {
		h.connected = func() {}
	}
	if h.lost == nil {
		h.lost = func(error) {}
	}
	if h.failed == nil {
		h.failed = func(error) {}
	}
	if h.closed == nil {
		h.closed = func() {}
	}
}
