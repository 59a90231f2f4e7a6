package web_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/web"
	"github.com/frank-postage/frank/hub/web/session"
)

// countingCustomers refuses everyone and counts the logins it was asked
// to check.
type countingCustomers struct{ asked int }

func (c *countingCustomers) Authenticate(context.Context, string, string) (*accounts.Account, error) {
	c.asked++
	return nil, accounts.ErrAuth
}

// The XML API's Basic auth takes a name longer than any login as a wrong
// login without looking it up, and counts it against the address alone:
// after the address's limit of them, the address is refused.
func TestWebStampLongLoginIsWrongWithoutALook(t *testing.T) {
	cust := &countingCustomers{}
	s := &web.Server{Customers: cust, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), CustomerLogins: session.NewLogins("portal", nil)}
	h := s.Handler()
	send := func(login string) int {
		req := httptest.NewRequest("POST", "/api/v1/webstamp", strings.NewReader("<x/>"))
		req.SetBasicAuth(login, "wrong password")
		req.Header.Set("Content-Type", "application/xml")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	long := strings.Repeat("x", session.MaxLogin+1)
	for i := range session.AddressFailures {
		if st := send(long); st != http.StatusUnauthorized {
			t.Fatalf("long login %d: %d, want 401", i, st)
		}
	}
	if cust.asked != 0 {
		t.Errorf("%d long logins were looked up", cust.asked)
	}
	if st := send("alice"); st != http.StatusTooManyRequests {
		t.Errorf("after %d long logins the address may go on: %d", session.AddressFailures, st)
	}
}
