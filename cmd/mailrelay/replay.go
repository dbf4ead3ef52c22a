package main

import (
	"context"
	"fmt"
	"time"

	"github.com/mailrelay/mailrelay/internal/provision"
	"github.com/mailrelay/mailrelay/internal/replay"
	"github.com/mailrelay/mailrelay/internal/state"
)

type replayCmd struct {
	State  string        `default:"inbox_only" enum:"inbox_only,skipped_not_configured" help:"Which notifications to re-drive: inbox_only or skipped_not_configured."`
	Since  time.Duration `help:"Only those whose state was recorded within this long (e.g. 2h); default: all."`
	User   string        `help:"Only this recipient (user id)."`
	DryRun bool          `name:"dry-run" help:"Print what would be replayed and change nothing."`
}

// replay re-drives notifications that fell back to the inbox once the cause
// is fixed. The running relays do the sending: preferences and staleness
// still apply, and a notification that is sent is never selected.
func (a *app) replay(ctx context.Context, c replayCmd) error {
	nc, js, err := a.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	stream, err := js.Stream(ctx, provision.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", provision.Stream, err)
	}
	ledger, err := a.bucket(ctx, js, state.Bucket)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	plan, err := replay.Plan(ctx, stream, ledger, replay.Filter{State: state.State(c.State), Since: c.Since, User: c.User,
		MaxEventBytes: a.cfg.Relay.MaxEventBytes}, now)
	if err != nil {
		return err
	}
	todo := 0
	for _, p := range plan {
		if p.Skip != "" {
			fmt.Fprintf(a.stdout, "skip    %s (%s, user %s): %s\n", p.ID, p.Record.Type, p.Record.Recipient, p.Skip)
			continue
		}
		todo++
		fmt.Fprintf(a.stdout, "replay  %s (%s, user %s, %s since %s, %d attempts: %s)\n", p.ID, p.Record.Type,
			p.Record.Recipient, p.Record.State, p.Record.UpdatedAt.Format(time.RFC3339), p.Record.Attempts, p.Record.Error)
	}
	if c.DryRun {
		fmt.Fprintf(a.stdout, "dry run: %d to replay, %d skipped; nothing changed\n", todo, len(plan)-todo)
		return nil
	}
	done, failed := 0, 0
	for _, r := range replay.Run(ctx, js, ledger, plan, now) {
		switch {
		case r.Replayed:
			done++
			fmt.Fprintf(a.stdout, "replayed %s as stream sequence %d\n", r.ID, r.Seq)
		case r.Why != "":
			failed++
			fmt.Fprintf(a.stdout, "not replayed %s: %s\n", r.ID, r.Why)
		}
	}
	fmt.Fprintf(a.stdout, "replayed %d, not replayed %d\n", done, failed)
	return nil
}
