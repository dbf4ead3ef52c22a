package config

import "strings"

// Backend is the mail transport chosen by EMAIL_BACKEND.
type Backend string

// The backends. Their values are also the Mode names.
const (
	BackendSMTP    Backend = ModeSMTP    // send through EMAIL_HOST
	BackendConsole Backend = ModeConsole // write each whole message to standard output
	BackendFile    Backend = ModeFile    // write each message to a file under EMAIL_FILE_PATH
	BackendDummy   Backend = ModeDummy   // accept and discard
)

// backendNames maps every accepted EMAIL_BACKEND value, lower-cased, to its
// backend: the short names and Django's dotted ones.
var backendNames = map[string]Backend{
	"smtp":    BackendSMTP,
	"console": BackendConsole,
	"file":    BackendFile,
	"dummy":   BackendDummy,
	"django.core.mail.backends.smtp.emailbackend":      BackendSMTP,
	"django.core.mail.backends.console.emailbackend":   BackendConsole,
	"django.core.mail.backends.filebased.emailbackend": BackendFile,
	"django.core.mail.backends.dummy.emailbackend":     BackendDummy,
}

// parseBackend returns the backend named by s: smtp, console, file or dummy,
// or one of Django's dotted names for them
// (django.core.mail.backends.filebased.EmailBackend, …), in any case. Any
// other name, Django's locmem included, is an error.
func parseBackend(s string) (Backend, error) {
	b, ok := backendNames[strings.ToLower(strings.TrimSpace(s))]
	if !ok {
		return "", errUnknownBackend
	}
	return b, nil
}

// UnmarshalText sets b from one of the names parseBackend accepts.
func (b *Backend) UnmarshalText(text []byte) error {
	v, err := parseBackend(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// LogFormat is the log encoding chosen by MAILRELAY_LOG_FORMAT.
type LogFormat string

// The log formats.
const (
	LogJSON    LogFormat = "json"
	LogConsole LogFormat = "console"
)

// UnmarshalText sets f from "json" or "console", in any case.
func (f *LogFormat) UnmarshalText(text []byte) error {
	switch v := LogFormat(strings.ToLower(string(text))); v {
	case LogJSON, LogConsole:
		*f = v
		return nil
	default:
		return errUnknownLogFormat
	}
}
