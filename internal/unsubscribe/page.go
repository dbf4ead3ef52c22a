package unsubscribe

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
)

// pageView is what the page template shows.
type pageView struct {
	T        *texts
	Title    string
	Heading  string
	Lines    []string
	Form     bool   // the confirm button (GET of a valid token)
	Settings string // the preferences page, "" when unknown
	Status   string // "status" for a confirmation read out by screen readers
}

// The page: no script, no external resource, system fonts, contrast
// above WCAG AA (text #1b1b1b and the button's white on #0b57d0 on white),
// a visible focus ring, and a form that works with the keyboard alone.
var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="{{.T.Lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{.Title}}</title>
<style>
body{font:1.0625rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;background:#fff;margin:0;padding:2rem 1rem}
main{max-width:34rem;margin:0 auto}
h1{font-size:1.5rem;line-height:1.25;margin:0 0 1rem}
p{margin:0 0 1rem}
button{font:inherit;font-weight:600;color:#fff;background:#0b57d0;border:2px solid #0b57d0;border-radius:.375rem;padding:.625rem 1.25rem;cursor:pointer}
button:hover{background:#0842a0;border-color:#0842a0}
a{color:#0b57d0;text-decoration:underline}
a:hover{color:#0842a0}
:focus-visible{outline:3px solid #1b1b1b;outline-offset:3px}
</style>
</head>
<body>
<main>
<h1 id="heading">{{.Heading}}</h1>
{{- if .Status}}
<div role="{{.Status}}">
{{- range .Lines}}
<p>{{.}}</p>
{{- end}}
</div>
{{- else}}
{{- range .Lines}}
<p>{{.}}</p>
{{- end}}
{{- end}}
{{- if .Form}}
<form method="post" aria-labelledby="heading">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<p><button type="submit">{{.T.Button}}</button></p>
</form>
{{- end}}
{{- if .Settings}}
<p><a href="{{.Settings}}">{{.T.Settings}}</a></p>
{{- else}}
<p>{{.T.NoSettings}}</p>
{{- end}}
</main>
</body>
</html>
`))

// writePage renders v with the status code and the headers every answer
// of the public listener carries.
func writePage(w http.ResponseWriter, code int, v pageView) {
	var b bytes.Buffer
	if err := pageTemplate.Execute(&b, v); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", fmt.Sprint(b.Len()))
	h.Set("Content-Language", v.T.Lang)
	writeHeaders(h)
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

// writeHeaders sets what keeps the token out of caches, referrers and
// search engines, and the page from loading anything or being framed.
func writeHeaders(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Robots-Tag", "noindex, nofollow")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
}
