package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// A print report's labels join one group commit, each a guarded update of
// its own: a printed label moves to printed, a failed one is voided, a
// label named twice keeps its first outcome, and the report sent again
// changes nothing. On PostgreSQL the printed label's row can be updated
// in place.
func TestPrintReportOutcomes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.kiosk("kiosk-1")
	two := func(r *protocol.PurchaseRequest) {
		it := r.Items[0]
		it.LabelSerial = "1966-F8CF-02"
		r.Items = append(r.Items, it)
	}
	if res := decode(t, k.ask(purchase("pr-1", "kiosk-1", "1966-F8CF-01", two))); res.Status != protocol.ResultOK || len(res.Indicia) != 2 {
		t.Fatalf("sale: %+v", res)
	}
	rep := &protocol.PrintReport{RequestID: "pr-1", KioskID: "kiosk-1", Labels: []protocol.LabelOutcome{
		{LabelSerial: "1966-F8CF-01", Outcome: protocol.Printed},
		{LabelSerial: "1966-F8CF-02", Outcome: protocol.PrintFailed, Reason: "jam"},
		{LabelSerial: "1966-F8CF-01", Outcome: protocol.PrintFailed, Reason: "jam"},
	}}
	db := e.openDB()
	states := func() map[string]string {
		t.Helper()
		rows, err := db.Query(`SELECT label, state FROM indicia WHERE request_id = 'pr-1'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		got := map[string]string{}
		for rows.Next() {
			var label, state string
			if err := rows.Scan(&label, &state); err != nil {
				t.Fatal(err)
			}
			got[label] = state
		}
		return got
	}
	for range 2 { // the second is the kiosk sending it again
		if err := e.h.Ledger().RecordPrint(context.Background(), rep); err != nil {
			t.Fatal(err)
		}
		if got := states(); got["1966-F8CF-01"] != "printed" || got["1966-F8CF-02"] != "voided" || len(got) != 2 {
			t.Fatalf("indicia %v, want 01 printed and 02 voided", got)
		}
		e.check()
	}
	if db.Dialect == store.Postgres {
		// Printing changes no indexed column (schema v33), so a row whose
		// page has room, as this one's has, is updated in place. The
		// server's statistics arrive within seconds of the update.
		wait.For(t, 30*time.Second, "a HOT update of indicia", func() bool {
			var hot int64
			db.QueryRow(`SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'indicia'`).Scan(&hot)
			return hot >= 1
		})
	}
}
