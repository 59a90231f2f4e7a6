package hub_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/frank-postage/frank/protocol"
)

// The XML webstamp API takes an XML POST with an Idempotency-Key and
// nothing else: a form another site's page posts with the browser's Basic
// credentials (text/plain, or form-encoded) buys nothing, nor does a
// request without a key (a retry of it would buy again); another method
// gets the XML error with Allow. Purchases at once of one customer are
// not refused as failed logins (a try counted only while its login is
// checked).
func TestWebstampTakesOnlyKeyedXMLPosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.customer("wendy", "10.00")
	sheet := e.webSheet()
	acct, err := e.h.Accounts().ByLogin(context.Background(), "wendy")
	if err != nil {
		t.Fatal(err)
	}
	sh, _ := protocol.ParseSheetSerial(sheet)
	if err := e.h.Stock().AssignToAccount(context.Background(), sh, acct.ID); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`<server.bp_RequestWebStampParams><LoginID>wendy</LoginID><Amount>780</Amount><RateClass>1100</RateClass>`+
		`<FIM>0</FIM><SerialNumber>%s</SerialNumber></server.bp_RequestWebStampParams>`, sheet)
	send := func(method, contentType, key, body string) (int, http.Header, protocol.XMLError) {
		t.Helper()
		r, _ := http.NewRequest(method, "http://"+e.h.HTTPAddr+"/api/v1/webstamp", strings.NewReader(body))
		r.SetBasicAuth("wendy", firstPassword)
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		if key != "" {
			r.Header.Set("Idempotency-Key", key)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var x protocol.XMLError
		xml.NewDecoder(resp.Body).Decode(&x) // a sale answers <Indicium>: x stays empty
		return resp.StatusCode, resp.Header, x
	}
	for _, c := range []struct {
		name, method, contentType, key string
		status                         int
		code                           protocol.Code
	}{
		{"text/plain form", "POST", "text/plain", "k-1", http.StatusUnsupportedMediaType, protocol.CodeMalformed},
		{"urlencoded form", "POST", "application/x-www-form-urlencoded", "k-2", http.StatusUnsupportedMediaType, protocol.CodeMalformed},
		{"no content type", "POST", "", "k-3", http.StatusUnsupportedMediaType, protocol.CodeMalformed},
		{"no key", "POST", "application/xml", "", http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"GET", "GET", "application/xml", "k-4", http.StatusMethodNotAllowed, protocol.CodeInvalidRequest},
	} {
		st, h, x := send(c.method, c.contentType, c.key, body)
		if st != c.status || x.Code != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, st, x.Code, c.status, c.code)
		}
		if c.method == "GET" && h.Get("Allow") != http.MethodPost {
			t.Errorf("GET: Allow %q", h.Get("Allow"))
		}
	}
	if a, err := e.h.Accounts().ByLogin(context.Background(), "wendy"); err != nil || a.Balance != 10_000 {
		t.Fatalf("balance %v (%v) after refused requests, want $10.00 untouched", a.Balance, err)
	}
	const n = 8 // more than the failed-login limits let through at once
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if st, _, x := send("POST", "text/xml; charset=utf-8", fmt.Sprintf("at-once-%d", i), body); st != http.StatusOK {
				t.Errorf("purchase %d at once: %d %s %s", i, st, x.Code, x.Message)
			}
		})
	}
	wg.Wait()
	e.check()
}
