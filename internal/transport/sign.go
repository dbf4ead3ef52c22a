package transport

import "fmt"

// Signer adds a signature to a rendered message (internal/dkim.Signer is
// one): it gets the whole message as it would go out (RFC 5322, CRLF) and
// returns the bytes to send instead, the message with its signature field
// prepended. It must be safe for concurrent use.
//
// A backend with a Signer sends exactly the bytes the Signer returned: the
// console and file backends write them, the SMTP backend sends them as the
// message content (SMTP.Send signs right after renderBytes).
type Signer interface {
	Sign(raw []byte) ([]byte, error)
}

// Option configures a Console or File backend (NewConsole, NewFile); the
// SMTP backend takes the same settings in SMTPConfig.
type Option func(*options)

type options struct{ signer Signer }

// WithSigner makes the backend sign every message with s (nil: no signing).
func WithSigner(s Signer) Option { return func(o *options) { o.signer = s } }

func applyOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// signBytes returns data signed by s, or data when s is nil. A signing
// failure is permanent (the same message would fail again), at StepRender.
func signBytes(s Signer, data []byte) ([]byte, error) {
	if s == nil {
		return data, nil
	}
	signed, err := s.Sign(data)
	if err != nil {
		return nil, &Error{Step: StepRender, Err: fmt.Errorf("signing: %w", err)}
	}
	return signed, nil
}
