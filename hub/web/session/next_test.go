package session

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestNextIsNeverAnOpenRedirect(t *testing.T) {
	for next, want := range map[string]string{
		"/console/kiosks/k1":     "/console/kiosks/k1",
		"":                       "/console/",
		"https://evil.example/":  "/console/",
		"//evil.example/console": "/console/",
		"/console/\\evil":        "/console/",
		"/portal/":               "/console/",
		"/console/\r\nX: y":      "/console/",
	} {
		r := httptest.NewRequest("POST", "/console/login", strings.NewReader(url.Values{"next": {next}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if got := Next(r, "/console/"); got != want {
			t.Errorf("next %q: %q, want %q", next, got, want)
		}
	}
}
