package e2e

// Nothing lost before the first relay: `mailrelay provision` creates the
// stream, consumers and buckets, so a JetStream publish made before any
// relay ever ran is stored and mailed once one starts.

import (
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
)

// TestE2EProvisionBeforeFirstRelay: on a fresh server a JetStream publish
// (`nats pub --jetstream`) fails (nothing captures notify.>) and a core
// publish "succeeds" but stores nothing; after `mailrelay provision` (and
// before any `mailrelay serve`) a JetStream publish is stored, and the first
// relay to start mails it, once. The core publish is never mailed.
func TestE2EProvisionBeforeFirstRelay(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	env := s.env()
	url := s.ns.URL()

	// Before provisioning: the JetStream publish fails and says so ...
	early := newEvent("prov-early", event.TaskAssigned, "u42", "ann@example.com", "Ann Lee")
	_, stderr, err := runNATSCLI(t, url, encodeEvent(t, early),
		"pub", "--jetstream", "--no-templates", "--force-stdin", early.Type.Subject(), "-H", "Nats-Msg-Id:"+early.ID)
	if err == nil {
		t.Fatalf("nats pub --jetstream before provisioning succeeded:\n%s", stderr)
	}
	if !strings.Contains(stderr, "no responders") {
		t.Errorf("nats pub --jetstream before provisioning: %v; want it to say no stream answered (no responders)", err)
	}
	t.Logf("JetStream publish before provisioning: %v", err)
	// ... while a core publish reports nothing and is lost.
	lost := newEvent("prov-core", event.TaskAssigned, "u42", "ann@example.com", "Ann Lee")
	if _, _, err := runNATSCLI(t, url, encodeEvent(t, lost), "pub", "--no-templates", "--force-stdin", lost.Type.Subject()); err != nil {
		t.Fatalf("core nats pub: %v", err)
	}
	// and mailrelay publish points at the fix.
	if res := runMailrelay(t, env, encodeEvent(t, early), "publish"); res.ExitCode != 1 || !strings.Contains(res.Stderr, "mailrelay provision") {
		t.Errorf("mailrelay publish before provisioning: %+v, want exit 1 naming `mailrelay provision`", res)
	}

	// Provision, with no relay running.
	res := runMailrelay(t, env, "", "provision")
	if res.ExitCode != 0 {
		t.Fatalf("mailrelay provision: %+v", res)
	}
	t.Logf("mailrelay provision:\n%s", res.Stdout)
	for _, want := range []string{"NOTIFY", "mailrelay on NOTIFY", "NOTIFY_ADVISORIES", "notify_prefs", "notify_email_state"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("provision output lacks %q", want)
		}
	}
	if si := streamInfo(t, url, "NOTIFY"); si.State.Msgs != 0 {
		t.Fatalf("NOTIFY holds %d messages after provisioning; the core publish should be gone", si.State.Msgs)
	}
	// Running it again is harmless.
	if res := runMailrelay(t, env, "", "provision"); res.ExitCode != 0 {
		t.Fatalf("second mailrelay provision: %+v", res)
	}

	// The web app opts the user in and the service publishes, both before
	// any relay ran: the JetStream publish is acknowledged by NOTIFY.
	prefsPut(t, url, "u42", `{"email":{"task.assigned":true}}`)
	ack := pubEvent(t, url, early)
	if ack.Seq != 1 {
		t.Errorf("early notification stored as sequence %d, want 1", ack.Seq)
	}
	if _, found := kvGet(t, url, "notify_email_state", early.ID); found {
		t.Fatal("a ledger record exists before any relay ran")
	}

	// The first relay mails it, once.
	r := startReadyRelay(t, env)
	waitState(t, url, early.ID, "sent", settleTimeout)
	mails := s.mp.WaitForCount(t, 1, settleTimeout)
	if len(mails) != 1 || mails[0].MessageID != mailID(early.ID) || len(mails[0].To) != 1 || mails[0].To[0].Address != "ann@example.com" {
		t.Fatalf("mails: %+v, want one for %s to ann@example.com", mails, early.ID)
	}
	consistently(t, 2*time.Second, func() (bool, string) {
		n := s.mp.Count(t)
		return n == 1, "mailpit holds " + itoa(n) + " mails, want 1"
	})
	requireNoMail(t, s.mp, lost.ID)
	stopClean(t, r, 30*time.Second)
}
