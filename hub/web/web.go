// Package web serves the hub's HTTP API with chi: health, the published
// signing keys that anyone needs to verify a stamp, and worker status.
package web

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/frank-postage/frank/hub/keys"
	"github.com/frank-postage/frank/hub/psdm"
)

// keyList lists every signing key that ever signed.
type keyList interface {
	All(ctx context.Context) ([]keys.Key, error)
}

// pinger reports whether the store answers.
type pinger interface {
	PingContext(ctx context.Context) error
}

// workers reports PSDM status.
type workers interface {
	Status() []psdm.Status
}

// Server holds what the handlers need.
type Server struct {
	Keys    keyList
	DB      pinger
	Workers workers
	Log     *slog.Logger
}

// Handler returns the router.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Get("/healthz", s.healthz)
	r.Route("/api/v1", func(r chi.Router) {
		r.Get("/certificates", s.certificates)
		r.Get("/psdm", s.psdm)
	})
	return r
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.DB.PingContext(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "store unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// certificate is the published form of a key.
type certificate struct {
	Serial       uint32 `json:"serial"`
	Algorithm    int    `json:"algorithm"`
	PublicKeyPEM string `json:"public_key_pem"`
	Active       bool   `json:"active"`
}

func (s *Server) certificates(w http.ResponseWriter, r *http.Request) {
	all, err := s.Keys.All(r.Context())
	if err != nil {
		s.Log.Error("list keys", "err", err)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
		return
	}
	out := make([]certificate, 0, len(all))
	for _, k := range all {
		out = append(out, certificate{Serial: k.CertSerial, Algorithm: k.Algorithm, PublicKeyPEM: k.PublicKeyPEM, Active: k.Retired == nil})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) psdm(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Workers.Status())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
