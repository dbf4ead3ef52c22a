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
