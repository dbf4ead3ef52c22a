package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailrelay/mailrelay/internal/suppress"
)

// suppressCmd manages notify_suppressed (contract §9.6).
type suppressCmd struct {
	List   suppressListCmd   `cmd:"" help:"List the suppressed addresses, why and since when."`
	Add    suppressAddCmd    `cmd:"" help:"Stop mail to an address: suppress add ADDRESS [--reason TEXT]."`
	Remove suppressRemoveCmd `cmd:"" help:"Let mail flow to an address again."`
}

type suppressListCmd struct {
	JSON bool `help:"Print JSON instead of a table."`
}

type suppressAddCmd struct {
	Address string `arg:"" help:"The address."`
	Reason  string `help:"Why (kept in the entry)." default:"added by an operator"`
}

type suppressRemoveCmd struct {
	Address string `arg:"" help:"The address."`
}

func (c suppressListCmd) Run(ctx context.Context, a *app) error {
	kv, closeConn, err := a.openBucket(ctx, suppress.Bucket)
	if err != nil {
		return err
	}
	defer closeConn()
	list, err := suppress.New(kv).List(ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		if list == nil {
			list = []suppress.Entry{}
		}
		return writeJSON(a.stdout, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(a.stdout, "no suppressed addresses")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tSOURCE\tCODE\tSINCE\tREASON")
	for _, e := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Address, e.Source, e.Code, e.At.UTC().Format(time.RFC3339), oneLine(e.Reason))
	}
	return tw.Flush()
}

func (c suppressAddCmd) Run(ctx context.Context, a *app) error {
	if err := suppress.CheckAddress(c.Address); err != nil {
		return usageError{err}
	}
	kv, closeConn, err := a.openBucket(ctx, suppress.Bucket)
	if err != nil {
		return err
	}
	defer closeConn()
	e := suppress.Entry{Address: strings.TrimSpace(c.Address), Reason: c.Reason, Source: suppress.SourceOperator}
	if err := suppress.New(kv).Add(ctx, e); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "suppressed %s: no mail goes to it until `mailrelay suppress remove`\n", e.Address)
	return nil
}

func (c suppressRemoveCmd) Run(ctx context.Context, a *app) error {
	kv, closeConn, err := a.openBucket(ctx, suppress.Bucket)
	if err != nil {
		return err
	}
	defer closeConn()
	switch err := suppress.New(kv).Remove(ctx, c.Address); {
	case errors.Is(err, suppress.ErrNotFound):
		return fmt.Errorf("%s is not suppressed", c.Address)
	case err != nil:
		return err
	}
	fmt.Fprintf(a.stdout, "removed %s: mail flows to it again\n", c.Address)
	return nil
}

// oneLine keeps a reason on its table row.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
