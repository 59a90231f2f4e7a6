package hub_test

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/frank-postage/frank/hub/web"
)

// Every form of the portal and console is urlencoded. A multipart one is
// refused before anything reads it: Go kept its values in memory and
// spilled its files to the temporary directory, where nothing removed
// them, for anyone who posted to a login page.
func TestFormsRefuseMultipart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("login", "alice")
	fw, _ := mw.CreateFormFile("password", "x")
	fw.Write([]byte("a file, not a password"))
	mw.Close()
	for _, path := range []string{"/portal/login", "/portal/register", "/portal/forgot", "/portal/reset", "/console/login"} {
		req, _ := http.NewRequest(http.MethodPost, b.base+path, bytes.NewReader(body.Bytes()))
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := b.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("multipart POST %s: %d, want 415", path, resp.StatusCode)
		}
	}
}

// A request's body is held to web.MaxBodyBytes before any login: the
// login forms read a whole urlencoded body of up to 10 MB, and a multipart
// value of up to 32 MB, for anyone, before the login limits.
func TestFormBodiesLimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser()
	// Just over the limit, in one field as a browser would send it.
	over := url.Values{"login": {"alice"}, "password": {strings.Repeat("a", web.MaxBodyBytes)}}
	for _, path := range []string{"/portal/login", "/portal/register", "/portal/forgot", "/console/login"} {
		if st, _, page := b.do("POST", path, over); st != http.StatusRequestEntityTooLarge {
			t.Errorf("POST %s of %d bytes: %d, want 413: %.200s", path, len(over.Encode()), st, page)
		}
	}
	// A signed-in customer's form too: the CSRF check reads it.
	alice := e.customer("alice", "")
	form := url.Values{"zip": {"02134"}, "pad": {strings.Repeat("a", web.MaxBodyBytes)}}
	if st, _, page := alice.post("/portal/", "/portal/zip", form); st != http.StatusRequestEntityTooLarge {
		t.Errorf("POST /portal/zip over the limit: %d, want 413: %.200s", st, page)
	}
	// Under it, a login is judged as ever.
	if st, _, _ := b.do("POST", "/portal/login", url.Values{"login": {"alice"}, "password": {strings.Repeat("a", 1000)}}); st != http.StatusUnauthorized {
		t.Errorf("a wrong password under the limit: %d, want 401", st)
	}
}

// A request's header is held to web.MaxHeaderBytes (64 KiB), not Go's
// default of 1 MB, which each of an address's 64 connections could hold.
func TestWebHeaderBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	req, _ := http.NewRequest(http.MethodGet, e.h.URL()+"/healthz", nil)
	for i := range 12 {
		req.Header.Set("X-Pad-"+string(rune('a'+i)), strings.Repeat("a", 8000))
	}
	c := e.browser().c
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 96 KB header: %d, want 431", resp.StatusCode)
	}
	req.Header = http.Header{"X-Pad": {strings.Repeat("a", 8000)}}
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("an 8 KB header: %d, want 200", resp.StatusCode)
	}
}
