package unsubscribe

import (
	"fmt"
	"strings"

	"github.com/mailrelay/mailrelay/event"
)

// texts is the wording of the pages in one language.
type texts struct {
	Lang         string
	Title        string // the page title, also of the confirmation
	Heading      string
	Intro        string // %s: what the user gets mail about (a type's label)
	Keep         string
	Button       string
	Settings     string // the link to the preferences page
	DoneTitle    string
	Done         string // %s: the label
	DoneAgain    string
	BadTitle     string
	Bad          string
	GoneTitle    string
	Gone         string
	BusyTitle    string
	Busy         string
	SlowTitle    string
	Slow         string
	NoSettings   string // where to change settings when the page is unknown
	labels       map[event.Type]string
	defaultLabel string // a format: %s is the type name
}

// label says what mail of type t is about, in this language: the
// registry's Label in English, this table's words otherwise, and the type
// name for a type the table does not know.
func (x *texts) label(t event.Type) string {
	if l, ok := x.labels[t]; ok {
		return l
	}
	if x.labels == nil {
		if d, ok := event.Lookup(t); ok && d.Label != "" {
			return d.Label
		}
	}
	return fmt.Sprintf(x.defaultLabel, string(t))
}

var english = &texts{
	Lang:         "en",
	Title:        "Unsubscribe",
	Heading:      "Stop these emails?",
	Intro:        "You will no longer get email about %s.",
	Keep:         "Your other notification settings stay as they are, and notifications still appear in the app.",
	Button:       "Turn off these emails",
	Settings:     "Change all notification settings",
	DoneTitle:    "Unsubscribed",
	Done:         "Done: email about %s is now off.",
	DoneAgain:    "You can turn it on again in your notification settings at any time.",
	BadTitle:     "This link does not work",
	Bad:          "This unsubscribe link is not valid. Please use the link from the latest email, or change your notification settings in the app.",
	GoneTitle:    "This link has expired",
	Gone:         "This unsubscribe link is no longer valid. Please use the link from a newer email, or change your notification settings in the app.",
	BusyTitle:    "Please try again",
	Busy:         "Your settings could not be changed just now. Please try again in a minute.",
	SlowTitle:    "Too many requests",
	Slow:         "Too many requests came from your address. Please wait a minute and try again.",
	NoSettings:   "You can also change your notification settings in the app.",
	defaultLabel: "notifications of the type “%s”",
}

var german = &texts{
	Lang:       "de",
	Title:      "Abbestellen",
	Heading:    "Diese E-Mails abbestellen?",
	Intro:      "Sie erhalten dann keine E-Mails mehr zu %s.",
	Keep:       "Ihre übrigen Benachrichtigungseinstellungen bleiben unverändert, und Benachrichtigungen erscheinen weiterhin in der App.",
	Button:     "Diese E-Mails abbestellen",
	Settings:   "Alle Benachrichtigungseinstellungen ändern",
	DoneTitle:  "Abbestellt",
	Done:       "Erledigt: E-Mails zu %s sind jetzt abgeschaltet.",
	DoneAgain:  "Sie können sie in Ihren Benachrichtigungseinstellungen jederzeit wieder einschalten.",
	BadTitle:   "Dieser Link funktioniert nicht",
	Bad:        "Dieser Abmeldelink ist ungültig. Bitte verwenden Sie den Link aus der neuesten E-Mail oder ändern Sie Ihre Benachrichtigungseinstellungen in der App.",
	GoneTitle:  "Dieser Link ist abgelaufen",
	Gone:       "Dieser Abmeldelink gilt nicht mehr. Bitte verwenden Sie den Link aus einer neueren E-Mail oder ändern Sie Ihre Benachrichtigungseinstellungen in der App.",
	BusyTitle:  "Bitte versuchen Sie es erneut",
	Busy:       "Ihre Einstellungen konnten gerade nicht geändert werden. Bitte versuchen Sie es in einer Minute erneut.",
	SlowTitle:  "Zu viele Anfragen",
	Slow:       "Von Ihrer Adresse kamen zu viele Anfragen. Bitte warten Sie eine Minute und versuchen Sie es dann erneut.",
	NoSettings: "Sie können Ihre Benachrichtigungseinstellungen auch in der App ändern.",
	labels: map[event.Type]string{
		event.TaskAssigned:    "Aufgaben, die Ihnen zugewiesen werden",
		event.TaskDateChanged: "Änderungen an geplanten Terminen",
		event.TaskComment:     "Kommentaren zu Ihren Aufgaben",
		event.TaskBlocked:     "Aufgaben, die blockiert werden",
		event.Mention:         "Erwähnungen von Ihnen",
	},
	defaultLabel: "Benachrichtigungen vom Typ „%s“",
}

// catalog is every language the pages speak; the first is the fallback.
var catalog = []*texts{english, german}

// pageLang returns the language of a BCP 47 tag ("de-AT" → "de") when the
// pages speak it, else "".
func pageLang(tag string) string {
	lang, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(tag)), "-")
	lang, _, _ = strings.Cut(lang, "_")
	for _, x := range catalog {
		if x.Lang == lang {
			return lang
		}
	}
	return ""
}

// chooseTexts picks the wording: the mail's language from the token, else
// the first language of Accept-Language the pages speak, else English.
func chooseTexts(tokenLang, acceptLanguage string) *texts {
	if l := pageLang(tokenLang); l != "" {
		return byLang(l)
	}
	for _, part := range strings.Split(acceptLanguage, ",") {
		tag, params, _ := strings.Cut(part, ";")
		if strings.Contains(strings.ReplaceAll(params, " ", ""), "q=0") && !strings.Contains(params, "q=0.") {
			continue // q=0: not acceptable
		}
		if l := pageLang(tag); l != "" {
			return byLang(l)
		}
	}
	return english
}

func byLang(l string) *texts {
	for _, x := range catalog {
		if x.Lang == l {
			return x
		}
	}
	return english
}
