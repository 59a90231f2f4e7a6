package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/views"
	"github.com/frank-postage/frank/hub/web/session"
	"github.com/frank-postage/frank/protocol"
)

// APIRoutes returns the operator API, to mount at /api/v1/ops. Every call
// needs "Authorization: Bearer TOKEN" from `hub operator token`; it acts
// with the rights of the token's operator, narrowed to reading unless the
// token was made with --write.
func (c *Console) APIRoutes() http.Handler {
	r := chi.NewRouter()
	r.Use(c.tokenAuth)
	// Scripts switch on the error code: a wrong path or method answers
	// the API's JSON error like every other refusal, not chi's plain text.
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		writeError(w, protocol.Errorf(protocol.CodeNotFound, "no operator API call at %s (docs/openapi.yaml)", req.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		path := req.URL.Path
		if rctx := chi.RouteContext(req.Context()); rctx != nil && rctx.RoutePath != "" {
			path = rctx.RoutePath // the path inside the mount
		}
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut} {
			if r.Match(chi.NewRouteContext(), m, path) {
				allow = append(allow, m)
			}
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		_, body := protocol.HTTPError(protocol.Errorf(protocol.CodeInvalidRequest, "method %s: %s takes %s", req.Method, req.URL.Path, strings.Join(allow, ", ")))
		writeJSON(w, http.StatusMethodNotAllowed, body)
	})
	r.Get("/me", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, current(r).Subject) })
	r.Get("/fleet", c.apiFleet)
	r.Get("/fleet/{id}", c.apiKiosk)
	r.Get("/stock", c.apiStock)
	r.Post("/stock/issue", c.apiIssue)
	r.Get("/search", c.apiSearch)
	r.Get("/shift", c.apiShift)
	for _, what := range views.Exports {
		r.Get("/exports/"+what+".csv", c.exportCSV(what))
	}
	r.Group(func(r chi.Router) {
		r.Use(opsOnlyJSON)
		r.Get("/funds", c.apiFunds)
		r.Post("/funds/check", c.apiRecheck)
		r.Get("/alerts", c.apiAlerts)
		r.Post("/alerts/{id}/ack", c.apiAck)
		r.Get("/activity", c.apiActivity)
		r.Get("/reports", c.apiReports)
		r.Get("/fleet/{id}/commands", c.apiCommands)
		r.Post("/fleet/{id}/commands", c.apiCommand)
		r.Get("/commands/{cid}", c.apiGetCommand)
		r.Get("/rollouts", c.apiRollouts)
		r.Post("/rollouts/{id}/widen", c.apiRolloutAction("widen"))
		r.Post("/rollouts/{id}/abort", c.apiRolloutAction("abort"))
		r.Get("/settings", c.apiSettings(fleetSettings))
		r.Put("/settings", c.apiSetSettings(fleetSettings))
		r.Get("/stores/{id}/settings", c.apiSettings(storeSettings))
		r.Put("/stores/{id}/settings", c.apiSetSettings(storeSettings))
		r.Get("/fleet/{id}/settings", c.apiSettings(kioskSettings))
		r.Put("/fleet/{id}/settings", c.apiSetSettings(kioskSettings))
		r.Get("/stores/{id}/staff", c.apiStaff)
		r.Post("/stores/{id}/staff", c.apiAddStaff)
		r.Post("/stores/{id}/staff/{name}/revoke", c.apiRevokeStaff)
	})
	return r
}

// Protect lets through only requests with an ops operator's API token
// (not a metrics token): for what only ops may read.
func (c *Console) Protect(h http.Handler) http.Handler {
	return c.tokenAuth(opsOnlyJSON(h))
}

// ProtectMetrics is Protect for /metrics, which shows the funds: it also
// lets through an ops operator's metrics token, the one a scraper holds,
// which every other route refuses.
func (c *Console) ProtectMetrics(h http.Handler) http.Handler {
	return c.tokenAuthFor(true, opsOnlyJSON(h))
}

// writeError answers err with protocol's status and error body, as every
// Frank API does.
func writeError(w http.ResponseWriter, err error) {
	status, body := protocol.HTTPError(err)
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (c *Console) apiFail(w http.ResponseWriter, r *http.Request, err error) {
	c.Log.Error("operator api", "path", r.URL.Path, "err", err)
	writeError(w, protocol.Errorf(protocol.CodeInternal, "internal error; see the hub log"))
}

func (c *Console) tokenAuth(next http.Handler) http.Handler { return c.tokenAuthFor(false, next) }

// tokenAuthFor checks the request's API token; metrics says whether a
// metrics token may pass (to /metrics alone).
func (c *Console) tokenAuthFor(metrics bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		var op *operators.Operator
		var err error
		if ok {
			op, err = c.People.ByToken(r.Context(), strings.TrimSpace(tok))
		}
		if !ok || errors.Is(err, operators.ErrAuth) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="frank-ops"`)
			writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "send Authorization: Bearer TOKEN (hub operator token LOGIN)"))
			return
		}
		if err != nil {
			c.apiFail(w, r, err)
			return
		}
		// Checked here, before any route, so that no route can be mounted
		// that a scraper's token reads.
		if op.Token.Scope == operators.MetricsOnly && !metrics {
			writeError(w, protocol.Errorf(protocol.CodeForbidden, "this API token may only read /metrics; for the operator API make one with hub operator token LOGIN"))
			return
		}
		// Checked here, before any route, so that no write can be mounted
		// without it; the role checks after it still apply.
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !op.Token.MayWrite() {
			writeError(w, protocol.Errorf(protocol.CodeForbidden, "this API token is read-only; for changes make one with hub operator token LOGIN --write"))
			return
		}
		next.ServeHTTP(w, r.WithContext(session.WithLogin(r.Context(), session.Login[*operators.Operator]{Subject: op})))
	})
}

func opsOnlyJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !current(r).Subject.Ops() {
			writeError(w, protocol.Errorf(protocol.CodeForbidden, "for vendor ops only"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (c *Console) apiFleet(w http.ResponseWriter, r *http.Request) {
	rows, err := c.fleetRows(r.Context(), current(r).Subject)
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rows)
}

func (c *Console) apiKiosk(w http.ResponseWriter, r *http.Request) {
	v, err := c.kiosk(r.Context(), current(r).Subject, chi.URLParam(r, "id"))
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	if v == nil {
		writeError(w, protocol.Errorf(protocol.CodeNotFound, "no such kiosk in your stores"))
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (c *Console) apiStock(w http.ResponseWriter, r *http.Request) {
	v, err := c.stock(r.Context(), current(r).Subject)
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// issueRequest is the body of POST /stock/issue.
type issueRequest struct {
	Store  string `json:"store"`
	Sheets int    `json:"sheets"`
}

// decodeIssue reads an issue request: one JSON object, no unknown fields,
// nothing after it.
func decodeIssue(r io.Reader) (issueRequest, error) {
	var req issueRequest
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("want {\"store\": ID, \"sheets\": N}: %w", err)
	}
	if dec.More() {
		return req, errors.New("want one JSON object")
	}
	if req.Store == "" || req.Sheets < 1 || req.Sheets > 1000 {
		return req, errors.New("want a store and 1 to 1000 sheets")
	}
	return req, nil
}

func (c *Console) apiIssue(w http.ResponseWriter, r *http.Request) {
	req, err := decodeIssue(http.MaxBytesReader(w, r.Body, 4096))
	if err != nil {
		writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "%s", err.Error()))
		return
	}
	serials, err := c.issueSheets(r.Context(), current(r).Subject, req.Store, req.Sheets)
	if err != nil {
		writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "%s", err.Error()))
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"store": req.Store, "sheets": serials})
}

func (c *Console) apiFunds(w http.ResponseWriter, r *http.Request) {
	// A GET reads: a ledger check run on demand (which stops sales if it
	// fails) is a write, POST /funds/check, as on the console's page.
	if r.URL.Query().Has("recheck") {
		writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "recheck: POST /api/v1/ops/funds/check runs the ledger check now"))
		return
	}
	v, err := c.funds(r.Context(), false)
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// apiRecheck runs the ledger check now, not the one of the last minute,
// and answers the funds with it. A write: read-only tokens get 403.
func (c *Console) apiRecheck(w http.ResponseWriter, r *http.Request) {
	v, err := c.funds(r.Context(), true)
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	c.Log.Info("ledger check from the API", "by", current(r).Subject.Login, "ok", v.Check.OK)
	writeJSON(w, http.StatusOK, v)
}

func (c *Console) apiAlerts(w http.ResponseWriter, r *http.Request) {
	all, err := c.Alerts.List(r.Context(), r.URL.Query().Get("open") == "1")
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, all)
}

func (c *Console) apiAck(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil {
		writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "alert id: a number"))
		return
	}
	if err := c.Alerts.Ack(r.Context(), id, current(r).Subject.Login); err != nil {
		// Not found only when the alert is in fact not open; any other
		// failure is the store's, and its text stays in the hub log.
		open, lerr := c.Alerts.List(r.Context(), true)
		if lerr == nil && !slices.ContainsFunc(open, func(a alerts.Alert) bool { return a.ID == id }) {
			writeError(w, protocol.Errorf(protocol.CodeNotFound, "no open alert %d", id))
			return
		}
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "acked_by": current(r).Subject.Login})
}

func (c *Console) apiActivity(w http.ResponseWriter, r *http.Request) {
	v, err := c.activity(r.Context())
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (c *Console) apiReports(w http.ResponseWriter, r *http.Request) {
	v, err := c.Book.Reports(r.Context(), 100)
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, append([]views.SentReport{}, v...)) // [], not null, before the first report
}

func (c *Console) apiCommands(w http.ResponseWriter, r *http.Request) {
	list, err := c.Commands.Of(r.Context(), chi.URLParam(r, "id"), 100)
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, append([]commands.Command{}, list...))
}

// apiCommand gives a kiosk a command; the answer comes later (GET
// /commands/{cid}).
func (c *Console) apiCommand(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Action  string `json:"action"`
		Message string `json:"message"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	cmd, err := c.Commands.Issue(r.Context(), chi.URLParam(r, "id"), req.Action, req.Message, current(r).Subject.Login)
	if err != nil {
		switch protocol.AsError(err).Code {
		case protocol.CodeUnknownKiosk:
			writeError(w, protocol.Errorf(protocol.CodeNotFound, "%s", err.Error()))
		case protocol.CodeInvalidRequest:
			writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "%s", err.Error()))
		default:
			c.apiFail(w, r, err)
		}
		return
	}
	c.Log.Info("kiosk command from the operator API", "kiosk", cmd.KioskID, "action", cmd.Action, "by", cmd.IssuedBy, "command_id", cmd.CommandID)
	writeJSON(w, http.StatusAccepted, cmd)
}

func (c *Console) apiGetCommand(w http.ResponseWriter, r *http.Request) {
	cmd, err := c.Commands.Get(r.Context(), chi.URLParam(r, "cid"))
	if errors.Is(err, commands.ErrUnknown) {
		writeError(w, protocol.Errorf(protocol.CodeNotFound, "no such command"))
		return
	}
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cmd)
}

// readJSON reads a request body as strictly as the hub reads messages,
// answering 400 if it cannot.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4096))
	if err == nil {
		err = protocol.DecodeJSON(b, v)
	}
	if err != nil {
		writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "%s", err.Error()))
		return false
	}
	return true
}
