package prefs_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/prefs"
)

// answerCases are stored values and the answers they give: a broken entry
// of "email" turns off its own type alone; a broken value, every type; the
// problem says why without repeating the value.
var answerCases = []struct {
	name, user, value string // value "" = no key
	t                 event.Type
	want              prefs.Answer
}{
	{"on", "ok", `{"email":{"task.assigned":true,"mention":false}}`, event.TaskAssigned, prefs.Answer{On: true}},
	{"off", "ok", `{"email":{"task.assigned":true,"mention":false}}`, event.Mention, prefs.Answer{}},
	{"missing type", "ok", `{"email":{"task.assigned":true,"mention":false}}`, event.TaskComment, prefs.Answer{}},
	{"no key", "nobody", "", event.TaskAssigned, prefs.Answer{}},
	{"empty object", "empty", `{}`, event.TaskAssigned, prefs.Answer{}},
	{"email null", "enull", `{"email":null}`, event.TaskAssigned, prefs.Answer{}},
	{"entry null", "tnull", `{"email":{"mention":null,"task.assigned":true}}`, event.Mention, prefs.Answer{}},
	{"string entry is off", "yes", `{"email":{"task.assigned":true,"mention":"yes"}}`, event.Mention,
		prefs.Answer{Problem: `notify_prefs["yes"].email["mention"] is "yes", not a boolean`}},
	{"the other types stay on", "yes", `{"email":{"task.assigned":true,"mention":"yes"}}`, event.TaskAssigned, prefs.Answer{On: true}},
	{"number entry", "num", `{"email":{"task.comment":1}}`, event.TaskComment,
		prefs.Answer{Problem: `notify_prefs["num"].email["task.comment"] is 1, not a boolean`}},
	{"object entry", "obj", `{"email":{"task.comment":{"on":true}}}`, event.TaskComment,
		prefs.Answer{Problem: `notify_prefs["obj"].email["task.comment"] is an object, not a boolean`}},
	{"long string entry is not repeated", "long", `{"email":{"mention":"` + strings.Repeat("x", 500) + `"}}`, event.Mention,
		prefs.Answer{Problem: `notify_prefs["long"].email["mention"] is a string, not a boolean`}},
	{"invisible characters are escaped", "bidi", `{"email":{"mention":"on\u202e"}}`, event.Mention,
		prefs.Answer{Problem: `notify_prefs["bidi"].email["mention"] is "on\u202e", not a boolean`}},
	{"not JSON", "bad", `{"email":{"task.assigned":true`, event.TaskAssigned,
		prefs.Answer{Problem: `notify_prefs["bad"] is not valid JSON`}},
	{"not an object", "arr", `[{"email":{"task.assigned":true}}]`, event.TaskAssigned,
		prefs.Answer{Problem: `notify_prefs["arr"] is an array, not a JSON object`}},
	{"null value", "null", `null`, event.TaskAssigned,
		prefs.Answer{Problem: `notify_prefs["null"] is null, not a JSON object`}},
	{"email not an object", "etrue", `{"email":true}`, event.TaskAssigned,
		prefs.Answer{Problem: `notify_prefs["etrue"].email is a boolean, not an object`}},
	{"keys are exact: Email", "capital", `{"Email":{"task.assigned":true}}`, event.TaskAssigned,
		prefs.Answer{Problem: `notify_prefs["capital"] has the key "Email"; the key is "email" (exact case)`}},
	{"keys are exact: EMAIL beside email", "both", `{"email":{"task.assigned":true},"EMAIL":{"task.assigned":false}}`, event.TaskAssigned,
		prefs.Answer{Problem: `notify_prefs["both"] has the key "EMAIL"; the key is "email" (exact case)`}},
	{"a flat shape is said, not silently off", "flat", `{"task.assigned":true}`, event.TaskAssigned,
		prefs.Answer{Problem: `notify_prefs["flat"] has no "email" object (its keys: "task.assigned")`}},
	{"email a list of types", "elist", `{"email":["task.assigned"]}`, event.TaskAssigned,
		prefs.Answer{Problem: `notify_prefs["elist"].email is an array, not an object`}},
}

// TestEmailAnswer: Store.Email and Cache.Email, by direct read and from a
// running cache, give the same answer, and EmailEnabled its On.
func TestEmailAnswer(t *testing.T) {
	e := newCacheEnv(t)
	for _, c := range answerCases {
		if c.value != "" {
			e.put(c.user, c.value)
		}
	}
	store := prefs.New(e.kv)
	check := func(t *testing.T, how string, email func(string, event.Type) (prefs.Answer, error), enabled func(string, event.Type) (bool, error)) {
		t.Helper()
		for _, c := range answerCases {
			got, err := email(c.user, c.t)
			if err != nil || got != c.want {
				t.Errorf("%s: %s: Email(%s, %s) = %+v, %v; want %+v", how, c.name, c.user, c.t, got, err, c.want)
			}
			if on, err := enabled(c.user, c.t); err != nil || on != c.want.On {
				t.Errorf("%s: %s: EmailEnabled(%s, %s) = %v, %v; want %v", how, c.name, c.user, c.t, on, err, c.want.On)
			}
		}
	}
	ctx := natstest.Ctx(t)
	check(t, "store",
		func(u string, ty event.Type) (prefs.Answer, error) { return store.Email(ctx, u, ty) },
		func(u string, ty event.Type) (bool, error) { return store.EmailEnabled(ctx, u, ty) })
	check(t, "cache before ready",
		func(u string, ty event.Type) (prefs.Answer, error) { return e.c.Email(ctx, u, ty) },
		func(u string, ty event.Type) (bool, error) { return e.c.EmailEnabled(ctx, u, ty) })
	e.run()
	check(t, "cache ready",
		func(u string, ty event.Type) (prefs.Answer, error) { return e.c.Email(ctx, u, ty) },
		func(u string, ty event.Type) (bool, error) { return e.c.EmailEnabled(ctx, u, ty) })
}

// TestCacheBrokenEntryKeepsOthersInMemory: a user with one broken entry
// still has the valid "on" types answered from memory.
func TestCacheBrokenEntryKeepsOthersInMemory(t *testing.T) {
	e := newCacheEnv(t)
	kv := &countingKV{KeyValue: e.kv}
	e.c = prefs.NewCache(kv, nil)
	e.put("u1", `{"email":{"task.assigned":true,"task.comment":true,"mention":"yes"}}`)
	e.run()
	kv.gets.Store(0)
	if !e.enabled("u1", event.TaskAssigned) || !e.enabled("u1", event.TaskComment) {
		t.Fatal("want the valid types on")
	}
	if n := kv.gets.Load(); n != 0 {
		t.Errorf("%d direct reads, want the answers from memory", n)
	}
	a, err := e.c.Email(natstest.Ctx(t), "u1", event.Mention)
	if err != nil || a.On || !strings.Contains(a.Problem, "not a boolean") {
		t.Errorf("Email(u1, mention) = %+v, %v; want off with the problem", a, err)
	}
	if kv.gets.Load() != 1 {
		t.Errorf("%d direct reads, want 1 (off is confirmed)", kv.gets.Load())
	}
}

// TestGetAndSetWithBrokenEntries: Get keeps the boolean entries and does not
// fail for a broken entry; a broken value fails with ErrBadValue naming the
// problem. Set keeps the valid entries and drops the broken one.
func TestGetAndSetWithBrokenEntries(t *testing.T) {
	e := newCacheEnv(t)
	store := prefs.New(e.kv)
	ctx := natstest.Ctx(t)

	e.put("u1", `{"email":{"task.assigned":true,"mention":"yes"}}`)
	p, rev, err := store.Get(ctx, "u1")
	if err != nil || rev == 0 || !p.Enabled(event.TaskAssigned) || p.Enabled(event.Mention) {
		t.Fatalf("Get = %v, %d, %v; want task.assigned on, mention off, no error", p, rev, err)
	}
	if _, err := store.Set(ctx, "u1", map[event.Type]bool{event.TaskComment: true}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	p, _, err = store.Get(ctx, "u1")
	if err != nil || !p.Enabled(event.TaskAssigned) || !p.Enabled(event.TaskComment) || len(p.Email) != 2 {
		t.Errorf("after Set: %v, %v; want task.assigned and task.comment on, the broken entry gone", p, err)
	}
	if a, err := store.Email(ctx, "u1", event.Mention); err != nil || a != (prefs.Answer{}) {
		t.Errorf("after Set: Email(mention) = %+v, %v; want off without a problem", a, err)
	}

	e.put("u2", `{"email":5}`)
	if _, _, err := store.Get(ctx, "u2"); !errors.Is(err, prefs.ErrBadValue) ||
		!strings.Contains(err.Error(), `notify_prefs["u2"].email is 5, not an object`) {
		t.Errorf("Get(u2) = %v, want ErrBadValue naming the problem", err)
	}
	if _, err := store.Set(ctx, "u2", map[event.Type]bool{event.Mention: true}); err != nil {
		t.Fatalf("Set over a broken value: %v", err)
	}
	if a, err := store.Email(ctx, "u2", event.Mention); err != nil || a != (prefs.Answer{On: true}) {
		t.Errorf("after Set: Email(u2, mention) = %+v, %v; want on", a, err)
	}
}

// TestTimeZone: the answer carries the user's time_zone (from memory and
// from a direct read alike); a value with only optional fields is off and
// not broken; an unknown zone is no zone.
func TestTimeZone(t *testing.T) {
	e := newCacheEnv(t)
	e.put("tz", `{"email":{"task.assigned":true},"time_zone":"Europe/Berlin"}`)
	e.put("tzonly", `{"time_zone":"Europe/Berlin","quiet_hours":{"start":"22:00","end":"07:00"}}`)
	e.put("badtz", `{"email":{"task.assigned":true},"time_zone":"Mars/Olympus"}`)
	e.run()
	natstest.Eventually(t, 5*time.Second, func() (bool, string) { return e.enabled("badtz", event.TaskAssigned), "not loaded" })
	store := prefs.New(e.kv)
	ctx := natstest.Ctx(t)
	for _, get := range []func(string) (prefs.Answer, error){
		func(u string) (prefs.Answer, error) { return store.Email(ctx, u, event.TaskAssigned) },
		func(u string) (prefs.Answer, error) { return e.c.Email(ctx, u, event.TaskAssigned) },
	} {
		a, err := get("tz")
		if err != nil || !a.On || a.TimeZone == nil || a.TimeZone.String() != "Europe/Berlin" {
			t.Fatalf("tz: %+v, %v", a, err)
		}
		if a, err := get("tzonly"); err != nil || a.On || a.Problem != "" {
			t.Fatalf("tzonly: %+v, %v; want off and not broken", a, err)
		}
		if a, err := get("badtz"); err != nil || !a.On || a.TimeZone != nil {
			t.Fatalf("badtz: %+v, %v; want on, no zone", a, err)
		}
	}
}
