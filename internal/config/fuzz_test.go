package config

import (
	"strings"
	"testing"
)

// FuzzLoad: any value in any variable either loads or is refused with a
// message naming a variable; it never panics, and a secret never shows.
func FuzzLoad(f *testing.F) {
	f.Add(0, "smtp")
	f.Add(2, "70000")
	f.Add(3, "YES")
	f.Add(20, "30s,2m,5m")
	f.Add(11, "http://[::1]:80/x?y")
	names := Names()
	f.Fuzz(func(t *testing.T, i int, value string) {
		if i < 0 {
			i = -i
		}
		name := names[i%len(names)]
		env := map[string]string{name: value, "EMAIL_HOST_PASSWORD": "fuzz-secret-marker", "EMAIL_HOST_USER": "u",
			"EMAIL_HOST": "127.0.0.1"}
		if name == "EMAIL_HOST_PASSWORD_FILE" {
			delete(env, "EMAIL_HOST_PASSWORD")
		}
		c, err := Load(func(k string) string { return env[k] })
		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, "fuzz-secret-marker") {
				t.Fatalf("error shows the password: %s", msg)
			}
			named := false
			for _, n := range names {
				named = named || strings.Contains(msg, n)
			}
			if !named {
				t.Fatalf("error names no variable: %s", msg)
			}
			return
		}
		if c == nil {
			t.Fatal("nil config without an error")
		}
	})
}
