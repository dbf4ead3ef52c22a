package e2e

import (
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestE2EThreeRelaysOneKilled: three relays share the durable consumer; one
// is killed with SIGKILL mid-backlog. The other two finish the work: every
// notification is sent, and duplicates are at most the killed relay's
// in-flight count (MAILRELAY_CONCURRENCY).
func TestE2EThreeRelaysOneKilled(t *testing.T) {
	t.Parallel()
	const perRelay = 4
	s := newStack(t)
	url := s.ns.URL()
	env := s.env("MAILRELAY_CONCURRENCY", strconv.Itoa(perRelay), "MAILRELAY_ACK_WAIT", "3s")
	provisionOnly(t, env)
	ids := publishBacklog(t, url, "x3", backlogSize)

	relays := []*relayProc{startRelay(t, env), startRelay(t, env), startRelay(t, env)}
	for _, r := range relays {
		r.WaitReady(t, readyTimeout)
	}
	at := waitMailsAtLeast(t, s.mp, relays[0], 300, backlogTimeout)
	relays[0].Kill()
	if _, err := relays[0].Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed one relay of three after %d mails", at)

	waitAllSent(t, url, ids, backlogTimeout)
	total, byID := backlogMails(t, s.mp, backlogSize)
	waitConsumerIdle(t, url)
	for _, r := range relays[1:] {
		if r.Exited() {
			t.Errorf("a surviving relay exited:\n%s", r.Output())
		}
		if err := r.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	if len(byID) != backlogSize {
		t.Errorf("%d distinct Message-IDs, want %d", len(byID), backlogSize)
	}
	dups := total - backlogSize
	t.Logf("%d mails for %d notifications: %d duplicates", total, backlogSize, dups)
	if dups > perRelay {
		t.Errorf("%d duplicates, more than the killed relay's %d in flight", dups, perRelay)
	}
}
