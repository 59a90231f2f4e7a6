package ledger_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
)

// staleRows counts PSD rows whose control code names a key generation
// older than gen (a bare 32-byte code is generation 1).
func (f *fixture) staleRows(gen int) int {
	f.t.Helper()
	rows, err := f.db.QueryContext(context.Background(), `SELECT control FROM psd`)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var c []byte
		if err := rows.Scan(&c); err != nil {
			f.t.Fatal(err)
		}
		g := 1
		if len(c) == 35 {
			g = int(c[1])<<8 | int(c[2])
		}
		if g < gen {
			n++
		}
	}
	return n
}

// Rotations while sales, fundings and new MPSDs are written leave no row
// under an old key: a write that waited on the rotation's locks, or was
// sealed just before it, is resealed, and the ledger check passes. The
// CI run that found this had one row left under the first key.
func TestControlKeyRotationUnderLoad(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 2})
		ctx := context.Background()
		f.mustSell(newSale("warm", 780, "5000-0000-01"))
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					sheet := fmt.Sprintf("%04X-%04X", 0x5100+g, i)
					if _, err := f.sell(newSale(fmt.Sprintf("r%d-%d", g, i), 780, sheet+"-01")); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		// Operator writes outside the committer: a new MPSD funded from
		// the GPSD, each in its own transaction.
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				serial, err := f.l.CreateMPSD(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if err := f.l.FundMPSD(ctx, serial, 1000); err != nil && !isCode(err, protocol.CodeFundsUnavailable) {
					t.Error(err)
					return
				}
			}
		})
		gen := 1
		for range 4 {
			g, err := f.l.RotateControlKey(ctx, f.ks.GenerateMACKey)
			if err != nil {
				t.Error(err)
				break
			}
			gen = g
		}
		close(stop)
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		if gen != 5 || f.l.ControlKeyGen() != 5 {
			t.Fatalf("generation %d, sealing under %d; want 5", gen, f.l.ControlKeyGen())
		}
		if n := f.staleRows(gen); n != 0 {
			t.Fatalf("%d PSD rows still under an older control key", n)
		}
		f.check()
	})
}

// A rotation by another process (hub keys rotate-mac) while this ledger
// still seals under the old key: once it follows, it reseals what it wrote
// meanwhile.
func TestControlKeyFollowerReseals(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 2})
		ctx := context.Background()
		f.mustSell(newSale("before", 780, "5200-0000-01"))
		other := f.otherLedger()
		gen, err := other.RotateControlKey(ctx, f.ks.GenerateMACKey)
		if err != nil || gen != 2 {
			t.Fatalf("rotate: %d %v", gen, err)
		}
		// Not followed yet: this ledger's next sale reseals its MPSD under
		// generation 1, which still checks.
		f.mustSell(newSale("between", 780, "5200-0000-02"))
		if f.l.ControlKeyGen() != 1 || f.staleRows(2) == 0 {
			t.Fatalf("sealing under %d, %d stale rows: the sale did not write under the old key", f.l.ControlKeyGen(), f.staleRows(2))
		}
		f.check()
		if err := f.l.RefreshControlKey(ctx); err != nil {
			t.Fatal(err)
		}
		if n := f.staleRows(2); n != 0 || f.l.ControlKeyGen() != 2 {
			t.Fatalf("after following: %d rows under the old key, sealing under %d", n, f.l.ControlKeyGen())
		}
		f.mustSell(newSale("after", 780, "5200-0000-03"))
		f.check()
	})
}

// otherLedger opens a second ledger on the fixture's database, as another
// process on it would.
func (f *fixture) otherLedger() *ledger.Ledger {
	f.t.Helper()
	sess, err := f.ks.Session()
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := f.cfg
	cfg.Now = f.clock.Now
	cfg.Holder = fmt.Sprintf("other-%d", dbSeq.Add(1))
	l, err := ledger.Open(context.Background(), f.db, cfg, sess, hubpostal.New(f.paURL, "FR", testLicence), f.al, quiet)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(l.Close)
	return l
}
