package prefs_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/natstest"
	"github.com/mailrelay/mailrelay/prefs"
)

// optionalCases are optional fields beside {"email":{"mention":true}} and
// what the answer says of them; in ignored, @ stands for the user's
// notify_prefs["…"]. A malformed field is ignored, said, and leaves Email
// as it is.
var optionalCases = []struct {
	name, fields string // fields: the JSON object members after "email"
	quiet        *prefs.QuietHours
	batch        prefs.Batch
	tz           string // the zone's name, "" = nil
	ignored      string
}{
	{"none", ``, nil, prefs.Batch{}, "", ""},
	{"quiet hours", `"quiet_hours":{"start":"09:00","end":"17:30"}`, &prefs.QuietHours{Start: 540, End: 1050}, prefs.Batch{}, "", ""},
	{"quiet hours wrap midnight", `"quiet_hours":{"end":"07:00","start":"22:00"}`, &prefs.QuietHours{Start: 1320, End: 420}, prefs.Batch{}, "", ""},
	{"quiet hours bounds", `"quiet_hours":{"start":"00:00","end":"23:59"}`, &prefs.QuietHours{Start: 0, End: 1439}, prefs.Batch{}, "", ""},
	{"quiet hours start == end is none", `"quiet_hours":{"start":"08:00","end":"08:00"}`, nil, prefs.Batch{}, "", ""},
	{"quiet hours null", `"quiet_hours":null`, nil, prefs.Batch{}, "", ""},
	{"quiet hours with zone", `"time_zone":"Europe/Berlin","quiet_hours":{"start":"22:00","end":"07:00"},"batch":"10m"`,
		&prefs.QuietHours{Start: 1320, End: 420}, prefs.Batch{Set: true, Window: 10 * time.Minute}, "Europe/Berlin", ""},
	{"batch 10m", `"batch":"10m"`, nil, prefs.Batch{Set: true, Window: 10 * time.Minute}, "", ""},
	{"batch 90s", `"batch":"90s"`, nil, prefs.Batch{Set: true, Window: 90 * time.Second}, "", ""},
	{"batch 1h30m", `"batch":"1h30m"`, nil, prefs.Batch{Set: true, Window: 90 * time.Minute}, "", ""},
	{"batch 24h", `"batch":"24h"`, nil, prefs.Batch{Set: true, Window: 24 * time.Hour}, "", ""},
	{"batch off", `"batch":"off"`, nil, prefs.Batch{Set: true}, "", ""},
	{"batch 0", `"batch":"0"`, nil, prefs.Batch{Set: true}, "", ""},
	{"batch 0s", `"batch":"0s"`, nil, prefs.Batch{Set: true}, "", ""},
	{"batch null", `"batch":null`, nil, prefs.Batch{}, "", ""},
	{"batch empty", `"batch":""`, nil, prefs.Batch{}, "", ""},
	{"time zone empty", `"time_zone":""`, nil, prefs.Batch{}, "", ""},
	{"time zone null", `"time_zone":null`, nil, prefs.Batch{}, "", ""},

	{"quiet start 25:00", `"quiet_hours":{"start":"25:00","end":"07:00"}`, nil, prefs.Batch{}, "", `@.quiet_hours.start is "25:00", not HH:MM`},
	{"quiet end 24:00", `"quiet_hours":{"start":"22:00","end":"24:00"}`, nil, prefs.Batch{}, "", `@.quiet_hours.end is "24:00", not HH:MM`},
	{"quiet minute 60", `"quiet_hours":{"start":"22:00","end":"09:60"}`, nil, prefs.Batch{}, "", `@.quiet_hours.end is "09:60", not HH:MM`},
	{"quiet one-digit hour", `"quiet_hours":{"start":"9:00","end":"17:00"}`, nil, prefs.Batch{}, "", `@.quiet_hours.start is "9:00", not HH:MM`},
	{"quiet seconds", `"quiet_hours":{"start":"09:00:00","end":"17:00"}`, nil, prefs.Batch{}, "", `@.quiet_hours.start is "09:00:00", not HH:MM`},
	{"quiet 12-hour", `"quiet_hours":{"start":"10pm","end":"7am"}`, nil, prefs.Batch{}, "", `@.quiet_hours.start is "10pm", not HH:MM`},
	{"quiet no colon", `"quiet_hours":{"start":"2200","end":"0700"}`, nil, prefs.Batch{}, "", `@.quiet_hours.start is "2200", not HH:MM`},
	{"quiet space", `"quiet_hours":{"start":" 22:0","end":"07:00"}`, nil, prefs.Batch{}, "", `@.quiet_hours.start is " 22:0", not HH:MM`},
	{"quiet a number", `"quiet_hours":{"start":1320,"end":420}`, nil, prefs.Batch{}, "", `@.quiet_hours.start is 1320, not HH:MM`},
	{"quiet a null field", `"quiet_hours":{"start":null,"end":"07:00"}`, nil, prefs.Batch{}, "", `@.quiet_hours.start is null, not HH:MM`},
	{"quiet missing end", `"quiet_hours":{"start":"22:00"}`, nil, prefs.Batch{}, "", `@.quiet_hours has no "end"`},
	{"quiet empty object", `"quiet_hours":{}`, nil, prefs.Batch{}, "", `@.quiet_hours has no "start"`},
	{"quiet extra key", `"quiet_hours":{"start":"22:00","end":"07:00","tz":"UTC"}`, nil, prefs.Batch{}, "", `@.quiet_hours has the key "tz"; its keys are "start" and "end"`},
	{"quiet an empty key", `"quiet_hours":{"A":"","":"","start":"22:00","end":"07:00"}`, nil, prefs.Batch{}, "", `@.quiet_hours has the key ""; its keys are "start" and "end"`},
	{"quiet keys are exact", `"quiet_hours":{"Start":"22:00","end":"07:00"}`, nil, prefs.Batch{}, "", `@.quiet_hours has the key "Start"; its keys are "start" and "end"`},
	{"quiet a string", `"quiet_hours":"22:00-07:00"`, nil, prefs.Batch{}, "", `@.quiet_hours is "22:00-07:00", not an object {"start": "HH:MM", "end": "HH:MM"}`},
	{"quiet an array", `"quiet_hours":["22:00","07:00"]`, nil, prefs.Batch{}, "", `@.quiet_hours is an array, not an object {"start": "HH:MM", "end": "HH:MM"}`},
	{"quiet a boolean", `"quiet_hours":true`, nil, prefs.Batch{}, "", `@.quiet_hours is a boolean, not an object {"start": "HH:MM", "end": "HH:MM"}`},

	{"batch negative", `"batch":"-5m"`, nil, prefs.Batch{}, "", `@.batch is "-5m", negative`},
	{"batch over a day", `"batch":"25h"`, nil, prefs.Batch{}, "", `@.batch is "25h", longer than 24h`},
	{"batch just over a day", `"batch":"24h0m0.001s"`, nil, prefs.Batch{}, "", `@.batch is "24h0m0.001s", longer than 24h`},
	{"batch words", `"batch":"10 minutes"`, nil, prefs.Batch{}, "", `@.batch is "10 minutes", not a duration such as "10m", or "off"`},
	{"batch no unit", `"batch":"10"`, nil, prefs.Batch{}, "", `@.batch is "10", not a duration such as "10m", or "off"`},
	{"batch OFF is not off", `"batch":"OFF"`, nil, prefs.Batch{}, "", `@.batch is "OFF", not a duration such as "10m", or "off"`},
	{"batch a number", `"batch":600`, nil, prefs.Batch{}, "", `@.batch is 600, not a duration such as "10m", or "off"`},
	{"batch a boolean", `"batch":false`, nil, prefs.Batch{}, "", `@.batch is a boolean, not a duration such as "10m", or "off"`},
	{"batch an object", `"batch":{"window":"10m"}`, nil, prefs.Batch{}, "", `@.batch is an object, not a duration such as "10m", or "off"`},
	{"batch a long string is not repeated", `"batch":"` + strings.Repeat("9", 100) + `"`, nil, prefs.Batch{}, "", `@.batch is a string, not a duration such as "10m", or "off"`},

	{"unknown zone", `"time_zone":"Mars/Olympus"`, nil, prefs.Batch{}, "", `@.time_zone is "Mars/Olympus", not a known IANA zone`},
	{"Local is not a zone", `"time_zone":"Local"`, nil, prefs.Batch{}, "", `@.time_zone is "Local", not a known IANA zone`},
	{"zone a number", `"time_zone":1`, nil, prefs.Batch{}, "", `@.time_zone is 1, not an IANA zone name such as "Europe/Berlin"`},
	{"optional keys are exact", `"Quiet_Hours":{"start":"22:00","end":"07:00"},"BATCH":"10m"`, nil, prefs.Batch{}, "",
		`@ has the key "Quiet_Hours"; the key is "quiet_hours" (exact case); @ has the key "BATCH"; the key is "batch" (exact case)`},
	{"every problem, the valid fields kept", `"batch":"soon","time_zone":"Europe/Berlin","quiet_hours":{"start":"22:00","end":"07:00"},"Time_Zone":"UTC"`,
		&prefs.QuietHours{Start: 1320, End: 420}, prefs.Batch{}, "Europe/Berlin",
		`@.batch is "soon", not a duration such as "10m", or "off"; @ has the key "Time_Zone"; the key is "time_zone" (exact case)`},
	{"several problems in a fixed order", `"batch":"-1s","quiet_hours":{"start":"22:00"},"time_zone":"Nowhere"`, nil, prefs.Batch{}, "",
		`@.time_zone is "Nowhere", not a known IANA zone; @.quiet_hours has no "end"; @.batch is "-1s", negative`},
}

// optionalUser is the user of optionalCases[i].
func optionalUser(i int) string { return fmt.Sprintf("opt%d", i) }

func optionalWant(i int) prefs.Answer {
	c := optionalCases[i]
	a := prefs.Answer{On: true, Quiet: c.quiet, Batch: c.batch, Ignored: strings.ReplaceAll(c.ignored, "@", fmt.Sprintf("notify_prefs[%q]", optionalUser(i)))}
	if c.tz != "" {
		a.TimeZone, _ = time.LoadLocation(c.tz)
	}
	return a
}

// sameAnswer compares answers by value (Quiet is a pointer).
func sameAnswer(a, b prefs.Answer) bool {
	if (a.Quiet == nil) != (b.Quiet == nil) || a.Quiet != nil && *a.Quiet != *b.Quiet {
		return false
	}
	a.Quiet, b.Quiet = nil, nil
	if (a.TimeZone == nil) != (b.TimeZone == nil) || a.TimeZone != nil && a.TimeZone.String() != b.TimeZone.String() {
		return false
	}
	a.TimeZone, b.TimeZone = nil, nil
	return a == b
}

func fmtAnswer(a prefs.Answer) string {
	q := "nil"
	if a.Quiet != nil {
		q = fmt.Sprintf("%+v", *a.Quiet)
	}
	return fmt.Sprintf("{On:%v Problem:%q TimeZone:%v Quiet:%s Batch:%+v Ignored:%q}", a.On, a.Problem, a.TimeZone, q, a.Batch, a.Ignored)
}

// TestOptionalFields: Store.Email reads quiet_hours, batch and time_zone;
// a malformed one is ignored and said, and Email stays on without a
// Problem. The cache gives the same answers from memory.
func TestOptionalFields(t *testing.T) {
	e := newCacheEnv(t)
	kv := &countingKV{KeyValue: e.kv}
	e.c = prefs.NewCache(kv, nil)
	for i, c := range optionalCases {
		v := `{"email":{"mention":true}`
		if c.fields != "" {
			v += "," + c.fields
		}
		v += "}"
		if !json.Valid([]byte(v)) {
			t.Fatalf("%s: not JSON: %s", c.name, v)
		}
		e.put(optionalUser(i), v)
	}
	store := prefs.New(e.kv)
	ctx := natstest.Ctx(t)
	check := func(how string, email func(user string) (prefs.Answer, error)) {
		t.Helper()
		for i, c := range optionalCases {
			got, err := email(optionalUser(i))
			if want := optionalWant(i); err != nil || !sameAnswer(got, want) {
				t.Errorf("%s: %s:\n got %s, %v\nwant %s", how, c.name, fmtAnswer(got), err, fmtAnswer(want))
			}
		}
	}
	check("store", func(u string) (prefs.Answer, error) { return store.Email(ctx, u, event.Mention) })
	check("cache before ready", func(u string) (prefs.Answer, error) { return e.c.Email(ctx, u, event.Mention) })
	e.run()
	kv.gets.Store(0)
	check("cache from memory", func(u string) (prefs.Answer, error) { return e.c.Email(ctx, u, event.Mention) })
	if n := kv.gets.Load(); n != 0 {
		t.Errorf("%d direct reads, want every answer from memory", n)
	}

	// An answer that is off carries the fields too.
	i := len(optionalCases) - 2
	want := optionalWant(i)
	want.On = false
	for how, get := range map[string]func() (prefs.Answer, error){
		"store": func() (prefs.Answer, error) { return store.Email(ctx, optionalUser(i), event.TaskAssigned) },
		"cache": func() (prefs.Answer, error) { return e.c.Email(ctx, optionalUser(i), event.TaskAssigned) },
	} {
		if got, err := get(); err != nil || !sameAnswer(got, want) {
			t.Errorf("%s: off: got %s, %v; want %s", how, fmtAnswer(got), err, fmtAnswer(want))
		}
	}

	// Each answer has its own Quiet: changing one changes nothing else.
	a, _ := e.c.Email(ctx, optionalUser(1), event.Mention)
	a.Quiet.Start = 0
	if b, _ := e.c.Email(ctx, optionalUser(1), event.Mention); b.Quiet.Start != 540 {
		t.Errorf("a caller's change reached the cache: %+v", *b.Quiet)
	}
}

// TestOptionalFieldsFollowUpdates: the cache's answer from memory follows a
// change of the optional fields alone.
func TestOptionalFieldsFollowUpdates(t *testing.T) {
	e := newCacheEnv(t)
	e.put("u1", `{"email":{"mention":true}}`)
	e.run()
	ctx := natstest.Ctx(t)
	e.put("u1", `{"email":{"mention":true},"quiet_hours":{"start":"22:00","end":"07:00"},"batch":"off"}`)
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		a, err := e.c.Email(ctx, "u1", event.Mention)
		return err == nil && a.Quiet != nil && *a.Quiet == prefs.QuietHours{Start: 1320, End: 420} && a.Batch == prefs.Batch{Set: true}, fmtAnswer(a)
	})
	e.put("u1", `{"email":{"mention":true},"quiet_hours":"late","batch":"5m"}`)
	natstest.Eventually(t, 5*time.Second, func() (bool, string) {
		a, err := e.c.Email(ctx, "u1", event.Mention)
		return err == nil && a.On && a.Quiet == nil && a.Batch.Window == 5*time.Minute &&
			a.Ignored == `notify_prefs["u1"].quiet_hours is "late", not an object {"start": "HH:MM", "end": "HH:MM"}`, fmtAnswer(a)
	})
}

// TestSetKeepsOptionalFields: Set changes "email" alone; time_zone,
// quiet_hours, batch and keys the app adds stay as stored.
func TestSetKeepsOptionalFields(t *testing.T) {
	e := newCacheEnv(t)
	store := prefs.New(e.kv)
	ctx := natstest.Ctx(t)
	cases := []struct {
		name, stored string
		keep         []string // keys that must stay, with their values
		gone         []string // keys that must go
	}{
		{"optional fields", `{"email":{"task.assigned":true},"time_zone":"Europe/Berlin","quiet_hours":{"start":"22:00","end":"07:00"},"batch":"10m","digest":{"day":"mon"}}`,
			[]string{"time_zone", "quiet_hours", "batch", "digest"}, nil},
		{"malformed ones too", `{"email":{"task.assigned":true},"quiet_hours":"late","batch":600}`,
			[]string{"quiet_hours", "batch"}, nil},
		{"a broken email is replaced", `{"email":5,"time_zone":"Europe/Berlin"}`, []string{"time_zone"}, nil},
		{"a key like email is dropped", `{"Email":{"task.assigned":true},"time_zone":"Europe/Berlin"}`, []string{"time_zone"}, []string{"Email"}},
		{"not an object is replaced", `[1]`, nil, nil},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			user := fmt.Sprintf("set%d", i)
			e.put(user, c.stored)
			if _, err := store.Set(ctx, user, map[event.Type]bool{event.Mention: true}); err != nil {
				t.Fatal(err)
			}
			entry, err := e.kv.Get(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			var before, after map[string]json.RawMessage
			_ = json.Unmarshal([]byte(c.stored), &before)
			if err := json.Unmarshal(entry.Value(), &after); err != nil {
				t.Fatalf("stored %s: %v", entry.Value(), err)
			}
			for _, k := range c.keep {
				if string(after[k]) != string(before[k]) {
					t.Errorf("%s = %s, want %s kept", k, after[k], before[k])
				}
			}
			for _, k := range c.gone {
				if _, ok := after[k]; ok {
					t.Errorf("%s kept, want it dropped", k)
				}
			}
			if len(after) != len(c.keep)+1 {
				t.Errorf("stored %s, want email and %v", entry.Value(), c.keep)
			}
			if a, err := store.Email(ctx, user, event.Mention); err != nil || !a.On || a.Problem != "" {
				t.Errorf("Email(mention) = %s, %v; want on", fmtAnswer(a), err)
			}
		})
	}
}
