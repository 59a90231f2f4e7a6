package hub_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/protocol"
)

// A sale whose kiosk never reports whether its labels printed raises
// unconfirmed_sale once it is older than Config.UnconfirmedAfter (10 min
// by default; no flag sets it), on the leader's tick; a sale reported
// printed never does.
func TestUnconfirmedSaleAlert(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	for _, id := range []string{"uc-silent", "uc-printed"} {
		label := map[string]string{"uc-silent": "1966-F8CF-01", "uc-printed": "1966-F8CF-02"}[id]
		if res := decode(t, k.ask(purchase(id, "kiosk-1", label, nil))); res.Status != protocol.ResultOK {
			t.Fatalf("sale %s: %+v", id, res.Error)
		}
		if id == "uc-printed" {
			rep, _ := json.Marshal(protocol.PrintReport{RequestID: id, KioskID: "kiosk-1",
				Labels: []protocol.LabelOutcome{{LabelSerial: label, Outcome: protocol.Printed}}})
			if err := e.h.Ledger().RecordPrint(ctx, mustPrintReport(t, rep)); err != nil {
				t.Fatal(err)
			}
		}
	}
	unconfirmed := func() []string {
		t.Helper()
		e.h.Tick(ctx)
		open, err := e.h.Alerts().List(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		var subjects []string
		for _, a := range open {
			if a.Kind == alerts.Unconfirmed {
				subjects = append(subjects, a.Subject)
			}
		}
		return subjects
	}
	e.clock.Set(e.clock.Now().Add(9 * time.Minute))
	if got := unconfirmed(); len(got) != 0 {
		t.Fatalf("alerted after 9 minutes: %v", got)
	}
	e.clock.Set(e.clock.Now().Add(2 * time.Minute))
	if got := unconfirmed(); len(got) != 1 || got[0] != "sale/kiosk-1/uc-silent" {
		t.Fatalf("after 11 minutes: %v, want only sale/kiosk-1/uc-silent", got)
	}
}
