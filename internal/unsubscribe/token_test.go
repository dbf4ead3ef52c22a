package unsubscribe

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/mailrelay/mailrelay/event"
)

const (
	keyA = "first-secret-key-0123456789abcdef"
	keyB = "second-secret-key-0123456789abcde"
	keyC = "third-secret-key-0123456789abcdef"
)

func mustSigner(t *testing.T, base string, keys ...string) *Signer {
	t.Helper()
	s, err := NewSigner(base, keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTokenRoundTrip(t *testing.T) {
	s := mustSigner(t, "https://relay.example.com/", keyA)
	for _, c := range []Claim{
		{User: "u42", Type: event.TaskComment, Lang: "de"},
		{User: "12345", Type: event.Mention},
		{User: strings.Repeat("x", 100), Type: event.TaskDateChanged, Lang: "en"},
	} {
		tok := s.Token(c)
		got, err := s.Verify(tok)
		if err != nil || got != c {
			t.Errorf("Verify(Token(%+v)) = %+v, %v", c, got, err)
		}
		if again := s.Token(c); again != tok {
			t.Errorf("Token is not deterministic: %q then %q", tok, again)
		}
		if u := s.URL(c); u != "https://relay.example.com/u/"+tok {
			t.Errorf("URL = %q", u)
		}
	}
}

// TestTokenRevealsNothing: neither the user id nor the type can be read
// from the token, in base64 or decoded.
func TestTokenRevealsNothing(t *testing.T) {
	s := mustSigner(t, "", keyA)
	c := Claim{User: "user-4711-visible", Type: event.TaskComment, Lang: "de"}
	tok := s.Token(c)
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{c.User, "4711", string(c.Type), "comment"} {
		if strings.Contains(tok, secret) || strings.Contains(string(raw), secret) {
			t.Errorf("token %q reveals %q", tok, secret)
		}
	}
	// Two users of the same length differ in more than the bytes of the id.
	other := s.Token(Claim{User: "user-4712-visible", Type: event.TaskComment, Lang: "de"})
	if tok[:12] == other[:12] {
		t.Errorf("tokens of different users share their head: %q, %q", tok, other)
	}
}

func TestTokenRejects(t *testing.T) {
	s := mustSigner(t, "", keyA)
	c := Claim{User: "u42", Type: event.TaskAssigned}
	tok := s.Token(c)
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x01
		return base64.RawURLEncoding.EncodeToString(b)
	}
	// A token whose MAC is right but whose payload names no valid type.
	bogus := s.Token(Claim{User: "u42", Type: "no.such.type"})

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"empty", "", ErrMalformed},
		{"truncated by one char", tok[:len(tok)-1], ErrMalformed},
		{"truncated to the head", tok[:20], ErrMalformed},
		{"truncated by one byte", base64.RawURLEncoding.EncodeToString(raw[:len(raw)-1]), ErrForged},
		{"padding", tok + "=", ErrMalformed},
		{"not base64", "!!!!" + tok[4:], ErrMalformed},
		{"other version", flip(0), ErrMalformed},
		{"key id changed", flip(2), ErrUnknownKey},
		{"tag changed", flip(10), ErrForged},
		{"ciphertext changed", flip(len(raw) - 1), ErrForged},
		{"forged with another key", mustSigner(t, "", keyC).Token(c), ErrUnknownKey},
		{"unknown type", bogus, ErrMalformed},
		{"huge", strings.Repeat("A", 5000), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Verify(tt.token)
			if !errors.Is(err, tt.want) {
				t.Errorf("Verify = %+v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// TestKeyRotation: the first key signs; a token stays valid while its key
// is configured, in any position, and stops when the key goes.
func TestKeyRotation(t *testing.T) {
	c := Claim{User: "u1", Type: event.Mention, Lang: "en"}
	old := mustSigner(t, "", keyA).Token(c)

	rotated := mustSigner(t, "", keyB, keyA) // B signs now, A still verifies
	if got, err := rotated.Verify(old); err != nil || got != c {
		t.Errorf("old token after rotation: %+v, %v", got, err)
	}
	fresh := rotated.Token(c)
	if fresh == old {
		t.Error("the new first key does not sign")
	}
	if got, err := mustSigner(t, "", keyA, keyB).Verify(fresh); err != nil || got != c {
		t.Errorf("new token with the key second: %+v, %v", got, err)
	}
	retired := mustSigner(t, "", keyB)
	if _, err := retired.Verify(old); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("token of a removed key: %v, want ErrUnknownKey", err)
	}
	if _, err := retired.Verify(fresh); err != nil {
		t.Errorf("token of the remaining key: %v", err)
	}
}

func TestNewSignerAndParseKeys(t *testing.T) {
	if _, err := NewSigner("http://relay.example.com", []string{keyA}); err == nil {
		t.Error("an http public URL is accepted")
	}
	if _, err := NewSigner("", []string{"short"}); err == nil {
		t.Error("a short key is accepted")
	}
	if _, err := NewSigner("", nil); err == nil {
		t.Error("no key is accepted")
	}
	keys, err := ParseKeys(" " + keyA + " ,\n" + keyB + "\n")
	if err != nil || len(keys) != 2 || keys[0] != keyA || keys[1] != keyB {
		t.Errorf("ParseKeys = %q, %v", keys, err)
	}
	for _, bad := range []string{"", " , ", keyA + ",tooshort"} {
		_, err := ParseKeys(bad)
		if err == nil {
			t.Errorf("ParseKeys(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "tooshort") || strings.Contains(err.Error(), keyA) {
			t.Errorf("ParseKeys error shows a key: %v", err)
		}
	}
}

func TestOneClickURLLanguage(t *testing.T) {
	s := mustSigner(t, "https://relay.example.com", keyA)
	for locale, want := range map[string]string{"de-AT": "de", "DE": "de", "en-GB": "en", "fr": "", "": ""} {
		u := s.OneClickURL("u1", event.TaskAssigned, locale)
		c, err := s.Verify(strings.TrimPrefix(u, "https://relay.example.com/u/"))
		if err != nil || c.Lang != want {
			t.Errorf("locale %q: %+v, %v; want lang %q", locale, c, err, want)
		}
	}
	if u := mustSigner(t, "", keyA).OneClickURL("u1", event.TaskAssigned, ""); u != "" {
		t.Errorf("no public URL, yet URL %q", u)
	}
}
