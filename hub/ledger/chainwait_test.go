package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/wait"
)

// otherHubOnGPSD stands for another hub's commit, its clock 10 s ahead:
// it holds the GPSD's row and has added an entry to its chain. The
// returned function waits until something waits on that row, then commits.
func otherHubOnGPSD(t *testing.T, f *fixture) func() {
	t.Helper()
	ctx := context.Background()
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback() })
	var n, ar, dr int64
	if err := tx.QueryRowContext(ctx, `SELECT audit_n, ar, dr FROM psd WHERE serial = $1 FOR UPDATE`, ledger.GPSDSerial).Scan(&n, &ar, &dr); err != nil {
		t.Fatal(err)
	}
	later := f.clock.Now().Add(10 * time.Second).UnixMicro()
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit (chain, n, at, psd, kind, amount, ar, dr, ref, hash) VALUES ($1, $2, $3, $1, 'note', 0, $4, $5, 'other hub', '\x00')`,
		ledger.GPSDSerial, n+1, later, ar, dr); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE psd SET audit_n = $1, audit_hash = '\x00' WHERE serial = $2`, n+1, ledger.GPSDSerial); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		waitForALockWait(t, f.db, "a wait on the GPSD's row")
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// waitForALockWait waits until a session of db's database waits on a lock.
func waitForALockWait(t *testing.T, db *store.DB, what string) {
	t.Helper()
	wait.Until(t, 10*time.Second, what, func() error {
		var k int
		if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&k); err != nil {
			return err
		}
		if k == 0 {
			return fmt.Errorf("nothing waits")
		}
		return nil
	})
}

// gpsdFixture is a PostgreSQL ledger whose GPSD holds postage.
func gpsdFixture(t *testing.T) *fixture {
	t.Helper()
	u, err := pg.NewDatabase(fmt.Sprintf("t%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, u, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
	if err := f.l.BuyFunds(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f
}

// A write that waited on the GPSD's row for another hub's commit dates its
// entry, and the rows written with it, no earlier than the entry that
// commit added: the head's time is read after the wait. Read in the
// locking statement, it came from the snapshot taken before the wait.
func TestChainTimeAfterALockWait(t *testing.T) {
	ctx := context.Background()
	t.Run("a sale funding its MPSD", func(t *testing.T) {
		f := gpsdFixture(t)
		commit := otherHubOnGPSD(t, f)
		done := make(chan struct{})
		go func() {
			defer close(done)
			f.mustSell(newSale("w1", 780, "0000-000A-01"))
		}()
		commit()
		<-done
		rows, err := f.db.QueryContext(ctx, `SELECT n, at FROM audit WHERE chain = $1 ORDER BY n`, ledger.GPSDSerial)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var last int64
		for rows.Next() {
			var n, at int64
			if err := rows.Scan(&n, &at); err != nil {
				t.Fatal(err)
			}
			if at < last {
				t.Errorf("gpsd entry %d dated %d, before the entry it follows (%d)", n, at, last)
			}
			last = at
		}
	})
	t.Run("an operator's funding", func(t *testing.T) {
		f := gpsdFixture(t)
		serial, err := f.l.CreateMPSD(ctx)
		if err != nil {
			t.Fatal(err)
		}
		commit := otherHubOnGPSD(t, f)
		done := make(chan error, 1)
		go func() { done <- f.l.FundMPSD(ctx, serial, 1000) }()
		commit()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		var rowAt, auditAt int64
		if err := f.db.QueryRowContext(ctx, `SELECT at FROM fundings WHERE mpsd = $1`, serial).Scan(&rowAt); err != nil {
			t.Fatal(err)
		}
		if err := f.db.QueryRowContext(ctx, `SELECT at FROM audit WHERE chain = $1 AND kind = 'fund_out'`, ledger.GPSDSerial).Scan(&auditAt); err != nil {
			t.Fatal(err)
		}
		if rowAt != auditAt {
			t.Fatalf("fundings row dated %d, its audit entry %d", rowAt, auditAt)
		}
	})
	t.Run("a postage purchase", func(t *testing.T) {
		f := gpsdFixture(t)
		commit := otherHubOnGPSD(t, f)
		done := make(chan error, 1)
		go func() { done <- f.l.BuyFunds(ctx) }()
		commit()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		var rowAt, auditAt int64
		if err := f.db.QueryRowContext(ctx, `SELECT done_at FROM fund_purchases ORDER BY done_at DESC LIMIT 1`).Scan(&rowAt); err != nil {
			t.Fatal(err)
		}
		if err := f.db.QueryRowContext(ctx, `SELECT at FROM audit WHERE chain = $1 AND kind = 'purchase' ORDER BY n DESC LIMIT 1`, ledger.GPSDSerial).Scan(&auditAt); err != nil {
			t.Fatal(err)
		}
		if rowAt != auditAt {
			t.Fatalf("fund_purchases.done_at %d, its audit entry %d", rowAt, auditAt)
		}
	})
}
