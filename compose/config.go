package compose

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

// Snippet bounds, in runes.
const (
	// DefaultSnippetMax is the snippet length used when Config.SnippetMax is 0.
	DefaultSnippetMax = 280
	// MaxSnippetMax is the largest snippet length; larger values are clamped.
	MaxSnippetMax = 500
)

// Config is what Compose needs from the relay's configuration. It is passed
// by value to Compose, or checked and prepared once by New for a Composer;
// build it once at start-up and call Validate.
type Config struct {
	// From is DEFAULT_FROM_EMAIL parsed; Name is optional. Its domain names
	// the Message-ID, the thread id and the default List-Id.
	From Address
	// BaseURL is FRONTEND_BASE_URL, "" when unset: an absolute http(s) URL
	// of the web app, with or without a trailing "/". When set, the body
	// carries the deep link and the footer the settings URL, and, without
	// OneClick, List-Unsubscribe points at the settings page (never with
	// List-Unsubscribe-Post: a login page cannot honour a one-click POST).
	BaseURL string
	// OneClick makes the one-click unsubscribe URL of each mail (the
	// relay's public listener with a signed token); nil when one-click is
	// off. With it, List-Unsubscribe carries that https URL and
	// List-Unsubscribe-Post goes with it (RFC 8058, contract §9.4), and the
	// footer offers it as UnsubscribeURL.
	OneClick OneClick
	// ListID overrides the List-Id value; "" derives it from the From
	// domain ("mailrelay notifications <notifications.DOMAIN>"). A value
	// holding "<…>" is used whole; otherwise it is the list identifier.
	ListID string
	// SnippetMax bounds comment and mention snippets, in runes: 0 means
	// DefaultSnippetMax, values over MaxSnippetMax are clamped to it.
	SnippetMax int
	// Templates holds the parsed wording; nil means the built-in templates.
	Templates *Templates
	// HTML adds an HTML alternative part to every mail (MAILRELAY_HTML).
	HTML bool
	// ProductName is the product's name (MAILRELAY_PRODUCT_NAME): the
	// description of the default List-Id and the name in the HTML part;
	// "" means the From display name.
	ProductName string
}

// OneClick makes one-click unsubscribe URLs (RFC 8058). It must be pure:
// the same arguments always give the same URL. The relay's
// unsubscribe.Signer is one.
type OneClick interface {
	// OneClickURL returns the https URL that turns Email off for user and
	// t, its page in the language of locale (a BCP 47 tag, "" when
	// unknown); "" when it has none.
	OneClickURL(user string, t event.Type, locale string) string
}

// Validate reports every problem of c at once (errors joined, each wrapping
// ErrConfig). The From address and the base URL are checked with
// headers.CheckFrom and headers.CheckBaseURL, the rules the relay applies
// to DEFAULT_FROM_EMAIL and FRONTEND_BASE_URL; Compose and New apply the
// same two checks, Validate adds those of ListID and SnippetMax.
func (c Config) Validate() error {
	var errs []error
	if err := checkFrom(c.From.Email); err != nil {
		errs = append(errs, err)
	}
	if err := checkBaseURL(c.BaseURL); err != nil {
		errs = append(errs, err)
	}
	if c.ListID != "" && headers.Sanitize(c.ListID, 0) != c.ListID {
		errs = append(errs, fmt.Errorf("%w: list id %q holds control characters or stray spaces", ErrConfig, c.ListID))
	}
	if c.ProductName != "" && headers.Sanitize(c.ProductName, 0) != c.ProductName {
		errs = append(errs, fmt.Errorf("%w: product name %q holds control characters or stray spaces", ErrConfig, c.ProductName))
	}
	if c.SnippetMax < 0 {
		errs = append(errs, fmt.Errorf("%w: snippet max %d is negative", ErrConfig, c.SnippetMax))
	}
	return errors.Join(errs...)
}

// settings is a Config after the From and base-URL checks, with derived
// values.
type settings struct {
	from       Address
	domain     string
	base       string // no trailing "/"
	listID     string
	unsub      string   // List-Unsubscribe of the settings page, "" for none
	oneClick   OneClick // nil: no one-click
	snippetMax int
	templates  *Templates
	html       bool
	product    string
}

// normalize runs the checks that keep headers well-formed whatever the
// config holds, and derives what Compose needs.
func (c Config) normalize() (settings, error) {
	if err := checkFrom(c.From.Email); err != nil {
		return settings{}, err
	}
	s := settings{
		from:       Address{Name: headers.Sanitize(c.From.Name, maxNameRunes), Email: c.From.Email},
		domain:     headers.Domain(c.From.Email),
		snippetMax: c.SnippetMax,
		templates:  c.Templates,
		html:       c.HTML,
		product:    headers.Sanitize(c.ProductName, maxNameRunes),
	}
	if s.product == "" {
		s.product = s.from.Name
	}
	if err := checkBaseURL(c.BaseURL); err != nil {
		return settings{}, err
	}
	if c.BaseURL != "" {
		s.base = strings.TrimRight(c.BaseURL, "/")
		s.unsub = headers.ListUnsubscribe(s.base)
	}
	s.oneClick = c.OneClick
	s.listID = headers.ListIDFor(c.ListID, s.product, s.domain)
	switch {
	case s.snippetMax <= 0:
		s.snippetMax = DefaultSnippetMax
	case s.snippetMax > MaxSnippetMax:
		s.snippetMax = MaxSnippetMax
	}
	return s, nil
}

// checkFrom applies headers.CheckFrom, as an ErrConfig.
func checkFrom(email string) error {
	if err := headers.CheckFrom(email); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// checkBaseURL applies headers.CheckBaseURL to a set base URL, as an
// ErrConfig; "" (no links) passes.
func checkBaseURL(base string) error {
	if base == "" {
		return nil
	}
	if err := headers.CheckBaseURL(base); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}
