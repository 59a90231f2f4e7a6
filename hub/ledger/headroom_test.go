package ledger_test

import (
	"context"
	"crypto"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// gatedModule is a PSDM server's HSM session whose signing waits at a gate:
// a worker that has promised its GPSD funding stays in flight until the
// test lets it go.
type gatedModule struct {
	hsm.Session
	g *gate
}

type gate struct {
	entered chan struct{} // closed when the first signature is asked for
	release chan struct{} // closed to let signatures through
	in, out sync.Once
}

func newGate() *gate { return &gate{entered: make(chan struct{}), release: make(chan struct{})} }

func (g *gate) open() { g.out.Do(func() { close(g.release) }) }

func (g *gate) reached() bool {
	select {
	case <-g.entered:
		return true
	default:
		return false
	}
}

func (m gatedModule) Signer(label string) (crypto.Signer, error) {
	s, err := m.Session.Signer(label)
	return gatedSigner{s, m.g}, err
}

type gatedSigner struct {
	crypto.Signer
	g *gate
}

func (s gatedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.g.in.Do(func() { close(s.g.entered) })
	<-s.g.release
	return s.Signer.Sign(r, digest, opts)
}

// nearEmpty returns a fixture whose GPSD holds one and a half MPSD
// fundings (bought by a setup ledger that buys only that much), with no
// pool running, and two other hubs on its database that buy the default
// amount.
func nearEmpty(t *testing.T, dsn string) (f *fixture, a, b *ledger.Ledger) {
	t.Helper()
	f = newFixture(t, dsn, ledger.Config{GPSDPurchase: 1_500_000}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
	f.pool.Close()
	f.pool = nil
	if err := f.l.BuyFunds(context.Background()); err != nil {
		t.Fatal(err)
	}
	a, b = openOther(t, f, ledger.Config{}), openOther(t, f, ledger.Config{})
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	return f, a, b
}

func gpsdDR(t *testing.T, f *fixture) protocol.Mills {
	t.Helper()
	var dr int64
	if err := f.db.QueryRowContext(context.Background(), `SELECT dr FROM psd WHERE serial = 1`).Scan(&dr); err != nil {
		t.Fatal(err)
	}
	return protocol.Mills(dr)
}

// Two hubs on one database promise an MPSD funding each at the same moment
// while the GPSD holds one and a half: neither sees the other's promise, so
// each must keep headroom. Both promises stand, the GPSD covers both, and
// the two hubs, short at once, buy once.
func TestHubsReserveWithHeadroom(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f, a, b := nearEmpty(t, dsn)
		ctx := context.Background()
		funding := a.Config().MPSDFunding
		before := f.pa.TotalFunds("FR")
		var wg sync.WaitGroup
		for _, l := range []*ledger.Ledger{a, b} {
			wg.Go(func() {
				if err := l.Reserve(ctx, funding); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if dr := gpsdDR(t, f); dr < 2*funding {
			t.Errorf("the GPSD holds %s for two hubs' promises of %s each", dr, funding)
		}
		if bought := f.pa.TotalFunds("FR") - before; bought != int64(a.Config().GPSDPurchase) {
			t.Errorf("two hubs short at once bought %d; want one purchase of %d", bought, a.Config().GPSDPurchase)
		}
		a.Unreserve(funding)
		b.Unreserve(funding)
		f.check()
	})
}

// Hub A's worker promises a funding and is still signing when hub B sells
// with a funding of its own and commits. A's commit must still find the
// funds: a sale is not refused for a funding another hub took meanwhile.
func TestHubsCommitFundingsNearEmptyGPSD(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f, a, b := nearEmpty(t, dsn)
		ctx := context.Background()
		g := newGate()
		start := func(l *ledger.Ledger, open func() (hsm.Session, error)) *psdm.Pool {
			t.Helper()
			p, err := psdm.Start(ctx, psdm.Config{Workers: 1, RenewEvery: time.Hour}, open, psdm.Key{Label: "sign", CertSerial: 1}, l, quiet)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			return p
		}
		poolA := start(a, func() (hsm.Session, error) {
			s, err := f.ks.Session()
			return gatedModule{s, g}, err
		})
		poolB := start(b, func() (hsm.Session, error) { return f.ks.Session() })
		t.Cleanup(g.open) // before the pools close: a worker at the gate would hold Close up

		errA := make(chan error, 1)
		go func() {
			_, err := poolA.Sell(ctx, newSale("hub-a", 780, "0000-00A0-01"))
			errA <- err
		}()
		wait.For(t, 10*time.Second, "hub A's worker to promise its funding and sign", g.reached)
		if _, err := poolB.Sell(ctx, newSale("hub-b", 780, "0000-00B0-01")); err != nil {
			t.Fatalf("hub B's sale: %v", err)
		}
		g.open()
		var err error
		wait.For(t, 10*time.Second, "hub A's sale", func() bool {
			select {
			case err = <-errA:
				return true
			default:
				return false
			}
		})
		if err != nil {
			t.Fatalf("hub A's sale, funded while hub B's committed: %v", err)
		}
		r := f.check()
		if r.Indicia != 2 || r.GPSD.DR < 0 {
			t.Fatalf("%d indicia, GPSD DR %s; want 2 sold", r.Indicia, r.GPSD.DR)
		}
	})
}

// The headroom is best effort: while the authority does not sell, a
// promise the GPSD covers on its own still stands, and one it cannot
// cover is refused.
func TestHeadroomBestEffortWhenAuthorityRefuses(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f, a, _ := nearEmpty(t, dsn)
		ctx := context.Background()
		funding := a.Config().MPSDFunding
		f.pa.SetRefuseFunds(true)
		if err := a.Reserve(ctx, funding); err != nil {
			t.Fatalf("a promise the GPSD covers, with the authority refusing: %v", err)
		}
		// The authority is not asked for the headroom again at once: a
		// promise the GPSD covers does not wait on it meanwhile.
		asked := f.pa.FundsAsked()
		if err := a.Reserve(ctx, funding/4); err != nil {
			t.Fatalf("a small promise the GPSD covers: %v", err)
		}
		if n := f.pa.FundsAsked(); n != asked {
			t.Fatalf("the authority, refusing, was asked %d more times for the headroom", n-asked)
		}
		a.Unreserve(funding / 4)
		if err := a.Reserve(ctx, funding); !isCode(err, protocol.CodeFundsUnavailable) {
			t.Fatalf("a promise the GPSD cannot cover: %v, want %s", err, protocol.CodeFundsUnavailable)
		}
		a.Unreserve(funding)
		f.check()
	})
}
