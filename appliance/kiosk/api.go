package kiosk

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/frank-postage/frank/appliance/ui"
	"github.com/frank-postage/frank/protocol"
)

// Handler serves the local API on 127.0.0.1 for the touchscreen.
func (k *Kiosk) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if !k.Ready() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ready": true})
	})
	r.Get("/api/v1/prices", k.prices)
	r.Post("/api/v1/sales", k.sell)
	r.Get("/api/v1/sales/progress", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, k.Progress()) })
	r.Post("/api/v1/sales/{id}/reprint", k.remedy)
	r.Post("/api/v1/sales/{id}/refund", k.remedy)
	r.Post("/api/v1/sales/{id}/receipt", k.receiptRoute)
	r.Get("/api/v1/stock", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]int{"labels_left": k.LabelsLeft()})
	})
	// Loading stock is staff's: POST /api/v1/staff/stock, behind the login.
	r.Get("/api/v1/status", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("screen") == "1" {
			k.screenSeen.Store(k.now().UnixNano())
			k.screenUp.Store(int64(k.uptime()) + 1)
		}
		writeJSON(w, http.StatusOK, k.Status())
	})
	r.Get("/api/v1/screen", k.screen)
	r.Get("/api/v1/weight", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, k.Weight()) })
	r.Route("/api/v1/staff", k.staffRoutes)
	// The touchscreen app, for Chromium in kiosk mode.
	app := ui.Handler()
	r.Get("/", app.ServeHTTP)
	r.Get("/ui/*", app.ServeHTTP)
	return r
}

// decodeBody reads a JSON body as strictly as the hub reads messages:
// one object, known fields, no key twice.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<10))
	if err != nil {
		writeError(w, protocol.Errorf(protocol.CodeMalformed, "reading the body: %v", err))
		return false
	}
	if err := protocol.DecodeJSON(b, v); err != nil {
		writeError(w, err)
		return false
	}
	return true
}

// loadStock takes the sheet serials staff scanned, and answers with the
// hub's word on each sheet and the labels now loaded.
func (k *Kiosk) loadStock(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Sheets []string `json:"sheets"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	res, err := k.LoadStock(r.Context(), body.Sheets)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, resultStatus(res.Status, res.Error), struct {
		*protocol.StockResult
		LabelsLeft int `json:"labels_left"`
	}{res, k.LabelsLeft()})
}

// remedy serves the customer's choice for a label that failed to print.
func (k *Kiosk) remedy(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Label string `json:"label"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	id := chi.URLParam(r, "id")
	var out any
	var status string
	var refusal *protocol.Error
	var err error
	if strings.HasSuffix(r.URL.Path, "/reprint") {
		var rc *Receipt
		if rc, err = k.Reprint(r.Context(), id, body.Label); err == nil {
			out, status, refusal = rc, rc.Status, rc.Error
		}
	} else {
		var rr *protocol.RefundResult
		if rr, err = k.Refund(r.Context(), id, body.Label); err == nil {
			out, status, refusal = rr, rr.Status, rr.Error
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, resultStatus(status, refusal), out)
}

type price struct {
	Class string          `json:"rate_class"`
	Name  string          `json:"name"`
	Price protocol.Mills  `json:"price_mills,omitempty"`
	Error *protocol.Error `json:"error,omitempty"`
}

func (k *Kiosk) prices(w http.ResponseWriter, r *http.Request) {
	rt := k.Rates()
	if rt == nil {
		writeError(w, protocol.Errorf(protocol.CodeServiceUnavailable, "no rate table from the hub yet"))
		return
	}
	mg, err := strconv.ParseInt(r.URL.Query().Get("weight_mg"), 10, 64)
	if err != nil || mg <= 0 || mg > protocol.MaxWeightMg {
		writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "weight_mg: want 1 to %d", protocol.MaxWeightMg))
		return
	}
	out := []price{}
	for _, c := range rt.Classes {
		p := price{Class: c.Class, Name: c.Name}
		if v, err := c.Price(mg); err != nil {
			p.Error = protocol.AsError(err)
		} else {
			p.Price = v
		}
		out = append(out, p)
	}
	writeJSON(w, http.StatusOK, out)
}

func (k *Kiosk) sell(w http.ResponseWriter, r *http.Request) {
	var o Order
	if !decodeBody(w, r, &o) {
		return
	}
	if err := o.Validate(); err != nil {
		writeError(w, err)
		return
	}
	rc, err := k.Sell(r.Context(), o)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, resultStatus(rc.Status, rc.Error), rc)
}

// resultStatus is 200 for a result that is ok, and otherwise the status of
// its refusal's code (protocol's one map), or 422 if it names none.
func resultStatus(status string, refusal *protocol.Error) int {
	switch {
	case status == protocol.ResultOK:
		return http.StatusOK
	case refusal != nil:
		return refusal.Code.HTTPStatus()
	}
	return http.StatusUnprocessableEntity
}

// writeError answers err with protocol's status and error body.
func writeError(w http.ResponseWriter, err error) {
	status, body := protocol.HTTPError(err)
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// screen says whether the touchscreen polled the status (?screen=1) within
// the last ?within= seconds (default 60): "live", or "stale" when it did
// not, or never did. The touchscreen's own watchdog asks it, and restarts
// a browser that never loaded the page or has hung since.
func (k *Kiosk) screen(w http.ResponseWriter, r *http.Request) {
	within := 60 * time.Second
	if v := r.URL.Query().Get("within"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 86400 {
			writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "within: seconds, 1 to 86400"))
			return
		}
		within = time.Duration(n) * time.Second
	}
	out := map[string]any{"screen": "stale"}
	if seen := k.screenSeen.Load(); seen != 0 {
		out["seen"] = time.Unix(0, seen).UTC()
		if k.uptime()-time.Duration(k.screenUp.Load()-1) <= within {
			out["screen"] = "live"
		}
	}
	writeJSON(w, http.StatusOK, out)
}
