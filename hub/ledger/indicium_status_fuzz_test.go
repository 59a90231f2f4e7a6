package ledger_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/postal"
)

// The meter number in GET /api/v1/indicia/{meter}/{label} is whatever a
// verifier sends. IndiciumStatus answers any meter without an error and
// with one of its three statuses; only the meter number the stamp carries
// (vendor, model and eight digits, as protocol.MeterNumber writes it) finds
// the stamp: no other spelling (signs, spaces, other digits, other case, a
// ninth digit) names the same MPSD.
func FuzzIndiciumStatusMeter(f *testing.F) {
	ctx := context.Background()
	pa, err := postal.New("", quiet)
	if err != nil {
		f.Fatal(err)
	}
	srv := httptest.NewServer(pa.Handler())
	f.Cleanup(srv.Close)
	ks, err := soft.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	if err := ks.GenerateMACKey("frank-control-1"); err != nil {
		f.Fatal(err)
	}
	pub, err := ks.GenerateSigningKey("sign")
	if err != nil {
		f.Fatal(err)
	}
	if _, err := hubpostal.New(srv.URL, "FR", testLicence).RegisterKey(ctx, pub); err != nil {
		f.Fatal(err)
	}
	db, err := store.Open(ctx, filepath.Join(f.TempDir(), "hub.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	if _, err := fleet.New(db).Add(ctx, "kiosk-1", "store-1"); err != nil {
		f.Fatal(err)
	}
	sess, _ := ks.Session()
	l, err := ledger.Open(ctx, db, ledger.Config{Licence: testLicence, Holder: "fuzz"}, sess, hubpostal.New(srv.URL, "FR", testLicence), alerts.New(db, quiet, nil), quiet)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(l.Close)
	open := func() (hsm.Session, error) { return ks.Session() }
	pool, err := psdm.Start(ctx, psdm.Config{Workers: 1}, open, psdm.Key{Label: "sign", CertSerial: 1}, l, quiet)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(pool.Close)
	label := mustLabel("1966-F8CF-01")
	h := sha256.Sum256([]byte("fuzz-1"))
	out, err := pool.Sell(ctx, &ledger.Sale{KioskID: "kiosk-1", RequestID: "fuzz-1", BodyHash: h[:], UserID: 42, OriginZIP: 94544,
		Items: []ledger.Item{{RateClass: "1100", Postage: 780, Label: label}}})
	if err != nil {
		f.Fatal(err)
	}
	res, err := protocol.DecodePurchaseResult(out)
	if err != nil || len(res.Indicia) != 1 {
		f.Fatalf("sale: %+v, %v", res, err)
	}
	in, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
	if err != nil {
		f.Fatal(err)
	}
	meter := in.MeterNumber()
	for _, m := range []string{meter, "", "FR2N", meter[:len(meter)-1], meter + "0", "fr2n" + meter[4:], " " + meter, meter + " ",
		"FR2N+" + meter[5:], "FR2N-" + meter[5:], "FR2N0x" + meter[6:], "FR2N\u0660" + meter[5:], fmt.Sprintf("FR2N%08d", in.MPSDSerial+1)} {
		f.Add(m, int64(0))
		f.Add(m, int64(in.AR))
	}
	f.Fuzz(func(t *testing.T, m string, ar int64) {
		st, why, err := l.IndiciumStatus(ctx, m, label, ar)
		if err != nil || !slices.Contains([]string{"valid", "voided", "unknown"}, st) {
			t.Fatalf("meter %q: %q, %q, %v", m, st, why, err)
		}
		if m != meter && st != "unknown" {
			t.Fatalf("meter %q found the stamp of %s: %s %s", m, meter, st, why)
		}
		if m == meter && (ar == 0 || ar == int64(in.AR)) && st != "valid" {
			t.Fatalf("the stamp's own meter %s, ar %d: %s %s", m, ar, st, why)
		}
	})
}
