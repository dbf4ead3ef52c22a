// Package dkim signs rendered mail with DKIM (RFC 6376), RSA-SHA256 (keys of
// 2048 to 4096 bits) or Ed25519-SHA256 (RFC 8463), relaxed/relaxed, with
// github.com/emersion/go-msgauth.
//
// It signs the exact bytes that go to the wire or the file, after go-mail
// has rendered them (go-mail sorts and folds header fields, so a signature
// made before would not match), and prepends the DKIM-Signature field.
//
// # Signed header fields
//
// Every field of SignedHeaders that is present is signed, each instance
// once. The fields of OversignedHeaders are listed in h= once more than they
// occur (RFC 6376 §5.4.2), absent ones included: a field of that name added
// later (a second From or Subject that some clients display, a
// List-Unsubscribe or List-Unsubscribe-Post added in transit) breaks the
// signature instead of riding on it. Contract §9.4's list (From, To,
// Subject, Date, Message-ID, List-Id, List-Unsubscribe and
// List-Unsubscribe-Post) is oversigned; so are Cc and Reply-To, which the
// relay never sends. Trace fields (Received, Return-Path) and X- fields are
// not signed: relays add the first, and the second say nothing a receiver
// trusts.
//
// The private key never appears in an error, a log line or a printed
// Signer: errors name the file, never its content.
package dkim

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// SignedHeaders are signed whenever present, in this order; see the package
// documentation.
var SignedHeaders = []string{
	"From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
	"In-Reply-To", "References",
	"List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Help", "List-Post", "List-Owner", "List-Archive",
	"Auto-Submitted", "Content-Language",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
}

// OversignedHeaders are listed in h= once more than they occur, so that
// none of that name can be added without breaking the signature.
var OversignedHeaders = []string{
	"From", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
	"List-Id", "List-Unsubscribe", "List-Unsubscribe-Post",
}

// Key sizes accepted for RSA: RFC 8301 makes 2048 the least a signer should
// use, and verifiers need only handle up to 4096 bits.
const (
	MinRSABits = 2048
	MaxRSABits = 4096
)

// maxKeyFile bounds what LoadKey reads: a PEM private key is a few KiB.
const maxKeyFile = 64 << 10

// Signer signs rendered messages for one domain and selector. It is safe for
// concurrent use. Printing it never shows the key.
type Signer struct {
	domain   string
	selector string
	key      crypto.Signer
}

// New returns a Signer for domain and selector with the PEM private key in
// keyFile (LoadKey).
func New(keyFile, selector, domain string) (*Signer, error) {
	key, err := LoadKey(keyFile)
	if err != nil {
		return nil, err
	}
	return NewWithKey(key, selector, domain)
}

// NewWithKey returns a Signer with a key already loaded (CheckKey applies).
func NewWithKey(key crypto.Signer, selector, domain string) (*Signer, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if err := CheckSelector(selector); err != nil {
		return nil, err
	}
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if err := CheckDomain(domain); err != nil {
		return nil, err
	}
	return &Signer{domain: domain, selector: strings.ToLower(selector), key: key}, nil
}

// LoadKey reads a PEM private key from path: PKCS#1 ("RSA PRIVATE KEY") or
// PKCS#8 ("PRIVATE KEY"), RSA of MinRSABits to MaxRSABits or Ed25519. Its
// errors name the path and what is wrong, never the file's content.
func LoadKey(path string) (crypto.Signer, error) {
	if path == "" {
		return nil, errors.New("no key file given")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %q: %w", path, pathErr(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("cannot read %q: %w", path, pathErr(err))
	case len(b) > maxKeyFile:
		return nil, fmt.Errorf("%q is larger than %d KiB: not a PEM private key", path, maxKeyFile>>10)
	}
	key, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	return key, nil
}

// ParseKey parses a PEM private key (see LoadKey). Its errors never quote
// the input.
func ParseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found: expected a PEM private key (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)")
	}
	if _, encrypted := block.Headers["Proc-Type"]; encrypted || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, errors.New("the private key is encrypted: give an unencrypted PEM key (protect the file instead)")
	}
	var (
		parsed any
		err    error
	)
	switch block.Type {
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key: expected PRIVATE KEY (PKCS#8) or RSA PRIVATE KEY (PKCS#1)", block.Type)
	}
	if err != nil {
		// x509's messages describe the structure, never the key material.
		return nil, fmt.Errorf("the %s block does not parse: %w", block.Type, err)
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T: DKIM needs RSA or Ed25519", parsed)
	}
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

// CheckKey reports whether key can sign DKIM: RSA of MinRSABits to
// MaxRSABits, or Ed25519.
func CheckKey(key crypto.Signer) error {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		bits := k.N.BitLen()
		if bits < MinRSABits {
			return fmt.Errorf("the RSA key has %d bits: DKIM needs at least %d (RFC 8301); generate a new one, e.g. openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048", bits, MinRSABits)
		}
		if bits > MaxRSABits {
			return fmt.Errorf("the RSA key has %d bits: receivers need only verify up to %d (RFC 8301) and the DNS record would be too long; use 2048", bits, MaxRSABits)
		}
		if err := k.Validate(); err != nil {
			return fmt.Errorf("the RSA key is not valid: %w", err)
		}
	case ed25519.PrivateKey:
		if len(k) != ed25519.PrivateKeySize {
			return errors.New("the Ed25519 key has the wrong size")
		}
	case nil:
		return errors.New("no key")
	default:
		return fmt.Errorf("unsupported key type %T: DKIM needs RSA or Ed25519", key)
	}
	return nil
}

// CheckSelector reports whether s is a DKIM selector: one or more DNS labels
// of letters, digits and hyphens.
func CheckSelector(s string) error {
	if s == "" {
		return errors.New("no selector")
	}
	if !validName(s) {
		return fmt.Errorf("selector %q is not dot-separated labels of letters, digits and hyphens", s)
	}
	return nil
}

// CheckDomain reports whether d is a domain name DKIM can sign for (ASCII,
// at least two labels).
func CheckDomain(d string) error {
	if d == "" {
		return errors.New("no domain")
	}
	if !validName(d) || !strings.Contains(d, ".") {
		return fmt.Errorf("domain %q is not a domain name like example.com (an IDN goes as its A-label, xn--…)", d)
	}
	return nil
}

// validName reports whether s is dot-separated labels of [A-Za-z0-9-] (and
// "_"), none empty or longer than 63, none starting or ending with "-".
func validName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Domain returns the signing domain (d=).
func (s *Signer) Domain() string { return s.domain }

// Selector returns the selector (s=).
func (s *Signer) Selector() string { return s.selector }

// RecordName returns the DNS name of the key record,
// <selector>._domainkey.<domain>.
func (s *Signer) RecordName() string { return s.selector + "._domainkey." + s.domain }

// Algorithm returns "rsa" or "ed25519", the k= of the key record.
func (s *Signer) Algorithm() string {
	if _, ok := s.key.(ed25519.PrivateKey); ok {
		return "ed25519"
	}
	return "rsa"
}

// Public returns the public key.
func (s *Signer) Public() crypto.PublicKey { return s.key.Public() }

// Record returns the TXT record to publish at RecordName:
// "v=DKIM1; k=rsa; p=<base64>".
func (s *Signer) Record() string {
	r, _ := Record(s.key.Public()) // CheckKey has accepted the key
	return r
}

// String describes the signer without its key.
func (s *Signer) String() string {
	return "dkim signer d=" + s.domain + " s=" + s.selector + " k=" + s.Algorithm()
}

// GoString is String, so %#v does not print the key either.
func (s *Signer) GoString() string { return s.String() }

// Format prints String for every verb.
func (s *Signer) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// Record returns the DKIM key record (RFC 6376 §3.6.1) of a public key:
// "v=DKIM1; k=rsa; p=…" with the SubjectPublicKeyInfo for RSA, or
// "v=DKIM1; k=ed25519; p=…" with the 32 raw bytes for Ed25519 (RFC 8463).
func Record(pub crypto.PublicKey) (string, error) {
	p, k, err := PublicKeyData(pub)
	if err != nil {
		return "", err
	}
	return "v=DKIM1; k=" + k + "; p=" + p, nil
}

// PublicKeyData returns the p= value (base64) and k= of a public key.
func PublicKeyData(pub crypto.PublicKey) (p, k string, err error) {
	switch key := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(key)
		if err != nil {
			return "", "", err
		}
		return base64.StdEncoding.EncodeToString(der), "rsa", nil
	case ed25519.PublicKey:
		return base64.StdEncoding.EncodeToString(key), "ed25519", nil
	}
	return "", "", fmt.Errorf("unsupported public key type %T", pub)
}

// Sign returns raw, a whole rendered message (RFC 5322, CRLF line endings),
// with a DKIM-Signature field prepended: relaxed/relaxed, SHA-256, over the
// header fields that HeaderKeys lists for it. The rest of raw is returned
// byte for byte.
func (s *Signer) Sign(raw []byte) ([]byte, error) {
	if _, _, ok := bytes.Cut(raw, []byte("\r\n\r\n")); !ok && !bytes.HasSuffix(raw, []byte("\r\n")) {
		return nil, errors.New("dkim: the message has no header section ending in CRLF")
	}
	keys := HeaderKeys(raw)
	if len(keys) == 0 || !strings.EqualFold(keys[0], "From") {
		return nil, errors.New("dkim: the message has no From field")
	}
	signer, err := msgauth.NewSigner(&msgauth.SignOptions{
		Domain:                 s.domain,
		Selector:               s.selector,
		Signer:                 s.key,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
		BodyCanonicalization:   msgauth.CanonicalizationRelaxed,
		HeaderKeys:             keys,
	})
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	if _, err := signer.Write(raw); err != nil {
		_ = signer.Close()
		return nil, fmt.Errorf("dkim: %w", err)
	}
	if err := signer.Close(); err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	sig := signer.Signature()
	out := make([]byte, 0, len(sig)+len(raw))
	out = append(out, sig...)
	return append(out, raw...), nil
}

// HeaderKeys returns the h= list Sign uses for raw: each field of
// SignedHeaders as often as it occurs in raw's header section, and the
// fields of OversignedHeaders once more. A message without From gives a
// list that does not start with From.
func HeaderKeys(raw []byte) []string {
	count := fieldCounts(raw)
	var keys []string
	for _, name := range SignedHeaders {
		n := count[strings.ToLower(name)]
		for _, o := range OversignedHeaders {
			if o == name {
				n++
				break
			}
		}
		if name == "From" && count["from"] == 0 {
			continue // no From: Sign refuses the message
		}
		for range n {
			keys = append(keys, name)
		}
	}
	return keys
}

// fieldCounts returns how many times each header field (by lower-case name)
// occurs in raw's header section.
func fieldCounts(raw []byte) map[string]int {
	head := raw
	if h, _, ok := bytes.Cut(raw, []byte("\r\n\r\n")); ok {
		head = h
	}
	count := map[string]int{}
	for _, line := range strings.Split(string(head), "\r\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue // a continuation line
		}
		if name, _, ok := strings.Cut(line, ":"); ok {
			count[strings.ToLower(strings.TrimRight(name, " \t"))]++
		}
	}
	return count
}

// pathErr returns the cause inside a *fs.PathError, so that a message naming
// the path does not name it twice.
func pathErr(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}
