package ledger_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// Three hubs share one PostgreSQL, g's clock 45 s ahead of f's and h's 45 s
// behind, with MPSD leases of 15 s. Leases are written and judged by the
// server's clock, so g takes none of the MPSDs f holds, h's own lease is
// still its own, and f takes none of h's. Before, g took f's MPSD as
// lapsed, and every sale f's commits had in flight on it was refused; h's
// leases lapsed as soon as it wrote them.
func TestSkewedHubTakesNoLiveMPSD(t *testing.T) {
	ctx := context.Background()
	u, err := pg.NewDatabase(fmt.Sprintf("t%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, u, ledger.Config{LeaseTTL: 15 * time.Second}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
	res := f.mustSell(newSale("f1", 780, "0000-000A-01"))
	inF, _ := protocol.ParseIndicium(res.Indicia[0].Matrix)

	skewed := func(by time.Duration) *ledger.Ledger {
		sess, _ := f.ks.Session()
		now := func() time.Time { return f.clock.Now().Add(by) }
		l, err := ledger.Open(ctx, f.db, ledger.Config{LeaseTTL: 15 * time.Second, Now: now, Holder: fmt.Sprintf("skewed-%d", dbSeq.Add(1))},
			sess, hubpostal.New(f.paURL, "FR", testLicence), alerts.New(f.db, quiet, now), quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		return l
	}
	g, h := skewed(45*time.Second), skewed(-45*time.Second)
	gs, err := g.Lease(ctx, 1)
	if err != nil || len(gs) != 1 {
		t.Fatalf("g leases: %+v %v", gs, err)
	}
	if gs[0].Serial == inF.MPSDSerial {
		t.Fatalf("g, its clock 45 s ahead, took MPSD %d, which f holds", inF.MPSDSerial)
	}
	res = f.mustSell(newSale("f2", 780, "0000-000A-02"))
	if in, _ := protocol.ParseIndicium(res.Indicia[0].Matrix); in.MPSDSerial != inF.MPSDSerial {
		t.Fatalf("f's second sale on MPSD %d, want its own %d", in.MPSDSerial, inF.MPSDSerial)
	}

	hs, err := h.Lease(ctx, 1)
	if err != nil || len(hs) != 1 || hs[0].Serial == inF.MPSDSerial || hs[0].Serial == gs[0].Serial {
		t.Fatalf("h, its clock 45 s behind, leased %+v (f holds %d, g %d): %v", hs, inF.MPSDSerial, gs[0].Serial, err)
	}
	state, err := h.Renew(ctx, []uint32{hs[0].Serial})
	if err != nil || !state[hs[0].Serial].Held {
		t.Fatalf("h's lease on MPSD %d lapsed as it was written: %+v %v", hs[0].Serial, state, err)
	}
	fs, err := f.l.Lease(ctx, 1)
	if err != nil || len(fs) != 1 || fs[0].Serial == hs[0].Serial || fs[0].Serial == gs[0].Serial {
		t.Fatalf("f leased %+v, held by h (%d) or g (%d): %v", fs, hs[0].Serial, gs[0].Serial, err)
	}
	f.check()
}

// hub ledger restored run while a hub still runs (ops were told to stop
// them) waits for an MPSD that hub is creating, and locks it too: before,
// it did not see the uncommitted row, which was left unlocked below the
// floor, and a hub sold on it from AR 0, the meter number of an MPSD
// created after the backup that had printed stamps already.
func TestRestoredWaitsForAnMPSDBeingCreated(t *testing.T) {
	ctx := context.Background()
	u, err := pg.NewDatabase(fmt.Sprintf("t%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, u, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
	f.mustSell(newSale("r1", 780, "0000-000A-01"))
	// Another hub, mid-way through creating an MPSD (leased to it, so no
	// one here leases it meanwhile).
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var serial uint32
	if err := tx.QueryRowContext(ctx, `INSERT INTO psd (serial, kind, ar, dr, control, created_at, reported_at, lease_holder, lease_until)
		SELECT MAX(serial) + 1, 'mpsd', 0, 0, '\x00', 0, 0, 'other-hub', 9000000000000000 FROM psd WHERE kind = 'mpsd' RETURNING serial`).Scan(&serial); err != nil {
		t.Fatal(err)
	}
	type result struct {
		locked []uint32
		floor  uint32
		err    error
	}
	done := make(chan result, 1)
	go func() {
		locked, floor, err := f.l.Restored(ctx)
		done <- result{locked, floor, err}
	}()
	wait.For(t, 10*time.Second, "the restore waiting for the MPSD being created", func() bool {
		var n int
		err := f.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND relation = 'psd'::regclass`).Scan(&n)
		return err == nil && n > 0
	})
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	var why sql.NullString
	if err := f.db.QueryRowContext(ctx, `SELECT locked FROM psd WHERE serial = $1`, serial).Scan(&why); err != nil {
		t.Fatal(err)
	}
	if !why.Valid || r.floor <= serial {
		t.Fatalf("MPSD %d, created as the restore ran: locked %q, floor %d (locked %v)", serial, why.String, r.floor, r.locked)
	}
}

// Each restore declared raises its own tamper alert, naming the MPSDs it
// locked: a second one, while the first's alert was open, was dropped as
// not news, and no alert named the MPSDs it locked.
func TestEachRestoreAlerted(t *testing.T) {
	forEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
		var floors []uint32
		for range 2 {
			_, floor, err := f.l.Restored(ctx)
			if err != nil {
				t.Fatal(err)
			}
			floors = append(floors, floor)
		}
		as, err := f.al.List(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, floor := range floors {
			subject := fmt.Sprintf("ledger/restore/%d", floor)
			if !slices.ContainsFunc(as, func(a alerts.Alert) bool { return a.Kind == alerts.Tamper && a.Subject == subject }) {
				t.Errorf("no tamper alert on %s: %+v", subject, as)
			}
		}
	})
}
