package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestSecretPrintsRedacted(t *testing.T) {
	s := NewSecret("hunter2")
	var empty Secret
	tests := []struct {
		name      string
		got, want string
	}{
		{"%v", fmt.Sprintf("%v", s), "[redacted]"},
		{"%+v", fmt.Sprintf("%+v", s), "[redacted]"},
		{"%#v", fmt.Sprintf("%#v", s), "[redacted]"},
		{"%s", fmt.Sprintf("%s", s), "[redacted]"},
		{"%q", fmt.Sprintf("%q", s), `"[redacted]"`},
		{"%x", fmt.Sprintf("%x", s), "[redacted]"},
		{"%d", fmt.Sprintf("%d", s), "[redacted]"},
		{"pointer %v", fmt.Sprintf("%v", &s), "[redacted]"},
		{"Sprint", fmt.Sprint(s), "[redacted]"},
		{"String", s.String(), "[redacted]"},
		{"GoString", s.GoString(), "[redacted]"},
		{"in a struct %+v", fmt.Sprintf("%+v", struct{ P Secret }{s}), "{P:[redacted]}"},
		{"in a slice", fmt.Sprint([]Secret{s}), "[[redacted]]"},
		{"empty %v", fmt.Sprintf("%v", empty), "[unset]"},
		{"empty %q", fmt.Sprintf("%q", empty), `"[unset]"`},
		{"MarshalText", string(must(s.MarshalText())), "[redacted]"},
		{"MarshalJSON", string(must(json.Marshal(s))), `"[redacted]"`},
		{"JSON in a struct", string(must(json.Marshal(struct{ P Secret }{s}))), `{"P":"[redacted]"}`},
		{"JSON map value", string(must(json.Marshal(map[string]Secret{"p": s}))), `{"p":"[redacted]"}`},
		{"empty JSON", string(must(json.Marshal(empty))), `"[unset]"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
	if s.Reveal() != "hunter2" || !s.IsSet() || empty.IsSet() {
		t.Error("Reveal or IsSet is wrong")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// zapJSON returns what a JSON zap logger writes for one entry with fields.
func zapJSON(fields ...zap.Field) string {
	var buf bytes.Buffer
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&buf), zapcore.DebugLevel)
	zap.New(core).Info("config", fields...)
	return buf.String()
}

func TestSecretInZap(t *testing.T) {
	s := NewSecret("hunter2")
	out := zapJSON(zap.Any("any", s), zap.Any("ptr", &s), zap.Stringer("stringer", s), zap.Reflect("reflect", s))
	if strings.Contains(out, "hunter2") || strings.Count(out, `"[redacted]"`) != 4 {
		t.Errorf("zap wrote %s", out)
	}
}

// marker is put in every secret; nothing but Reveal may show it.
const marker = "Hunter2MARKERs3cr3t"

// leaks returns the places in outs that hold the marker.
func leaks(outs map[string]string) []string {
	var where []string
	for name, out := range outs {
		if strings.Contains(out, marker) {
			where = append(where, name+": "+out)
		}
	}
	return where
}

func TestSecretsNeverLeak(t *testing.T) {
	secretFile := writeFile(t, "secret", marker+"\n")

	valid := map[string]map[string]string{
		"secrets in variables": {
			"EMAIL_HOST": "smtp.example.com", "EMAIL_USE_TLS": "true", "EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD": marker,
			"NATS_USER": "u", "NATS_PASSWORD": marker, "MAILRELAY_ADMIN_TOKEN": marker,
		},
		"secrets in files": {
			"EMAIL_HOST": "smtp.example.com", "EMAIL_USE_SSL": "true", "EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD_FILE": secretFile,
			"NATS_TOKEN": marker, "MAILRELAY_ADMIN_TOKEN_FILE": secretFile,
		},
		"credentials in NATS_URL": {
			"NATS_URL": "nats://u:" + marker + "@a:4222,nats://" + marker + "@b:4222,u:" + marker + "@c:4222",
		},
	}
	for name, env := range valid {
		t.Run(name, func(t *testing.T) {
			c := mustLoad(t, env)
			if c.Email.Password.Reveal() != marker && !strings.Contains(c.NATS.URL, marker) {
				t.Fatal("the secrets were not read")
			}
			outs := map[string]string{
				"zap Any":    zapJSON(zap.Any("cfg", c)),
				"zap Object": zapJSON(zap.Object("cfg", c)),
				"Warnings":   strings.Join(c.Warnings(), "\n"),
				"Status":     string(must(json.Marshal(c.Status()))),
			}
			if name != "credentials in NATS_URL" {
				// The struct itself holds NATS_URL as given: only the
				// logger's view of the config redacts it.
				outs["%v"] = fmt.Sprintf("%v", c)
				outs["%+v"] = fmt.Sprintf("%+v", *c)
				outs["%#v"] = fmt.Sprintf("%#v", *c)
				outs["json"] = string(must(json.Marshal(c)))
				outs["zap Reflect"] = zapJSON(zap.Reflect("cfg", c))
			}
			for _, l := range leaks(outs) {
				t.Errorf("secret shown in %s", l)
			}
			if !strings.Contains(outs["zap Object"], `"email_host_password"`) {
				t.Errorf("zap Object wrote %s", outs["zap Object"])
			}
		})
	}

	invalid := map[string]map[string]string{
		"every secret set twice or badly": {
			"EMAIL_HOST_PASSWORD": marker, "EMAIL_HOST_PASSWORD_FILE": secretFile,
			"NATS_PASSWORD": marker, "NATS_TOKEN": marker,
			"MAILRELAY_ADMIN_TOKEN": marker + " " + marker, "EMAIL_PORT": "x",
		},
		"token file that is not a token": {
			"MAILRELAY_ADMIN_TOKEN_FILE": writeFile(t, "token", marker+" "+marker+"\n"),
		},
		"admin token and its file": {
			"MAILRELAY_ADMIN_TOKEN": marker, "MAILRELAY_ADMIN_TOKEN_FILE": secretFile,
		},
	}
	for name, env := range invalid {
		t.Run(name, func(t *testing.T) {
			_, err := Load(getenv(env))
			if err == nil {
				t.Fatal("no error")
			}
			for _, l := range leaks(map[string]string{"Error": err.Error(), "%+v": fmt.Sprintf("%+v", err), "%#v": fmt.Sprintf("%#v", err)}) {
				t.Errorf("secret shown in %s", l)
			}
		})
	}
}

// A NATS_URL that is refused is echoed without the credentials it holds.
func TestBadNATSURLRedacted(t *testing.T) {
	for _, u := range []string{"nats://ann:hunter2-secret@nats.example.com:42x", "nats://ann:hunter2-secret@bad host:4222"} {
		_, err := Load(func(k string) string {
			if k == "NATS_URL" {
				return u
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), "NATS_URL") {
			t.Fatalf("NATS_URL %q: err = %v, want one naming NATS_URL", u, err)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}
