package headers

import (
	"strings"
	"testing"
)

func TestCheckFrom(t *testing.T) {
	tests := []struct {
		name, email string
		want        string // substring of the error; "" means accepted
	}{
		{"bare", "notify@example.com", ""},
		{"mixed case", "notify@Example.COM", ""},
		{"localhost", "webmaster@localhost", ""},
		{"empty", "", "is not an email address"},
		{"no at", "notify", "is not an email address"},
		{"no local part", "@example.com", "is not an email address"},
		{"no domain", "notify@", "is not an email address"},
		{"display name", "N <n@example.com>", "holds a space"},
		{"CRLF", "a@b\r\nBcc: x@y", "holds a space"},
		{"comma", "a@b.c,d@e.f", "holds a space"},
		{"two at", "a@b@c", "is not an email address"},
		{"double dot", "a..b@example.com", "is not an email address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckFrom(tt.email)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("CheckFrom(%q) = %v, want nil", tt.email, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "from address")):
				t.Errorf("CheckFrom(%q) = %v, want a from address error with %q", tt.email, err, tt.want)
			}
		})
	}
}

// TestCheckBaseURLPort: a port outside 1–65535 is refused with a message
// that says so.
func TestCheckBaseURLPort(t *testing.T) {
	err := CheckBaseURL("https://app.example.com:99999")
	if err == nil || !strings.Contains(err.Error(), `base URL "https://app.example.com:99999" has a port that is not a number from 1 to 65535`) {
		t.Errorf("CheckBaseURL = %v, want the port named", err)
	}
}

func TestCheckBaseURL(t *testing.T) {
	tests := []struct {
		name, base string
		ok         bool
	}{
		{"https", "https://app.example.com", true},
		{"trailing slash", "https://app.example.com/", true},
		{"http with port and path", "http://localhost:3000/app", true},
		{"upper-case scheme", "HTTPS://app.example.com", true},
		{"empty", "", false},
		{"no scheme", "app.example.com", false},
		{"ftp", "ftp://app.example.com", false},
		{"relative", "/app", false},
		{"no host", "https:///app", false},
		{"port only", "https://:80", false},
		{"query", "https://app.example.com/?x=1", false},
		{"empty query", "https://app.example.com/?", false},
		{"fragment", "https://app.example.com/#/", false},
		{"user info", "https://u@app.example.com", false},
		{"space", "https://app.example.com/a b", false},
		{"angle bracket", "https://app.example.com/>", false},
		{"quote", `https://app.example.com/"`, false},
		{"backslash", `https://app.example.com/a\b`, false},
		{"non-ASCII", "https://bücher.example", false},
		{"DEL", "https://app.example.com/\x7f", false},
		{"bad escape", "https://app.example.com/%zz", false},
		{"port 1", "https://app.example.com:1/", true},
		{"port 65535", "https://app.example.com:65535", true},
		{"IPv6 with port", "http://[::1]:8080/app", true},
		{"port 0", "https://app.example.com:0", false},
		{"port 65536", "https://app.example.com:65536", false},
		{"port 99999", "https://app.example.com:99999", false},
		{"huge port", "https://app.example.com:99999999999999999999/", false},
		{"empty port", "https://app.example.com:/", false},
		{"IPv6 with empty port", "http://[::1]:/app", false},
		{"signed port", "https://app.example.com:+80", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckBaseURL(tt.base)
			if (err == nil) != tt.ok {
				t.Errorf("CheckBaseURL(%q) = %v, want ok %v", tt.base, err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "base URL") {
				t.Errorf("CheckBaseURL(%q) = %v, want it to name the base URL", tt.base, err)
			}
			if v := ListUnsubscribe(tt.base); err == nil && v == "" {
				t.Errorf("CheckBaseURL accepts %q but ListUnsubscribe does not", tt.base)
			}
		})
	}
}
