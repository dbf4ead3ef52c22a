package config

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/mailrelay/mailrelay/internal/transport"
)

// The parse errors of this package. A problem never shows them: it says
// what the variable accepts instead (Var.Accepts).
var (
	errUnknownBackend   = errors.New("unknown mail backend")
	errUnknownLogFormat = errors.New("unknown log format")
	errNotBool          = errors.New("not a boolean")
	errNotSeconds       = errors.New("not a number of seconds")
)

// Load reads the configuration through getenv (os.Getenv in production, a
// map lookup in tests). A variable that is unset or empty takes its default
// from the Vars table. Load reads the password and token files; it returns
// (nil, Problems) listing every problem when there is any.
func Load(getenv func(string) string) (*Config, error) {
	raw := readEnv(getenv)
	var c Config
	problems, failed := c.parse(raw)
	problems = append(problems, c.readSecretFiles(raw, failed)...)
	// A variable that did not parse holds a zero value: checking it again
	// would only report the same variable twice.
	for _, p := range c.validate() {
		if !p.involves(failed) {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return nil, problems.sorted()
	}
	return &c, nil
}

// readEnv returns the value of every variable in the table: what getenv
// says, trimmed (except a secret, which is taken as it is), or the default
// when that is empty. Variables with neither are left out.
func readEnv(getenv func(string) string) map[string]string {
	raw := make(map[string]string, len(vars))
	for _, v := range vars {
		s := getenv(v.Name)
		if !v.Secret {
			s = strings.TrimSpace(s)
		}
		if s == "" {
			s = v.Default
		}
		if s != "" {
			raw[v.Name] = s
		}
	}
	return raw
}

// parse fills c from raw with env, group by group, and EMAIL_TIMEOUT by
// hand (env cannot read a bare number as seconds). It returns a problem for
// each value that does not parse, and the names of those variables.
func (c *Config) parse(raw map[string]string) (Problems, map[string]bool) {
	var problems Problems
	failed := map[string]bool{}
	notParsed := func(name string) {
		failed[name] = true
		problems = append(problems, notA(name, raw[name]))
	}

	// Groups are parsed one at a time because env reports a failure by Go
	// field name, which is only unique within a group (NATS.Password and
	// Email.Password).
	opts := env.Options{Environment: raw, FuncMap: parsers()}
	for _, group := range c.groups() {
		var agg env.AggregateError
		if err := env.ParseWithOptions(group, opts); !errors.As(err, &agg) {
			continue
		}
		for _, err := range agg.Errors {
			var pe env.ParseError
			if !errors.As(err, &pe) {
				// A tag or type env cannot handle: a bug in this package.
				problems = append(problems, Problem{Msg: "config: " + err.Error()})
				continue
			}
			notParsed(envName(group, pe.Name))
		}
	}

	if d, err := parseSeconds(raw["EMAIL_TIMEOUT"]); err != nil {
		notParsed("EMAIL_TIMEOUT")
	} else {
		c.Email.Timeout = d
	}

	// Normalised once here, so that everything downstream (the SMTP
	// backend, the status API, the log) sees the host as it is dialled:
	// "[::1]" becomes "::1". A host that is not valid is left for validate.
	if h, ok := transport.NormalizeHost(c.Email.Host); ok {
		c.Email.Host = h
	}
	if h, ok := transport.NormalizeHeloName(c.Email.EHLOName); ok {
		c.Email.EHLOName = h // "bücher.example" is sent as xn--bcher-kva.example, "192.0.2.1" as [192.0.2.1]
	}
	// An internationalised From domain is used as its A-label everywhere:
	// the envelope, the From field, Message-IDs and the List-Id. One that
	// does not convert is left for validate to name.
	c.Message.From = asciiFrom(c.Message.From)
	c.Message.FrontendBaseURL = strings.TrimRight(c.Message.FrontendBaseURL, "/")
	c.HTTP.PublicURL = strings.TrimRight(c.HTTP.PublicURL, "/")
	return problems, failed
}

// groups returns pointers to the groups of c, in the order of Config: the
// structs env fills and the log walks.
func (c *Config) groups() []any {
	return []any{&c.Email, &c.Message, &c.NATS, &c.HTTP, &c.JetStream, &c.Relay, &c.Log}
}

// envName returns the variable of the named field of the struct group
// points to.
func envName(group any, field string) string {
	f, _ := reflect.TypeOf(group).Elem().FieldByName(field)
	return tagName(f)
}

// tagName is the variable a field's env tag names ("" without a tag).
func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return name
}

// parsers returns env's parsers for the types whose syntax mailrelay widens:
// booleans also take yes/no and on/off, and durations may be padded with
// spaces in a list ("30s, 2m").
func parsers() map[reflect.Type]env.ParserFunc {
	return map[reflect.Type]env.ParserFunc{
		reflect.TypeFor[bool](): func(s string) (any, error) { return parseBool(s) },
		reflect.TypeFor[time.Duration](): func(s string) (any, error) {
			return time.ParseDuration(strings.TrimSpace(s))
		},
	}
}

// parseBool reads true/false, 1/0, yes/no and on/off, in any case.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	default:
		return false, errNotBool
	}
}

// parseSeconds reads EMAIL_TIMEOUT: a number of seconds as Django has it
// ("15", "2.5"), or a Go duration ("15s").
func parseSeconds(s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return time.ParseDuration(s)
	}
	if math.IsNaN(f) || math.Abs(f) > math.MaxInt64/float64(time.Second) {
		return 0, errNotSeconds
	}
	return time.Duration(f * float64(time.Second)), nil
}

// readSecretFiles fills the password and admin token from their _FILE
// variables, refusing a variable set together with its _FILE twin. A file
// that cannot be read is added to failed, so that the checks that miss its
// content do not report the same mistake again.
func (c *Config) readSecretFiles(raw map[string]string, failed map[string]bool) Problems {
	var problems Problems
	for _, s := range []struct {
		name, fileName string
		dst            *Secret
	}{
		{"EMAIL_HOST_PASSWORD", "EMAIL_HOST_PASSWORD_FILE", &c.Email.Password},
		{"MAILRELAY_ADMIN_TOKEN", "MAILRELAY_ADMIN_TOKEN_FILE", &c.HTTP.AdminToken},
		{"MAILRELAY_UNSUBSCRIBE_KEYS", "MAILRELAY_UNSUBSCRIBE_KEYS_FILE", &c.HTTP.UnsubscribeKeys},
	} {
		path, ok := raw[s.fileName]
		switch {
		case !ok:
		case raw[s.name] != "":
			problems = append(problems, Problem{
				Vars: []string{s.name, s.fileName},
				Msg:  fmt.Sprintf("%s and %s are both set: choose one", s.name, s.fileName),
			})
		default:
			v, err := readSecretFile(path)
			if err != nil {
				failed[s.fileName] = true
				problems = append(problems, Problem{
					Vars: []string{s.fileName},
					Msg:  fmt.Sprintf("%s: %v", s.fileName, err),
				})
				continue
			}
			*s.dst = NewSecret(v)
		}
	}
	return problems
}

// maxSecretFile bounds what readSecretFile reads: a password or token is
// far smaller, so a bigger file is the wrong file.
const maxSecretFile = 64 << 10

// readSecretFile returns the content of the file at path without its one
// trailing newline. Its errors name the path, never the content.
func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %q: %w", path, pathErr(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("cannot read %q: %w", path, pathErr(err))
	case len(b) > maxSecretFile:
		return "", fmt.Errorf("%q is larger than %d KiB: not a password or token file", path, maxSecretFile>>10)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("%q is empty", path)
	}
	return s, nil
}

// pathErr returns the cause inside a *fs.PathError ("no such file or
// directory"), so that a message naming the path does not name it twice.
func pathErr(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}
