package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The shape of the adversarial run of issue 11: a backlog of 3,000 at K = 16,
// the relay killed with SIGKILL twice while it works through it.
const (
	kill9TwiceBacklog     = 3000
	kill9TwiceConcurrency = 16
	kill9TwiceFirstAt     = 500  // mails in Mailpit before the first kill
	kill9TwiceSecondAt    = 1500 // mails in Mailpit before the second kill
	kill9TwiceKills       = 2
	kill9TwiceTimeout     = 4 * time.Minute // the third relay finishes the backlog
)

// TestE2EKill9TwiceMidBacklog: a backlog of 3,000 notifications, all opted
// in; the relay (MAILRELAY_CONCURRENCY=16) is killed with SIGKILL once 500 are
// mailed, restarted, killed again once 1,500 are mailed, and restarted. The
// third relay finishes the work. Counted from Mailpit (mails by Message-ID)
// and from the notify_email_state ledger: nothing is lost, and duplicates are
// at most K per kill (docs/delivery.md, "Duplicates after a crash are
// bounded").
func TestE2EKill9TwiceMidBacklog(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	url := s.ns.URL()
	env := s.env("MAILRELAY_CONCURRENCY", strconv.Itoa(kill9TwiceConcurrency), "MAILRELAY_ACK_WAIT", "3s")
	provisionOnly(t, env)
	ids := publishBacklog(t, url, "k9x2", kill9TwiceBacklog)

	start := time.Now()
	r := startRelay(t, env)
	var killedAt []time.Time // when each killed relay had exited
	for kill, at := range []int{kill9TwiceFirstAt, kill9TwiceSecondAt} {
		seen := waitMailsAtLeast(t, s.mp, r, at, backlogTimeout)
		killed := time.Since(start)
		kill9(t, r)
		killedAt = append(killedAt, time.Now())
		after := s.mp.Count(t)
		t.Logf("kill -9 #%d after %v: %d mails when killed, %d once the relay had exited",
			kill+1, killed.Round(time.Millisecond), seen, after)
		if after >= kill9TwiceBacklog {
			t.Fatalf("kill #%d came after the whole backlog was mailed: the scenario did not interrupt the relay", kill+1)
		}
		r = startRelay(t, env)
	}

	r.WaitReady(t, readyTimeout)
	waitAllSent(t, url, ids, kill9TwiceTimeout)
	elapsed := time.Since(start)
	eventually(t, settleTimeout, func() (bool, string) {
		c := s.mp.Count(t)
		return c >= kill9TwiceBacklog, fmt.Sprintf("mailpit holds %d mails, want at least %d", c, kill9TwiceBacklog)
	})
	msgs := s.mp.Messages(t) // by pages of 250
	total, byID := len(msgs), countByMessageID(msgs)
	// The first copy of a duplicated mail was sent by a relay that was then
	// killed: the earliest copy's arrival in Mailpit says which kill it was.
	firstCopy := map[string]time.Time{}
	for _, m := range msgs {
		if c, ok := firstCopy[m.MessageID]; !ok || m.Created.Before(c) {
			firstCopy[m.MessageID] = m.Created
		}
	}
	waitConsumerIdle(t, url)
	states := ledgerStates(t, url, ids)
	stopClean(t, r, 30*time.Second)

	noMail, dups := 0, 0
	perKill := make([]int, kill9TwiceKills+1) // the last: after both kills
	var dupList []string
	for _, id := range ids {
		n := byID[mailID(id)]
		if n == 0 {
			noMail++
			if noMail <= 10 {
				t.Errorf("%s: no mail", id)
			}
		}
		if n > 1 {
			dups += n - 1
			dupList = append(dupList, fmt.Sprintf("%s×%d", id, n))
			k := 0
			for k < len(killedAt) && !firstCopy[mailID(id)].Before(killedAt[k]) {
				k++
			}
			perKill[k] += n - 1
		}
		delete(byID, mailID(id))
	}
	for mid, n := range byID {
		t.Errorf("%d mail(s) with Message-ID %s, which is no notification of the backlog", n, mid)
	}
	notSent := len(ids) - states["sent"]
	slices.Sort(dupList)
	t.Logf("kill -9 twice at K=%d: %d notifications, %d mails in %v; duplicates %d (bound %d; %d after kill 1, %d after kill 2): %s; losses %d (%d without a mail, %d not recorded sent); ledger %v",
		kill9TwiceConcurrency, len(ids), total, elapsed.Round(time.Millisecond),
		dups, kill9TwiceKills*kill9TwiceConcurrency, perKill[0], perKill[1], strings.Join(dupList, " "),
		noMail+notSent, noMail, notSent, states)
	if noMail != 0 || notSent != 0 {
		t.Errorf("%d notifications lost (%d without a mail, %d not recorded sent; ledger %v), want 0", noMail+notSent, noMail, notSent, states)
	}
	for k, n := range perKill[:kill9TwiceKills] {
		if n > kill9TwiceConcurrency {
			t.Errorf("kill %d: %d duplicate mails first sent by the killed relay, want at most MAILRELAY_CONCURRENCY (%d)", k+1, n, kill9TwiceConcurrency)
		}
	}
	if n := perKill[kill9TwiceKills]; n != 0 {
		t.Errorf("%d duplicate mails first sent by the last relay, which was not killed: no crash explains them", n)
	}
	if bound := kill9TwiceKills * kill9TwiceConcurrency; dups > bound {
		t.Errorf("%d duplicate mails, want at most MAILRELAY_CONCURRENCY per kill (%d×%d = %d): %v",
			dups, kill9TwiceKills, kill9TwiceConcurrency, bound, dupList)
	}
}

// kill9 ends the relay this test started with SIGKILL and checks that it died
// of it (and not of something else before).
func kill9(t *testing.T, r *relayProc) {
	t.Helper()
	if r.Exited() {
		t.Fatalf("mailrelay exited before it was killed: %s", r.proc.exitDescription())
	}
	r.Kill()
	st, err := r.Wait(time.Minute)
	if err != nil {
		t.Fatalf("after SIGKILL: %v", err)
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("after SIGKILL: %s", st)
	}
}
