package metrics

import (
	"testing"
)

// TestFamiliesExportedFromStart: every mailrelay metric family is exported
// by a fresh registry, before anything happened, so dashboards and alerts
// see zeros rather than nothing.
func TestFamiliesExportedFromStart(t *testing.T) {
	m := New("test")
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range fams {
		have[f.GetName()] = true
	}
	for _, name := range []string{
		"mailrelay_notifications_total", "mailrelay_decisions_total", "mailrelay_smtp_send_seconds",
		"mailrelay_smtp_errors_total", "mailrelay_in_flight", "mailrelay_retries_total",
		"mailrelay_advisories_total", "mailrelay_ledger_write_failures_total", "mailrelay_consumer_pending", "mailrelay_consumer_ack_pending",
		"mailrelay_consumer_redelivered", "mailrelay_build_info",
	} {
		if !have[name] {
			t.Errorf("%s is not exported by a fresh registry", name)
		}
	}
}
