package transport

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/internal/smtptest"
)

// International addresses and the EHLO name (contract §9.4, §9.5).

const (
	idnDomain   = "exämple.com"
	aLabel      = "xn--exmple-cua.com"
	utf8Local   = "jürgen"
	wantUTF8Err = "mail: the recipient address has a non-ASCII local part and the server does not offer SMTPUTF8 (RFC 6531)"
)

// intlMessage is testMessage with non-ASCII wherever a message may hold it
// and an ASCII local part to.
func intlMessage(to string) *compose.Message {
	m := testMessage()
	m.From = compose.Address{Name: "Bücher Bau", Email: "notify@" + idnDomain}
	m.To = compose.Address{Name: "Jürgen Groß", Email: to}
	m.Subject = "Zoë commented on Fundament gießen 基礎工事"
	m.Headers = append(m.Headers, compose.Header{Name: "X-Note", Value: "Grüße"})
	m.Body = "Zoë: Beton kommt später.\n"
	return m
}

// eightBit returns the offset of the first byte >= 0x80 in b, or -1.
func eightBit(b []byte) int {
	return bytes.IndexFunc(b, func(r rune) bool { return r >= 0x80 })
}

func TestASCIIDomain(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  string
	}{
		{in: "example.com", want: "example.com"},
		{in: "Example.COM", want: "Example.COM"}, // ASCII is left alone
		{in: "a_b.example", want: "a_b.example"}, // even what IDNA would refuse
		{in: "[192.0.2.1]", want: "[192.0.2.1]"},
		{in: idnDomain, want: aLabel},
		{in: "EXÄMPLE.com", want: aLabel},     // the lookup profile maps case
		{in: "faß.de", want: "xn--fa-hia.de"}, // IDNA2008, not transitional
		{in: "例え.テスト", want: "xn--r8jz45g.xn--zckzah"},
		{in: "ex_ämple.com", wantErr: "disallowed rune U+005F"},
		{in: "-exämple.com", wantErr: "IDNA2008"},
		{in: "exämple..com", wantErr: "empty label"},
		{in: strings.Repeat("ä", 60) + ".com", wantErr: "over the limit of 63"},
	}
	for _, tc := range tests {
		got, err := ASCIIDomain(tc.in)
		switch {
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("ASCIIDomain(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.in)):
			t.Errorf("ASCIIDomain(%q) = %q, %v; want an error naming it and saying %q", tc.in, got, err, tc.wantErr)
		}
	}
}

// Render writes an IDN domain as its A-label in From and To, and the whole
// message stays 7-bit while the local parts are ASCII.
func TestRenderIDN(t *testing.T) {
	raw := render(t, intlMessage("ann@"+idnDomain))
	if i := eightBit(raw); i >= 0 {
		t.Fatalf("8-bit byte at %d:\n%s", i, raw)
	}
	msg := parse(t, raw)
	for field, want := range map[string]string{"From": "notify@" + aLabel, "To": "ann@" + aLabel} {
		list, err := msg.Header.AddressList(field)
		if err != nil || len(list) != 1 || list[0].Address != want {
			t.Errorf("%s = %q (%v), want the address %s", field, msg.Header.Get(field), err, want)
		}
	}
	if list, _ := msg.Header.AddressList("To"); len(list) == 1 && list[0].Name != "Jürgen Groß" {
		t.Errorf("To display name = %q, want Jürgen Groß (RFC 2047)", list[0].Name)
	}
}

// A domain that IDNA2008 refuses cannot be sent: a permanent render error
// that names the address and says why, before any connection.
func TestSMTPBadIDNIsPermanent(t *testing.T) {
	srv := smtptest.Start(t, smtptest.WithSMTPUTF8())
	s := newSMTP(t, smtpConfig(srv), nil)
	err := s.Send(context.Background(), intlMessage("ann@ex_ämple.com"))
	e := asError(t, err)
	if e.Step != StepRender || !IsPermanent(err) {
		t.Fatalf("err = %v, want a permanent render error", err)
	}
	for _, want := range []string{"ann@ex_ämple.com", "IDNA2008", "U+005F"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q, want it to say %q", err, want)
		}
	}
	if srv.Connections() != 0 {
		t.Error("dialled for an address that cannot be sent")
	}
}

// To a server without SMTPUTF8: the IDN domain goes as its A-label in RCPT
// TO and the To field, MAIL FROM carries no SMTPUTF8, and not one 8-bit
// byte crosses the wire.
func TestSMTPIDNWithoutSMTPUTF8(t *testing.T) {
	srv := smtptest.Start(t)
	s := newSMTP(t, smtpConfig(srv), nil)
	if err := s.Send(context.Background(), intlMessage("ann@"+idnDomain)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := srv.WaitFor(t, 1, wait)[0]
	if got.From != "notify@"+aLabel || !slices.Equal(got.To, []string{"ann@" + aLabel}) || got.SMTPUTF8 {
		t.Errorf("envelope %q -> %q, SMTPUTF8 %v; want notify@%s -> [ann@%s] without SMTPUTF8", got.From, got.To, got.SMTPUTF8, aLabel, aLabel)
	}
	cmds := srv.Commands()
	// go-mail asks for BODY=8BITMIME when offered; the body is
	// quoted-printable all the same.
	if !slices.Contains(cmds, "MAIL FROM:<notify@"+aLabel+"> BODY=8BITMIME") || !slices.Contains(cmds, "RCPT TO:<ann@"+aLabel+">") {
		t.Errorf("commands = %q, want MAIL FROM:<notify@%s> without SMTPUTF8 and RCPT TO:<ann@%s>", cmds, aLabel, aLabel)
	}
	if to := parse(t, got.Data).Header.Get("To"); !strings.HasSuffix(to, "<ann@"+aLabel+">") {
		t.Errorf("To = %q, want the A-label", to)
	}
	if i := eightBit(srv.Received()); i >= 0 {
		t.Errorf("8-bit byte sent at %d to a server without SMTPUTF8:\n%s", i, srv.Received())
	}
}

// To a server with SMTPUTF8: a non-ASCII local part goes, with SMTPUTF8 on
// MAIL FROM, the domain still as its A-label.
func TestSMTPUTF8LocalPartOffered(t *testing.T) {
	srv := smtptest.Start(t, smtptest.WithSMTPUTF8())
	s := newSMTP(t, smtpConfig(srv), nil)
	to := utf8Local + "@" + idnDomain
	if err := s.Send(context.Background(), intlMessage(to)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := srv.WaitFor(t, 1, wait)[0]
	want := utf8Local + "@" + aLabel
	if !got.SMTPUTF8 || !slices.Equal(got.To, []string{want}) {
		t.Errorf("SMTPUTF8 %v, RCPT %q; want true, [%s]", got.SMTPUTF8, got.To, want)
	}
	cmds := srv.Commands()
	i := slices.IndexFunc(cmds, func(c string) bool { return strings.HasPrefix(c, "MAIL FROM:") })
	if i < 0 || !strings.Contains(cmds[i], " SMTPUTF8") || !slices.Contains(cmds, "RCPT TO:<"+want+">") {
		t.Errorf("commands = %q, want MAIL FROM with SMTPUTF8 and RCPT TO:<%s>", cmds, want)
	}
	list, err := parse(t, got.Data).Header.AddressList("To")
	if err != nil || len(list) != 1 || list[0].Address != want {
		t.Errorf("To = %v (%v), want %s", list, err, want)
	}
}

// To a server without SMTPUTF8: a non-ASCII local part ends the send at
// once, permanently, naming why, with nothing sent (no MAIL, no RCPT); the
// connection stays usable for the next message.
func TestSMTPUTF8LocalPartNotOffered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(*compose.Message)
		wantErr string
	}{
		{name: "recipient", mutate: func(m *compose.Message) { m.To.Email = utf8Local + "@" + idnDomain }, wantErr: wantUTF8Err},
		{name: "recipient with ASCII domain", mutate: func(m *compose.Message) { m.To.Email = utf8Local + "@example.com" }, wantErr: wantUTF8Err},
		{
			name:    "sender",
			mutate:  func(m *compose.Message) { m.From.Email = "zoë@example.com" },
			wantErr: "mail: the sender address (DEFAULT_FROM_EMAIL) has a non-ASCII local part and the server does not offer SMTPUTF8 (RFC 6531)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := smtptest.Start(t)
			s := newSMTP(t, smtpConfig(srv), nil)
			m := intlMessage("ann@example.com")
			tc.mutate(m)
			err := s.Send(context.Background(), m)
			e := asError(t, err)
			if e.Temporary || e.Step != StepMail || !errors.Is(err, ErrNoSMTPUTF8) || err.Error() != tc.wantErr {
				t.Fatalf("err = %q (temporary %v, step %s), want permanent %q", err, e.Temporary, e.Step, tc.wantErr)
			}
			for _, c := range srv.Commands() {
				if verb, _, _ := strings.Cut(c, " "); verb != "EHLO" {
					t.Errorf("sent %q; want nothing but EHLO", c)
				}
			}
			if srv.Count() != 0 || eightBit(srv.Received()) >= 0 {
				t.Errorf("accepted %d, received %q; want nothing", srv.Count(), srv.Received())
			}

			// The session was left clean: the next message uses it.
			send(t, s)
			srv.WaitFor(t, 1, wait)
			if n := srv.Connections(); n != 1 {
				t.Errorf("%d connections, want the one reused", n)
			}
		})
	}
}

// The decision is the connection's: the same backend sends the message once
// its server offers SMTPUTF8 (after a restart), on a new connection.
func TestSMTPUTF8DecidedPerConnection(t *testing.T) {
	plain := smtptest.Start(t)
	utf8 := smtptest.Start(t, smtptest.WithSMTPUTF8())
	m := intlMessage(utf8Local + "@" + idnDomain)
	if err := newSMTP(t, smtpConfig(plain), nil).Send(context.Background(), m); !errors.Is(err, ErrNoSMTPUTF8) {
		t.Fatalf("to the server without SMTPUTF8: %v, want ErrNoSMTPUTF8", err)
	}
	if err := newSMTP(t, smtpConfig(utf8), nil).Send(context.Background(), m); err != nil {
		t.Fatalf("to the server with SMTPUTF8: %v", err)
	}
	if plain.Count() != 0 || utf8.Count() != 1 {
		t.Errorf("accepted %d and %d, want 0 and 1", plain.Count(), utf8.Count())
	}
}

func TestSMTPHeloName(t *testing.T) {
	t.Run("configured", func(t *testing.T) {
		srv := smtptest.Start(t)
		cfg := smtpConfig(srv)
		cfg.HeloName = "mx-out.example.org"
		send(t, newSMTP(t, cfg, nil))
		if got := srv.WaitFor(t, 1, wait)[0].Helo; got != "mx-out.example.org" {
			t.Errorf("EHLO %q, want mx-out.example.org", got)
		}
		if cmds := srv.Commands(); len(cmds) == 0 || cmds[0] != "EHLO mx-out.example.org" {
			t.Errorf("commands = %q, want EHLO mx-out.example.org first", cmds)
		}
	})
	t.Run("address literal", func(t *testing.T) {
		srv := smtptest.Start(t)
		cfg := smtpConfig(srv)
		cfg.HeloName = "192.0.2.7"
		send(t, newSMTP(t, cfg, nil))
		if got := srv.WaitFor(t, 1, wait)[0].Helo; got != "[192.0.2.7]" {
			t.Errorf("EHLO %q, want [192.0.2.7]", got)
		}
	})
	t.Run("default", func(t *testing.T) {
		srv := smtptest.Start(t)
		cfg := smtpConfig(srv)
		cfg.HeloName = ""
		send(t, newSMTP(t, cfg, nil))
		got := srv.WaitFor(t, 1, wait)[0].Helo
		if got == "" || got != DefaultHeloName() {
			t.Fatalf("EHLO %q, want DefaultHeloName() %q", got, DefaultHeloName())
		}
		if h, _ := os.Hostname(); h != "" && !isLocalhost(h) && isLocalhost(got) {
			t.Errorf("EHLO %q although the host is named %q", got, h)
		}
		if _, ok := NormalizeHeloName(got); !ok && !strings.Contains(got, "_") {
			t.Errorf("default EHLO name %q is not a host name", got)
		}
		t.Logf("default EHLO name: %s", got)
	})
}

func TestNormalizeHeloName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mail.example.com", "mail.example.com"},
		{"web1", "web1"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"192.0.2.1", "[192.0.2.1]"},
		{"[192.0.2.1]", "[192.0.2.1]"},
		{"::1", "[IPv6:::1]"},
		{"[::1]", "[IPv6:::1]"},
		{"[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]"},
		{"[ipv6:2001:DB8::1]", "[IPv6:2001:db8::1]"},
		{"", ""},
		{"a b", ""},
		{"host_name.example", ""},
		{"mail.example.com.", ""},
		{"-mail.example.com", ""},
		{"mail.example.com:25", ""},
		{"[mail.example.com]", ""},
		{"[192.0.2.1", ""},
		{"[IPv6:192.0.2.1]", ""},
		{"fe80::1%eth0", ""},
		{"a\r\nMAIL FROM:<x@y>", ""},
		{strings.Repeat("a", 64) + ".example", ""},
		{strings.Repeat("abcdefgh.", 32) + "example", ""},
	}
	for _, tc := range tests {
		got, ok := NormalizeHeloName(tc.in)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("NormalizeHeloName(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}

// fakeDNS answers fqdn's look-ups from maps; a missing entry is an error.
type fakeDNS struct {
	hosts map[string][]string
	addrs map[string][]string
	cname map[string]string
}

func (f fakeDNS) LookupHost(_ context.Context, h string) ([]string, error) {
	if a, ok := f.hosts[h]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func (f fakeDNS) LookupAddr(_ context.Context, a string) ([]string, error) {
	if n, ok := f.addrs[a]; ok {
		return n, nil
	}
	return nil, errors.New("no PTR")
}

func (f fakeDNS) LookupCNAME(_ context.Context, h string) (string, error) {
	if c, ok := f.cname[h]; ok {
		return c, nil
	}
	return "", errors.New("no such host")
}

// fqdn finds the name as Python's socket.getfqdn does, and never settles
// for "localhost" when the machine has a better name.
func TestFQDN(t *testing.T) {
	tests := []struct {
		name     string
		hostname string
		dns      fakeDNS
		want     string
	}{
		{
			name: "reverse name of the host's address", hostname: "web1",
			dns:  fakeDNS{hosts: map[string][]string{"web1": {"10.0.0.5"}}, addrs: map[string][]string{"10.0.0.5": {"web1.prod.example.com."}}},
			want: "web1.prod.example.com",
		},
		{
			name: "first name with a dot, localhost passed over", hostname: "web1",
			dns:  fakeDNS{hosts: map[string][]string{"web1": {"127.0.1.1"}}, addrs: map[string][]string{"127.0.1.1": {"localhost.localdomain", "web1", "web1.example.net"}}},
			want: "web1.example.net",
		},
		{
			name: "canonical name when reverse look-up says nothing better", hostname: "web1",
			dns:  fakeDNS{hosts: map[string][]string{"web1": {"10.0.0.5"}}, addrs: map[string][]string{"10.0.0.5": {"web1"}}, cname: map[string]string{"web1": "web1.corp.example."}},
			want: "web1.corp.example",
		},
		{name: "host name when nothing resolves", hostname: "c0ffee12", want: "c0ffee12"},
		{
			name: "host name rather than localhost", hostname: "c0ffee12",
			dns:  fakeDNS{hosts: map[string][]string{"c0ffee12": {"127.0.0.1"}}, addrs: map[string][]string{"127.0.0.1": {"localhost"}}, cname: map[string]string{"c0ffee12": "localhost."}},
			want: "c0ffee12",
		},
		{name: "already qualified", hostname: "mx.example.org.", want: "mx.example.org"},
		{name: "internationalised", hostname: "bücher", want: "xn--bcher-kva"},
		{name: "no name at all", hostname: "", want: "localhost"},
		{name: "named localhost", hostname: "localhost", want: "localhost"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := resolver{hostname: func() (string, error) { return tc.hostname, nil }, dns: tc.dns}
			if got := fqdn(context.Background(), r); got != tc.want {
				t.Errorf("fqdn = %q, want %q", got, tc.want)
			}
		})
	}
}
