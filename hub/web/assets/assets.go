// Package assets holds the few static files the portal and the console
// share: one stylesheet, readable on a phone, and the script that keeps
// the fleet table live. There is no build step: the files are served as
// written.
package assets

import (
	"embed"
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
