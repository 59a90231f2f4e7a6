package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
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
