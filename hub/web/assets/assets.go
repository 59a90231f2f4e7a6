// Package assets holds what the portal and the console share: one
// stylesheet, readable on a phone, the script that keeps the fleet table
// live, and the way a page is written. There is no build step: the files
// are served as written.
package assets

import (
	"embed"
	"html/template"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Handler serves the files under /static/.
func Handler() http.Handler {
	sub, _ := fs.Sub(files, "static") // the directory is embedded: cannot fail
	return http.StripPrefix("/static/", http.FileServer(http.FS(sub)))
}

// Page writes the template name as a page with status. Pages show one
// login's data, so no cache may keep them.
func Page(w http.ResponseWriter, t *template.Template, status int, name string, data any) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return t.ExecuteTemplate(w, name, data)
}
