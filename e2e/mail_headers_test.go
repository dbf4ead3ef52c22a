package e2e

import (
	"fmt"
	"mime"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

// TestE2EMailHeadersExact: the composed message, sent through the real SMTP
// path to Mailpit, arrives with the exact headers (docs/contract.md §5): for one
// event per type, what compose.Compose gives for the same From and base URL,
// and the literal values the contract names. A non-ASCII recipient name and
// subject survive RFC 2047 encoding. With a base URL and no one-click set-up
// only List-Unsubscribe (the settings page) is sent, never
// List-Unsubscribe-Post (§9.4); with no base neither header is.
func TestE2EMailHeadersExact(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	url := s.ns.URL()
	const from = "Acme Notifications <notify@example.com>"
	const recipientName = "Zoë Ångström-Łukasiewicz 東京"
	const title = "Bétonnage des fondations — Ünïcødé ✓ 東京タワー"

	// The prefs bucket exists once a relay has run.
	provisionOnly(t, s.env())
	prefsPut(t, url, "u-hdr", `{"email":{"task.assigned":true,"task.date_changed":true,"task.comment":true,"task.blocked":true,"mention":true}}`)

	for _, c := range []struct {
		name    string
		baseURL string
		types   []event.Type
		unsub   string // List-Unsubscribe, "" for none
		oneShot bool   // List-Unsubscribe-Post present
	}{
		// Contract §9.4 amends §5: the settings page never goes with
		// List-Unsubscribe-Post (TestE2EOneClickUnsubscribe covers one-click).
		{"https base", "https://app.example.com", event.Types, "<https://app.example.com/settings/notifications>", false},
		{"http base", "http://app.example.com/", []event.Type{event.TaskComment}, "<http://app.example.com/settings/notifications>", false},
		{"no base", "", []event.Type{event.TaskAssigned}, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s.mp.DeleteAll(t)
			env := s.env("DEFAULT_FROM_EMAIL", from, "FRONTEND_BASE_URL", c.baseURL)
			r := startReadyRelay(t, env)
			if strings.HasPrefix(c.baseURL, "http://") && !strings.Contains(r.Stderr(), "FRONTEND_BASE_URL") {
				t.Errorf("no start-up warning about the http:// FRONTEND_BASE_URL:\n%s", r.Stderr())
			}
			cfg := compose.Config{From: compose.Address{Name: "Acme Notifications", Email: e2eFromEmail}, BaseURL: c.baseURL}

			want := map[string]*compose.Message{} // by Message-ID
			evs := map[string]*event.Event{}
			for _, typ := range c.types {
				id := fmt.Sprintf("hdr-%s-%s", strings.ReplaceAll(c.name, " ", "-"), strings.ReplaceAll(string(typ), ".", "-"))
				ev := newEvent(id, typ, "u-hdr", "zoe@example.com", recipientName)
				ev.Task.Title = title
				ev.Actor.Name = "Jürgen Groß"
				m := composeExpected(t, ev, cfg)
				want[m.MessageID], evs[m.MessageID] = m, ev
				pubEvent(t, url, ev)
			}
			msgs := s.mp.WaitForCount(t, len(c.types), settleTimeout)
			for _, ev := range evs {
				waitState(t, url, ev.ID, "sent", settleTimeout)
			}

			for _, sum := range msgs {
				mid := "<" + sum.MessageID + ">"
				m, ok := want[mid]
				if !ok {
					t.Errorf("unexpected mail with Message-ID %s", mid)
					continue
				}
				ev := evs[mid]
				h := s.mp.Headers(t, sum.ID)
				checkMailHeaders(t, ev, m, h, c.unsub, c.oneShot)

				// The body arrives as composed, deep link included when there is a base.
				text := strings.TrimRight(strings.ReplaceAll(s.mp.Message(t, sum.ID).Text, "\r\n", "\n"), "\n")
				if wantText := strings.TrimRight(m.Body, "\n"); text != wantText {
					t.Errorf("%s: body\n%s\nwant\n%s", ev.ID, text, wantText)
				}
				if link := strings.TrimRight(c.baseURL, "/") + "/tasks/t-1001"; c.baseURL != "" && !strings.Contains(text, link) {
					t.Errorf("%s: no deep link %s in the body", ev.ID, link)
				}
				if c.baseURL == "" && strings.Contains(text, "/tasks/") {
					t.Errorf("%s: a deep link without FRONTEND_BASE_URL:\n%s", ev.ID, text)
				}
			}
			stopClean(t, r, 30*time.Second)
		})
	}
}

// checkMailHeaders compares the headers Mailpit received (h) with the
// composed message m and with the contract's literal values.
func checkMailHeaders(t *testing.T, ev *event.Event, m *compose.Message, h map[string][]string, unsub string, oneClick bool) {
	t.Helper()
	dec := new(mime.WordDecoder)
	// one returns the single decoded value of a header; absent is "".
	one := func(name string) (string, bool) {
		t.Helper()
		vals, ok := h[name]
		if !ok {
			return "", false
		}
		if len(vals) != 1 {
			t.Errorf("%s: %d %s headers %q, want one", ev.ID, len(vals), name, vals)
		}
		v, err := dec.DecodeHeader(vals[0])
		if err != nil {
			t.Errorf("%s: %s %q: %v", ev.ID, name, vals[0], err)
		}
		return v, true
	}
	exact := func(name, want string) {
		t.Helper()
		got, ok := one(name)
		if !ok {
			t.Errorf("%s: no %s header, want %q", ev.ID, name, want)
			return
		}
		if got != want {
			t.Errorf("%s: %s %q, want %q", ev.ID, name, got, want)
		}
	}
	absent := func(name string) {
		t.Helper()
		if vals, ok := h[name]; ok {
			t.Errorf("%s: %s %q, want no such header", ev.ID, name, vals)
		}
	}
	addr := func(name string, want compose.Address) {
		t.Helper()
		if len(h[name]) != 1 {
			t.Errorf("%s: %s headers %q, want one", ev.ID, name, h[name])
			return
		}
		a, err := (&mail.AddressParser{WordDecoder: dec}).Parse(h[name][0])
		if err != nil {
			t.Errorf("%s: %s %q: %v", ev.ID, name, h[name][0], err)
			return
		}
		if a.Name != want.Name || a.Address != want.Email {
			t.Errorf("%s: %s %q (name %q, address %q), want name %q, address %q",
				ev.ID, name, h[name][0], a.Name, a.Address, want.Name, want.Email)
		}
	}

	// Headers are 7-bit: non-ASCII text travels RFC 2047-encoded, and each
	// encoded-word holds whole characters (RFC 2047 §5).
	for name, vals := range h {
		for _, v := range vals {
			for _, r := range v {
				if r > '~' {
					t.Errorf("%s: %s %q holds non-ASCII text", ev.ID, name, v)
					break
				}
			}
		}
	}
	for _, name := range []string{"Subject", "To"} {
		for _, w := range encodedWordRE.FindAllString(strings.Join(h[name], " "), -1) {
			if d, err := dec.Decode(w); err != nil || !utf8.ValidString(d) {
				t.Errorf("%s: %s: encoded-word %s does not hold whole UTF-8 characters (%q, %v)", ev.ID, name, w, d, err)
			}
		}
	}

	// What compose produced is what arrived.
	addr("From", m.From)
	addr("To", m.To)
	exact("Subject", m.Subject)
	exact("Message-Id", m.MessageID)
	exact("In-Reply-To", m.InReplyTo)
	exact("References", m.References)
	exact("Content-Type", "text/plain; charset=UTF-8")
	var names []string
	for _, x := range m.Headers {
		names = append(names, x.Name)
		exact(canonical(x.Name), x.Value)
	}

	// And it is what the contract says, independently of compose.
	if m.From.Name != "Acme Notifications" || m.From.Email != e2eFromEmail {
		t.Errorf("%s: composed From %+v", ev.ID, m.From)
	}
	if m.To.Name != ev.Recipient.Name || m.To.Email != ev.Recipient.Email {
		t.Errorf("%s: composed To %+v, want %q <%s>", ev.ID, m.To, ev.Recipient.Name, ev.Recipient.Email)
	}
	if !strings.Contains(m.Subject, ev.Task.Title) || strings.ContainsAny(m.Subject, "\r\n") || len([]rune(m.Subject)) > 160 {
		t.Errorf("%s: Subject %q does not carry the title %q on one line", ev.ID, m.Subject, ev.Task.Title)
	}
	exact("Message-Id", "<notify."+ev.ID+"@example.com>")
	exact("Message-Id", headers.MessageID(ev.ID, e2eFromHost))
	thread := "<task/w1/t-1001@example.com>"
	exact("In-Reply-To", thread)
	exact("References", thread)
	exact("Auto-Submitted", "auto-generated")
	exact("X-Auto-Response-Suppress", "All")
	exact("List-Id", "Acme Notifications <notifications.example.com>") // the From display name names the product (issue 15)
	exact("X-Mailrelay-Reason", string(ev.Type))
	if unsub == "" {
		absent("List-Unsubscribe")
	} else {
		exact("List-Unsubscribe", unsub)
	}
	if oneClick {
		exact("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
	} else {
		absent("List-Unsubscribe-Post")
	}
	wantNames := []string{"Auto-Submitted", "X-Auto-Response-Suppress", "List-Id", "X-Mailrelay-Reason"}
	if unsub != "" {
		wantNames = append(wantNames, "List-Unsubscribe")
	}
	if oneClick {
		wantNames = append(wantNames, "List-Unsubscribe-Post")
	}
	slices.Sort(names)
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Errorf("%s: composed extra headers %v, want %v", ev.ID, names, wantNames)
	}
	if _, ok := h["Date"]; !ok {
		t.Errorf("%s: no Date header", ev.ID)
	}
}

var encodedWordRE = regexp.MustCompile(`=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=`)

// canonical is the MIME-canonical form Mailpit's headers API uses for a
// field name ("Message-Id", "X-Auto-Response-Suppress").
func canonical(name string) string {
	parts := strings.Split(strings.ToLower(name), "-")
	for i, p := range parts {
		if p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, "-")
}
