package ledger_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"github.com/frank-postage/frank/hsm"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/wait"
)

// pg is one PostgreSQL server for the package; each test gets a database.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	var err error
	if pg, err = pgtest.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "ledger tests need PostgreSQL:", err)
		os.Exit(1)
	}
	code := m.Run()
	pg.Stop()
	os.Exit(code)
}

var dbSeq atomic.Int64

// backends are the stores every contract test runs against.
var backends = []struct {
	name string
	dsn  func(t *testing.T) string
}{
	{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "hub.db") }},
	{"postgres", func(t *testing.T) string {
		u, err := pg.NewDatabase(fmt.Sprintf("t%d", dbSeq.Add(1)))
		if err != nil {
			t.Fatal(err)
		}
		return u
	}},
}

// forEachStore runs a test against SQLite and PostgreSQL.
func forEachStore(t *testing.T, test func(t *testing.T, dsn string)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b.dsn(t)) })
	}
}

// clock is a fake clock tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t      *testing.T
	dsn    string
	db     *store.DB
	pa     *postal.Authority
	paURL  string
	ks     *soft.Keystore
	keyDir string
	clock  *clock
	al     *alerts.Store
	l      *ledger.Ledger
	pool   *psdm.Pool
	pub    *ecdsa.PublicKey
	cfg    ledger.Config
	pcfg   psdm.Config
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testLicence is the postal licence the fixtures' hubs hold.
const testLicence = postal.DemoLicence

// newFixture opens a ledger and a pool on dsn, with a postal authority and
// soft keys. cfg and pcfg may be zero.
func newFixture(t *testing.T, dsn string, cfg ledger.Config, pcfg psdm.Config) *fixture {
	t.Helper()
	if cfg.Licence == "" {
		cfg.Licence = testLicence
	}
	pa, err := postal.New("", quiet)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(pa.Handler())
	t.Cleanup(srv.Close)
	f := &fixture{t: t, dsn: dsn, pa: pa, paURL: srv.URL, keyDir: t.TempDir(),
		clock: &clock{t: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}, cfg: cfg, pcfg: pcfg}
	if f.ks, err = soft.Open(f.keyDir); err != nil {
		t.Fatal(err)
	}
	if err := f.ks.GenerateMACKey("frank-control-1"); err != nil {
		t.Fatal(err)
	}
	if f.pub, err = f.ks.GenerateSigningKey("sign"); err != nil {
		t.Fatal(err)
	}
	if c, err := hubpostal.New(f.paURL, "FR", testLicence).RegisterKey(context.Background(), f.pub); err != nil || c.Serial != 1 {
		t.Fatalf("register key: %+v %v", c, err)
	}
	f.open()
	t.Cleanup(f.close)
	return f
}

// open (re)opens the store, ledger and pool, as a restarted hub would.
func (f *fixture) open() {
	t := f.t
	t.Helper()
	ctx := context.Background()
	var err error
	if f.db, err = store.Open(ctx, f.dsn); err != nil {
		t.Fatal(err)
	}
	// The kiosk newSale sells at, in its store: postal reports name both.
	if _, err := fleet.New(f.db).Add(ctx, "kiosk-1", "store-1"); err != nil {
		t.Fatal(err)
	}
	sess, _ := f.ks.Session()
	cfg := f.cfg
	cfg.Now = f.clock.Now
	if cfg.Holder == "" {
		cfg.Holder = fmt.Sprintf("test-%d", dbSeq.Add(1))
	}
	f.al = alerts.New(f.db, quiet, f.clock.Now)
	if f.l, err = ledger.Open(ctx, f.db, cfg, sess, hubpostal.New(f.paURL, "FR", testLicence), f.al, quiet); err != nil {
		t.Fatal(err)
	}
	pcfg := f.pcfg
	if pcfg.Workers == 0 {
		pcfg.Workers = 2
	}
	if pcfg.RenewEvery == 0 {
		pcfg.RenewEvery = time.Hour // tests renew by hand
	}
	open := func() (hsm.Session, error) { return f.ks.Session() }
	if f.pool, err = psdm.Start(ctx, pcfg, open, psdm.Key{Label: "sign", CertSerial: 1}, f.l, quiet); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) close() {
	if f.pool != nil {
		f.pool.Close()
		f.pool = nil
	}
	if f.l != nil {
		f.l.Close()
		f.l = nil
	}
	if f.db != nil {
		f.db.Close()
		f.db = nil
	}
}

// pass moves the clock on by d, and with it the MPSD leases: on PostgreSQL
// they are judged by the server's clock, so their rows are aged by d.
func (f *fixture) pass(d time.Duration) {
	f.t.Helper()
	f.clock.Add(d)
	if f.db != nil && f.db.Dialect == store.Postgres {
		if _, err := f.db.ExecContext(context.Background(), `UPDATE psd SET lease_until = lease_until - $1 WHERE lease_holder IS NOT NULL`, d.Microseconds()); err != nil {
			f.t.Fatal(err)
		}
	}
}

// check runs every invariant and compares with the authority's records.
func (f *fixture) check() *ledger.Report {
	f.t.Helper()
	r, err := f.l.Check(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	if !r.OK() {
		f.t.Fatalf("ledger invariants broken: %v", r.Violations)
	}
	if r.FundsBought != protocol.Mills(f.pa.TotalFunds("FR")) {
		f.t.Fatalf("ledger bought %d, authority sold %d", r.FundsBought, f.pa.TotalFunds("FR"))
	}
	return r
}

func newSale(id string, postage protocol.Mills, labels ...string) *ledger.Sale {
	h := sha256.Sum256([]byte(fmt.Sprint(id, postage, labels)))
	s := &ledger.Sale{KioskID: "kiosk-1", RequestID: id, BodyHash: h[:], UserID: 42, OriginZIP: 94544}
	for _, l := range labels {
		ls, err := protocol.ParseLabelSerial(l)
		if err != nil {
			panic(err)
		}
		s.Items = append(s.Items, ledger.Item{RateClass: "1100", Postage: postage, Label: ls})
	}
	return s
}

// sell does what the sale service does after validation: issue, then commit.
func (f *fixture) sell(s *ledger.Sale) ([]byte, error) {
	ctx := context.Background()
	if prior, err := f.l.Replay(ctx, s.KioskID, s.RequestID, s.BodyHash); prior != nil || err != nil {
		return prior, err
	}
	for _, it := range s.Items {
		if live, err := f.l.LabelLive(ctx, it.Label); err != nil || live {
			return nil, protocol.Errorf(protocol.CodeLabelUsed, "label %s used", it.Label)
		}
	}
	return f.pool.Sell(ctx, s)
}

func (f *fixture) mustSell(s *ledger.Sale) *protocol.PurchaseResult {
	f.t.Helper()
	out, err := f.sell(s)
	if err != nil {
		f.t.Fatalf("sale %s: %v", s.RequestID, err)
	}
	res, err := protocol.DecodePurchaseResult(out)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, in := range res.Indicia {
		if _, err := protocol.VerifyIndicium(in.Matrix, f.pub); err != nil {
			f.t.Fatal(err)
		}
	}
	return res
}

func isCode(err error, c protocol.Code) bool { return errors.Is(err, &protocol.Error{Code: c}) }

func TestFirstSaleFundsFromAuthority(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
		res := f.mustSell(newSale("r1", 780, "1966-F8CF-01"))
		in, _ := protocol.ParseIndicium(res.Indicia[0].Matrix)
		if in.AR != 780 || in.DR != 1_000_000-780 || in.Postage != 780 || in.Date != 20261129 || in.UserID != 42 || in.MPSDSerial != ledger.FirstMPSDSerial {
			t.Fatalf("indicium %+v", in)
		}
		r := f.check()
		if r.GPSD.DR != 100_000_000-1_000_000 || r.GPSD.AR != 1_000_000 {
			t.Fatalf("gpsd %+v", r.GPSD)
		}
	})
}

func TestReplayIsIdenticalAndMovesNothing(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{})
		first, err := f.sell(newSale("r1", 780, "1966-F8CF-01"))
		if err != nil {
			t.Fatal(err)
		}
		before := f.check()
		for range 3 {
			again, err := f.sell(newSale("r1", 780, "1966-F8CF-01"))
			if err != nil || !bytes.Equal(again, first) {
				t.Fatalf("replay differs: %v", err)
			}
		}
		after := f.check()
		if after.GPSD.AR != before.GPSD.AR || after.GPSD.DR != before.GPSD.DR || after.Indicia != 1 {
			t.Fatal("replay moved money")
		}
		s := newSale("r1", 780, "1966-F8CF-02")
		if _, err := f.sell(s); !isCode(err, protocol.CodeIdempotencyConflict) {
			t.Fatalf("different body: %v", err)
		}
	})
}

// Two copies of one request committing at once: one sale, the same bytes.
func TestConcurrentDuplicateCommitsOnce(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 2})
		ctx := context.Background()
		s := newSale("dup", 780, "1966-F8CF-01")
		var wg sync.WaitGroup
		outs := make([][]byte, 2)
		errs := make([]error, 2)
		for i := range 2 {
			wg.Go(func() {
				outs[i], errs[i] = f.pool.Sell(ctx, s)
			})
		}
		wg.Wait()
		for i := range 2 {
			if errs[i] != nil {
				t.Fatalf("copy %d: %v", i, errs[i])
			}
		}
		if !bytes.Equal(outs[0], outs[1]) {
			t.Fatal("the two copies got different answers")
		}
		if r := f.check(); r.Indicia != 1 || r.Spoiled > 1 {
			t.Fatalf("%d indicia and %d spoiled for one request", r.Indicia, r.Spoiled)
		}
	})
}

func TestLabelUsedTwice(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{})
		f.mustSell(newSale("r1", 780, "1966-F8CF-01"))
		if _, err := f.sell(newSale("r2", 780, "1966-F8CF-01")); !isCode(err, protocol.CodeLabelUsed) {
			t.Fatalf("err = %v", err)
		}
		// The same label raced into the committer is refused there too.
		ctx := context.Background()
		if _, err := f.pool.Sell(ctx, newSale("r3", 780, "1966-F8CF-01")); !isCode(err, protocol.CodeLabelUsed) {
			t.Fatalf("commit of a used label: %v", err)
		}
		// The indicium signed for it was never sent: it is kept as spoiled
		// (PostgreSQL, checked in the transaction) or never written
		// (SQLite, refused by the unique index, registers back as they were).
		if r := f.check(); r.Indicia != 1 || r.Spoiled > 1 {
			t.Fatalf("%d indicia, %d spoiled", r.Indicia, r.Spoiled)
		}
		f.mustSell(newSale("r4", 780, "1966-F8CF-02"))
	})
}

// A label is held by its live indicium alone (schema v33's live mark):
// voiding frees it for a new stamp, the database refuses a second live
// one, and a live mark that disagrees with the state is a violation.
func TestLabelHeldByLiveIndiciumOnly(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{})
		ctx := context.Background()
		f.mustSell(newSale("r1", 780, "1966-F8CF-01"))
		f.mustSell(newSale("r2", 780, "1966-F8CF-02"))
		if err := f.l.RecordPrint(ctx, &protocol.PrintReport{RequestID: "r1", KioskID: "kiosk-1",
			Labels: []protocol.LabelOutcome{{LabelSerial: "1966-F8CF-01", Outcome: protocol.PrintFailed, Reason: "jam"}}}); err != nil {
			t.Fatal(err)
		}
		var voidedLive sql.NullInt64
		if err := f.db.QueryRowContext(ctx, `SELECT live FROM indicia WHERE request_id = 'r1'`).Scan(&voidedLive); err != nil || voidedLive.Valid {
			t.Fatalf("voided indicium's live mark %v, %v; want NULL", voidedLive, err)
		}
		f.check()
		// The voided label takes a new stamp; a second live one is refused.
		f.mustSell(newSale("r3", 780, "1966-F8CF-01"))
		if live, err := f.l.LabelLive(ctx, mustLabel("1966-F8CF-01")); err != nil || !live {
			t.Fatalf("label 01 live %v, %v", live, err)
		}
		if _, err := f.db.ExecContext(ctx, `UPDATE indicia SET state = 'issued', live = 1 WHERE request_id = 'r1'`); err == nil {
			t.Fatal("the database took a second live indicium on one label")
		}
		f.check()
		// A live stamp marked free: PostgreSQL's constraint refuses it,
		// and on SQLite the check finds it.
		if _, err := f.db.ExecContext(ctx, `UPDATE indicia SET live = NULL WHERE request_id = 'r2'`); err == nil {
			if r, err := f.l.Check(ctx); err != nil || r.OK() {
				t.Fatalf("a live indicium without its live mark passed the check: %v %v", r, err)
			}
		} else if f.db.Dialect != store.Postgres {
			t.Fatalf("SQLite refused the mark: %v", err)
		}
	})
}

func TestTamperLocksMPSD(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
		ctx := context.Background()
		res := f.mustSell(newSale("r1", 780, "1966-F8CF-01"))
		in, _ := protocol.ParseIndicium(res.Indicia[0].Matrix)
		if _, err := f.db.ExecContext(ctx, f.db.Rebind(`UPDATE psd SET dr = dr + 100000 WHERE serial = ?`), in.MPSDSerial); err != nil {
			t.Fatal(err)
		}
		if _, err := f.sell(newSale("r2", 780, "1966-F8CF-02")); !isCode(err, protocol.CodeServiceUnavailable) {
			t.Fatalf("sale on a tampered MPSD: %v", err)
		}
		var locked string
		if err := f.db.QueryRowContext(ctx, f.db.Rebind(`SELECT COALESCE(locked, '') FROM psd WHERE serial = ?`), in.MPSDSerial).Scan(&locked); err != nil || locked == "" {
			t.Fatalf("mpsd not locked: %q %v", locked, err)
		}
		as, _ := f.al.List(ctx, true)
		if len(as) != 1 || as[0].Kind != alerts.Tamper {
			t.Fatalf("alerts %+v, want one tamper alert", as)
		}
		// The worker learns at its next renewal, takes a fresh MPSD, and sells.
		if err := f.pool.RenewNow(ctx); err != nil {
			t.Fatal(err)
		}
		res = f.mustSell(newSale("r3", 780, "1966-F8CF-03"))
		in2, _ := protocol.ParseIndicium(res.Indicia[0].Matrix)
		if in2.MPSDSerial == in.MPSDSerial {
			t.Fatal("still selling from the locked MPSD")
		}
		// The full check finds the tampered registers and stops every sale.
		r, err := f.l.Check(ctx)
		if err != nil || r.OK() {
			t.Fatalf("check missed the tamper: %v %v", r, err)
		}
		if _, err := f.sell(newSale("r4", 780, "1966-F8CF-04")); !isCode(err, protocol.CodeServiceUnavailable) || f.l.Halted() == "" {
			t.Fatalf("sold after a failed check: %v", err)
		}
		if as, _ := f.al.List(ctx, true); len(as) != 2 || as[1].Subject != "ledger" && as[0].Subject != "ledger" {
			t.Fatalf("alerts %+v, want the lock's and the check's", as)
		}
	})
}

// The full check runs from one snapshot while sales commit: it sees no
// violation that is not there, and does not hold sales up.
func TestCheckWhileSelling(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 2})
		ctx, cancel := context.WithCancel(context.Background())
		checks := make(chan int, 1)
		go func() {
			n := 0
			defer func() { checks <- n }()
			for ctx.Err() == nil {
				r, err := f.l.Check(context.Background())
				if err != nil || !r.OK() {
					t.Errorf("check under load: %v %v", r, err)
					return
				}
				n++
			}
		}()
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 25 {
					sheet := fmt.Sprintf("%04X-%04X", 0x4000+g, i)
					f.mustSell(newSale(fmt.Sprintf("g%d-%d", g, i), 780+protocol.Mills(i), sheet+"-01", sheet+"-02"))
				}
			})
		}
		wg.Wait()
		cancel()
		n := <-checks
		t.Logf("%d checks ran during 200 sales", n)
		if n < 2 {
			t.Errorf("%d checks ran during 200 sales", n)
		}
		f.check()
	})
}

func TestAuditTamperIsFound(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{})
		f.mustSell(newSale("r1", 780, "1966-F8CF-01"))
		f.mustSell(newSale("r2", 780, "1966-F8CF-02"))
		f.check()
		if _, err := f.db.ExecContext(context.Background(), `UPDATE audit SET amount = amount + 1 WHERE kind = 'sale'`); err != nil {
			t.Fatal(err)
		}
		if r, err := f.l.Check(context.Background()); err != nil || r.OK() {
			t.Fatalf("edited audit log passed: %v %v", r, err)
		}
	})
}

func TestAuthorityRefusesNothingMoves(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{})
		f.pa.SetRefuseFunds(true)
		if _, err := f.sell(newSale("r1", 780, "1966-F8CF-01")); !isCode(err, protocol.CodeFundsUnavailable) {
			t.Fatalf("err = %v", err)
		}
		if r := f.check(); r.Indicia != 0 || r.GPSD.DR != 0 {
			t.Fatalf("money moved: %+v", r)
		}
		f.pa.SetRefuseFunds(false)
		f.mustSell(newSale("r1", 780, "1966-F8CF-01"))
		f.check()
	})
}

func TestMultiStampSaleRefundsMPSD(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
		// Three $400 stamps in one sale on one MPSD: the third needs a second $1,000 funding.
		res := f.mustSell(newSale("big", 400_000, "0000-0001-01", "0000-0001-02", "0000-0001-03"))
		if len(res.Indicia) != 3 {
			t.Fatalf("%d indicia", len(res.Indicia))
		}
		r := f.check()
		if r.MPSDs[0].AR != 1_200_000 || r.MPSDs[0].DR != 800_000 {
			t.Fatalf("mpsd %+v", r.MPSDs[0])
		}
	})
}

// 64 concurrent sales against one MPSD funded for exactly N stamps, with
// GPSD funding off: exactly N succeed and DR never goes negative.
func TestContentionOneMPSD(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		const n = 23
		ctx := context.Background()
		f := newFixture(t, dsn, ledger.Config{NoAutoFunding: true}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
		f.close()
		// Before the pool starts: one MPSD, funded for exactly n stamps.
		f.db, _ = store.Open(ctx, f.dsn)
		sess, _ := f.ks.Session()
		l, err := ledger.Open(ctx, f.db, ledger.Config{Now: f.clock.Now, Holder: "setup", Licence: testLicence}, sess, hubpostal.New(f.paURL, "FR", testLicence), f.al, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.BuyFunds(ctx); err != nil {
			t.Fatal(err)
		}
		var serial uint32
		if err := f.db.QueryRowContext(ctx, `SELECT MIN(serial) FROM psd WHERE kind = 'mpsd'`).Scan(&serial); err != nil {
			t.Fatal(err)
		}
		if err := l.FundMPSD(ctx, serial, n*780); err != nil {
			t.Fatal(err)
		}
		l.Close()
		f.db.Close()
		f.open()

		var ok, short atomic.Int32
		var wg sync.WaitGroup
		for i := range 64 {
			wg.Go(func() {
				_, err := f.sell(newSale(fmt.Sprintf("c%d", i), 780, fmt.Sprintf("00C0-%04X-01", i)))
				switch {
				case err == nil:
					ok.Add(1)
				case isCode(err, protocol.CodeFundsUnavailable):
					short.Add(1)
				default:
					t.Errorf("sale %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != n || short.Load() != 64-n {
			t.Fatalf("%d sold and %d refused, want %d and %d", ok.Load(), short.Load(), n, 64-n)
		}
		r := f.check()
		if r.MPSDs[0].DR != 0 || r.MPSDs[0].AR != n*780 {
			t.Fatalf("mpsd %+v", r.MPSDs[0])
		}
	})
}

// Two hubs on one database: a leased MPSD is never sold from by the other,
// and once its holder dies the lease expires and the other takes it over.
func TestLeaseExclusiveAndExpires(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		f := newFixture(t, dsn, ledger.Config{LeaseTTL: 30 * time.Second}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
		res := f.mustSell(newSale("a1", 780, "0000-000A-01"))
		inA, _ := protocol.ParseIndicium(res.Indicia[0].Matrix)

		// A second hub process: its own holder id, same database.
		g := &fixture{t: t, dsn: dsn, pa: f.pa, paURL: f.paURL, ks: f.ks, clock: f.clock, pub: f.pub,
			pcfg: psdm.Config{Workers: 1, MPSDsPerWorker: 1}, cfg: ledger.Config{LeaseTTL: 30 * time.Second}}
		g.open()
		defer g.close()
		res = g.mustSell(newSale("b1", 780, "0000-000B-01"))
		inB, _ := protocol.ParseIndicium(res.Indicia[0].Matrix)
		if inA.MPSDSerial == inB.MPSDSerial {
			t.Fatal("two hubs sold from one MPSD")
		}
		// Hub A dies without releasing; after the TTL its MPSD is free.
		f.pool = nil // abandon without Close: no release
		f.pass(31 * time.Second)
		slots, err := g.l.Lease(ctx, 1)
		if err != nil || len(slots) != 1 || slots[0].Serial != inA.MPSDSerial || slots[0].AR != 780 {
			t.Fatalf("takeover: %+v %v", slots, err)
		}
		g.check()
	})
}

func TestInspectionWatchdog(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
		f.mustSell(newSale("r1", 780, "0000-0001-01"))
		f.clock.Add(91 * 24 * time.Hour)
		if err := f.l.CheckInspection(ctx); err != nil {
			t.Fatal(err)
		}
		as, _ := f.al.List(ctx, true)
		if len(as) == 0 || as[0].Kind != alerts.InspectionDue {
			t.Fatalf("no inspection alert after 91 days: %+v", as)
		}
		f.mustSell(newSale("r2", 780, "0000-0001-02")) // warned, still selling
		f.clock.Add(30 * 24 * time.Hour)
		if err := f.l.CheckInspection(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := f.sell(newSale("r3", 780, "0000-0001-03")); !isCode(err, protocol.CodeInspectionOverdue) {
			t.Fatalf("after 121 days: %v", err)
		}
		// A postal report resets the clock.
		rep, err := f.l.BuildReport(ctx, f.clock.Now().Add(-200*24*time.Hour), f.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.l.SubmitReport(ctx, rep, hubpostal.New(f.paURL, "FR", testLicence)); err != nil {
			t.Fatal(err)
		}
		if err := f.pool.RenewNow(ctx); err != nil {
			t.Fatal(err)
		}
		f.mustSell(newSale("r3", 780, "0000-0001-03"))
	})
}

func TestReportAcceptedAndForgeryRefused(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{})
		start := f.clock.Now()
		for i := range 5 {
			f.mustSell(newSale(fmt.Sprintf("r%d", i), 780+protocol.Mills(i)*290, fmt.Sprintf("0000-0002-%02d", i+1)))
			f.clock.Add(time.Minute)
		}
		rep, err := f.l.BuildReport(ctx, start, f.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Totals.Indicia != 5 {
			t.Fatalf("report has %d indicia", rep.Totals.Indicia)
		}
		pa := hubpostal.New(f.paURL, "FR", testLicence)
		forged := *rep
		forged.Transactions = append([]hubpostal.Transaction(nil), rep.Transactions...)
		forged.Transactions[0].Postage++
		forged.Totals.Postage++
		forged.ReportID += "-forged"
		if _, err := pa.SubmitReport(ctx, &forged); err == nil {
			t.Fatal("the authority accepted a report whose line disagrees with its indicium")
		}
		if _, err := f.l.SubmitReport(ctx, rep, pa); err != nil {
			t.Fatal(err)
		}
		if got := f.pa.Reports(); len(got) != 1 || got[0].Indicia != 5 {
			t.Fatalf("authority records %+v", got)
		}
	})
}

// The check covers the customers' money too: a refund counted twice is a
// violation, and one beyond the capture cannot be stored.
func TestPaymentsChecked(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{})
		ctx := context.Background()
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := f.db.ExecContext(ctx, f.db.Rebind(q), args...); err != nil {
				t.Fatal(err)
			}
		}
		exec(`INSERT INTO payments (kiosk_id, request_id, method, attempt_key, amount, state, captured, refunded, created_at, updated_at)
			VALUES ('kiosk-1', 'p1', 'card', 'a1', 1560, 'captured', 1560, 780, 1, 1)`)
		exec(`INSERT INTO payment_refunds (kiosk_id, request_id, ref, amount, created_at) VALUES ('kiosk-1', 'p1', 'refund:L1', 780, 1)`)
		f.check()
		exec(`UPDATE payments SET refunded = 1560`) // counted twice
		if r, err := f.l.Check(ctx); err != nil || r.OK() || !strings.Contains(strings.Join(r.Violations, "\n"), "differs from their recorded refunds") {
			t.Fatalf("a refund counted twice passed: %v %v", r, err)
		}
		// Beyond the capture the store itself refuses.
		if _, err := f.db.ExecContext(ctx, `UPDATE payments SET refunded = 2340`); err == nil {
			t.Fatal("the store took a refund beyond the capture")
		}
		exec(`UPDATE payments SET refunded = 780`)
		// A prepaid account's balance is what its entries add up to.
		acc := accounts.New(f.db, nil)
		a, err := acc.Create(ctx, "ada", "correct horse battery")
		if err != nil {
			t.Fatal(err)
		}
		if err := acc.Credit(ctx, a.ID, 5000, "fund", "card:t1"); err != nil {
			t.Fatal(err)
		}
		if err := acc.Hold(ctx, a.ID, 780, "attempt-1"); err != nil {
			t.Fatal(err)
		}
		f.check()
		exec(`UPDATE accounts SET balance = balance + 780 WHERE id = ?`, a.ID) // a debit given back with no entry
		if r, err := f.l.Check(ctx); err != nil || r.OK() || !strings.Contains(strings.Join(r.Violations, "\n"), "balance differs from their entries") {
			t.Fatalf("a balance its entries do not explain passed: %v %v", r, err)
		}
	})
}

// A failed fsync of SQLite's WAL halts the ledger. The sale whose commit
// it was is not answered: its outcome is unknown, since the database shows
// it but the disk may not hold it. No sale is opened after it.
func TestSyncFailureHaltsTheLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, filepath.Join(t.TempDir(), "hub.db"), ledger.Config{}, psdm.Config{})
	f.mustSell(newSale("s1", 780, "1966-F8CF-01"))
	f.db.SetFsync(func(*os.File) error { return syscall.EIO })
	if out, err := f.pool.Sell(ctx, newSale("s2", 780, "1966-F8CF-02")); out != nil || !errors.Is(err, store.ErrSync) {
		t.Fatalf("sale whose commit was not synced: %s, %v; want no answer and ErrSync", out, err)
	}
	if f.l.Halted() == "" {
		t.Fatal("the ledger goes on after a failed sync")
	}
	f.db.SetFsync(nil)
	if _, err := f.sell(newSale("s3", 780, "1966-F8CF-03")); !isCode(err, protocol.CodeServiceUnavailable) {
		t.Fatalf("sold after a failed sync: %v", err)
	}
}

// The committer does not wait for the disk: while one commit's fsync is
// under way the next sale commits, and neither is answered until the
// sync that covers it has returned.
func TestCommitsGoOnDuringTheSync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, filepath.Join(t.TempDir(), "hub.db"), ledger.Config{}, psdm.Config{})
	f.mustSell(newSale("s1", 780, "1966-F8CF-01"))
	syncing, release := make(chan struct{}, 64), make(chan struct{})
	f.db.SetFsync(func(fl *os.File) error {
		syncing <- struct{}{}
		<-release
		return fl.Sync()
	})
	defer f.db.SetFsync(nil)
	answers := make(chan error, 2)
	sell := func(id, label string) {
		_, err := f.pool.Sell(ctx, newSale(id, 780, label))
		answers <- err
	}
	go sell("s2", "1966-F8CF-02")
	select {
	case <-syncing: // s2 committed; its sync waits
	case <-time.After(10 * time.Second):
		t.Fatal("no sync after the sale's commit")
	}
	go sell("s3", "1966-F8CF-03")
	wait.For(t, 10*time.Second, "the next sale committed while the sync waits", func() bool {
		var n int
		err := f.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sales WHERE request_id = 's3'`).Scan(&n)
		return err == nil && n == 1
	})
	select {
	case err := <-answers:
		t.Fatalf("a sale was answered before its sync: %v", err)
	default:
	}
	close(release)
	for range 2 {
		select {
		case err := <-answers:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no answer after the sync")
		}
	}
}

func mustLabel(s string) protocol.LabelSerial {
	l, err := protocol.ParseLabelSerial(s)
	if err != nil {
		panic(err)
	}
	return l
}
