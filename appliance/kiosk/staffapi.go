package kiosk

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/frank-postage/frank/appliance/scale"
	"github.com/frank-postage/frank/protocol"
)

// calibrator is a scale that is calibrated at the kiosk (the HX711 load
// cell); serial scales calibrate themselves.
type calibrator interface {
	Calibrate(ctx context.Context, knownMg int64) error
}

// calibrated is a scale whose zero and calibration the kiosk keeps (the
// HX711), so a change to them can be logged.
type calibrated interface {
	Calibration() scale.Calibration
}

// staffRoutes serve staff mode: login by PIN or badge, then stock,
// service state, scale zero and calibration, counters.
func (k *Kiosk) staffRoutes(r chi.Router) {
	r.Post("/login", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			PIN   string `json:"pin"`
			Badge string `json:"badge"`
		}
		if !decodeBody(w, r, &body) {
			return
		}
		if k.locked() {
			k.log.Warn("staff login refused: the kiosk is locked by ops")
			writeError(w, protocol.Errorf(protocol.CodeKioskLocked, "this kiosk is locked by ops"))
			return
		}
		tok, wait, err := k.staff.login(r.Context(), body.PIN, body.Badge)
		if err != nil {
			k.log.Warn("staff login not checked", "err", err)
			writeError(w, err)
			return
		}
		if wait > 0 {
			k.log.Warn("staff PIN locked out after wrong PINs", "wait", wait.Round(time.Second))
			w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
			// A limit, not a wrong PIN: 429 with Retry-After, in the one error shape.
			writeJSON(w, http.StatusTooManyRequests, protocol.ErrorBody{Error: protocol.Errorf(protocol.CodeUnauthorized,
				"too many wrong PINs; try again in %s", wait.Round(time.Second))})
			return
		}
		if tok == "" {
			k.log.Warn("staff login refused")
			writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "wrong PIN or badge"))
			return
		}
		k.log.Info("staff logged in")
		writeJSON(w, http.StatusOK, map[string]string{"token": tok})
	})
	r.Group(func(r chi.Router) {
		r.Use(k.staffOnly)
		r.Post("/logout", func(w http.ResponseWriter, r *http.Request) {
			k.staff.logout(bearer(r))
			writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		})
		r.Get("/counters", func(w http.ResponseWriter, r *http.Request) {
			st := k.Status()
			writeJSON(w, http.StatusOK, map[string]any{"sales": st.Sales, "labels_left": st.LabelsLeft, "paper": st.Paper,
				"printer": st.Printer, "scale": st.Scale, "in_service": st.InService, "reasons": st.Reasons, "errors": k.Errors()})
		})
		r.Post("/stock", k.loadStock)
		r.Get("/shift", k.shiftRoutes)
		r.Post("/shift/print", k.shiftRoutes)
		r.Post("/shift/end", k.shiftRoutes)
		r.Post("/service", func(w http.ResponseWriter, r *http.Request) {
			var body struct {
				InService bool `json:"in_service"`
			}
			if !decodeBody(w, r, &body) {
				return
			}
			k.SetInService(body.InService)
			k.log.Info("staff set service", "in_service", body.InService)
			writeJSON(w, http.StatusOK, k.Status())
		})
		// Zero and calibration move every later price: each is logged with
		// who did it and what the scale said before and after.
		r.Post("/zero", func(w http.ResponseWriter, r *http.Request) {
			if k.dev.Scale == nil {
				writeError(w, protocol.Errorf(protocol.CodeServiceUnavailable, "no scale"))
				return
			}
			who, was := k.staff.name(bearer(r)), k.Weight()
			calWas, _ := k.dev.Scale.(calibrated)
			var old scale.Calibration
			if calWas != nil {
				old = calWas.Calibration()
			}
			if err := k.dev.Scale.Zero(r.Context()); err != nil {
				k.log.Warn("staff scale zero failed", "staff", who, "err", err)
				writeError(w, protocol.Errorf(protocol.CodeServiceUnavailable, "zero: %v", err))
				return
			}
			attrs := []any{"staff", who, "weight_was_mg", was.WeightMg, "state_was", was.State}
			if calWas != nil {
				attrs = append(attrs, "offset_was", old.Offset, "offset", calWas.Calibration().Offset)
			}
			k.log.Info("staff zeroed the scale", attrs...)
			writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		})
		r.Post("/calibrate", func(w http.ResponseWriter, r *http.Request) {
			var body struct {
				KnownMg int64 `json:"known_mg"`
			}
			if !decodeBody(w, r, &body) {
				return
			}
			c, ok := k.dev.Scale.(calibrator)
			if !ok {
				writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "this scale calibrates itself"))
				return
			}
			who := k.staff.name(bearer(r))
			calWas, _ := k.dev.Scale.(calibrated)
			var old scale.Calibration
			if calWas != nil {
				old = calWas.Calibration()
			}
			if err := c.Calibrate(r.Context(), body.KnownMg); err != nil {
				k.log.Warn("staff scale calibration failed", "staff", who, "known_mg", body.KnownMg, "err", err)
				writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "calibrate: %v", err))
				return
			}
			attrs := []any{"staff", who, "known_mg", body.KnownMg}
			if calWas != nil {
				now := calWas.Calibration()
				attrs = append(attrs, "offset_was", old.Offset, "counts_was", old.Counts, "mg_was", old.Mg,
					"offset", now.Offset, "counts", now.Counts, "mg", now.Mg)
			}
			k.log.Info("staff calibrated the scale", attrs...)
			writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		})
	})
}

func bearer(r *http.Request) string {
	t, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return t
}

func (k *Kiosk) staffOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !k.staff.check(bearer(r)) {
			writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "staff login needed"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
