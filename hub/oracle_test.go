package hub_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/protocol"
)

// A customer who names a sheet that is not theirs, in the portal or the
// XML API, gets label_not_assigned whatever its labels' state: the refusal
// tells nothing of how many labels are left on another's sheet.
func TestSheetNotYoursTellsNoLabelsLeft(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	partly, full := e.webSheet(), e.webSheet()
	carol := e.customer("carol@example.com", "20.00")
	for _, b := range []struct {
		sheet string
		n     int
	}{{partly, 1}, {full, 10}} {
		if st, loc, page := carol.buy(b.sheet, b.n); st != http.StatusSeeOther {
			t.Fatalf("carol buys %d on %s: %d %s %.300s", b.n, b.sheet, st, loc, page)
		}
	}
	dave := e.customer("dave@example.com", "10.00")
	// carol's sheet with 9 free labels, carol's used-up sheet, and a
	// kiosk's sheet with 10 free.
	for _, sheet := range []string{partly, full, "1966-F8CF"} {
		st, _, page := dave.buy(sheet, 10)
		if st != http.StatusUnprocessableEntity || !strings.Contains(page, "label_not_assigned") || strings.Contains(page, "free labels;") {
			i := max(strings.Index(page, `id="error"`), 0)
			t.Errorf("dave buys 10 on %s (not his): %d %.200s; want 422 label_not_assigned", sheet, st, page[i:])
		}
	}
	// His own sheet still tells him what is left on it.
	mine := e.webSheet()
	if st, loc, page := dave.buy(mine, 3); st != http.StatusSeeOther {
		t.Fatalf("dave buys on his sheet: %d %s %.300s", st, loc, page)
	}
	if st, _, page := dave.buy(mine, 10); st != http.StatusUnprocessableEntity || !strings.Contains(page, "has 7 free labels") {
		t.Errorf("dave buys 10 on his sheet with 7 left: %d", st)
	}

	webstamp := func(serial string) (int, string) {
		t.Helper()
		x := `<server.bp_RequestWebStampParams><LoginID>dave@example.com</LoginID><Amount>780</Amount><RateClass>1100</RateClass><FIM>0</FIM><SerialNumber>` +
			serial + `</SerialNumber></server.bp_RequestWebStampParams>`
		req, _ := http.NewRequest(http.MethodPost, "http://"+e.h.HTTPAddr+"/api/v1/webstamp", strings.NewReader(x))
		req.SetBasicAuth("dave@example.com", "correct horse battery")
		req.Header.Set("Content-Type", "application/xml")
		req.Header.Set("Idempotency-Key", protocol.NewRequestID())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, sheet := range []string{full, partly, "1966-F8CF"} {
		if st, body := webstamp(sheet); !strings.Contains(body, "label_not_assigned") || strings.Contains(body, "is used") {
			t.Errorf("dave's XML request on %s (not his): %d %s; want label_not_assigned", sheet, st, body)
		}
	}
	if st, body := webstamp(mine); st != http.StatusOK || !strings.Contains(body, "<Indicium>") {
		t.Errorf("dave's XML request on his sheet: %d %s", st, body)
	}
}

// Store staff asking to refund a label not sold at one of their kiosks get
// one answer, whether it was sold at another store's kiosk or never sold.
func TestCounterRefundTellsNotWhatOthersSold(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if res := decode(t, e.kiosk("kiosk-1").ask(purchase("orc-1", "kiosk-1", "1966-F8CF-01", nil))); res.Error != nil {
		t.Fatalf("sale: %+v", res.Error)
	}
	sam := e.operator("sam", "staff", "store-b")
	// Sold at store-a's kiosk; loaded there but never sold; never issued;
	// loaded into sam's own kiosk but never sold.
	for _, l := range []string{"1966-F8CF-01", "1966-F8D0-01", "7777-0001-01", "2222-0001-05"} {
		st, _, page := sam.post("/console/stock", "/console/refunds", url.Values{"label": {l}, "reason": {"audit"}, "handed_in": {"yes"}})
		want := "remedy_not_allowed: label " + l + " was not sold at a kiosk you look after"
		if st != http.StatusUnprocessableEntity || !strings.Contains(page, want) {
			i := max(strings.Index(page, `id="error"`), 0)
			t.Errorf("store-b staff refunds %s: %d %.150s; want 422 %q", l, st, page[i:], want)
		}
	}
}

// A GET of the funds runs no ledger check of its own asking (a failing
// one stops sales): POST /funds/check does, and needs a write token.
func TestFundsRecheckNeedsAWrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.h.Operators().Add(ctx, "olga", "operator password 1", "ops", nil); err != nil {
		t.Fatal(err)
	}
	token := func(scope operators.Scope) string {
		tok, err := e.h.Operators().NewToken(ctx, "olga", "oracle test", scope, operators.DefaultTokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ro, rw := token(operators.ReadOnly), token(operators.ReadWrite)
	call := func(method, path, tok string) (int, time.Time, string) {
		t.Helper()
		st, _, body := e.browser().do(method, path, nil, "Authorization", "Bearer "+tok)
		var v struct {
			Check struct {
				At time.Time `json:"at"`
			} `json:"ledger_check"`
		}
		json.Unmarshal([]byte(body), &v)
		return st, v.Check.At, body
	}
	st, first, body := call("GET", "/api/v1/ops/funds", ro)
	if st != http.StatusOK || first.IsZero() {
		t.Fatalf("GET funds: %d %.200s", st, body)
	}
	e.clock.Set(e.clock.Now().Add(time.Second))
	for _, tok := range []string{ro, rw} {
		if st, at, body := call("GET", "/api/v1/ops/funds?recheck=1", tok); st != http.StatusBadRequest || !at.IsZero() {
			t.Errorf("GET funds?recheck=1: %d %.200s; want 400", st, body)
		}
	}
	if st, at, _ := call("GET", "/api/v1/ops/funds", ro); st != http.StatusOK || !at.Equal(first) {
		t.Errorf("GET funds a second on: %d, check at %s, want the one at %s", st, at, first)
	}
	if st, _, body := call("POST", "/api/v1/ops/funds/check", ro); st != http.StatusForbidden || !strings.Contains(body, "forbidden") {
		t.Errorf("POST funds/check with a read-only token: %d %.200s; want 403", st, body)
	}
	if st, at, body := call("POST", "/api/v1/ops/funds/check", rw); st != http.StatusOK || !at.Equal(e.clock.Now()) {
		t.Errorf("POST funds/check with a write token: %d, check at %s, want %s: %.200s", st, at, e.clock.Now(), body)
	}
}
