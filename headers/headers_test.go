package headers

import (
	"regexp"
	"strings"
	"testing"
)

// msgID matches a msg-id whose left part is a dot-atom (RFC 5322 3.6.4).
var msgID = regexp.MustCompile(`^<[A-Za-z0-9!#$%&'*+/=?^_` + "`" + `{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_` + "`" + `{|}~-]+)*@[A-Za-z0-9!#$%&'*+/=?^_` + "`" + `{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_` + "`" + `{|}~-]+)*>$`)

func TestMessageID(t *testing.T) {
	tests := []struct {
		name, id, domain, want string
	}{
		{"ulid", "01JD3N6Q9W4ZK2V8X5T7R1M0PA", "example.com", "<notify.01JD3N6Q9W4ZK2V8X5T7R1M0PA@example.com>"},
		{"domain lower-cased", "n-1_a", "Mail.Example.COM", "<notify.n-1_a@mail.example.com>"},
		{"no domain", "n1", "", "<notify.n1@mailrelay.invalid>"},
		{"empty id", "", "example.com", "<notify.~@example.com>"},
		{"CRLF encoded", "a\r\nb", "example.com", "<notify.a=0D=0Ab@example.com>"},
		{"brackets and at", "<a@b>", "ex>ample.com", "<notify.=3Ca=40b=3E@ex=3Eample.com>"},
		{"dots at the edges", ".a..b.", "example.com", "<notify.=2Ea.=2Eb=2E@example.com>"},
		{"equals sign encoded", "a=2E", "example.com", "<notify.a=3D2E@example.com>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MessageID(tt.id, tt.domain)
			if got != tt.want {
				t.Errorf("MessageID(%q, %q) = %q, want %q", tt.id, tt.domain, got, tt.want)
			}
			if !msgID.MatchString(got) {
				t.Errorf("%q is not a well-formed msg-id", got)
			}
			if again := MessageID(tt.id, tt.domain); again != got {
				t.Errorf("MessageID is not stable: %q then %q", got, again)
			}
		})
	}
}

func TestThreadID(t *testing.T) {
	tests := []struct {
		name, ws, task, domain, want string
	}{
		{"workspace and task", "w1", "t-1001", "example.com", "<task/w1/t-1001@example.com>"},
		{"no workspace", "", "t-1001", "example.com", "<task/t-1001@example.com>"},
		{"dotted task id", "w1", "t.1.2", "example.com", "<task/w1/t.1.2@example.com>"},
		{"slash in workspace encoded", "a/b", "c", "example.com", "<task/a=2Fb/c@example.com>"},
		{"odd task id", "w", "..", "example.com", "<task/w/=2E=2E@example.com>"},
		{"long workspace digested", strings.Repeat("w", 200), "t", "example.com", "<task/~f21c981475cfd17cbd5ca4bf8fbcaf7c/t@example.com>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ThreadID(tt.ws, tt.task, tt.domain)
			if got != tt.want {
				t.Errorf("ThreadID(%q, %q, %q) = %q, want %q", tt.ws, tt.task, tt.domain, got, tt.want)
			}
			if !msgID.MatchString(got) {
				t.Errorf("%q is not a well-formed msg-id", got)
			}
		})
	}

	// Distinct (workspace, task) pairs never share a thread.
	pairs := [][2]string{{"", "a/b"}, {"a", "b"}, {"a/b", ""}, {"", "a.b"}, {"a.b", "c"}, {"a", "b.c"}, {"a=2F", "b"}, {"a/", "b"}}
	seen := map[string][2]string{}
	for _, p := range pairs {
		id := ThreadID(p[0], p[1], "example.com")
		if q, ok := seen[id]; ok {
			t.Errorf("%v and %v share thread id %q", p, q, id)
		}
		seen[id] = p
	}
}

func TestListID(t *testing.T) {
	tests := []struct {
		name, override, domain, want string
	}{
		{"derived", "", "example.com", "mailrelay notifications <notifications.example.com>"},
		{"derived lower-cased", "", "Example.COM", "mailrelay notifications <notifications.example.com>"},
		{"derived without domain", "", "", "mailrelay notifications <notifications.mailrelay.invalid>"},
		{"full value", "Acme tasks <tasks.acme.example>", "example.com", "Acme tasks <tasks.acme.example>"},
		{"bare id", "tasks.acme.example", "example.com", "mailrelay notifications <tasks.acme.example>"},
		{"id with brackets", "<tasks.acme.example", "example.com", "mailrelay notifications <tasks.acme.example>"},
		{"injection", "x\r\nBcc: y@z", "example.com", "mailrelay notifications <xBcc:y@z>"},
		{"only brackets", "<>", "example.com", "mailrelay notifications <notifications.example.com>"},
		{"bracket in description", "a>b <x.example>", "example.com", "mailrelay notifications <abx.example>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ListID(tt.override, tt.domain); got != tt.want {
				t.Errorf("ListID(%q, %q) = %q, want %q", tt.override, tt.domain, got, tt.want)
			}
		})
	}
}

// TestListUnsubscribe: the preferences page, whatever the scheme, and never
// a one-click claim (contract §9.4 amends §5: an https base no longer brings
// List-Unsubscribe-Post).
func TestListUnsubscribe(t *testing.T) {
	tests := []struct{ name, base, want string }{
		{"unset", "", ""},
		{"https", "https://app.example.com", "<https://app.example.com/settings/notifications>"},
		{"https trailing slash", "https://app.example.com/", "<https://app.example.com/settings/notifications>"},
		{"https with path", "https://example.com/app//", "<https://example.com/app/settings/notifications>"},
		{"upper-case scheme", "HTTPS://app.example.com", "<HTTPS://app.example.com/settings/notifications>"},
		{"http", "http://localhost:8000", "<http://localhost:8000/settings/notifications>"},
		{"no scheme", "app.example.com", ""},
		{"other scheme", "mailto:x@example.com", ""},
		{"no host", "https://", ""},
		{"CRLF", "https://a.example\r\n.com", ""},
		{"angle bracket", "https://a.example.com/>", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ListUnsubscribe(tt.base); got != tt.want {
				t.Errorf("ListUnsubscribe(%q) = %q, want %q", tt.base, got, tt.want)
			}
		})
	}
}

// TestOneClickUnsubscribe: one https URL in angle brackets, or nothing.
func TestOneClickUnsubscribe(t *testing.T) {
	tests := []struct {
		name, url, want string
		ok              bool
	}{
		{"https", "https://relay.example.com/u/AbC-_9", "<https://relay.example.com/u/AbC-_9>", true},
		{"http", "http://relay.example.com/u/x", "", false},
		{"empty", "", "", false},
		{"no host", "https:///u/x", "", false},
		{"space", "https://relay.example.com/u/a b", "", false},
		{"CRLF", "https://relay.example.com/u/x\r\nBcc: a@b", "", false},
		{"angle bracket", "https://relay.example.com/u/x>", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := OneClickUnsubscribe(tt.url)
			if got != tt.want || ok != tt.ok {
				t.Errorf("OneClickUnsubscribe(%q) = %q, %v, want %q, %v", tt.url, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestDomain(t *testing.T) {
	tests := []struct{ name, email, want string }{
		{"plain", "notify@example.com", "example.com"},
		{"upper case", "Notify@Example.COM", "example.com"},
		{"quoted local part with at", `"a@b"@example.com`, "example.com"},
		{"no at", "notify", ""},
		{"trailing at", "notify@", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Domain(tt.email); got != tt.want {
				t.Errorf("Domain(%q) = %q, want %q", tt.email, got, tt.want)
			}
		})
	}
}

// FuzzMsgID checks that any id, workspace and domain give well-formed,
// single-line msg-ids.
func FuzzMsgID(f *testing.F) {
	f.Add("01JD3N6Q9W4ZK2V8X5T7R1M0PA", "w1", "t-1001", "example.com")
	f.Add("a\r\nb", "", "..", "")
	f.Add(strings.Repeat("é", 100), "a/b", ".t.", "[127.0.0.1]")
	f.Fuzz(func(t *testing.T, id, ws, task, domain string) {
		for _, v := range []string{MessageID(id, domain), ThreadID(ws, task, domain)} {
			if !msgID.MatchString(v) || len(v) > 500 {
				t.Errorf("%q is not a well-formed msg-id of bounded length", v)
			}
		}
	})
}

func TestListIDFor(t *testing.T) {
	tests := []struct{ override, product, domain, want string }{
		{"", "", "example.com", "mailrelay notifications <notifications.example.com>"},
		{"", "Acme", "Example.COM", "Acme <notifications.example.com>"},
		{"", "Bâtiment Nord — Zürich", "example.com", "Batiment Nord Zurich <notifications.example.com>"},
		{"", "Acme, Inc. (\"HQ\")", "example.com", `"Acme, Inc. (\"HQ\")" <notifications.example.com>`},
		{"", "=?UTF-8?q?x?=", "example.com", "?UTF-8?q?x?= <notifications.example.com>"},
		{"", "基礎工事", "example.com", "mailrelay notifications <notifications.example.com>"},
		{"lists.example.com", "Acme", "example.com", "Acme <lists.example.com>"},
		{"Other <o.example.com>", "Acme", "example.com", "Other <o.example.com>"},
	}
	for _, tt := range tests {
		if got := ListIDFor(tt.override, tt.product, tt.domain); got != tt.want {
			t.Errorf("ListIDFor(%q, %q, %q) = %q, want %q", tt.override, tt.product, tt.domain, got, tt.want)
		}
	}
}

// FuzzListID: whatever the product name and override, the List-Id is one
// line of printable ASCII ending in "<…>" and holding no encoded-word.
func FuzzListID(f *testing.F) {
	f.Add("", "Acme", "example.com")
	f.Add("x", "Bâtiment \"Nord\" =?UTF-8?q?x?=\r\nBcc: y", "exämple.com")
	f.Add("<a b>", "\u202eevil\u200b", "")
	f.Fuzz(func(t *testing.T, override, product, domain string) {
		v := ListIDFor(override, product, domain)
		if !strings.HasSuffix(v, ">") || strings.Contains(v, "=?") && override == "" {
			t.Errorf("ListIDFor = %q", v)
		}
		if override == "" {
			for _, r := range v {
				if r < ' ' || r > '~' {
					t.Fatalf("ListIDFor = %q holds %U", v, r)
				}
			}
		}
		if strings.ContainsAny(v, "\r\n") {
			t.Fatalf("ListIDFor = %q holds CR or LF", v)
		}
	})
}
