package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
)

// A compromised key's live stamps dated from its compromise day are voided
// with their refunds due, once each, and looked for again until the
// compromise has settled (a hub may sign with the key a moment longer);
// after that the key is not read again.
func TestCompromisedStampsSweptUntilSettled(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{})
		ctx := context.Background()
		f.mustSell(newSale("s1", 780, "0000-0001-01"))
		var serial uint32
		if err := f.db.QueryRowContext(ctx, `SELECT cert_serial FROM indicia`).Scan(&serial); err != nil {
			t.Fatal(err)
		}
		noted := f.clock.Now()
		if _, err := f.db.ExecContext(ctx, f.db.Rebind(`INSERT INTO signing_keys (cert_serial, key_label, public_key_pem, created_at, compromised_at, compromise_noted_at)
			VALUES (?, 'k', '', ?, ?, ?) ON CONFLICT (cert_serial) DO UPDATE SET compromised_at = excluded.compromised_at, compromise_noted_at = excluded.compromise_noted_at`),
			serial, noted.Add(-90*24*time.Hour).UnixMicro(), noted.Add(-time.Hour).UnixMicro(), noted.UnixMicro()); err != nil {
			t.Fatal(err)
		}
		sweep := func(want int) {
			t.Helper()
			due, err := f.l.VoidCompromised(ctx, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if len(due) != want {
				t.Fatalf("%d refunds due, want %d: %+v", len(due), want, due)
			}
			for _, d := range due {
				if !d.TakenBack || d.Amount != 780 {
					t.Fatalf("refund due %+v", d)
				}
			}
		}
		sweep(1)
		sweep(0) // voided once
		f.mustSell(newSale("s2", 780, "0000-0001-02"))
		sweep(1) // signed after the compromise was recorded, before it settled
		f.at(noted.Add(2 * time.Minute))
		f.mustSell(newSale("s3", 780, "0000-0001-03"))
		sweep(1) // the last look, and the key is marked swept
		f.mustSell(newSale("s4", 780, "0000-0001-04"))
		sweep(0)
		due, err := f.l.RefundsDue(ctx, noted.Add(-time.Hour), f.clock.Now().Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if len(due) != 3 || !due[0].TakenBack {
			t.Fatalf("refunds due to the leader's sweep: %+v", due)
		}
	})
}
