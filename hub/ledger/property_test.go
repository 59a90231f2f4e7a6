package ledger_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
)

// model is the simple account of what the ledger must hold.
type model struct {
	gAR, gDR protocol.Mills
	bought   protocol.Mills
	mpsd     map[uint32][2]protocol.Mills // AR, DR
	labels   map[string]bool
	results  map[string][]byte // request id -> first answer
	sales    []*ledger.Sale
	indicia  int
	spoiled  int
}

// TestPropertyRandomOperations runs a seeded random mix of sales (new,
// repeated, on used labels, large enough to need funding), operator
// fundings, lease expiries and takeovers by another hub, clean and
// unclean restarts, and passing time. After every step it checks every
// ledger invariant and compares the registers with the model.
//
// FRANK_PROPERTY_SEED replays a run; FRANK_PROPERTY_STEPS sets its length.
func TestPropertyRandomOperations(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FRANK_PROPERTY_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	steps := 3200
	if testing.Short() {
		steps = 200 // the race detector makes each step 20 times slower
	}
	if s := os.Getenv("FRANK_PROPERTY_STEPS"); s != "" {
		steps, _ = strconv.Atoi(s)
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			n := steps
			if b.name == "postgres" {
				n = steps / 4
			}
			t.Logf("seed %d, %d steps (replay: FRANK_PROPERTY_SEED=%d)", seed, n, seed)
			runProperty(t, b.dsn(t), seed, n)
		})
	}
}

func runProperty(t *testing.T, dsn string, seed uint64, steps int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	cfg := ledger.Config{LeaseTTL: 20 * time.Second, MPSDFunding: 50_000, GPSDPurchase: 400_000}
	f := newFixture(t, dsn, cfg, psdm.Config{Workers: 2, MPSDsPerWorker: 2})
	m := &model{mpsd: map[uint32][2]protocol.Mills{}, labels: map[string]bool{}, results: map[string][]byte{}}
	postages := []protocol.Mills{610, 780, 1070, 1630, 1700, 30_000, 49_990}
	label := func() string {
		if len(m.labels) > 0 && rng.IntN(20) == 0 {
			for l := range m.labels { // a used one
				return l
			}
		}
		return fmt.Sprintf("%04X-%04X-%02d", rng.IntN(1<<16), rng.IntN(1<<16), 1+rng.IntN(10))
	}
	step := 0
	defer func() {
		if t.Failed() {
			t.Logf("failed at step %d; replay with FRANK_PROPERTY_SEED=%d", step, seed)
		}
	}()
	for step = 0; step < steps && !t.Failed(); step++ {
		switch op := rng.IntN(100); {
		case op < 70: // a new sale
			var labels []string
			seen := map[string]bool{}
			for range 1 + rng.IntN(3) {
				l := label()
				if !seen[l] {
					seen[l] = true
					labels = append(labels, l)
				}
			}
			s := newSale(fmt.Sprintf("p%d", step), postages[rng.IntN(len(postages))], labels...)
			m.sell(t, f, s)
		case op < 80 && len(m.sales) > 0: // a repeat of an earlier request
			s := m.sales[rng.IntN(len(m.sales))]
			out, err := f.sell(s)
			if err != nil || !bytes.Equal(out, m.results[s.RequestID]) {
				t.Fatalf("step %d: repeat of %s: %v", step, s.RequestID, err)
			}
		case op < 84: // an operator funds a new MPSD
			serial, err := f.l.CreateMPSD(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m.mpsd[serial] = [2]protocol.Mills{}
			amt := protocol.Mills(1 + rng.IntN(100_000))
			err = f.l.FundMPSD(ctx, serial, amt)
			switch {
			case err == nil:
				m.gDR, m.gAR = m.gDR-amt, m.gAR+amt
				m.mpsd[serial] = [2]protocol.Mills{0, amt}
			case amt <= m.gDR:
				t.Fatalf("step %d: fund %d with GPSD DR %d: %v", step, amt, m.gDR, err)
			}
		case op < 90: // leases lapse and another hub takes an MPSD over
			f.pass(cfg.LeaseTTL + time.Second)
			other := openOther(t, f, cfg)
			slots, err := other.Lease(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range slots {
				if got := m.mpsd[s.Serial]; got != [2]protocol.Mills{s.AR, s.DR} {
					t.Fatalf("step %d: takeover of %d found AR %d DR %d, model %v", step, s.Serial, s.AR, s.DR, got)
				}
				if _, ok := m.mpsd[s.Serial]; !ok {
					m.mpsd[s.Serial] = [2]protocol.Mills{}
				}
			}
			other.Close()
			if err := f.pool.RenewNow(ctx); err != nil {
				t.Fatal(err)
			}
		case op < 95: // restart: clean, or a crash that leaves leases behind
			if rng.IntN(2) == 0 {
				f.close()
			} else {
				f.pool = nil // dies holding its leases
				f.l.Close()
				f.l = nil
				f.pass(cfg.LeaseTTL + time.Second)
				f.db.Close()
				f.db = nil
			}
			f.cfg.Holder = ""
			f.open()
		default: // time passes
			f.clock.Add(time.Duration(rng.IntN(3600)) * time.Second)
			if err := f.pool.RenewNow(ctx); err != nil {
				t.Fatal(err)
			}
		}
		m.compare(t, f, step)
	}
	t.Logf("%d steps: %d sales, %d indicia, %d spoiled, %d MPSDs, GPSD AR %s DR %s", step, len(m.sales), m.indicia, m.spoiled, len(m.mpsd), m.gAR.Exact(), m.gDR.Exact())
}

// openOther opens a second ledger on the same database: another hub.
func openOther(t *testing.T, f *fixture, cfg ledger.Config) *ledger.Ledger {
	t.Helper()
	sess, _ := f.ks.Session()
	cfg.Now = f.clock.Now
	cfg.Holder = fmt.Sprintf("other-%d", dbSeq.Add(1))
	l, err := ledger.Open(context.Background(), f.db, cfg, sess, hubpostal.New(f.paURL, "FR", testLicence), alerts.New(f.db, quiet, f.clock.Now), quiet)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// sell runs a sale and moves the model as the indicia say, after checking
// that they follow from the model's registers.
func (m *model) sell(t *testing.T, f *fixture, s *ledger.Sale) {
	t.Helper()
	used := false
	for _, it := range s.Items {
		used = used || m.labels[it.Label.String()]
	}
	out, err := f.sell(s)
	if used {
		if !isCode(err, protocol.CodeLabelUsed) {
			t.Fatalf("sale %s on a used label: %v", s.RequestID, err)
		}
		return
	}
	if err != nil {
		// Leases taken by another hub, or lost at restart, refuse with a
		// retryable code. Stamps of the sale that were signed anyway are
		// kept as spoiled: their registers moved, and so does the model.
		if pe := protocol.AsError(err); !ledger.Retryable(pe.Code) {
			t.Fatalf("sale %s: %v", s.RequestID, err)
		}
		rows, qerr := f.db.Query(f.db.Rebind(`SELECT mpsd, postage, ar, dr FROM spoiled WHERE request_id = ? ORDER BY id`), s.RequestID)
		if qerr != nil {
			t.Fatal(qerr)
		}
		defer rows.Close()
		for rows.Next() {
			var serial uint32
			var postage, ar, dr protocol.Mills
			if err := rows.Scan(&serial, &postage, &ar, &dr); err != nil {
				t.Fatal(err)
			}
			m.move(t, f, s.RequestID, serial, postage, ar, dr)
			m.spoiled++
		}
		return
	}
	res, err := protocol.DecodePurchaseResult(out)
	if err != nil {
		t.Fatal(err)
	}
	for i, iss := range res.Indicia {
		in, err := protocol.VerifyIndicium(iss.Matrix, f.pub)
		if err != nil {
			t.Fatal(err)
		}
		if in.Postage != s.Items[i].Postage || in.Label != s.Items[i].Label {
			t.Fatalf("sale %s item %d: indicium for %s %d", s.RequestID, i, in.Label, in.Postage)
		}
		m.move(t, f, s.RequestID, in.MPSDSerial, in.Postage, in.AR, in.DR)
		m.labels[in.Label.String()] = true
		m.indicia++
	}
	m.results[s.RequestID] = out
	m.sales = append(m.sales, s)
}

// move applies one signed stamp to the model: funding from the GPSD (and
// the GPSD from the postal authority, bought while it holds less than
// FundingHeadroom fundings) as Fig. 10 says, then the sale. The registers
// the stamp carries must be the model's.
func (m *model) move(t *testing.T, f *fixture, id string, serial uint32, postage, gotAR, gotDR protocol.Mills) {
	t.Helper()
	cfg := f.l.Config()
	regs := m.mpsd[serial] // zero for a new MPSD
	ar, dr := regs[0], regs[1]
	for dr < postage {
		if m.gDR < cfg.MPSDFunding*ledger.FundingHeadroom {
			m.gDR += cfg.GPSDPurchase
			m.bought += cfg.GPSDPurchase
		}
		m.gDR, m.gAR, dr = m.gDR-cfg.MPSDFunding, m.gAR+cfg.MPSDFunding, dr+cfg.MPSDFunding
	}
	ar, dr = ar+postage, dr-postage
	if gotAR != ar || gotDR != dr {
		t.Fatalf("sale %s on mpsd %d: registers AR %d DR %d, model AR %d DR %d", id, serial, gotAR, gotDR, ar, dr)
	}
	m.mpsd[serial] = [2]protocol.Mills{ar, dr}
}

// compare checks every invariant, then the registers against the model.
func (m *model) compare(t *testing.T, f *fixture, step int) {
	t.Helper()
	r := f.check()
	if r.GPSD.AR != m.gAR || r.GPSD.DR != m.gDR || r.FundsBought != m.bought || r.Indicia != m.indicia || r.Spoiled != m.spoiled {
		t.Fatalf("step %d: gpsd AR %d DR %d bought %d indicia %d; model AR %d DR %d bought %d indicia %d",
			step, r.GPSD.AR, r.GPSD.DR, r.FundsBought, r.Indicia, m.gAR, m.gDR, m.bought, m.indicia)
	}
	for _, p := range r.MPSDs {
		if got := [2]protocol.Mills{p.AR, p.DR}; got != m.mpsd[p.Serial] {
			t.Fatalf("step %d: mpsd %d AR %d DR %d, model %v", step, p.Serial, p.AR, p.DR, m.mpsd[p.Serial])
		}
	}
}

// Two hubs short of postage at the same moment buy it once: the purchase
// is one hub's at a time, and the second finds the first's funds.
func TestOnePurchaseAcrossHubs(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{})
		other := openOther(t, f, ledger.Config{})
		defer other.Close()
		ctx := context.Background()
		psds, err := f.l.PSDs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var dr protocol.Mills
		for _, p := range psds {
			if p.Kind == ledger.KindGPSD {
				dr = p.DR
			}
		}
		before := f.pa.TotalFunds("FR")
		var wg sync.WaitGroup
		for _, l := range []*ledger.Ledger{f.l, other} {
			wg.Go(func() {
				if err := l.Reserve(ctx, dr+1); err != nil {
					t.Error(err)
				}
				l.Unreserve(dr + 1)
			})
		}
		wg.Wait()
		if bought := f.pa.TotalFunds("FR") - before; bought != int64(f.l.Config().GPSDPurchase) {
			t.Errorf("two hubs short at once bought %d; want one purchase of %d", bought, f.l.Config().GPSDPurchase)
		}
		f.check()
	})
}
