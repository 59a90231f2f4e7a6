package hub_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/sale"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// A kiosk's final refusals are recorded, so that a resend gets the same
// bytes, up to a budget: a stolen kiosk sending requests it knows will be
// refused would otherwise add a row and a durable commit for each, 1.7
// million a day. Past the budget the refusal is the same, not recorded,
// and ops get one fraud alert.
func TestRefusalsRecordedWithinABudget(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	refuse := func(id string) {
		t.Helper()
		res := decode(t, k.ask(purchase(id, "kiosk-1", "ABCD-0000-01", nil)))
		if res.Status != protocol.ResultRejected || res.Error == nil || res.Error.Code != protocol.CodeLabelUnknown {
			t.Fatalf("%s: %+v %+v", id, res, res.Error)
		}
	}
	for i := range sale.RefusalBurst + 5 {
		refuse(fmt.Sprintf("ref-%03d", i))
	}
	db, err := store.Open(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	recorded := func() int {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sales WHERE kiosk_id = 'kiosk-1' AND status = 'rejected'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := recorded(); n != sale.RefusalBurst {
		t.Fatalf("%d refusals recorded, want %d", n, sale.RefusalBurst)
	}
	as, _ := e.h.Alerts().List(ctx, true)
	n := 0
	for _, a := range as {
		if a.Kind == alerts.Fraud && a.Subject == "kiosk/kiosk-1/refusals" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d refusal alerts, want 1: %+v", n, as)
	}
	// A recorded refusal is replayed from its row; the budget comes back
	// with time.
	refuse("ref-000")
	e.clock.Set(e.clock.Now().Add(sale.RefusalEvery))
	refuse("ref-late")
	if n := recorded(); n != sale.RefusalBurst+1 {
		t.Fatalf("%d refusals recorded after %s, want %d", n, sale.RefusalEvery, sale.RefusalBurst+1)
	}
}
