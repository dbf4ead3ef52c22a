package main

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/unsubscribe"
)

// unsubscribeURLCmd prints the one-click URL a mail to user about type
// carries (support, tests). It needs no NATS: the URL is signed locally.
type unsubscribeURLCmd struct {
	User   string `arg:"" help:"User id."`
	Type   string `arg:"" help:"Event type, one of ${types}."`
	Locale string `help:"The mail's language (a BCP 47 tag such as de); the page speaks it when it can."`
}

func (c unsubscribeURLCmd) Run(a *app) error {
	if !event.ValidID(c.User) {
		return usageError{event.CheckID(fmt.Sprintf("user id %q", c.User), c.User)}
	}
	t := event.Type(c.Type)
	if !t.Valid() {
		names := typeNames()
		sort.Strings(names)
		return usageError{fmt.Errorf("unknown type %q (one of %s)", c.Type, strings.Join(names, ", "))}
	}
	if a.cfg.UnsubscribeMode() != config.UnsubscribeOneClick {
		return errors.New("one-click unsubscribe is off: set MAILRELAY_PUBLIC_URL (https) and MAILRELAY_UNSUBSCRIBE_KEYS (or _FILE)")
	}
	s, err := unsubscribe.NewSigner(a.cfg.HTTP.PublicURL, a.cfg.UnsubscribeKeyList())
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, s.OneClickURL(c.User, t, c.Locale))
	return nil
}
