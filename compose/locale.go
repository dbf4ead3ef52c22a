package compose

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/text/language"

	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/headers"
)

// Options are the inputs of one mail that do not travel in the event: what
// the consumer knows about the recipient from their preferences. The zero
// value means English (unless the event names a locale) and UTC.
type Options struct {
	// TimeZone is the recipient's time zone, the "time_zone" of their
	// notify_prefs (time.LoadLocation of the IANA name); nil means UTC.
	// Times in the body (when it happened, date-times of a change) are
	// shown in it.
	TimeZone *time.Location
	// Locale, when not "", is used instead of the event's recipient.locale
	// (a BCP 47 tag); neither set means English.
	Locale string
}

// zone is o.TimeZone, UTC when nil.
func (o Options) zone() *time.Location {
	if o.TimeZone == nil {
		return time.UTC
	}
	return o.TimeZone
}

// DelayNotice is how late a mail may go out after occurred_at before its
// body says when it happened.
const DelayNotice = 5 * time.Minute

// The built-in languages. English is the fallback of every string.
const (
	English = "en"
	German  = "de"
)

// Keys of the string catalog (Text). The templates hold the sentences of
// the mails; the catalog holds the words Compose puts into TemplateData
// and those of the one-click unsubscribe page.
const (
	KeySomeone      = "someone"       // the actor when the event names none
	KeyNotSet       = "not_set"       // a date of a change that is null
	KeyPlannedStart = "planned_start" // change.field planned_start, in words
	KeyPlannedEnd   = "planned_end"   // change.field planned_end, in words
	KeyAnd          = "and"           // joins the last two of a list ("A, B and C")
	KeyListLabel    = "list_label"    // a type's label in a list of several (%s: the label)

	// The one-click unsubscribe page (contract §9.6). %s in
	// KeyUnsubscribeExplain and KeyUnsubscribeDone is the type's label
	// (TypeLabel).
	KeyUnsubscribeTitle    = "unsubscribe.title"
	KeyUnsubscribeExplain  = "unsubscribe.explain"
	KeyUnsubscribeButton   = "unsubscribe.button"
	KeyUnsubscribeSettings = "unsubscribe.settings"
	KeyUnsubscribeDone     = "unsubscribe.done"
)

// labelKey is the catalog key of the label of type t.
func labelKey(t event.Type) string { return "label." + string(t) }

// catalogs are the built-in strings. English labels come from the type
// registry (event.Def.Label); other languages list theirs here.
var catalogs = map[string]map[string]string{
	English: {
		KeySomeone:             "Someone",
		KeyNotSet:              "not set",
		KeyPlannedStart:        "planned start",
		KeyPlannedEnd:          "planned end",
		KeyAnd:                 "and",
		KeyListLabel:           "%s",
		KeyUnsubscribeTitle:    "Stop these emails?",
		KeyUnsubscribeExplain:  "This turns off emails about %s. You can turn them on again at any time in your notification settings.",
		KeyUnsubscribeButton:   "Turn off these emails",
		KeyUnsubscribeSettings: "Open your notification settings",
		KeyUnsubscribeDone:     "Done. You will no longer get emails about %s.",
	},
	German: {
		KeySomeone:                      "Jemand",
		KeyNotSet:                       "nicht festgelegt",
		KeyPlannedStart:                 "geplanter Beginn",
		KeyPlannedEnd:                   "geplantes Ende",
		KeyAnd:                          "und",
		KeyListLabel:                    "„%s“", // the labels hold commas
		KeyUnsubscribeTitle:             "Diese E-Mails abbestellen?",
		KeyUnsubscribeExplain:           "Damit schalten Sie E-Mails zu %s aus. In Ihren Benachrichtigungseinstellungen können Sie sie jederzeit wieder einschalten.",
		KeyUnsubscribeButton:            "Diese E-Mails ausschalten",
		KeyUnsubscribeSettings:          "Benachrichtigungseinstellungen öffnen",
		KeyUnsubscribeDone:              "Erledigt. Sie erhalten keine E-Mails zu %s mehr.",
		labelKey(event.TaskAssigned):    "Aufgaben, die Ihnen zugewiesen werden",
		labelKey(event.TaskDateChanged): "Änderungen geplanter Termine",
		labelKey(event.TaskComment):     "Kommentare zu Ihren Aufgaben",
		labelKey(event.TaskBlocked):     "Aufgaben, die blockiert werden",
		labelKey(event.Mention):         "Erwähnungen",
	},
}

// builtinTags are the built-in languages, English first (the matcher's
// fallback).
var builtinTags = []language.Tag{language.English, language.German}

var builtinMatcher = language.NewMatcher(builtinTags)

// MatchLocale returns the built-in language ("en" or "de") that serves the
// BCP 47 tag locale: "de-AT" and "de" give "de"; "", an unknown or a
// malformed tag give "en".
func MatchLocale(locale string) string {
	return builtinTags[matchIndex(builtinMatcher, locale)].String()
}

// matchIndex is the index of the tag m was built from that serves locale,
// 0 (English) when none does.
func matchIndex(m language.Matcher, locale string) int {
	if locale == "" {
		return 0
	}
	tag, err := language.Parse(locale)
	if err != nil {
		return 0
	}
	_, i, conf := m.Match(tag)
	if conf == language.No {
		return 0
	}
	return i
}

// Text returns the catalog string key in the built-in language serving
// locale (MatchLocale), the English one when that language lacks it, and
// "" for an unknown key. Labels of types are under TypeLabel.
func Text(locale, key string) string {
	return text(MatchLocale(locale), key)
}

func text(lang, key string) string {
	if s, ok := catalogs[lang][key]; ok {
		return s
	}
	return catalogs[English][key]
}

// TypeLabel returns what type t is about, in words, in the built-in
// language serving locale: "comments on your tasks", "Kommentare zu Ihren
// Aufgaben". A language without a label for t gives the registry's
// (English) one; a type not registered gives its name.
func TypeLabel(locale string, t event.Type) string { return typeLabel(MatchLocale(locale), t) }

func typeLabel(lang string, t event.Type) string {
	if lang != English {
		if s, ok := catalogs[lang][labelKey(t)]; ok {
			return s
		}
	}
	if d, ok := event.Lookup(t); ok && d.Label != "" {
		return d.Label
	}
	return string(t)
}

// catalogGaps lists the strings lang lacks (falling back to English), for
// the start-up warnings.
func catalogGaps(lang string, defs []event.Def) []string {
	var keys []string
	if lang == English {
		return nil
	}
	for k := range catalogs[English] {
		if _, ok := catalogs[lang][k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, d := range defs {
		if _, ok := catalogs[lang][labelKey(d.Type)]; !ok {
			keys = append(keys, labelKey(d.Type))
		}
	}
	slices.Sort(keys)
	return keys
}

// Names of weekdays and months per language, for dates in the body.
var (
	weekdays = map[string][7]string{
		German: {"Sonntag", "Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag"},
	}
	months = map[string][12]string{
		German: {"Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober", "November", "Dezember"},
	}
)

// zoneText names the zone of t: its abbreviation when it has one ("CET",
// "UTC"), else the offset ("UTC+05:30").
func zoneText(t time.Time) string {
	name, off := t.Zone()
	if name != "" && name[0] != '+' && name[0] != '-' {
		return name
	}
	if off == 0 {
		return "UTC"
	}
	return "UTC" + t.Format("-07:00")
}

// whenText is the moment t in the words of lang: "Thursday, 26 November
// 2026, 04:30 (UTC)", "Donnerstag, 26. November 2026, 05:30 Uhr (CET)".
func whenText(lang string, t time.Time) string {
	if lang == German {
		return fmt.Sprintf("%s, %d. %s %d, %02d:%02d Uhr (%s)", weekdays[German][t.Weekday()], t.Day(),
			months[German][t.Month()-1], t.Year(), t.Hour(), t.Minute(), zoneText(t))
	}
	return fmt.Sprintf("%s, %d %s %d, %02d:%02d (%s)", t.Weekday(), t.Day(), t.Month(), t.Year(), t.Hour(), t.Minute(), zoneText(t))
}

// dateText is a date of a change as text in lang: "not set" for null; a
// date as ISO 8601 in English (2026-12-05), 05.12.2026 in German; a
// date-time in the recipient's zone; anything else as given, sanitized.
func dateText(lang string, d *string, tz *time.Location) string {
	if d == nil {
		return text(lang, KeyNotSet)
	}
	s := headers.Sanitize(*d, 64)
	if s == "" {
		return text(lang, KeyNotSet)
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		if lang == German {
			return t.Format("02.01.2006")
		}
		return s
	}
	if t, err := time.Parse(time.RFC3339Nano, strings.ToUpper(s)); err == nil {
		t = t.In(tz)
		if lang == German {
			return t.Format("02.01.2006, 15:04") + " Uhr (" + zoneText(t) + ")"
		}
		return t.Format("2006-01-02 15:04") + " (" + zoneText(t) + ")"
	}
	return s
}
