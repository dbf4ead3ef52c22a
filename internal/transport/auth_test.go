package transport

import (
	"errors"
	"testing"
)

func TestNormalizeHost(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"smtp.example.com", "smtp.example.com", true},
		{"smtp.example.com.", "smtp.example.com.", true},
		{"mail_relay", "mail_relay", true},
		{"localhost", "localhost", true},
		{"192.0.2.1", "192.0.2.1", true},
		{"2001:db8::1", "2001:db8::1", true},
		{"::1", "::1", true},
		{"[::1]", "::1", true},
		{"[2001:db8::1]", "2001:db8::1", true},
		{"[192.0.2.1]", "192.0.2.1", true},
		{"", "", false},
		{"[]", "", false},
		{"[::1", "", false},
		{"::1]", "", false},
		{"[[::1]]", "", false},
		{"[smtp.example.com]", "", false},
		{"[::1]:25", "", false},
		{"smtp.example.com:25", "", false},
		{"smtp://smtp.example.com", "", false},
		{"smtp example.com", "", false},
		{"smtp.example.com\r\n", "", false},
		{"fe80::1%eth0", "", false},
	}
	for _, tt := range tests {
		got, ok := NormalizeHost(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LocalHost": true, "127.0.0.1": true, "127.8.9.10": true, "::1": true, "[::1]": true,
		"smtp.example.com": false, "192.0.2.1": false, "[2001:db8::1]": false, "": false, "[::1": false, "localhost.example.com": false,
	} {
		if got := IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

// The credential rule, whole: user and password go together, and go in
// clear text only to loopback or with MAILRELAY_SMTP_INSECURE_AUTH.
func TestSMTPAuthCheck(t *testing.T) {
	tests := []struct {
		name    string
		auth    SMTPAuth
		want    error
		enabled bool
	}{
		{"no credentials", SMTPAuth{Host: "smtp.example.com"}, nil, false},
		{"no credentials, TLS", SMTPAuth{Host: "smtp.example.com", TLS: true}, nil, false},
		{"both over TLS", SMTPAuth{Host: "smtp.example.com", User: "u", HasPassword: true, TLS: true}, nil, true},
		{"both in clear text, allowed", SMTPAuth{Host: "smtp.example.com", User: "u", HasPassword: true, InsecureAuth: true}, nil, true},
		{"both in clear text to loopback", SMTPAuth{Host: "127.0.0.1", User: "u", HasPassword: true}, nil, true},
		{"both in clear text to bracketed loopback", SMTPAuth{Host: "[::1]", User: "u", HasPassword: true}, nil, true},
		{"both in clear text to a remote host", SMTPAuth{Host: "smtp.example.com", User: "u", HasPassword: true}, ErrInsecureAuth, true},
		{"password without user", SMTPAuth{Host: "smtp.example.com", HasPassword: true, TLS: true}, ErrPasswordWithoutUser, false},
		{"password without user, in clear text", SMTPAuth{Host: "smtp.example.com", HasPassword: true}, ErrPasswordWithoutUser, false},
		{"user without password", SMTPAuth{Host: "smtp.example.com", User: "u", TLS: true}, ErrUserWithoutPassword, false},
		{"user without password, loopback", SMTPAuth{Host: "localhost", User: "u"}, ErrUserWithoutPassword, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.auth.Check(); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Errorf("Check() = %v, want %v", err, tt.want)
			}
			if got := tt.auth.Enabled(); got != tt.enabled {
				t.Errorf("Enabled() = %v, want %v", got, tt.enabled)
			}
		})
	}
}
