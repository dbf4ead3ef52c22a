package headers

import (
	"fmt"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
)

// The From and base-URL rules live here, once: compose applies them to its
// Config, and the relay's configuration to DEFAULT_FROM_EMAIL and
// FRONTEND_BASE_URL when it loads them, so a value that loads always
// composes.

// CheckFrom returns nil when email is a bare address usable as From and as
// the domain of Message-IDs: a local part and a domain, no space, control
// character, comma or angle bracket, and an address net/mail reads back
// unchanged. The error says what is wrong, naming the address.
func CheckFrom(email string) error {
	at := strings.LastIndexByte(email, '@')
	if at <= 0 || at == len(email)-1 {
		return fmt.Errorf("from address %q is not an email address", email)
	}
	for i := 0; i < len(email); i++ {
		if c := email[i]; c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == ',' {
			return fmt.Errorf("from address %q holds a space, control character, comma or angle bracket", email)
		}
	}
	if a, err := mail.ParseAddress(email); err != nil || a.Address != email {
		return fmt.Errorf("from address %q is not an email address", email)
	}
	return nil
}

// CheckBaseURL returns nil when base is usable as the frontend base URL of
// deep links and List-Unsubscribe: an absolute http(s) URL with a host, no
// user info, query or fragment, a port (if any) from 1 to 65535, in
// printable ASCII without a backslash or a character that would end a <URL>
// in a header (ListUnsubscribe accepts it). A trailing "/" is allowed. The error says what is wrong, naming the URL.
func CheckBaseURL(base string) error {
	if ListUnsubscribe(base) == "" || strings.IndexByte(base, '\\') >= 0 {
		return fmt.Errorf("base URL %q is not an absolute http(s) URL", base)
	}
	for i := 0; i < len(base); i++ {
		if c := base[i]; c == '?' || c == '#' || c >= 0x80 {
			return fmt.Errorf("base URL %q must be ASCII with no query or fragment", base)
		}
	}
	u, err := url.Parse(base)
	if err != nil || u.Hostname() == "" || u.User != nil {
		return fmt.Errorf("base URL %q must be an absolute http(s) URL with a host and no user info", base)
	}
	// url.Parse only checks that a port is digits; 99999 would land in
	// every mail as a link that cannot work.
	if p := u.Port(); strings.HasSuffix(u.Host, ":") || p != "" && !validPort(p) {
		return fmt.Errorf("base URL %q has a port that is not a number from 1 to 65535", base)
	}
	return nil
}

// validPort reports whether s is a decimal port from 1 to 65535.
func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 65535
}
