package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/frank-postage/frank/protocol"
)

// failLabel sells label on kiosk-1 and reports it failed to print, so that
// it is owed a remedy; it returns the sale's request id.
func (e *env) failLabel(k *kioskClient, id, label string) {
	e.t.Helper()
	if res := decode(e.t, k.ask(purchase(id, "kiosk-1", label, nil))); res.Status != protocol.ResultOK {
		e.t.Fatalf("sale %s: %+v", id, res.Error)
	}
	rep, _ := json.Marshal(protocol.PrintReport{RequestID: id, KioskID: "kiosk-1",
		Labels: []protocol.LabelOutcome{{LabelSerial: label, Outcome: protocol.PrintFailed, Reason: "jam"}}})
	if err := e.h.Ledger().RecordPrint(context.Background(), mustPrintReport(e.t, rep)); err != nil {
		e.t.Fatal(err)
	}
}

func mustPrintReport(t testing.TB, b []byte) *protocol.PrintReport {
	r, err := protocol.DecodePrintReport(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A refund request resent while its first copy is being served gets the
// first copy's answer, not remedy_not_allowed; two different requests for
// one label (a sweep and a customer's tap) both hear ok; the money moves
// once.
func TestRefundOnceUnderRepeats(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.kiosk("kiosk-1")
	e.failLabel(k, "rf-1", "1966-F8CF-01")
	before := e.cards.Totals()
	req := func(id string) []byte {
		b, _ := json.Marshal(protocol.RefundRequest{RequestID: id, KioskID: "kiosk-1",
			Label: protocol.LabelRef{RequestID: "rf-1", LabelSerial: "1966-F8CF-01"}})
		return b
	}
	const n = 8
	answers := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := "refund-a"
			if i%2 == 1 {
				id = "refund-b" // the sweep's request for the same label
			}
			answers[i], _ = e.h.Sales().Refund(context.Background(), "kiosk-1", req(id))
		})
	}
	wg.Wait()
	for i, a := range answers {
		var r protocol.RefundResult
		if err := json.Unmarshal(a, &r); err != nil || r.Status != protocol.ResultOK || r.AmountMills != 780 {
			t.Errorf("answer %d: %s", i, a)
		}
	}
	if after := e.cards.Totals(); after.Refunded-before.Refunded != 780 {
		t.Fatalf("refunded %d mills, want 780 once", after.Refunded-before.Refunded)
	}
	e.check()
}

// postWebStamp posts the patent's XML with an Idempotency-Key.
func postWebStamp(t *testing.T, e *env, login, key, body string) (int, string) {
	t.Helper()
	r, _ := http.NewRequest(http.MethodPost, "http://"+e.h.HTTPAddr+"/api/v1/webstamp", strings.NewReader(body))
	r.SetBasicAuth(login, "correct horse battery")
	r.Header.Set("Idempotency-Key", key)
	r.Header.Set("Content-Type", "application/xml")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// An XML web stamp for a sheet's next free label, retried byte for byte
// with the same Idempotency-Key, after its success or while it is still
// served, returns the same <Indicium>; the same key with another body is
// idempotency_conflict.
func TestWebStampRetryGetsSameIndicium(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.customer("xavier", "10.00")
	sheet := e.webSheet()
	acct, err := e.h.Accounts().ByLogin(context.Background(), "xavier")
	if err != nil {
		t.Fatal(err)
	}
	sh, _ := protocol.ParseSheetSerial(sheet)
	if err := e.h.Stock().AssignToAccount(context.Background(), sh, acct.ID); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`<server.bp_RequestWebStampParams><LoginID>xavier</LoginID><Amount>780</Amount><RateClass>1100</RateClass>`+
		`<FIM>0</FIM><SerialNumber>%s</SerialNumber></server.bp_RequestWebStampParams>`, sheet)
	st, first := postWebStamp(t, e, "xavier", "web-once-1", body)
	if st != http.StatusOK {
		t.Fatalf("first: %d %s", st, first)
	}
	if st, again := postWebStamp(t, e, "xavier", "web-once-1", body); st != http.StatusOK || again != first {
		t.Fatalf("retry after success: %d %s\nfirst: %s", st, again, first)
	}
	// Retries racing a new request's first copy.
	var wg sync.WaitGroup
	got := make([]string, 4)
	for i := range got {
		wg.Go(func() {
			st, b := postWebStamp(t, e, "xavier", "web-once-2", body)
			if st != http.StatusOK {
				t.Errorf("copy %d: %d %s", i, st, b)
			}
			got[i] = b
		})
	}
	wg.Wait()
	for i := range got {
		if got[i] != got[0] || got[i] == first {
			t.Fatalf("copies of web-once-2 differ, or repeat web-once-1:\n%s\n%s", got[i], got[0])
		}
	}
	other := strings.Replace(body, "<Amount>780</Amount>", "<Amount>1070</Amount>", 1)
	if st, b := postWebStamp(t, e, "xavier", "web-once-1", other); st != http.StatusConflict || !strings.Contains(b, string(protocol.CodeIdempotencyConflict)) {
		t.Fatalf("same key, other body: %d %s", st, b)
	}
	a, _ := e.h.Accounts().ByLogin(context.Background(), "xavier")
	if a.Balance != 10_000-2*780 {
		t.Fatalf("balance %s, want two stamps taken", a.Balance)
	}
	e.check()
}
