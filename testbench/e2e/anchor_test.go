package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/testbench/demo"
)

// The real binaries: a report the postal authority accepted anchors the
// audit chains; the audit log wiped and its heads reset under a stopped hub,
// the hub does not start again and `hub ledger check` names the anchor.
func TestAuditChainWipedUnderStoppedHub(t *testing.T) {
	d := startDemo(t, demo.Config{Sheets: 1})
	if status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")}); status != http.StatusOK || len(rc.Labels) != 1 {
		t.Fatalf("sale: %d %+v", status, rc)
	}
	now := time.Now().UTC() // the period reported ends now: after the sale
	out, err := d.Hub("report", "--from", now.AddDate(0, 0, -1).Format(time.DateOnly), "--to", now.Format(time.RFC3339Nano))
	if err != nil || !strings.Contains(out, "accepted by the postal authority") {
		t.Fatalf("hub report: %v\n%s", err, out)
	}
	if out, err := d.Hub("ledger", "check"); err != nil || !strings.Contains(out, "audit anchor: entry") {
		t.Fatalf("ledger check before: %v\n%s", err, out)
	}
	d.KillHub()
	db := sqlOpen(t, filepath.Join(d.Dir(), "hub", "hub.db"))
	if _, err := db.Exec(`DELETE FROM audit`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit_head SET seq = 0, hash = ?`, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE psd SET audit_n = 0, audit_hash = NULL`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := d.RestartHub(ctx); err == nil {
		t.Fatal("the hub started on a wiped audit chain")
	}
	out, err = d.Hub("ledger", "check") // a failed command's output is in its error
	if err == nil || !strings.Contains(err.Error(), "VIOLATION: audit: the postal authority holds entry") {
		t.Fatalf("ledger check after the wipe: %v\n%s", err, out)
	}
}
