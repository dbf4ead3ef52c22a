package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caarlos0/env/v11"
)

// contractVars is every variable docs/contract.md names (§6, and
// MAILRELAY_MAX_EVENT_BYTES from §3), with the defaults it fixes.
var contractVars = map[string]string{
	"EMAIL_BACKEND":                "smtp",
	"EMAIL_HOST":                   "",
	"EMAIL_PORT":                   "25",
	"EMAIL_USE_TLS":                "false",
	"EMAIL_USE_SSL":                "false",
	"EMAIL_HOST_USER":              "",
	"EMAIL_HOST_PASSWORD":          "",
	"EMAIL_HOST_PASSWORD_FILE":     "",
	"MAILRELAY_SMTP_INSECURE_AUTH": "false",
	"EMAIL_TIMEOUT":                "15",
	"EMAIL_FILE_PATH":              "",
	"DEFAULT_FROM_EMAIL":           "webmaster@localhost",
	"FRONTEND_BASE_URL":            "",
	"NATS_URL":                     "nats://127.0.0.1:4222",
	"NATS_CREDS":                   "",
	"MAILRELAY_HTTP_ADDR":          "127.0.0.1:9466",
	"MAILRELAY_ADMIN_TOKEN":        "",
	"MAILRELAY_ADMIN_TOKEN_FILE":   "",
	"MAILRELAY_RETRY_DELAYS":       "30s,2m",
	"MAILRELAY_ACK_WAIT":           "60s",
	"MAILRELAY_CONCURRENCY":        "8",
	"MAILRELAY_STREAM_REPLICAS":    "1",
	"MAILRELAY_DATA_DIR":           "./data",
	"MAILRELAY_STATE_TTL":          "720h",
	"MAILRELAY_TEMPLATE_DIR":       "",
	"MAILRELAY_STALE_AFTER":        "24h",
	"MAILRELAY_MAX_RATE":           "",
	"MAILRELAY_LOG_FORMAT":         "json",
	"MAILRELAY_LOG_LEVEL":          "info",
	"MAILRELAY_MAX_EVENT_BYTES":    "65536",
}

func TestContractVariables(t *testing.T) {
	table := map[string]Var{}
	for _, v := range Vars() {
		table[v.Name] = v
	}
	for name, def := range contractVars {
		v, ok := table[name]
		switch {
		case !ok:
			t.Errorf("%s is missing from Vars", name)
		case v.Default != def:
			t.Errorf("%s defaults to %q, the contract says %q", name, v.Default, def)
		}
	}
}

func TestVarsTable(t *testing.T) {
	names := Names()
	if len(names) != len(Vars()) {
		t.Fatalf("Names() has %d names, Vars() %d", len(names), len(Vars()))
	}
	seen := map[string]bool{}
	for _, v := range Vars() {
		if seen[v.Name] {
			t.Errorf("%s is listed twice", v.Name)
		}
		seen[v.Name] = true
		if v.Help == "" || v.Accepts == "" {
			t.Errorf("%s has no Help or no Accepts", v.Name)
		}
		if v.Secret && v.Default != "" {
			t.Errorf("secret %s has a default", v.Name)
		}
	}
	secrets := []string{"EMAIL_HOST_PASSWORD", "NATS_PASSWORD", "NATS_TOKEN", "MAILRELAY_ADMIN_TOKEN", "MAILRELAY_UNSUBSCRIBE_KEYS"}
	for _, v := range Vars() {
		if v.Secret != slices.Contains(secrets, v.Name) {
			t.Errorf("%s: Secret is %v", v.Name, v.Secret)
		}
	}
	for _, v := range Vars() {
		if v.Private != (v.Name == "EMAIL_HOST_USER") || v.Private && v.Secret {
			t.Errorf("%s: Private is %v, Secret %v", v.Name, v.Private, v.Secret)
		}
	}
	v := Vars()
	v[0].Name = "CHANGED"
	if Names()[0] == "CHANGED" {
		t.Error("Vars() hands out the table itself")
	}
}

// Every variable of the table is read into a field (EMAIL_TIMEOUT by hand),
// every field is in the table, and a Secret field's variable is a secret.
func TestVarsMatchConfig(t *testing.T) {
	var c Config
	fields := map[string]bool{"EMAIL_TIMEOUT": true}
	for _, group := range []any{&c.Email, &c.Message, &c.NATS, &c.HTTP, &c.JetStream, &c.Relay, &c.Log} {
		params, err := env.GetFieldParams(group)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range params {
			if p.Ignored {
				continue
			}
			if fields[p.Key] {
				t.Errorf("%s is read into two fields", p.Key)
			}
			fields[p.Key] = true
		}
		typ := reflect.TypeOf(group).Elem()
		for i := range typ.NumField() {
			f := typ.Field(i)
			if name := envName(group, f.Name); name != "-" && (f.Type == reflect.TypeFor[Secret]()) != lookupVar(name).Secret {
				t.Errorf("%s.%s (%s) and the table disagree on whether it is a secret", typ.Name(), f.Name, name)
			}
		}
	}
	for _, name := range Names() {
		if !fields[name] {
			t.Errorf("%s is in the table but no field reads it", name)
		}
		delete(fields, name)
	}
	for name := range fields {
		t.Errorf("field variable %s is not in the table", name)
	}
	if n := reflect.TypeFor[Config]().NumField(); n != 7 {
		t.Errorf("Config has %d groups; Load.parse and this test know 7", n)
	}
}

// The configuration table of docs/configuration.md is Vars(): the same
// variables in the same order, with the same defaults and help text.
func TestConfigTableIsVars(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `([A-Z][A-Z0-9_]*)` \\| (`[^`]*`|—) \\| (.*) \\|$")
	var got []Var
	for _, line := range strings.Split(string(b), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		def := strings.Trim(m[2], "`")
		if def == "—" {
			def = ""
		}
		got = append(got, Var{Name: m[1], Default: def, Help: m[3]})
	}
	want := Vars()
	if len(got) != len(want) {
		t.Fatalf("docs/configuration.md table has %d variables, Vars() %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.Name || g.Default != w.Default || g.Help != w.Help {
			t.Errorf("docs/configuration.md row %d:\n  %s | %q | %s\nVars():\n  %s | %q | %s", i+1, g.Name, g.Default, g.Help, w.Name, w.Default, w.Help)
		}
	}
}
