package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/mailrelay/mailrelay/event"
)

// suppressCLI runs `mailrelay suppress ARGS` against url and returns its
// standard output, failing the test when it fails.
func suppressCLI(t *testing.T, url string, args ...string) string {
	t.Helper()
	cmd := exec.Command(buildMailrelay(t), append([]string{"suppress"}, args...)...)
	cmd.Env = cleanEnv(t.TempDir(), "NATS_URL="+url)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("mailrelay suppress %v: %v\n%s", args, err, stderr)
	}
	return string(out)
}

// TestE2ESuppression: Mailpit rejects the recipient at RCPT with a 550; the
// notification ends inbox_only and the address goes on the suppression list;
// the next notification to it is skipped_suppressed without touching SMTP,
// even with the rejection gone; `mailrelay suppress remove` lets mail flow
// again; an operator can add an address.
func TestE2ESuppression(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	startReadyRelay(t, s.env())
	url := s.ns.URL()
	prefsPut(t, url, "u42", `{"email":{"task.assigned":true}}`)

	s.mp.SetChaos(t, chaosTriggers{Recipient: chaosTrigger{ErrorCode: 550, Probability: 100}})
	pubEvent(t, url, newEvent("sp-550", event.TaskAssigned, "u42", "Gone.User@example.com", ""))
	if st := waitState(t, url, "sp-550", "inbox_only", settleTimeout); st.Attempts != 1 || !strings.Contains(st.Error, "550") {
		t.Errorf("sp-550: %+v, want inbox_only after 1 attempt with the 550", st)
	}
	s.mp.ClearChaos(t)

	var list []struct{ Address, Reason, Code, Source string }
	eventually(t, settleTimeout, func() (bool, string) {
		out := suppressCLI(t, url, "list", "--json")
		list = nil
		_ = json.Unmarshal([]byte(out), &list)
		return len(list) == 1, "suppression list: " + out
	})
	if e := list[0]; e.Address != "Gone.User@example.com" || e.Source != "smtp" || !strings.HasPrefix(e.Code, "550") {
		t.Errorf("entry %+v", e)
	}

	// The address is matched case-insensitively; no SMTP attempt is made.
	pubEvent(t, url, newEvent("sp-next", event.TaskAssigned, "u42", "gone.user@EXAMPLE.com", ""))
	if st := waitState(t, url, "sp-next", "skipped_suppressed", settleTimeout); st.Attempts != 0 {
		t.Errorf("sp-next: %+v, want skipped_suppressed with no attempt", st)
	}
	requireNoMail(t, s.mp, "sp-550", "sp-next")

	out := suppressCLI(t, url, "remove", "gone.user@example.com")
	if !strings.Contains(out, "removed") {
		t.Errorf("remove: %q", out)
	}
	pubEvent(t, url, newEvent("sp-after", event.TaskAssigned, "u42", "gone.user@example.com", ""))
	waitState(t, url, "sp-after", "sent", settleTimeout)

	suppressCLI(t, url, "add", "ops@example.com", "--reason", "asked to stop")
	if out := suppressCLI(t, url, "list"); !strings.Contains(out, "ops@example.com") || !strings.Contains(out, "operator") {
		t.Errorf("list after add: %q", out)
	}
}
