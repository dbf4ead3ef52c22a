package config

import (
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// MarshalLogObject logs the effective configuration, for zap.Object or
// zap.Any at start-up: "mode" and "email_security", then every variable of
// the table (Vars), in its order, under its name in lower case
// ("email_host", "mailrelay_ack_wait") with the value Load settled on
// (defaults applied, the host normalised, durations as Go durations). The
// list is the table itself, so a new variable is logged without anyone
// remembering to.
//
// A Secret shows as "[redacted]" or "[unset]", and so does a Private value
// (the SMTP username); credentials inside NATS_URL show as "[redacted]".
func (c *Config) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("mode", c.Mode())
	enc.AddString("email_security", c.Security().String())
	fields := c.fieldsByVar()
	for _, v := range vars {
		key := strings.ToLower(v.Name)
		f, ok := fields[v.Name]
		switch {
		case !ok:
			// A variable no field reads: TestVarsMatchConfig fails first.
			enc.AddString(key, "[not read]")
		case v.Secret || v.Private:
			enc.AddString(key, redactedValue(f))
		case v.Name == "NATS_URL":
			enc.AddString(key, redactURLs(c.NATS.Servers()))
		default:
			addValue(enc, key, f)
		}
	}
	return nil
}

// fieldsByVar maps each variable to the field of c that holds its value.
func (c *Config) fieldsByVar() map[string]reflect.Value {
	fields := map[string]reflect.Value{
		"EMAIL_TIMEOUT": reflect.ValueOf(c.Email.Timeout), // env:"-", read by parseSeconds
	}
	for _, group := range c.groups() {
		g := reflect.ValueOf(group).Elem()
		for i := range g.NumField() {
			if name := tagName(g.Type().Field(i)); name != "" && name != "-" {
				fields[name] = g.Field(i)
			}
		}
	}
	return fields
}

// redactedValue shows a secret or private field only as set or unset.
func redactedValue(f reflect.Value) string {
	switch v := f.Interface().(type) {
	case Secret:
		return v.String()
	case string:
		return NewSecret(v).String()
	default:
		return redacted
	}
}

// addValue logs one field with its type: numbers and booleans as such,
// durations and lists of them as Go durations, the rest as text.
func addValue(enc zapcore.ObjectEncoder, key string, f reflect.Value) {
	switch v := f.Interface().(type) {
	case time.Duration:
		enc.AddString(key, fmtDuration(v))
	case []time.Duration:
		enc.AddString(key, fmtDurations(v))
	case bool:
		enc.AddBool(key, v)
	case int:
		enc.AddInt(key, v)
	case float64:
		enc.AddFloat64(key, v)
	case fmt.Stringer:
		enc.AddString(key, v.String())
	default:
		if f.Kind() == reflect.String {
			enc.AddString(key, f.String())
		} else {
			enc.AddString(key, fmt.Sprint(v))
		}
	}
}

// Redacted is NATS_URL for logs and errors: the server URLs joined with
// commas, credentials in them replaced by "[redacted]".
func (n NATS) Redacted() string { return redactURLs(n.Servers()) }

// redactURLs joins urls with commas, each with its user info (a user and
// password, or a token) replaced by "[redacted]".
func redactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, s := range urls {
		out[i] = s
		if !strings.Contains(s, "@") {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || u.User == nil {
			// Not a URL we can take apart: keep only what follows the last @.
			out[i] = "[redacted]@" + s[strings.LastIndexByte(s, '@')+1:]
			continue
		}
		u.User = nil
		out[i] = strings.Replace(u.String(), "://", "://[redacted]@", 1)
	}
	return strings.Join(out, ",")
}
