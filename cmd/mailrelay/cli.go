package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/relay"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

type cli struct {
	Serve     serveCmd          `cmd:"" help:"Run the relay."`
	Provision provisionCmd      `cmd:"" help:"Create or update every stream, consumer and bucket, print them, and exit (run it before publishers start)."`
	Publish   publishCmd        `cmd:"" help:"Validate an event (JSON, from --file or stdin) and publish it to JetStream."`
	Prefs     prefsCmd          `cmd:"" help:"Read or change a user's email preferences (notify_prefs)."`
	State     stateCmd          `cmd:"" help:"Read what became of a notification (notify_email_state)."`
	Suppress  suppressCmd       `cmd:"" help:"List, add or remove suppressed addresses (notify_suppressed)."`
	Status    statusCmd         `cmd:"" help:"Print the resolved mail transport as JSON (from the environment; no relay needed)."`
	Replay    replayCmd         `cmd:"" help:"Re-drive notifications that fell back to the inbox (after an SMTP outage is fixed)."`
	SendTest  sendTestCmd       `cmd:"" name:"send-test" help:"Send a test message now through the configured transport and say what happened."`
	UnsubURL  unsubscribeURLCmd `cmd:"" name:"unsubscribe-url" help:"Print the one-click unsubscribe URL of a user and type (needs MAILRELAY_PUBLIC_URL and MAILRELAY_UNSUBSCRIBE_KEYS)."`
	Doctor    doctorCmd         `cmd:"" help:"Check the From domain's DNS as receivers do (MX, SPF, DKIM, DMARC, alignment, one-click); exit 1 on a failure."`
	Version   versionCmd        `cmd:"" help:"Print the version."`
}

type serveCmd struct {
	Embedded bool `help:"Also run an in-process JetStream server (data in MAILRELAY_DATA_DIR, listening on NATS_URL's host:port)."`
}

type publishCmd struct {
	File string `short:"f" help:"Read the event from this file instead of standard input." type:"existingfile"`
}

type prefsCmd struct {
	Get prefsGetCmd `cmd:"" help:"Print a user's preferences as JSON."`
	Set prefsSetCmd `cmd:"" help:"Turn email on or off per type: prefs set USER task.assigned=on mention=off."`
}

type prefsGetCmd struct {
	User string `arg:"" help:"User id."`
}

type prefsSetCmd struct {
	User    string   `arg:"" help:"User id."`
	Changes []string `arg:"" help:"TYPE=on|off, TYPE one of ${types} (or all)."`
}

type stateGetCmd struct {
	ID string `arg:"" help:"Notification id (or seq.<stream sequence>)."`
}

type stateCmd struct {
	Get stateGetCmd `cmd:"" help:"Print the state record of a notification as JSON."`
}

type statusCmd struct{}
type versionCmd struct{}

// app is what every command runs with.
type app struct {
	env
	cfg *config.Config
	log *zap.Logger
}

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("mailrelay"),
		kong.Description("mailrelay turns notification events on NATS JetStream into email.\n\nConfiguration comes from the environment (Django's EMAIL_* names); see the README."),
		kong.UsageOnError(),
		kong.Writers(stdout, stderr),
		kong.Exit(func(int) { panic(exitRequest{}) }),
		helpVars(),
	)
	if err != nil {
		return err
	}
	kctx, err := parse(parser, args)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		// Wrong usage: show what the command accepts, on stderr.
		var perr *kong.ParseError
		if errors.As(err, &perr) && perr.Context != nil {
			parser.Stdout = stderr
			_ = perr.Context.PrintUsage(true)
			fmt.Fprintln(stderr)
		}
		return usageError{err}
	}
	a := &app{env: env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}}
	if _, ok := kctx.Selected().Target.Addr().Interface().(withoutConfig); !ok {
		a.cfg, err = config.Load(getenv)
		if err != nil {
			return fmt.Errorf("configuration:\n%w", err)
		}
		a.log, err = newLogger(a.cfg.Log, stderr)
		if err != nil {
			return err
		}
		defer func() { _ = a.log.Sync() }()
	}
	kctx.BindTo(ctx, (*context.Context)(nil))
	return kctx.Run(a) // the selected command's Run method
}

// helpVars are the values help texts refer to as ${name}: the type list
// comes from the registry, so a new type needs no change here.
func helpVars() kong.Vars {
	return kong.Vars{"types": strings.Join(typeNames(), ", ")}
}

// typeNames lists the registered types, in the registry's order.
func typeNames() []string {
	defs := event.Defs()
	names := make([]string, len(defs))
	for i, d := range defs {
		names[i] = string(d.Type)
	}
	return names
}

// withoutConfig marks a command that runs without loading the configuration.
type withoutConfig interface{ withoutConfig() }

func (versionCmd) withoutConfig() {}

func (versionCmd) Run(a *app) error {
	fmt.Fprintln(a.stdout, "mailrelay", version)
	return nil
}

func (c serveCmd) Run(ctx context.Context, a *app) error {
	return relay.Run(ctx, a.cfg, relay.Options{Embedded: c.Embedded, Stdout: a.stdout, Version: version, Log: a.log})
}

func (c publishCmd) Run(ctx context.Context, a *app) error  { return a.publish(ctx, c) }
func (c prefsGetCmd) Run(ctx context.Context, a *app) error { return a.prefsGet(ctx, c.User) }
func (c prefsSetCmd) Run(ctx context.Context, a *app) error { return a.prefsSet(ctx, c) }
func (c stateGetCmd) Run(ctx context.Context, a *app) error { return a.stateGet(ctx, c.ID) }
func (statusCmd) Run(a *app) error                          { return writeJSON(a.stdout, a.cfg.Status()) }
func (c replayCmd) Run(ctx context.Context, a *app) error   { return a.replay(ctx, c) }
func (c sendTestCmd) Run(ctx context.Context, a *app) error { return a.sendTest(ctx, c) }

type exitRequest struct{}

var errHelp = errors.New("help shown")

// parse runs kong without letting it exit the process: --help ends in errHelp.
func parse(p *kong.Kong, args []string) (kctx *kong.Context, err error) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(exitRequest); ok {
				err = errHelp
				return
			}
			panic(r)
		}
	}()
	return p.Parse(args)
}

func newLogger(l config.Log, w io.Writer) (*zap.Logger, error) {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey, enc.EncodeTime = "ts", zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder
	if l.Format == config.LogConsole {
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	} else {
		encoder = zapcore.NewJSONEncoder(enc)
	}
	core := zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(w)), l.Level)
	return zap.New(core), nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// connect dials NATS for a one-shot command (no waiting for a server).
func (a *app) connect() (*nats.Conn, jetstream.JetStream, error) {
	nc, err := relay.Connect(a.cfg.NATS, "mailrelay-cli", a.log, false)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func (a *app) publish(ctx context.Context, c publishCmd) error {
	var r io.Reader = a.stdin
	if c.File != "" {
		f, err := os.Open(c.File)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(bufio.NewReader(r), int64(a.cfg.Relay.MaxEventBytes)+1))
	if err != nil {
		return fmt.Errorf("read event: %w", err)
	}
	data = []byte(strings.TrimSpace(string(data)))
	ev, err := event.Decode("", data, a.cfg.Relay.MaxEventBytes)
	if err != nil {
		return err
	}
	if a.getenv("NATS_INBOX_PREFIX") == "" {
		// Publishing is a publisher's job: use the standard _INBOX that
		// publisher identities may read (nats.conf), not the relay's own.
		a.cfg.NATS.InboxPrefix = ""
	}
	nc, js, err := a.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := event.PublishRaw(pctx, js, ev.Type.Subject(), ev.ID, data)
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("%w (no stream captures %s: run `mailrelay provision` against this server first)", err, ev.Type.Subject())
	}
	if err != nil {
		return err
	}
	dup := ""
	if ack.Duplicate {
		dup = " (duplicate: already published, not stored again)"
	}
	fmt.Fprintf(a.stdout, "published %s on %s: stream %s sequence %d%s\n", ev.ID, ev.Type.Subject(), ack.Stream, ack.Sequence, dup)
	return nil
}

func (a *app) bucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("bucket %s not found: `mailrelay provision` (or `mailrelay serve` at start-up) creates it", name)
	}
	return kv, err
}

// openBucket connects and opens one bucket; close ends the connection.
func (a *app) openBucket(ctx context.Context, name string) (kv jetstream.KeyValue, close func(), err error) {
	nc, js, err := a.connect()
	if err != nil {
		return nil, nil, err
	}
	if kv, err = a.bucket(ctx, js, name); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return kv, nc.Close, nil
}

func (a *app) prefsGet(ctx context.Context, user string) error {
	if !event.ValidID(user) {
		return usageError{event.CheckID(fmt.Sprintf("user id %q", user), user)}
	}
	kv, closeConn, err := a.openBucket(ctx, prefs.Bucket)
	if err != nil {
		return err
	}
	defer closeConn()
	p, _, err := prefs.New(kv).Get(ctx, user)
	if err != nil && !errors.Is(err, prefs.ErrBadValue) {
		return err
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "warning: %v; every type reads as off\n", err)
	}
	full := map[event.Type]bool{}
	for _, d := range event.Defs() {
		full[d.Type] = p.Enabled(d.Type)
	}
	return writeJSON(a.stdout, prefs.Prefs{Email: full})
}

func (a *app) prefsSet(ctx context.Context, c prefsSetCmd) error {
	changes, err := parseChanges(c.Changes)
	if err != nil {
		return usageError{err}
	}
	if !event.ValidID(c.User) {
		return usageError{event.CheckID(fmt.Sprintf("user id %q", c.User), c.User)}
	}
	kv, closeConn, err := a.openBucket(ctx, prefs.Bucket)
	if err != nil {
		return err
	}
	defer closeConn()
	p, err := prefs.New(kv).Set(ctx, c.User, changes)
	if err != nil {
		return err
	}
	return writeJSON(a.stdout, p)
}

// parseChanges reads TYPE=on|off arguments.
func parseChanges(args []string) (map[event.Type]bool, error) {
	changes := map[event.Type]bool{}
	for _, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want TYPE=on or TYPE=off", arg)
		}
		var on bool
		switch strings.ToLower(v) {
		case "on", "true", "yes", "1":
			on = true
		case "off", "false", "no", "0":
		default:
			return nil, fmt.Errorf("%q: value must be on or off", arg)
		}
		if k == "all" {
			for _, d := range event.Defs() {
				changes[d.Type] = on
			}
			continue
		}
		t := event.Type(k)
		if !t.Valid() {
			names := typeNames()
			sort.Strings(names)
			return nil, fmt.Errorf("%q: unknown type %q (one of %s, or all)", arg, k, strings.Join(names, ", "))
		}
		changes[t] = on
	}
	return changes, nil
}

func (a *app) stateGet(ctx context.Context, id string) error {
	kv, closeConn, err := a.openBucket(ctx, state.Bucket)
	if err != nil {
		return err
	}
	defer closeConn()
	rec, _, err := state.New(kv).Get(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return fmt.Errorf("no state recorded for %q", id)
	}
	if err != nil {
		return err
	}
	return writeJSON(a.stdout, rec)
}
