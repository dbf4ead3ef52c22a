package transport_test

// This test imports config, which imports transport: it lives in the
// external test package so that transport itself never imports config.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mailrelay/mailrelay/internal/config"
	"github.com/mailrelay/mailrelay/internal/transport"
)

// testPassword is the password the internal tests use too.
const testPassword = "Tr0ub4dor&3-hunter2"

// config.Load and NewSMTP judge the host and the credentials alike: every
// EMAIL_* combination that loads builds a backend, and every one that does
// not load is refused by NewSMTP too (given as it was typed), so no setup
// passes start-up checks and then fails, or sends without AUTH, later.
func TestNewSMTPAgreesWithConfig(t *testing.T) {
	hosts := []string{"smtp.example.com", "localhost", "127.0.0.1", "::1", "[::1]", "[2001:db8::1]", "[::1", "[smtp.example.com]", "smtp.example.com:25"}
	type creds struct{ user, password string }
	for _, host := range hosts {
		for _, cr := range []creds{{}, {"ann", testPassword}, {"ann", ""}, {"", testPassword}} {
			for _, useTLS := range []string{"false", "true"} {
				for _, insecure := range []string{"false", "true"} {
					env := map[string]string{
						"EMAIL_HOST": host, "EMAIL_USE_TLS": useTLS, "MAILRELAY_SMTP_INSECURE_AUTH": insecure,
						"EMAIL_HOST_USER": cr.user, "EMAIL_HOST_PASSWORD": cr.password,
					}
					name := fmt.Sprintf("host=%s user=%q password=%v tls=%s insecure=%s", host, cr.user, cr.password != "", useTLS, insecure)
					t.Run(name, func(t *testing.T) {
						cfg, loadErr := config.Load(func(k string) string { return env[k] })
						opts := transport.SMTPConfig{
							Host: host, Username: cr.user, Password: cr.password,
							InsecureAuth: insecure == "true", HeloName: "client.test",
						}
						if useTLS == "true" {
							opts.Security = transport.SecurityStartTLS
						}
						if loadErr == nil {
							// What relay.SMTPConfig maps a loaded Config to.
							opts.Host, opts.Username, opts.Password = cfg.Email.Host, cfg.Email.User, cfg.Email.Password.Reveal()
						}
						s, err := transport.NewSMTP(opts, nil)
						if err == nil {
							if loadErr == nil && s.AuthEnabled() != cfg.SMTPAuth().Enabled() {
								t.Errorf("backend AUTH %v, config says %v", s.AuthEnabled(), cfg.SMTPAuth().Enabled())
							}
							_ = s.Close()
						}
						if (loadErr == nil) != (err == nil) {
							t.Errorf("config.Load: %v\nNewSMTP: %v", loadErr, err)
						}
						for _, e := range []error{loadErr, err} {
							if e != nil && strings.Contains(e.Error(), testPassword) {
								t.Errorf("error shows the password: %v", e)
							}
						}
					})
				}
			}
		}
	}
}
