// Package ui serves the kiosk's touchscreen web app: one page, plain CSS and a
// little vanilla JS, embedded in the binary. The app talks only to the
// kiosk's same-origin JSON API (/api/v1/...) with fetch, so this package has
// no knowledge of sales, peripherals or the hub.
package ui

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

//go:embed web
var webFS embed.FS

// Config tunes the app's timers. A zero field takes its documented default.
type Config struct {
	// IdleTimeout returns the app to the start screen after this long
	// without a touch. Default 60 s. A page URL with ?idle=N (seconds)
	// overrides it, which lets tests use a short one.
	IdleTimeout time.Duration
	// StatusEvery is how often the app polls /api/v1/status. Default 2 s.
	StatusEvery time.Duration
	// WeightEvery is how often the weigh screen polls /api/v1/weight.
	// Default 300 ms.
	WeightEvery time.Duration
	// ProgressEvery is how often the paying screen asks the kiosk where
	// the sale is (/api/v1/sales/progress). Default 300 ms.
	ProgressEvery time.Duration
}

func (c Config) withDefaults() Config {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.StatusEvery <= 0 {
		c.StatusEvery = 2 * time.Second
	}
	if c.WeightEvery <= 0 {
		c.WeightEvery = 300 * time.Millisecond
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = 300 * time.Millisecond
	}
	return c
}

// Handler serves the app with the default Config.
func Handler() http.Handler {
	h, err := New(Config{})
	if err != nil {
		// The template is embedded and checked by the tests, so this
		// cannot happen in a built binary.
		panic(err)
	}
	return h
}

// New serves the page at / and its assets under /ui/. Mount it beside the
// JSON API; it claims no /api paths.
func New(cfg Config) (http.Handler, error) {
	cfg = cfg.withDefaults()
	tmpl, err := template.ParseFS(webFS, "web/index.html")
	if err != nil {
		return nil, fmt.Errorf("ui: parse page: %w", err)
	}
	var page bytes.Buffer
	err = tmpl.Execute(&page, map[string]any{
		"IdleMS":     cfg.IdleTimeout.Milliseconds(),
		"StatusMS":   cfg.StatusEvery.Milliseconds(),
		"WeightMS":   cfg.WeightEvery.Milliseconds(),
		"ProgressMS": cfg.ProgressEvery.Milliseconds(),
		"Languages":  strings.Join(Languages(), " "),
	})
	if err != nil {
		return nil, fmt.Errorf("ui: render page: %w", err)
	}
	static, err := fs.Sub(webFS, "web/static")
	if err != nil {
		return nil, fmt.Errorf("ui: static files: %w", err)
	}

	body := page.Bytes()
	r := chi.NewRouter()
	r.Get("/", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		// The page must work offline on the Pi, so nothing but our own
		// origin is ever needed.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		_, _ = w.Write(body)
	})
	files := http.StripPrefix("/ui/", http.FileServerFS(static))
	r.Get("/ui/*", func(w http.ResponseWriter, r *http.Request) {
		// No directory listings, and no redirect for /ui/index.html that
		// would land on one.
		if strings.HasSuffix(r.URL.Path, "/") || strings.HasSuffix(r.URL.Path, "/index.html") {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
	return r, nil
}
