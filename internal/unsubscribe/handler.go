package unsubscribe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mailrelay/mailrelay/event"
	"github.com/nats-io/nats.go/jetstream"
)

// Prefs is what the handler needs of the notify_prefs bucket; a
// jetstream.KeyValue has it. Update is the compare-and-set.
type Prefs interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
}

// Config is what the public handler works with.
type Config struct {
	// Signer verifies tokens. Required.
	Signer *Signer
	// SettingsURL is the full preferences page (FRONTEND_BASE_URL +
	// /settings/notifications), "" when unknown.
	SettingsURL string
	// PerMinute and Burst set the rate limit per client address; 0 means
	// DefaultPerMinute and DefaultBurst.
	PerMinute, Burst int
	// Log is told each change (user and type, never the token); nil logs
	// nothing.
	Log *zap.Logger
	// Now is the clock of the rate limit; nil is time.Now.
	Now func() time.Time
}

// Handler is the public listener's handler: GET and POST of Path + token,
// and 404 for everything else. Until SetPrefs is called (the relay has not
// reached NATS yet) a POST answers 503.
type Handler struct {
	c     Config
	lim   *limiter
	prefs atomic.Pointer[prefsBox]
}

type prefsBox struct{ p Prefs }

// NewHandler returns the handler of c.
func NewHandler(c Config) *Handler {
	if c.PerMinute <= 0 {
		c.PerMinute = DefaultPerMinute
	}
	if c.Burst <= 0 {
		c.Burst = DefaultBurst
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Handler{c: c, lim: newLimiter(c.PerMinute, c.Burst, c.Now)}
}

// SetPrefs gives the handler the preferences store, once it is reachable.
func (h *Handler) SetPrefs(p Prefs) { h.prefs.Store(&prefsBox{p}) }

// maxBody bounds a POST body: the one-click body is 26 bytes.
const maxBody = 4 << 10

// ServeHTTP serves GET, HEAD and POST of /u/<token>; anything else is 404.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, Path)
	if !ok || token == "" || strings.Contains(token, "/") ||
		(r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost) {
		writeHeaders(w.Header())
		http.NotFound(w, r)
		return
	}
	if ok, wait := h.lim.allow(clientAddr(r)); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		x := chooseTexts("", r.Header.Get("Accept-Language"))
		writePage(w, http.StatusTooManyRequests, h.view(x, x.SlowTitle, x.SlowTitle, x.Slow))
		return
	}
	claim, err := h.c.Signer.Verify(token)
	if err != nil {
		x := chooseTexts("", r.Header.Get("Accept-Language"))
		if errors.Is(err, ErrUnknownKey) {
			writePage(w, http.StatusGone, h.view(x, x.GoneTitle, x.GoneTitle, x.Gone))
			return
		}
		writePage(w, http.StatusBadRequest, h.view(x, x.BadTitle, x.BadTitle, x.Bad))
		return
	}
	x := chooseTexts(claim.Lang, r.Header.Get("Accept-Language"))
	label := x.label(claim.Type)
	if r.Method != http.MethodPost {
		// GET changes nothing: mail scanners follow links.
		v := h.view(x, x.Title, x.Heading, fmt.Sprintf(x.Intro, label), x.Keep)
		v.Form = true
		writePage(w, http.StatusOK, v)
		return
	}
	if !oneClickBody(w, r) {
		writePage(w, http.StatusBadRequest, h.view(x, x.BadTitle, x.BadTitle, x.Bad))
		return
	}
	if err := h.turnOff(r.Context(), claim); err != nil {
		h.c.Log.Warn("one-click unsubscribe failed", zap.String("user", claim.User), zap.String("type", string(claim.Type)), zap.Error(err))
		w.Header().Set("Retry-After", "30")
		writePage(w, http.StatusServiceUnavailable, h.view(x, x.BusyTitle, x.BusyTitle, x.Busy))
		return
	}
	v := h.view(x, x.DoneTitle, x.DoneTitle, fmt.Sprintf(x.Done, label), x.DoneAgain)
	v.Status = "status"
	writePage(w, http.StatusOK, v) // 200, no redirect (RFC 8058)
}

// view is a page with the settings link.
func (h *Handler) view(x *texts, title, heading string, lines ...string) pageView {
	return pageView{T: x, Title: title, Heading: heading, Lines: lines, Settings: h.c.SettingsURL}
}

// oneClickBody reports whether the POST body holds
// List-Unsubscribe=One-Click, form-encoded as RFC 8058 has mailbox
// providers send it (application/x-www-form-urlencoded or
// multipart/form-data) and as the page's form sends it.
func oneClickBody(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var err error
	switch ct {
	case "multipart/form-data":
		err = r.ParseMultipartForm(maxBody)
	case "application/x-www-form-urlencoded", "":
		if ct == "" {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		err = r.ParseForm()
	default:
		return false
	}
	return err == nil && r.PostForm.Get("List-Unsubscribe") == "One-Click"
}

// turnOff turns Email off for the claim's user and type with a
// compare-and-set that keeps every other byte of meaning: the other types,
// time_zone, quiet_hours, batch and fields this relay does not know. A
// value under which the type is off already (no record, no "email" object,
// false, null, not a boolean: contract §4, §9.2) is left alone, so a
// repeated POST writes nothing and a broken value is not overwritten.
func (h *Handler) turnOff(ctx context.Context, c Claim) error {
	box := h.prefs.Load()
	if box == nil {
		return errors.New("preferences store not reachable yet")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for range 5 {
		e, err := box.p.Get(ctx, c.User)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			h.logOff("already off", c)
			return nil
		}
		if err != nil {
			return fmt.Errorf("prefs lookup %q: %w", c.User, err)
		}
		value, changed := withOff(e.Value(), c.Type)
		if !changed {
			h.logOff("already off", c)
			return nil
		}
		_, err = box.p.Update(ctx, c.User, value, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			continue // changed meanwhile: read again
		}
		if err != nil {
			return fmt.Errorf("prefs set %q: %w", c.User, err)
		}
		h.logOff("email turned off", c)
		return nil
	}
	return fmt.Errorf("prefs set %q: too many concurrent changes", c.User)
}

func (h *Handler) logOff(what string, c Claim) {
	h.c.Log.Info("one-click unsubscribe: "+what, zap.String("user", c.User), zap.String("type", string(c.Type)))
}

// withOff returns the stored value with email[t] set to false, and true,
// when email[t] is true now; else the value unchanged and false.
func withOff(stored []byte, t event.Type) ([]byte, bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(stored, &top) != nil || top == nil {
		return stored, false
	}
	var email map[string]json.RawMessage
	if json.Unmarshal(top["email"], &email) != nil || email == nil {
		return stored, false
	}
	var on bool
	if json.Unmarshal(email[string(t)], &on) != nil || !on {
		return stored, false
	}
	email[string(t)] = json.RawMessage("false")
	b, err := json.Marshal(email)
	if err != nil {
		return stored, false
	}
	top["email"] = b
	out, err := json.Marshal(top)
	if err != nil {
		return stored, false
	}
	return out, true
}
