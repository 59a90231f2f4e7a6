package hub_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// An accepted postal report anchors the audit chain at the authority.
// Someone with the database wipes the audit log and resets its head under
// a stopped hub; the hub reseeds a chain that checks on its own, but no
// longer holds the anchored entry: the start refuses, the check names the
// violation, and the authority refuses the reset chain's next report.
func TestAuditAnchorSurvivesWipe(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if res := decode(t, e.kiosk("kiosk-1").ask(purchase("anc-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res)
	}
	now := e.clock.Now()
	e.clock.Set(now.Add(time.Second)) // the period has ended
	rep, err := e.h.Ledger().BuildReport(ctx, now.Add(-time.Hour), now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// Chain 0 is empty on a new database: the GPSD's chain (opening,
	// purchase, funding out) and the MPSD's (create, funding in, sale).
	if len(rep.AuditHeads) != 2 || rep.AuditHeads[0].Chain != ledger.GPSDSerial || rep.AuditHeads[1].Seq != 3 {
		t.Fatalf("report audit heads %+v", rep.AuditHeads)
	}
	if _, err := e.h.Ledger().SubmitReport(ctx, rep, e.h.Postal()); err != nil {
		t.Fatal(err)
	}
	held := e.pa.Anchors("FR")
	if len(held) != len(rep.AuditHeads) {
		t.Fatalf("the authority holds %+v, the report said %+v", held, rep.AuditHeads)
	}
	for i, a := range held {
		if a.AuditHead != rep.AuditHeads[i] {
			t.Fatalf("the authority holds %+v, the report said %+v", held, rep.AuditHeads)
		}
	}
	r, err := e.h.Ledger().Check(ctx)
	if err != nil || !r.OK() || len(r.Anchors) != len(rep.AuditHeads) {
		t.Fatalf("check with the anchors: %+v %v", r, err)
	}
	e.h.Close()

	db, err := store.Open(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM audit`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE audit_head SET seq = 0, hash = ?`), make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE psd SET audit_n = 0, audit_hash = NULL`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// Opening reseeds the chains from the registers, as for a database from
	// before the audit log: on their own they would pass.
	h, err := hub.Open(ctx, e.cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Start(ctx); err == nil || !strings.Contains(err.Error(), "violations") {
		t.Fatalf("the hub started on a wiped audit chain: %v", err)
	}
	r, err = h.Ledger().Check(ctx)
	if err != nil || r.OK() {
		t.Fatalf("check of a wiped audit chain: %+v %v", r, err)
	}
	found := false
	for _, v := range r.Violations {
		found = found || strings.Contains(v, "postal authority holds entry")
	}
	if !found {
		t.Fatalf("violations %q do not name the anchor", r.Violations)
	}
	e.clock.Set(now.Add(time.Hour))
	later, err := h.Ledger().BuildReport(ctx, now.Add(time.Second), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Ledger().SubmitReport(ctx, later, h.Postal()); err == nil || !strings.Contains(err.Error(), "chain was reset") {
		t.Fatalf("the authority took the reset chain's report: %v", err)
	}
}
