package policy

import (
	"errors"
	"testing"

	"github.com/mailrelay/mailrelay/internal/transport"
)

// TestIsSlowDown moved here from the consumer with policy.SlowDown.
func TestIsSlowDown(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"421", &transport.Error{Temporary: true, Code: 421}, true},
		{"454", &transport.Error{Temporary: true, Code: 454, Enhanced: "4.7.0"}, true},
		{"451 4.7.1 rate limited", &transport.Error{Temporary: true, Code: 451, Enhanced: "4.7.1"}, true},
		{"451 4.3.0 local error", &transport.Error{Temporary: true, Code: 451, Enhanced: "4.3.0"}, false},
		{"450 mailbox busy", &transport.Error{Temporary: true, Code: 450}, false},
		{"550", &transport.Error{Code: 550}, false},
		{"not a transport error", errors.New("x"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := SlowDown(tc.err); got != tc.want {
				t.Fatalf("SlowDown = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRecipientRejected: which permanent failures suppress the address.
func TestRecipientRejected(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"550 at RCPT", &transport.Error{Code: 550, Step: transport.StepRcpt}, true},
		{"550 5.1.1 at RCPT", &transport.Error{Code: 550, Enhanced: "5.1.1", Step: transport.StepRcpt}, true},
		{"553 5.1.3 at RCPT", &transport.Error{Code: 553, Enhanced: "5.1.3", Step: transport.StepRcpt}, true},
		{"550 5.1.1 after DATA", &transport.Error{Code: 550, Enhanced: "5.1.1", Step: transport.StepData}, true},
		{"554 5.7.1 at RCPT (policy)", &transport.Error{Code: 554, Enhanced: "5.7.1", Step: transport.StepRcpt}, false},
		{"552 5.3.4 at RCPT (size)", &transport.Error{Code: 552, Enhanced: "5.3.4", Step: transport.StepRcpt}, false},
		{"501 5.5.2 at RCPT (syntax)", &transport.Error{Code: 501, Enhanced: "5.5.2", Step: transport.StepRcpt}, false},
		{"553 5.1.7 (the sender)", &transport.Error{Code: 553, Enhanced: "5.1.7", Step: transport.StepMail}, false},
		{"550 after DATA without 5.1.x", &transport.Error{Code: 550, Enhanced: "5.7.1", Step: transport.StepData}, false},
		{"550 at MAIL", &transport.Error{Code: 550, Step: transport.StepMail}, false},
		{"450 at RCPT (temporary)", &transport.Error{Temporary: true, Code: 450, Step: transport.StepRcpt}, false},
		{"not a transport error", errors.New("x"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := RecipientRejected(tc.err); got != tc.want {
				t.Fatalf("RecipientRejected = %v, want %v", got, tc.want)
			}
		})
	}
}
