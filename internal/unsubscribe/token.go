// Package unsubscribe owns RFC 8058 one-click unsubscribe (contract §9.4,
// §9.6): the opaque signed tokens that name a recipient and an event type,
// the URLs of the public listener that carry them, and that listener's
// handler, which shows a small page on GET and turns Email off for that
// user and type on POST.
package unsubscribe

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

// Errors of Verify, matched with errors.Is. Each means the link does not
// work; none of them changes anything.
var (
	// ErrMalformed: the token is not one this relay makes (garbled,
	// truncated, another version).
	ErrMalformed = errors.New("unsubscribe: malformed token")
	// ErrUnknownKey: the token was made with a key that is no longer
	// configured (rotated out), or claims one that never was.
	ErrUnknownKey = errors.New("unsubscribe: token key is not configured")
	// ErrForged: the token names a configured key but its signature does
	// not match.
	ErrForged = errors.New("unsubscribe: token signature does not match")
)

// Key rules, also applied by the configuration.
const (
	// MinKeyLen is the shortest secret accepted, in bytes.
	MinKeyLen = 16
	// Path is where the public listener serves tokens: Path + token.
	Path = "/u/"
)

// Token layout (then base64url without padding):
//
//	version (1 byte) | key id (4) | tag (16) | ciphertext (len(payload))
//
// payload = user id NUL event type NUL language. tag is the first 16 bytes
// of HMAC-SHA-256 over version, key id and payload, with a MAC key derived
// from the secret; the ciphertext is the payload under AES-256-CTR with an
// encryption key derived from the same secret and the tag as IV (a
// synthetic IV, as SIV mode does). So nothing of the payload is readable,
// any change is detected, and the same inputs always give the same token,
// which keeps compose pure (no randomness) and a mail's URL stable.
const (
	version = 1
	kidLen  = 4
	tagLen  = 16
	headLen = 1 + kidLen + tagLen
	// maxPayload bounds what Verify decrypts: ids are short.
	maxPayload = 512
)

var b64 = base64.RawURLEncoding

// key is one secret with its derived keys.
type key struct {
	id  [kidLen]byte
	mac []byte
	enc cipher.Block
}

func deriveKey(secret string) (key, error) {
	var k key
	id, err := hkdf.Key(sha256.New, []byte(secret), nil, "mailrelay unsubscribe v1 key id", kidLen)
	if err != nil {
		return k, err
	}
	copy(k.id[:], id)
	if k.mac, err = hkdf.Key(sha256.New, []byte(secret), nil, "mailrelay unsubscribe v1 mac", 32); err != nil {
		return k, err
	}
	enc, err := hkdf.Key(sha256.New, []byte(secret), nil, "mailrelay unsubscribe v1 enc", 32)
	if err != nil {
		return k, err
	}
	k.enc, err = aes.NewCipher(enc)
	return k, err
}

// Signer makes and verifies tokens and the one-click URLs that carry them.
// The first key signs; every key verifies, so a key can be rotated in
// (put first) and the old one kept until mail signed with it no longer
// matters. It is safe for concurrent use.
type Signer struct {
	base string // MAILRELAY_PUBLIC_URL without trailing "/", "" for none
	keys []key
}

// ParseKeys splits MAILRELAY_UNSUBSCRIBE_KEYS (or its file's content):
// keys separated by commas or newlines, spaces around them ignored. Each
// must be at least MinKeyLen bytes, and there must be one. Its errors
// never show a key.
func ParseKeys(s string) ([]string, error) {
	var keys []string
	for i, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if len(f) < MinKeyLen {
			return nil, fmt.Errorf("key %d is shorter than %d bytes: use long random secrets (openssl rand -base64 32)", i+1, MinKeyLen)
		}
		keys = append(keys, f)
	}
	if len(keys) == 0 {
		return nil, errors.New("no key given")
	}
	return keys, nil
}

// NewSigner returns a Signer with the given secrets (ParseKeys' rules; the
// first signs) and public base URL ("" when this process only verifies; a
// set one must be an absolute https URL, RFC 8058's rule).
func NewSigner(publicURL string, secrets []string) (*Signer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("unsubscribe: no key")
	}
	s := &Signer{base: strings.TrimRight(publicURL, "/")}
	if s.base != "" {
		if _, ok := headers.OneClickUnsubscribe(s.base + Path + "x"); !ok {
			return nil, fmt.Errorf("unsubscribe: public URL %q is not an absolute https URL", publicURL)
		}
	}
	for i, sec := range secrets {
		if len(sec) < MinKeyLen {
			return nil, fmt.Errorf("unsubscribe: key %d is shorter than %d bytes", i+1, MinKeyLen)
		}
		k, err := deriveKey(sec)
		if err != nil {
			return nil, fmt.Errorf("unsubscribe: key %d: %w", i+1, err)
		}
		s.keys = append(s.keys, k)
	}
	return s, nil
}

// Claim is what a token names.
type Claim struct {
	User string     // the recipient's user id
	Type event.Type // the event type whose Email is turned off
	Lang string     // the mail's language ("de", "en"), "" when unknown
}

// Token returns the token of c, signed with the first key.
func (s *Signer) Token(c Claim) string {
	k := s.keys[0]
	payload := make([]byte, 0, len(c.User)+len(c.Type)+len(c.Lang)+2)
	payload = append(payload, c.User...)
	payload = append(payload, 0)
	payload = append(payload, c.Type...)
	payload = append(payload, 0)
	payload = append(payload, c.Lang...)

	raw := make([]byte, headLen+len(payload))
	raw[0] = version
	copy(raw[1:], k.id[:])
	copy(raw[1+kidLen:], k.tag(raw[:1+kidLen], payload))
	cipher.NewCTR(k.enc, raw[1+kidLen:headLen]).XORKeyStream(raw[headLen:], payload)
	return b64.EncodeToString(raw)
}

// tag is the truncated HMAC-SHA-256 of head and payload.
func (k key) tag(head, payload []byte) []byte {
	m := hmac.New(sha256.New, k.mac)
	m.Write(head)
	m.Write(payload)
	return m.Sum(nil)[:tagLen]
}

// URL returns the one-click URL of c: the public URL + Path + token, ""
// when the Signer has no public URL.
func (s *Signer) URL(c Claim) string {
	if s.base == "" {
		return ""
	}
	return s.base + Path + s.Token(c)
}

// OneClickURL is URL for compose: the one-click URL of a recipient and
// event type, in the mail's language (a BCP 47 tag; only its language
// part is kept, and only when the page speaks it).
func (s *Signer) OneClickURL(user string, t event.Type, locale string) string {
	return s.URL(Claim{User: user, Type: t, Lang: pageLang(locale)})
}

// Verify returns what token names. Errors: ErrMalformed, ErrUnknownKey or
// ErrForged; a token whose user id or type is not valid (event.ValidID,
// Type.Valid) is ErrMalformed even when its signature holds.
func (s *Signer) Verify(token string) (Claim, error) {
	if len(token) > b64.EncodedLen(headLen+maxPayload) {
		return Claim{}, ErrMalformed
	}
	raw, err := b64.Strict().DecodeString(token)
	if err != nil || len(raw) < headLen+3 || raw[0] != version {
		return Claim{}, ErrMalformed
	}
	found := false
	for _, k := range s.keys {
		if !hmac.Equal(k.id[:], raw[1:1+kidLen]) {
			continue
		}
		found = true
		payload := make([]byte, len(raw)-headLen)
		cipher.NewCTR(k.enc, raw[1+kidLen:headLen]).XORKeyStream(payload, raw[headLen:])
		if !hmac.Equal(k.tag(raw[:1+kidLen], payload), raw[1+kidLen:headLen]) {
			continue // a key id can collide: try the other keys
		}
		parts := strings.Split(string(payload), "\x00")
		if len(parts) != 3 || !event.ValidID(parts[0]) || !event.Type(parts[1]).Valid() {
			return Claim{}, ErrMalformed
		}
		return Claim{User: parts[0], Type: event.Type(parts[1]), Lang: parts[2]}, nil
	}
	if !found {
		return Claim{}, ErrUnknownKey
	}
	return Claim{}, ErrForged
}
