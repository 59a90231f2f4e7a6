package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
)

// A failed label nobody claimed is recorded for its refund once; one the
// caller says to pass over (its refund was refused for good lately) is
// not recorded again meanwhile.
func TestRefundUnclaimedPassesOverSkipped(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{})
		ctx := context.Background()
		f.mustSell(newSale("u1", 780, "0000-0007-01"))
		if err := f.l.RecordPrint(ctx, &protocol.PrintReport{RequestID: "u1", KioskID: "kiosk-1",
			Labels: []protocol.LabelOutcome{{LabelSerial: "0000-0007-01", Outcome: protocol.PrintFailed, Reason: "jam"}}}); err != nil {
			t.Fatal(err)
		}
		since := f.clock.Now().Add(-time.Hour)
		f.at(f.clock.Now().Add(ledger.UnclaimedAfter + time.Minute))
		before := f.clock.Now().Add(-ledger.UnclaimedAfter)
		due, err := f.l.RefundUnclaimed(ctx, since, before, []string{"0000-0007-01"})
		if err != nil || len(due) != 0 {
			t.Fatalf("a skipped label: %+v, %v", due, err)
		}
		due, err = f.l.RefundUnclaimed(ctx, since, before, nil)
		if err != nil || len(due) != 1 || due[0].Amount != 780 {
			t.Fatalf("the unclaimed label: %+v, %v", due, err)
		}
		if due, err = f.l.RefundUnclaimed(ctx, since, before, nil); err != nil || len(due) != 0 {
			t.Fatalf("recorded twice: %+v, %v", due, err)
		}
	})
}
