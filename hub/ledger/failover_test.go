package ledger_test

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"github.com/frank-postage/frank/hsm"
	"io"
	"sync/atomic"
	"testing"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
)

// brokenModule is a PSDM server's HSM session whose signing fails, as a
// module that went bad would.
type brokenModule struct{ hsm.Session }

func (b brokenModule) Signer(label string) (crypto.Signer, error) {
	s, err := b.Session.Signer(label)
	return brokenSigner{s}, err
}

type brokenSigner struct{ crypto.Signer }

func (brokenSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("CKR_DEVICE_ERROR")
}

// Stamps go round robin over the PSDM servers; a stamp one server cannot
// sign is signed by another before the sale fails, and only when every
// server fails does the sale fail. A server holds at most 8 MPSDs.
func TestPSDMFailOverAndRoundRobin(t *testing.T) {
	t.Parallel()
	forEachStore(t, testPSDMFailOver)
}

func testPSDMFailOver(t *testing.T, dsn string) {
	f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
	ctx := context.Background()
	f.pool.Close()
	var opened atomic.Int32
	start := func(broken func(n int32) bool) *psdm.Pool {
		t.Helper()
		opened.Store(0)
		open := func() (hsm.Session, error) {
			s, err := f.ks.Session()
			if n := opened.Add(1); err == nil && broken(n) {
				return brokenModule{s}, nil
			}
			return s, err
		}
		p, err := psdm.Start(ctx, psdm.Config{Servers: []psdm.Server{{ID: 1, MPSDs: 1}, {ID: 2, MPSDs: 1}, {ID: 3, MPSDs: 1}}, RenewEvery: 1e12},
			open, psdm.Key{Label: "sign", CertSerial: 1}, f.l, quiet)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := psdm.Start(ctx, psdm.Config{Servers: []psdm.Server{{ID: 1, MPSDs: 9}}}, func() (hsm.Session, error) { return f.ks.Session() },
		psdm.Key{Label: "sign", CertSerial: 1}, f.l, quiet); err == nil {
		t.Fatal("a server with 9 MPSDs started")
	}

	// Healthy: 6 stamps, 2 on each server.
	f.pool = start(func(int32) bool { return false })
	for i := range 6 {
		f.mustSell(newSale(fmt.Sprintf("rr-%d", i), 780, fmt.Sprintf("0000-0031-%02d", i+1)))
	}
	for _, st := range f.pool.Status() {
		if st.Total != 2 || st.Load != 1 {
			t.Errorf("server %d: %d stamps, %d MPSDs; want 2 and 1 (round robin)", st.Worker, st.Total, st.Load)
		}
	}
	f.pool.Close()

	// Server 2's module fails: its stamps are signed by the others.
	f.pool = start(func(n int32) bool { return n == 2 })
	for i := range 6 {
		f.mustSell(newSale(fmt.Sprintf("fo-%d", i), 780, fmt.Sprintf("0000-0032-%02d", i+1)))
	}
	var total int64
	for _, st := range f.pool.Status() {
		if st.Worker == 2 && st.Total != 0 {
			t.Errorf("the broken server issued %d stamps", st.Total)
		}
		total += st.Total
	}
	if total != 6 {
		t.Fatalf("%d stamps issued, want 6", total)
	}
	f.pool.Close()

	// Every module fails: the sale fails, and nothing is sold.
	f.pool = start(func(int32) bool { return true })
	if _, err := f.sell(newSale("all-broken", 780, "0000-0033-01")); err == nil {
		t.Fatal("sold with every module broken")
	} else if protocol.AsError(err).Code == "" {
		t.Fatalf("no code for the failed sale: %v", err)
	}
	f.check()
}
