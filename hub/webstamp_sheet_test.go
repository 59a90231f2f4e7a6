package hub_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/sale"
	"github.com/frank-postage/frank/protocol"
)

// sheetOf gives a fresh web sheet to login's account and returns it with
// the account.
func sheetOf(t *testing.T, e *env, login string) (protocol.SheetSerial, *accounts.Account) {
	t.Helper()
	ctx := context.Background()
	acct, err := e.h.Accounts().ByLogin(ctx, login)
	if err != nil {
		t.Fatal(err)
	}
	sh, _ := protocol.ParseSheetSerial(e.webSheet())
	if err := e.h.Stock().AssignToAccount(ctx, sh, acct.ID); err != nil {
		t.Fatal(err)
	}
	return sh, acct
}

// nextFree is an XML request for sheet's next free label, 1 oz First-Class.
func nextFree(login string, sheet protocol.SheetSerial) *protocol.WebStampRequest {
	return &protocol.WebStampRequest{LoginID: login, Amount: 780, RateClass: "1100", SerialNumber: sheet.String()}
}

// noFraud fails the test on any fraud alert: every sale in these tests
// is an honest customer's.
func noFraud(t *testing.T, h *hub.Hub) {
	t.Helper()
	as, err := h.Alerts().List(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if a.Kind == alerts.Fraud {
			t.Errorf("fraud alert for an honest customer: %s %s", a.Subject, a.Message)
		}
	}
}

// A customer who cannot pay does not get the web sheet they named: it is
// claimed only by a sale made on it, so its real holder still buys on it,
// and the refused one is told it is not theirs, without a word of kiosks.
func TestPortalUnpaidOrderLeavesTheSheetUnclaimed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sheet := e.webSheet()
	mallory := e.customer("mallory", "")
	if st, _, page := mallory.buy(sheet, 1); st != http.StatusUnprocessableEntity || !strings.Contains(page, string(protocol.CodeInsufficientFunds)) {
		t.Fatalf("an order with no money: %d %s", st, page)
	}
	owner := e.customer("owner", "10.00")
	if st, loc, page := owner.buy(sheet, 1); st != http.StatusSeeOther {
		t.Fatalf("the holder of the sheet after a refused order on it: %d %s %s", st, loc, page)
	}
	st, _, page := mallory.buy(sheet, 1)
	i := max(strings.Index(page, `id="error"`), 0)
	if st == http.StatusSeeOther || !strings.Contains(page, string(protocol.CodeLabelNotAssigned)) || strings.Contains(page[i:], "kiosk") {
		t.Fatalf("another customer's sheet: %d %.200s; want label_not_assigned, no kiosk", st, page[i:])
	}
}

// Ten purchases at once of one sheet's "next free label", through both web
// channels, are ten sales on ten labels: none is refused label_used, a
// final code, and none raises a fraud alert against the customer.
func TestWebSalesOfTheNextFreeLabelAtOnceAllSold(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.customer("zoe", "20.00")
	sheet, acct := sheetOf(t, e, "zoe")
	ctx := context.Background()
	errs := make([]error, protocol.LabelsPerSheet)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			id := fmt.Sprintf("at-once-%d", i)
			if i%2 == 0 {
				_, errs[i] = e.h.Sales().WebStamp(ctx, acct, nextFree("zoe", sheet), id)
			} else {
				_, errs[i] = e.h.Sales().Buy(ctx, acct, sale.Order{RateClass: "1100", WeightMg: 28_000, Sheet: sheet, Count: 1}, id)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("purchase %d: %v", i, err)
		}
	}
	if st, err := e.h.Stock().State(ctx, sheet); err != nil || len(st.Free) != 0 {
		t.Errorf("sheet after ten sales: free %v, %v", st.Free, err)
	}
	// The eleventh finds the sheet used up: that one is final.
	if _, err := e.h.Sales().WebStamp(ctx, acct, nextFree("zoe", sheet), "eleventh"); protocol.AsError(err).Code != protocol.CodeLabelUsed {
		t.Errorf("an eleventh on a full sheet: %v, want label_used", err)
	}
	noFraud(t, e.h)
}

// Two hubs on one database sell a sheet's next free labels at once: ten
// sales, no refusal and no fraud alert. (PostgreSQL, as the peers tests.)
func TestWebstampNextFreeLabelOnTwoHubs(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn })
	ctx := context.Background()
	h2, err := hub.Open(ctx, e.cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h2.Close() })
	if err := h2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.customer("tess", "20.00")
	sheet, acct := sheetOf(t, e, "tess")
	errs := make([]error, protocol.LabelsPerSheet)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			h := e.h
			if i%2 == 1 {
				h = h2
			}
			_, errs[i] = h.Sales().WebStamp(ctx, acct, nextFree("tess", sheet), fmt.Sprintf("two-hubs-%d", i))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("purchase %d: %v", i, err)
		}
	}
	if st, err := e.h.Stock().State(ctx, sheet); err != nil || len(st.Free) != 0 {
		t.Errorf("sheet after ten sales: free %v, %v", st.Free, err)
	}
	noFraud(t, e.h)
}

// The same Idempotency-Key with another card is idempotency_conflict even
// when the cards share their last four digits: expiry and name count too.
// The same request again gets the first answer.
func TestWebstampSameKeyAnotherCardConflicts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.customer("carl", "")
	sheet, acct := sheetOf(t, e, "carl")
	ctx := context.Background()
	card := func(number, exp, name string) *protocol.WebStampRequest {
		r := nextFree("carl", sheet)
		r.CCNumber, r.CCExp, r.CCNameOnCard = number, exp, name
		return r
	}
	first, err := e.h.Sales().WebStamp(ctx, acct, card("4242424242424242", "1239", "Carl"), "card-key")
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []*protocol.WebStampRequest{
		card("4000000000024242", "0140", "Carl"), // another card, same last four
		card("4242424242424242", "1239", "Mallory"),
	} {
		if _, err := e.h.Sales().WebStamp(ctx, acct, other, "card-key"); protocol.AsError(err).Code != protocol.CodeIdempotencyConflict {
			t.Errorf("the key again with card exp %s name %s: %v, want idempotency_conflict", other.CCExp, other.CCNameOnCard, err)
		}
	}
	again, err := e.h.Sales().WebStamp(ctx, acct, card("4242424242424242", "1239", "Carl"), "card-key")
	if err != nil || string(again.Matrix) != string(first.Matrix) {
		t.Fatalf("the same request again: %v, same stamp %v", err, err == nil && string(again.Matrix) == string(first.Matrix))
	}
}
