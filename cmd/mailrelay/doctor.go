package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/doctor"
)

// doctorCmd is `mailrelay doctor`: the From domain's DNS as receivers see
// it (internal/doctor).
type doctorCmd struct {
	Resolver string        `help:"DNS server to ask, host:port (default: the first nameserver of /etc/resolv.conf)." placeholder:"HOST:PORT"`
	JSON     bool          `name:"json" help:"Print the report as JSON."`
	Timeout  time.Duration `default:"5s" help:"Timeout of each DNS query."`
}

func (c doctorCmd) Run(ctx context.Context, a *app) error {
	server := c.Resolver
	if server == "" {
		server = doctor.DefaultServer()
	}
	if _, _, err := net.SplitHostPort(server); err != nil {
		return usageError{fmt.Errorf("--resolver %q is not host:port", c.Resolver)}
	}
	opts, err := doctorOptions(a.cfg)
	if err != nil {
		return err
	}
	opts.Resolver = &doctor.Resolver{Server: server, Timeout: c.Timeout}
	rep, err := doctor.Run(ctx, opts)
	if err != nil {
		return err
	}
	if c.JSON {
		err = rep.WriteJSON(a.stdout)
	} else {
		err = rep.WriteText(a.stdout)
	}
	if err != nil {
		return err
	}
	if rep.Failed {
		_, _, f := rep.Counts()
		return fmt.Errorf("doctor: %d check(s) failed; publish the records shown and run it again", f)
	}
	return nil
}

// doctorOptions reads what doctor checks from the configuration: the From
// address, EMAIL_HOST (smtp backend only), the DKIM key and one-click.
func doctorOptions(cfg *config.Config) (doctor.Options, error) {
	_, from := cfg.FromAddress()
	opts := doctor.Options{From: from}
	if cfg.Mode() == config.ModeSMTP {
		opts.SMTPHost = cfg.Email.Host
	}
	s, err := cfg.DKIMKeySigner()
	if err != nil {
		return opts, err
	}
	if s != nil {
		opts.DKIM = &doctor.DKIMKey{Selector: s.Selector(), Domain: s.Domain(), Public: s.Public()}
	}
	opts.OneClick = &doctor.OneClick{PublicURL: cfg.HTTP.PublicURL, KeysSet: cfg.HTTP.UnsubscribeKeys.IsSet()}
	return opts, nil
}
