package console

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// A path the API does not have, and a method a path does not take, answer
// the API's JSON error (not_found; invalid_request with 405 and Allow), so
// scripts can switch on the code as on every other refusal.
func TestAPIWrongPathOrMethodAnswersJSONError(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newRoutesAPI(t, dsn)
		st, body := a.send("GET", "/nonexistent", a.opsRead, "")
		a.refused("GET /nonexistent", st, body, protocol.CodeNotFound, "/nonexistent")
		st, body = a.send("GET", "/fleet/kiosk-1/nonexistent", a.opsRead, "")
		a.refused("GET /fleet/kiosk-1/nonexistent", st, body, protocol.CodeNotFound, "")

		for call, allow := range map[string]string{"DELETE /fleet": "GET", "POST /fleet/kiosk-1/settings": "GET, PUT", "PUT /stock/issue": "POST"} {
			method, path, _ := strings.Cut(call, " ")
			req := httptest.NewRequest(method, path, strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer "+a.opsWrite)
			w := httptest.NewRecorder()
			a.h.ServeHTTP(w, req)
			pe := protocol.DecodeHTTPError(w.Body.Bytes())
			if w.Code != http.StatusMethodNotAllowed || pe == nil || pe.Code != protocol.CodeInvalidRequest || w.Header().Get("Content-Type") != "application/json" {
				t.Errorf("%s: %d %s %s, want 405 invalid_request as JSON", call, w.Code, w.Header().Get("Content-Type"), w.Body)
			}
			if got := w.Header().Get("Allow"); got != allow {
				t.Errorf("%s: Allow %q, want %q", call, got, allow)
			}
		}
		// Without a token a wrong path is still unauthorized first.
		st, body = a.send("GET", "/nonexistent", "frk_wrong", "")
		a.refused("GET /nonexistent without a token", st, body, protocol.CodeUnauthorized, "")
	})
}

// Settings and staff of a kiosk or store the hub does not have answer
// not_found: a PUT saves nothing that no kiosk would ever read, and a GET
// does not show {} as if the settings were merely unset.
func TestAPISettingsOfUnknownKioskOrStoreNotFound(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newRoutesAPI(t, dsn)
		for _, call := range []string{"GET /fleet/ghost-kiosk/settings", `PUT /fleet/ghost-kiosk/settings {"language":"en"}`,
			"GET /stores/ghost-store/settings", `PUT /stores/ghost-store/settings {"language":"en"}`, "GET /stores/ghost-store/staff"} {
			head, body, _ := strings.Cut(call, " {")
			if body != "" {
				body = "{" + body
			}
			method, path, _ := strings.Cut(head, " ")
			st, out := a.send(method, path, a.opsWrite, body)
			a.refused(call, st, out, protocol.CodeNotFound, "ghost-")
		}
		var n int
		if err := a.db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM kiosk_settings`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%d settings saved (%v) for kiosks and stores that do not exist", n, err)
		}
		// The known ones still answer.
		if st, out := a.send("GET", "/stores/store-b/settings", a.opsRead, ""); st != http.StatusOK {
			t.Errorf("GET /stores/store-b/settings: %d %s", st, out)
		}
		if st, out := a.send("PUT", "/fleet/kiosk-2/settings", a.opsWrite, `{"language":"en"}`); st != http.StatusOK {
			t.Errorf("PUT /fleet/kiosk-2/settings: %d %s", st, out)
		}
	})
}

// failingBook is an alert book whose store fails, with alert 7 open.
type failingBook struct{}

func (b *failingBook) List(context.Context, bool) ([]alerts.Alert, error) {
	return []alerts.Alert{{ID: 7, Kind: alerts.PaperOut}}, nil
}

func (b *failingBook) Ack(context.Context, int64, string) error {
	return errors.New(`alerts: ack 7: pq: relation "alerts" is locked by driver detail`)
}

// Acknowledging an open alert when the store fails is an internal error,
// with the driver's text kept in the hub log; only an alert that is not
// open is not_found.
func TestAPIAckStoreFailureIsInternal(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newRoutesAPI(t, dsn)
		c := &Console{People: a.ops, Alerts: &failingBook{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		a.h = c.APIRoutes()
		st, body := a.send("POST", "/alerts/7/ack", a.opsWrite, "")
		a.refused("ack of an open alert, store failing", st, body, protocol.CodeInternal, "see the hub log")
		if strings.Contains(body, "driver") {
			t.Errorf("the answer carries the store's error: %s", body)
		}
		st, body = a.send("POST", "/alerts/8/ack", a.opsWrite, "")
		a.refused("ack of an alert that is not open", st, body, protocol.CodeNotFound, "8")
	})
}
