package config

import (
	"fmt"
	"strconv"
)

// Secret holds a password or token. Every way of printing, logging or
// marshalling it yields "[redacted]" ("[unset]" when it is empty); Reveal is
// the only way to read the value.
//
// Secret implements fmt.Formatter, so no verb (%v, %+v, %#v, %s, %q, %x, …)
// and no struct that contains it can print the value; zap logs it through
// fmt.Stringer and encoding/json through MarshalJSON.
type Secret struct {
	value string
}

// The texts a Secret shows instead of its value.
const (
	redacted = "[redacted]"
	unset    = "[unset]"
)

// NewSecret wraps value as a Secret.
func NewSecret(value string) Secret { return Secret{value: value} }

// Reveal returns the value. Call it only where the value is used (an SMTP
// AUTH, a NATS connect, a token comparison), never to log or display it.
func (s Secret) Reveal() string { return s.value }

// IsSet reports whether the secret holds a non-empty value.
func (s Secret) IsSet() bool { return s.value != "" }

// String returns "[redacted]", or "[unset]" when the secret is empty.
func (s Secret) String() string {
	if s.value == "" {
		return unset
	}
	return redacted
}

// GoString returns the same text as String, so %#v does not print the value.
func (s Secret) GoString() string { return s.String() }

// Format prints String for every verb; %q quotes it.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = f.Write([]byte(strconv.Quote(s.String())))
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// MarshalText returns String, so text and JSON encoders never see the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalJSON returns String as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }

// UnmarshalText sets the value from text (the environment parser uses it).
func (s *Secret) UnmarshalText(text []byte) error {
	s.value = string(text)
	return nil
}
