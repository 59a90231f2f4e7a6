package ledger_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/postal"
)

type fixture struct {
	l    *ledger.Ledger
	db   *store.DB
	pa   *postal.Authority
	key  ledger.Session
	ks   *soft.Keystore
	mpsd uint32
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pa, err := postal.New("", log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(pa.Handler())
	t.Cleanup(srv.Close)
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ks, err := soft.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.GenerateMACKey("frank-control-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.GenerateSigningKey("sign"); err != nil {
		t.Fatal(err)
	}
	sess, _ := ks.Session()
	signer, _ := sess.Signer("sign")
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	l, err := ledger.Open(ctx, db, ledger.Config{Now: func() time.Time { return now }}, sess, hubpostal.New(srv.URL, "FR"), log)
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.AcquireMPSD(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{l: l, db: db, pa: pa, key: ledger.Session{CertSerial: 1, Signer: signer, MAC: sess}, ks: ks, mpsd: m}
}

func (f *fixture) check(t *testing.T) *ledger.Report {
	t.Helper()
	r, err := f.l.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("ledger invariants broken: %v", r.Violations)
	}
	if r.FundsBought != protocol.Mills(f.pa.TotalFunds("FR")) {
		t.Fatalf("ledger bought %d, authority sold %d", r.FundsBought, f.pa.TotalFunds("FR"))
	}
	return r
}

func sale(id string, label string, postage protocol.Mills) *ledger.Sale {
	l, _ := protocol.ParseLabelSerial(label)
	h := sha256.Sum256([]byte(id + label))
	return &ledger.Sale{KioskID: "kiosk-1", RequestID: id, BodyHash: h[:], UserID: 42, OriginZIP: 94544,
		Items: []ledger.Item{{RateClass: "1100", Postage: postage, Label: l}}}
}

func TestFirstSaleFundsFromAuthority(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	out, err := f.l.Sell(ctx, sale("r1", "1966-F8CF-01", 780), f.mpsd, f.key)
	if err != nil {
		t.Fatal(err)
	}
	res, err := protocol.DecodePurchaseResult(out)
	if err != nil {
		t.Fatal(err)
	}
	in, err := protocol.VerifyIndicium(res.Indicia[0].Matrix, f.key.Signer.Public().(*ecdsa.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if in.AR != 780 || in.DR != 1_000_000-780 || in.Postage != 780 || in.MPSDSerial != f.mpsd || in.Date != 20261129 || in.UserID != 42 {
		t.Fatalf("indicium %+v", in)
	}
	r := f.check(t)
	if r.GPSD.DR != 100_000_000-1_000_000 || r.GPSD.AR != 1_000_000 {
		t.Fatalf("gpsd %+v", r.GPSD)
	}
}

func TestReplayIsIdenticalAndMovesNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	first, err := f.l.Sell(ctx, sale("r1", "1966-F8CF-01", 780), f.mpsd, f.key)
	if err != nil {
		t.Fatal(err)
	}
	before := f.check(t)
	for range 3 {
		again, err := f.l.Sell(ctx, sale("r1", "1966-F8CF-01", 780), f.mpsd, f.key)
		if err != nil || !bytes.Equal(again, first) {
			t.Fatalf("replay differs: %v", err)
		}
	}
	after := f.check(t)
	if after.MPSDs[0].AR != before.MPSDs[0].AR || after.GPSD.DR != before.GPSD.DR {
		t.Fatal("replay moved money")
	}
	if after.Indicia != 1 {
		t.Fatalf("%d indicia after replays", after.Indicia)
	}
	_, err = f.l.Sell(ctx, sale("r1", "1966-F8CF-02", 780), f.mpsd, f.key)
	if !errors.Is(err, &protocol.Error{Code: protocol.CodeIdempotencyConflict}) {
		t.Fatalf("different body: %v", err)
	}
}

func TestLabelUsedTwice(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.l.Sell(ctx, sale("r1", "1966-F8CF-01", 780), f.mpsd, f.key); err != nil {
		t.Fatal(err)
	}
	_, err := f.l.Sell(ctx, sale("r2", "1966-F8CF-01", 780), f.mpsd, f.key)
	if !errors.Is(err, &protocol.Error{Code: protocol.CodeLabelUsed}) {
		t.Fatalf("err = %v", err)
	}
	if r := f.check(t); r.Indicia != 1 {
		t.Fatalf("%d indicia", r.Indicia)
	}
}

func TestTamperLocksMPSD(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.l.Sell(ctx, sale("r1", "1966-F8CF-01", 780), f.mpsd, f.key); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.ExecContext(ctx, `UPDATE psd SET dr = dr + 100000 WHERE serial = ?`, f.mpsd); err != nil {
		t.Fatal(err)
	}
	_, err := f.l.Sell(ctx, sale("r2", "1966-F8CF-02", 780), f.mpsd, f.key)
	if !errors.Is(err, ledger.ErrTamper) {
		t.Fatalf("err = %v, want tamper", err)
	}
	_, err = f.l.Sell(ctx, sale("r3", "1966-F8CF-03", 780), f.mpsd, f.key)
	if !errors.Is(err, ledger.ErrTamper) && !errors.Is(err, ledger.ErrLocked) {
		t.Fatalf("tampered mpsd still sells: %v", err)
	}
	var locked string
	if err := f.db.QueryRowContext(ctx, `SELECT locked FROM psd WHERE serial = ?`, f.mpsd).Scan(&locked); err != nil || locked == "" {
		t.Fatalf("mpsd not locked: %q %v", locked, err)
	}
	r, err := f.l.Check(ctx)
	if err != nil || r.OK() {
		t.Fatalf("check missed the tamper: %v %v", r, err)
	}
	m, err := f.l.AcquireMPSD(ctx)
	if err != nil || m == f.mpsd {
		t.Fatalf("acquire gave %d, %v; want a fresh MPSD", m, err)
	}
}

func TestAuthorityRefusesNothingMoves(t *testing.T) {
	f := newFixture(t)
	f.pa.SetRefuseFunds(true)
	_, err := f.l.Sell(context.Background(), sale("r1", "1966-F8CF-01", 780), f.mpsd, f.key)
	if !errors.Is(err, &protocol.Error{Code: protocol.CodeFundsUnavailable}) {
		t.Fatalf("err = %v", err)
	}
	if r := f.check(t); r.Indicia != 0 || r.GPSD.DR != 0 {
		t.Fatalf("money moved: %+v", r)
	}
	f.pa.SetRefuseFunds(false)
	if _, err := f.l.Sell(context.Background(), sale("r1", "1966-F8CF-01", 780), f.mpsd, f.key); err != nil {
		t.Fatalf("retry after refusal: %v", err)
	}
	f.check(t)
}

func TestManyStampsRefundMPSD(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// $400 stamps: the third needs a second $1,000 funding.
	for i, lbl := range []string{"0000-0001-01", "0000-0001-02", "0000-0001-03"} {
		if _, err := f.l.Sell(ctx, sale(string(rune('a'+i)), lbl, 400_000), f.mpsd, f.key); err != nil {
			t.Fatal(err)
		}
		f.check(t)
	}
	r := f.check(t)
	if r.MPSDs[0].AR != 1_200_000 || r.MPSDs[0].DR != 800_000 {
		t.Fatalf("mpsd %+v", r.MPSDs[0])
	}
}
