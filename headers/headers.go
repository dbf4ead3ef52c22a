// Package headers builds the header values of a mailrelay notification mail
// (docs/contract.md §5) as pure functions: the stable Message-ID, the per-task
// thread id carried by In-Reply-To and References, List-Id,
// List-Unsubscribe, and Sanitize and SanitizeHeader, which turn any event
// text into a single line that can never carry a CR, LF or (in a header) an
// invisible or bidi character, with MustEncode and EncodeWords for text
// shaped like an RFC 2047 encoded-word. It also owns the rules
// for the From address and the frontend base URL those values are made of
// (CheckFrom, CheckBaseURL).
//
// Nothing here does I/O, reads the clock or uses randomness: the same input
// always yields the same value.
package headers

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"golang.org/x/text/unicode/norm"
)

// Header field names and fixed values written by mailrelay besides the
// standard fields (From, To, Subject, Date, Message-ID, In-Reply-To,
// References).
const (
	// AutoSubmitted marks machine-generated mail (RFC 3834).
	AutoSubmitted = "Auto-Submitted"
	// AutoSubmittedValue is the value of AutoSubmitted.
	AutoSubmittedValue = "auto-generated"
	// AutoResponseSuppress asks Outlook/Exchange not to auto-reply.
	AutoResponseSuppress = "X-Auto-Response-Suppress"
	// AutoResponseSuppressAll is the value of AutoResponseSuppress.
	AutoResponseSuppressAll = "All"
	// ListIDHeader names this deployment's notifications (RFC 2919).
	ListIDHeader = "List-Id"
	// ListUnsubscribeHeader carries the settings URL or the one-click URL
	// (RFC 2369).
	ListUnsubscribeHeader = "List-Unsubscribe"
	// ListUnsubscribePost announces one-click unsubscription (RFC 8058);
	// sent only with a one-click URL (OneClickUnsubscribe).
	ListUnsubscribePost = "List-Unsubscribe-Post"
	// OneClickValue is the value of ListUnsubscribePost.
	OneClickValue = "List-Unsubscribe=One-Click"
	// Reason names the event type that caused the mail.
	Reason = "X-Mailrelay-Reason"
)

// SettingsPath is where the web app lets a user change their notification
// settings, relative to the frontend base URL.
const SettingsPath = "/settings/notifications"

// FallbackDomain is used on the right of a msg-id when the From address has
// no usable domain.
const FallbackDomain = "mailrelay.invalid"

// maxSegment bounds one encoded part of a msg-id; longer parts are replaced
// by a digest so that a header line stays far below 998 octets.
const maxSegment = 100

// Domain returns the domain of an email address (after the last "@"),
// lower-cased, or "" when there is none.
func Domain(email string) string {
	i := strings.LastIndexByte(email, '@')
	if i < 0 || i == len(email)-1 {
		return ""
	}
	return strings.ToLower(email[i+1:])
}

// MessageID returns the Message-ID of the mail for one notification:
// "<notify.ID@DOMAIN>", angle brackets included. The same notification id
// and From domain always give the same value, so a resent notification
// keeps its Message-ID. Characters that may not appear in a msg-id are
// encoded (see ThreadID), so any input gives a well-formed value.
func MessageID(notificationID, fromDomain string) string {
	b := make([]byte, 0, 16+len(notificationID)+len(fromDomain))
	b = append(b, "<notify."...)
	b = appendSegment(b, notificationID)
	b = append(b, '@')
	b = appendDomain(b, fromDomain)
	b = append(b, '>')
	return string(b)
}

// ThreadID returns the msg-id that threads every mail about one task of one
// workspace: "<task/WORKSPACE/TASK@DOMAIN>", or "<task/TASK@DOMAIN>" when
// the workspace id is empty. It goes into In-Reply-To and References, and is
// identical on every mail about that task.
//
// Letters, digits, "_" and "-" are kept; a "." is kept where a dot-atom
// allows it; every other byte is written "=XX" (hex), so distinct inputs
// give distinct ids. A part longer than 100 characters once encoded is
// replaced by "~" and a SHA-256 prefix of it.
func ThreadID(workspaceID, taskID, fromDomain string) string {
	b := make([]byte, 0, 16+len(workspaceID)+len(taskID)+len(fromDomain))
	b = append(b, "<task/"...)
	if workspaceID != "" {
		b = appendSegment(b, workspaceID)
		b = append(b, '/')
	}
	b = appendSegment(b, taskID)
	b = append(b, '@')
	b = appendDomain(b, fromDomain)
	b = append(b, '>')
	return string(b)
}

// DefaultListDescription is the List-Id description when no product name
// is known.
const DefaultListDescription = "mailrelay notifications"

// ListID returns the List-Id value (RFC 2919) with the default description:
// ListIDFor(override, "", fromDomain).
func ListID(override, fromDomain string) string { return ListIDFor(override, "", fromDomain) }

// ListIDFor returns the List-Id value (RFC 2919). A non-empty override is
// used, sanitized, as the whole value when it holds "<…>", or else as the
// list identifier with a description added. Without an override the value
// is derived from the product name and the From domain:
// "PRODUCT <notifications.DOMAIN>". The description is the product name
// made printable ASCII (ListDescription), DefaultListDescription when
// that leaves nothing.
func ListIDFor(override, product, fromDomain string) string {
	description := ListDescription(product)
	if o := SanitizeHeader(override, 200); o != "" {
		if i := strings.IndexByte(o, '<'); i >= 0 && len(o) > i+2 && strings.HasSuffix(o, ">") &&
			strings.IndexByte(o[:i], '>') < 0 && !strings.ContainsAny(o[i+1:len(o)-1], "<> ") {
			return o
		}
		id := strings.Map(func(r rune) rune {
			if r == '<' || r == '>' || r == ' ' {
				return -1
			}
			return r
		}, o)
		if id != "" {
			return description + " <" + id + ">"
		}
	}
	b := make([]byte, 0, len(description)+len(fromDomain)+20)
	b = append(b, description+" <notifications."...)
	b = appendDomain(b, fromDomain)
	b = append(b, '>')
	return string(b)
}

// ListDescription turns a product name into the phrase of a List-Id: one
// line of printable ASCII (accents dropped: "Zürich" gives "Zurich"), at
// most 80 characters, written as a quoted-string when it holds a character
// an atom may not; DefaultListDescription when nothing is left. The List-Id
// stays ASCII so that it never needs encoded-words.
func ListDescription(product string) string {
	s := Sanitize(product, 0)
	var b strings.Builder
	plain := true
	for _, r := range norm.NFKD.String(s) {
		switch {
		case r == ' ':
			if b.Len() > 0 && !strings.HasSuffix(b.String(), " ") {
				b.WriteByte(' ')
			}
		case r > ' ' && r < 0x7f:
			if !isAtext(byte(r)) {
				plain = false
			}
			b.WriteRune(r)
		}
		if b.Len() >= 80 {
			break
		}
	}
	d := strings.TrimSpace(b.String())
	for strings.Contains(d, "=?") { // never the start of an encoded-word
		d = strings.ReplaceAll(d, "=?", "?")
	}
	if d == "" {
		return DefaultListDescription
	}
	if plain {
		return d
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(d) + `"`
}

// isAtext reports whether c is an RFC 5322 atext character.
func isAtext(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// ListUnsubscribe returns the List-Unsubscribe value that points at the
// preferences page of a frontend base URL, "<BASE/settings/notifications>".
// It never goes with List-Unsubscribe-Post: a login-gated page cannot honour
// a one-click POST (contract §9.4; OneClickUnsubscribe is for that). It
// returns "" when baseURL is empty, is not an absolute http(s) URL, or holds
// a character that cannot stand inside "<…>" (space, control, "<", ">",
// quote).
func ListUnsubscribe(baseURL string) string {
	base := strings.TrimRight(baseURL, "/")
	if !angleURL(base, false) {
		return ""
	}
	return "<" + base + SettingsPath + ">"
}

// OneClickUnsubscribe returns the List-Unsubscribe value for a one-click
// unsubscribe URL (RFC 8058), "<URL>", and true; List-Unsubscribe-Post:
// List-Unsubscribe=One-Click goes with it. RFC 8058 needs one https URI:
// for anything else (empty, http, a character that cannot stand inside
// "<…>") it returns "", false.
func OneClickUnsubscribe(oneClickURL string) (value string, ok bool) {
	if !angleURL(oneClickURL, true) {
		return "", false
	}
	return "<" + oneClickURL + ">", true
}

// angleURL reports whether u is an absolute https (or, unless httpsOnly,
// http) URL with a host that can stand inside "<…>" in a header.
func angleURL(u string, httpsOnly bool) bool {
	var rest string
	switch {
	case hasPrefixFold(u, "https://"):
		rest = u[len("https://"):]
	case hasPrefixFold(u, "http://") && !httpsOnly:
		rest = u[len("http://"):]
	default:
		return false
	}
	if rest == "" || rest[0] == '/' {
		return false
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == '"' {
			return false
		}
	}
	return true
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// appendSegment appends s encoded for the left side of a msg-id (a
// dot-atom without "/" so that "/" can separate parts).
func appendSegment(b []byte, s string) []byte {
	if s == "" {
		return append(b, '~')
	}
	start := len(b)
	b = appendAtom(b, s, false)
	if len(b)-start > maxSegment {
		sum := sha256.Sum256([]byte(s))
		b = append(b[:start], '~')
		b = hex.AppendEncode(b, sum[:16])
	}
	return b
}

// appendDomain appends a lower-cased domain encoded as a dot-atom, or
// FallbackDomain when it is empty.
func appendDomain(b []byte, d string) []byte {
	if d == "" {
		return append(b, FallbackDomain...)
	}
	start := len(b)
	b = appendAtom(b, d, true)
	if len(b)-start > 2*maxSegment {
		sum := sha256.Sum256([]byte(strings.ToLower(d)))
		b = append(b[:start], '~')
		b = hex.AppendEncode(b, sum[:16])
		b = append(b, ".invalid"...)
	}
	return b
}

// appendAtom keeps ASCII letters, digits, "_" and "-" and a "." that is
// neither first, last nor after another "."; every other byte becomes "=XX".
// With lower set, letters are lower-cased.
func appendAtom(b []byte, s string, lower bool) []byte {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-':
			b = append(b, c)
		case c >= 'A' && c <= 'Z':
			if lower {
				c += 'a' - 'A'
			}
			b = append(b, c)
		case c == '.' && i > 0 && i < len(s)-1 && s[i-1] != '.':
			b = append(b, c)
		default:
			b = append(b, '=', hexDigits[c>>4], hexDigits[c&0xf])
		}
	}
	return b
}
