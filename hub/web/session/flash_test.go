package session

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The flash cookie is Secure, with the __Host- prefix, whenever the
// manager's session cookies are: behind a TLS proxy (secure manager, plain
// HTTP request) as on TLS; only a plain hub not told of a proxy sets the
// plain "flash". The message comes back once, from the cookie of that name.
func TestFlashCookieSecureAsTheSession(t *testing.T) {
	for _, c := range []struct {
		what       string
		secure     bool
		tls        bool
		wantName   string
		wantSecure bool
	}{
		{"plain HTTP", false, false, "flash", false},
		{"behind a TLS proxy", true, false, "__Host-flash", true},
		{"TLS", false, true, "__Host-flash", true},
	} {
		m := New(nil, "console", 0, c.secure, nil)
		req := httptest.NewRequest("POST", "/console/alerts/1/ack", nil)
		if c.tls {
			req.TLS = &tls.ConnectionState{}
		}
		w := httptest.NewRecorder()
		m.Flash(w, req, "Alert acknowledged.")
		cs := w.Result().Cookies()
		if len(cs) != 1 || cs[0].Name != c.wantName || cs[0].Secure != c.wantSecure || cs[0].Path != "/" || cs[0].Domain != "" || !cs[0].HttpOnly {
			t.Errorf("%s: flash cookie %+v, want %s Secure=%v", c.what, cs, c.wantName, c.wantSecure)
			continue
		}
		next := httptest.NewRequest("GET", "/console/alerts", nil)
		next.TLS = req.TLS
		next.AddCookie(&http.Cookie{Name: cs[0].Name, Value: cs[0].Value})
		w = httptest.NewRecorder()
		if msg := m.TakeFlash(w, next); msg != "Alert acknowledged." {
			t.Errorf("%s: took %q", c.what, msg)
		}
		if cl := w.Result().Cookies(); len(cl) != 1 || cl[0].Name != c.wantName || cl[0].MaxAge >= 0 || cl[0].Secure != c.wantSecure {
			t.Errorf("%s: clearing cookie %+v", c.what, cl)
		}
	}
	// A secure page shows no message planted in a plain "flash" cookie.
	m := New(nil, "console", 0, true, nil)
	req := httptest.NewRequest("GET", "/console/", nil)
	req.AddCookie(&http.Cookie{Name: "flash", Value: "UGxhbnRlZA"})
	if msg := m.TakeFlash(httptest.NewRecorder(), req); msg != "" {
		t.Errorf("a secure manager showed a plain flash cookie: %q", msg)
	}
}
