package ledger_test

import (
	"context"
	"fmt"
	"github.com/frank-postage/frank/hsm"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// testdata/v1 is a hub database written by the schema-1 hub (two sales from
// `make run`), with its development key store. A newer hub must open it,
// migrate it, keep its money, and sell on.

// v1Tables are the schema-1 tables, parents first.
var v1Tables = []string{"meta", "psd", "fund_purchases", "fundings", "signing_keys", "kiosks", "sales", "indicia"}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if fi.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, in)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// v1Database gives a schema-1 database holding the fixture's rows.
func v1Database(t *testing.T, backend string, dir string) string {
	t.Helper()
	ctx := context.Background()
	fixture := filepath.Join(dir, "hub.db")
	if backend == "sqlite" {
		return fixture
	}
	src, err := store.OpenVersion(ctx, fixture, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dsn, err := pg.NewDatabase(fmt.Sprintf("v1_%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	dst, err := store.OpenVersion(ctx, dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	for _, table := range v1Tables {
		rows, err := src.QueryContext(ctx, "SELECT * FROM "+table)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			q := fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", table, strings.Join(cols, ", "),
				strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", "))
			if _, err := dst.ExecContext(ctx, dst.Rebind(q), vals...); err != nil {
				t.Fatalf("copy %s: %v", table, err)
			}
		}
		rows.Close()
	}
	// Rows were copied with their ids; move the identity sequences past them.
	for _, table := range []string{"fundings", "indicia"} {
		if _, err := dst.ExecContext(ctx, fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', 'id'), (SELECT MAX(id) FROM %s))`, table, table)); err != nil {
			t.Fatal(err)
		}
	}
	return dsn
}

// openMigrated opens the fixture's database, migrating it to the latest
// schema, and its ledger under the fixture's key store; all close with t.
func openMigrated(t *testing.T, dir, dsn string) (*store.DB, *soft.Keystore, *ledger.Ledger) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ks, err := soft.Open(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	sess, _ := ks.Session()
	l, err := ledger.Open(ctx, db, ledger.Config{Holder: "migrated", Licence: testLicence}, sess, hubpostal.New("http://127.0.0.1:1", "FR", testLicence),
		alerts.New(db, quiet, nil), quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return db, ks, l
}

// fixturePool signs with the fixture's key, one worker on one MPSD; it
// closes with t.
func fixturePool(t *testing.T, ks *soft.Keystore, l *ledger.Ledger) *psdm.Pool {
	t.Helper()
	open := func() (hsm.Session, error) { return ks.Session() }
	pool, err := psdm.Start(context.Background(), psdm.Config{Workers: 1, MPSDsPerWorker: 1}, open,
		psdm.Key{Label: "indicium-20261129T060722.559235", CertSerial: 1}, l, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func TestMigrateFromV1Fixture(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			copyDir(t, "testdata/v1", dir)
			dsn := v1Database(t, b.name, dir)

			db, ks, l := openMigrated(t, dir, dsn)
			fresh, err := store.Open(ctx, filepath.Join(t.TempDir(), "fresh.db"))
			if err != nil {
				t.Fatal(err)
			}
			latest, _ := fresh.SchemaVersion(ctx)
			fresh.Close()
			if v, _ := db.SchemaVersion(ctx); v != latest {
				t.Fatalf("schema %d after migration, want the latest, %d", v, latest)
			}
			r, err := l.Check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !r.OK() {
				t.Fatalf("migrated ledger: %v", r.Violations)
			}
			// The money the old hub held is all there.
			if r.Indicia != 2 || r.FundsBought != 100_000_000 || r.GPSD.AR != 1_000_000 || len(r.MPSDs) != 1 || r.MPSDs[0].AR != 1560 {
				t.Fatalf("migrated ledger: %d indicia, bought %d, gpsd %+v, mpsds %+v", r.Indicia, r.FundsBought, r.GPSD, r.MPSDs)
			}
			// Old labels stay used; the old MPSD can be leased and sells on.
			var labels int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM indicia WHERE state <> 'voided'`).Scan(&labels); err != nil || labels != 2 {
				t.Fatalf("live labels %d, %v", labels, err)
			}
			pool := fixturePool(t, ks, l)
			out, err := pool.Sell(ctx, newSale("after-migration", 780, "0000-0003-01"))
			if err != nil {
				t.Fatal(err)
			}
			res, _ := protocol.DecodePurchaseResult(out)
			in, _ := protocol.ParseIndicium(res.Indicia[0].Matrix)
			if in.MPSDSerial != r.MPSDs[0].Serial || in.AR != 1560+780 {
				t.Fatalf("sale after migration: mpsd %d AR %d", in.MPSDSerial, in.AR)
			}
			if r, err := l.Check(ctx); err != nil || !r.OK() {
				t.Fatalf("after a new sale: %v %v", r.Violations, err)
			}
		})
	}
}

// A database from before one audit chain per PSD: its single chain becomes
// chain 0, each PSD's chain opens where chain 0 left it, the ledger checks
// clean and sells on. An opening that does not carry chain 0's registers
// over is a violation.
func TestMigrateToChainPerPSD(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		for _, skew := range []protocol.Mills{0, 1} {
			t.Run(fmt.Sprintf("%s/skew=%d", b.name, skew), func(t *testing.T) {
				ctx := context.Background()
				dir := t.TempDir()
				copyDir(t, "testdata/v1", dir)
				dsn := v1Database(t, b.name, dir)
				old, err := store.OpenVersion(ctx, dsn, 24)
				if err != nil {
					t.Fatal(err)
				}
				n, err := ledger.WriteChainZero(ctx, old, time.Now().Add(-time.Hour), ledger.FirstMPSDSerial, skew)
				old.Close()
				if err != nil || n != 2 {
					t.Fatalf("chain 0: %d entries, %v", n, err)
				}

				db, ks, l := openMigrated(t, dir, dsn)
				var openings int
				if err := db.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM audit WHERE chain = psd AND n = 1 AND kind = 'opening' AND ref = ?`),
					"continues chain 0 after its entry 2").Scan(&openings); err != nil || openings != 2 {
					t.Fatalf("%d chains opened from chain 0, %v", openings, err)
				}
				r, err := l.Check(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if skew != 0 {
					if r.OK() || !strings.Contains(strings.Join(r.Violations, "\n"), fmt.Sprintf("chain %d opens with AR", ledger.FirstMPSDSerial)) {
						t.Fatalf("an opening that does not carry chain 0 over passed: %q", r.Violations)
					}
					return
				}
				if !r.OK() {
					t.Fatalf("migrated ledger: %v", r.Violations)
				}
				if _, err := fixturePool(t, ks, l).Sell(ctx, newSale("after-chains", 780, "0000-0003-01")); err != nil {
					t.Fatal(err)
				}
				if r, err := l.Check(ctx); err != nil || !r.OK() {
					t.Fatalf("after a new sale: %v %v", r.Violations, err)
				}
				// The report anchors chain 0 beside the PSDs' chains.
				rep, err := l.BuildReport(ctx, time.Now().Add(-2*time.Hour), time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if len(rep.AuditHeads) != 3 || rep.AuditHeads[0].Chain != 0 || rep.AuditHeads[0].Seq != 2 || rep.AuditHeads[2].Seq < 2 {
					t.Fatalf("report heads %+v", rep.AuditHeads)
				}
				// The MPSD's registers at the start of a period that began
				// after chain 0's entries and before its own chain opened
				// come from chain 0.
				rep, err = l.BuildReport(ctx, time.Now().Add(-30*time.Minute), time.Now())
				if err != nil {
					t.Fatal(err)
				}
				var mpsd *hubpostal.Reading
				for i := range rep.Registers {
					if rep.Registers[i].Serial == ledger.FirstMPSDSerial {
						mpsd = &rep.Registers[i]
					}
				}
				if mpsd == nil || mpsd.ARStart != 1560 || mpsd.AR != 1560+780 {
					t.Fatalf("mpsd reading %+v", mpsd)
				}
			})
		}
	}
}

// A database from before one audit chain per PSD whose control-code key
// was rotated, with rows a lagging hub left under the old key: the hub
// opens it without resealing anything before the chains are seeded, the
// ledger checks clean, and it sells under the new key.
func TestMigrateWithRotatedControlKey(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			copyDir(t, "testdata/v1", dir)
			dsn := v1Database(t, b.name, dir)
			old, err := store.OpenVersion(ctx, dsn, 24)
			if err != nil {
				t.Fatal(err)
			}
			_, err = old.ExecContext(ctx, old.Rebind(`INSERT INTO control_keys (gen, label, created_at) VALUES (2, 'frank-control-g2', ?)`), time.Now().UnixMicro())
			old.Close()
			if err != nil {
				t.Fatal(err)
			}
			ks, err := soft.Open(filepath.Join(dir, "keys"))
			if err != nil {
				t.Fatal(err)
			}
			if err := ks.GenerateMACKey("frank-control-g2"); err != nil {
				t.Fatal(err)
			}
			db, ks, l := openMigrated(t, dir, dsn)
			if l.ControlKeyGen() != 2 {
				t.Fatalf("sealing under generation %d, want 2", l.ControlKeyGen())
			}
			if r, err := l.Check(ctx); err != nil || !r.OK() {
				t.Fatalf("migrated ledger: %v %v", r.Violations, err)
			}
			if _, err := fixturePool(t, ks, l).Sell(ctx, newSale("after-rotation", 780, "0000-0003-01")); err != nil {
				t.Fatal(err)
			}
			var sealed int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM psd WHERE length(control) = 35`).Scan(&sealed); err != nil || sealed == 0 {
				t.Fatalf("%d rows under generation 2 after a sale, %v", sealed, err)
			}
			if r, err := l.Check(ctx); err != nil || !r.OK() {
				t.Fatalf("after a new sale: %v %v", r.Violations, err)
			}
		})
	}
}
