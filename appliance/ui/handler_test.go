package ui_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/ui"
)

func TestHandlerServesPageAndAssets(t *testing.T) {
	h, err := ui.New(ui.Config{IdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, tc := range []struct {
		path, want string
		status     int
	}{
		{"/", `data-idle-ms="5000"`, 200},
		{"/ui/app.js", "/api/v1/status?screen=1", 200},
		{"/ui/app.css", "touch-action", 200},
		{"/ui/index.html", "", 404}, // the template is not a static file
		{"/api/v1/status", "", 404}, // the API belongs to the kiosk
	} {
		res, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
			t.Errorf("GET %s: %d, want %d with %q", tc.path, res.StatusCode, tc.status, tc.want)
		}
		if tc.path == "/" && !strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET /: no same-origin CSP")
		}
	}
	if ui.Handler() == nil {
		t.Error("Handler returned nil")
	}
}
