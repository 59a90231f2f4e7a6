package hub_test

import (
	"context"
	"encoding/xml"
	"net/http"
	"strings"
	"testing"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// The XML webstamp API's HTTP Basic logins meet the portal's login limits,
// counted with the portal's failures (and kept in the database for every
// hub): after 5 wrong passwords for one account from one address, split
// between the API and the portal, the right password is refused by both,
// the API with 429, Retry-After and its XML error.
func TestWebstampLoginsMeetThePortalLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.h.Accounts().Create(context.Background(), "alice", firstPassword); err != nil {
		t.Fatal(err)
	}
	post := func(password string) (*http.Response, protocol.XMLError) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+e.h.HTTPAddr+"/api/v1/webstamp", strings.NewReader(prototest.PatentWebStampRequest))
		req.SetBasicAuth("alice", password)
		req.Header.Set("Content-Type", "application/xml")
		req.Header.Set("Idempotency-Key", protocol.NewRequestID())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var x protocol.XMLError
		xml.NewDecoder(resp.Body).Decode(&x) // a sale answers <Indicium>: x stays empty
		return resp, x
	}
	for range 3 {
		if resp, x := post("wrong guess"); resp.StatusCode != http.StatusUnauthorized || x.Code != protocol.CodeUnauthorized {
			t.Fatalf("a wrong password: %s %+v", resp.Status, x)
		}
	}
	for range 2 {
		if _, st := e.portalLogin("alice", "wrong guess"); st != http.StatusUnauthorized {
			t.Fatalf("a wrong portal password: %d", st)
		}
	}
	resp, x := post(firstPassword)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || x.Code != protocol.CodeUnauthorized {
		t.Fatalf("the right password after 5 wrong ones: %s, Retry-After %q, %+v; want 429 with Retry-After and %s", resp.Status, resp.Header.Get("Retry-After"), x, protocol.CodeUnauthorized)
	}
	if _, st := e.portalLogin("alice", firstPassword); st != http.StatusTooManyRequests {
		t.Fatalf("the portal after 5 wrong passwords: %d, want 429", st)
	}
}
