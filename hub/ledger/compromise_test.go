package ledger_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
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

// A sweep reads a few stamps per transaction, so a report's build never
// waits for a whole sweep, and still voids every stamp in one call.
func TestCompromiseSweptInChunks(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{SweepChunk: 2}, psdm.Config{})
		ctx := context.Background()
		for i := 1; i <= 5; i++ {
			f.mustSell(newSale(fmt.Sprintf("s%d", i), 780, fmt.Sprintf("0000-0001-%02d", i)))
		}
		var serial uint32
		if err := f.db.QueryRowContext(ctx, `SELECT DISTINCT cert_serial FROM indicia`).Scan(&serial); err != nil {
			t.Fatal(err)
		}
		noted := f.clock.Now()
		if _, err := f.db.ExecContext(ctx, f.db.Rebind(`INSERT INTO signing_keys (cert_serial, key_label, public_key_pem, created_at, compromised_at, compromise_noted_at)
			VALUES (?, 'k', '', ?, ?, ?) ON CONFLICT (cert_serial) DO UPDATE SET compromised_at = excluded.compromised_at, compromise_noted_at = excluded.compromise_noted_at`),
			serial, noted.Add(-90*24*time.Hour).UnixMicro(), noted.Add(72*time.Hour).UnixMicro(), noted.Add(-time.Hour).UnixMicro()); err != nil {
			t.Fatal(err)
		}
		// Compromised from a later day: every stamp is read and passed over.
		due, err := f.l.VoidCompromised(ctx, 2*time.Hour)
		if err != nil || len(due) != 0 {
			t.Fatalf("stamps dated before the compromise: %d refunds due (%v)", len(due), err)
		}
		if _, err := f.db.ExecContext(ctx, f.db.Rebind(`UPDATE signing_keys SET compromised_at = ? WHERE cert_serial = ?`), noted.Add(-time.Hour).UnixMicro(), serial); err != nil {
			t.Fatal(err)
		}
		due, err = f.l.VoidCompromised(ctx, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(due) != 5 {
			t.Fatalf("%d refunds due, want the 5 stamps: %+v", len(due), due)
		}
		var swept int
		if err := f.db.QueryRowContext(ctx, f.db.Rebind(`SELECT COUNT(*) FROM signing_keys WHERE cert_serial = ? AND compromise_swept_at IS NOT NULL`), serial).Scan(&swept); err != nil || swept != 1 {
			t.Fatalf("the key swept: %d %v", swept, err)
		}
	})
}

// A stamp signed with a key just before the hub learned the key was
// compromised, still waiting for the committer, is not sold: its buyer is
// refused (nothing charged) rather than told ok and refunded by the sweep.
func TestRefusedKeysWaitingStampSpoiled(t *testing.T) {
	t.Parallel()
	f := newFixture(t, filepath.Join(t.TempDir(), "hub.db"), ledger.Config{}, psdm.Config{Workers: 1})
	ctx := context.Background()
	f.mustSell(newSale("s1", 780, "0000-0001-01"))

	// Hold the committer before its transaction: SQLite's writers queue
	// on one lock in this process.
	holding, release := make(chan struct{}), make(chan struct{})
	go f.db.InTx(ctx, func(*sql.Tx) error {
		close(holding)
		<-release
		return nil
	})
	<-holding
	answer := make(chan error, 1)
	go func() {
		_, err := f.pool.Sell(ctx, newSale("s2", 780, "0000-0001-02"))
		answer <- err
	}()
	wait.For(t, 10*time.Second, "the stamp signed and waiting for its commit", func() bool {
		return f.pool.Status()[0].InFlight == 1
	})
	f.l.RefuseKey(1)
	close(release)
	if err := <-answer; !isCode(err, protocol.CodeServiceUnavailable) {
		t.Fatalf("a stamp of a refused key sold: %v", err)
	}
	var sold, spoiled int
	if err := f.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM indicia WHERE request_id = 's2'), (SELECT COUNT(*) FROM spoiled WHERE request_id = 's2')`).Scan(&sold, &spoiled); err != nil {
		t.Fatal(err)
	}
	if sold != 0 || spoiled != 1 {
		t.Fatalf("the refused key's stamp: %d sold, %d spoiled", sold, spoiled)
	}
	if _, err := f.sell(newSale("s3", 780, "0000-0001-03")); !isCode(err, protocol.CodeServiceUnavailable) {
		t.Fatalf("a later stamp of the refused key: %v", err)
	}
	f.check()
}

// A copy of a request answered before (another hub's), whose stamp was
// signed with a key refused since, gets the earlier answer, not a
// refusal: the buyer was told ok and holds that stamp.
func TestRefusedKeysCopyOfAnAnsweredSaleReplays(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1})
		ctx := context.Background()
		s := newSale("answered", 780, "0000-0001-01")
		first, err := f.pool.Sell(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		f.l.RefuseKey(1)
		again, err := f.pool.Sell(ctx, newSale("answered", 780, "0000-0001-01"))
		if err != nil || !bytes.Equal(again, first) {
			t.Fatalf("the copy got %v, %q; want the earlier answer", err, again)
		}
		f.check()
	})
}
