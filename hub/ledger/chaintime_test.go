package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
)

// Two hubs share one database, hub g's clock 2 s behind hub f's, and each
// funds its MPSD from the GPSD. g's entry on the GPSD's chain is dated no
// earlier than f's before it, as is g's funding, so the report of a period
// that ends between the two clocks' times has the GPSD's closing reading
// and the movements it lists agree, and the authority accepts it. Before,
// g's entry was dated 2 s before the one it follows: the closing reading
// came from it and held f's purchase and funding, which the report listed
// in the next period, and the authority refused the report every time it
// was sent.
func TestSkewedHubsChainStaysInOrder(t *testing.T) {
	ctx := context.Background()
	u, err := pg.NewDatabase(fmt.Sprintf("t%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, u, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
	start := f.clock.Now()
	if err := f.l.BuyFunds(ctx); err != nil { // the GPSD's chain begins well before the period's end
		t.Fatal(err)
	}
	f.clock.Add(5 * time.Second) // within the MPSDs' leases
	at := f.clock.Now()
	g := &fixture{t: t, dsn: u, pa: f.pa, paURL: f.paURL, ks: f.ks, clock: &clock{t: at.Add(-2 * time.Second)}, pub: f.pub,
		pcfg: psdm.Config{Workers: 1, MPSDsPerWorker: 1}}
	g.open()
	defer g.close()

	f.mustSell(newSale("f1", 780, "0000-000A-01")) // f buys postage and funds its MPSD, at its time
	g.mustSell(newSale("g1", 780, "0000-000B-01")) // g funds its MPSD, its clock 2 s behind
	f.check()

	f.clock.Add(time.Hour)
	g.clock.Add(time.Hour)
	from, to := start.Add(-time.Minute), at.Add(-time.Second)
	rep, err := f.l.BuildReport(ctx, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.l.SubmitReport(ctx, rep, hubpostal.New(f.paURL, "FR", testLicence)); err != nil {
		t.Fatalf("the authority refused the report: %v", err)
	}
	rows, err := f.db.QueryContext(ctx, `SELECT chain, n, at FROM audit ORDER BY chain, n`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	last := map[int64]int64{}
	for rows.Next() {
		var chain, n, at int64
		if err := rows.Scan(&chain, &n, &at); err != nil {
			t.Fatal(err)
		}
		if at < last[chain] {
			t.Errorf("chain %d: entry %d dated before the entry it follows", chain, n)
		}
		last[chain] = at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}
