package ledger_test

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// The HSM's failures, as a PSDM pool meets them: a call that hangs, one
// that fails, a session the HSM lost, a key that is not the certified one.

// sqliteDSN is a fresh SQLite database: these tests are about the pool,
// not the store.
func sqliteDSN(t *testing.T) string {
	for _, b := range backends {
		if b.name == "sqlite" {
			return b.dsn(t)
		}
	}
	t.Fatal("no sqlite backend")
	return ""
}

// failingModule is an HSM session whose signatures fail with *fail while
// it is set.
type failingModule struct {
	hsm.Session
	fail *atomic.Pointer[error]
}

func (m failingModule) Signer(label string) (crypto.Signer, error) {
	s, err := m.Session.Signer(label)
	return failingSigner{s, m.fail}, err
}

type failingSigner struct {
	crypto.Signer
	fail *atomic.Pointer[error]
}

func (s failingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if err := s.fail.Load(); err != nil {
		return nil, *err
	}
	return s.Signer.Sign(r, digest, opts)
}

// startPool replaces the fixture's pool with one on open.
func startPool(t *testing.T, f *fixture, cfg psdm.Config, open func() (hsm.Session, error), key psdm.Key) *psdm.Pool {
	t.Helper()
	if f.pool != nil {
		f.pool.Close()
		f.pool = nil
	}
	if cfg.RenewEvery == 0 {
		cfg.RenewEvery = time.Hour
	}
	p, err := psdm.Start(context.Background(), cfg, open, key, f.l, quiet)
	if err != nil {
		t.Fatal(err)
	}
	f.pool = p
	return p
}

// wantUnavailable fails unless err is the typed, retryable refusal a
// stamp not signed gets: nothing charged, try again.
func wantUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeServiceUnavailable {
		t.Fatalf("%s: %v, want service_unavailable", what, err)
	}
}

// hungAfter is the tests' signing deadline: short, but far above what a
// soft-key signature takes on a loaded test machine, since a healthy
// signature past it would fail too.
const hungAfter = 2 * time.Second

// certified is the fixture's signing key as its certificate names it.
func certified(f *fixture) psdm.Key { return psdm.Key{Label: "sign", CertSerial: 1, Public: f.pub} }

// nthSession opens the fixture's sessions, the nth wrapped by wrap (the
// one whose module hangs, fails or loses its key), and counts them.
func nthSession(f *fixture, n int32, wrap func(hsm.Session) hsm.Session) (func() (hsm.Session, error), *atomic.Int32) {
	var opens atomic.Int32
	return func() (hsm.Session, error) {
		s, err := f.ks.Session()
		if opens.Add(1) == n && err == nil {
			return wrap(s), nil
		}
		return s, err
	}, &opens
}

// A signature that hangs in the HSM fails its stamp at the deadline,
// typed and retryable, and the worker signs the next stamp on a new
// session: one hung call must not stall the hub's sales for good.
func TestHungSignTimesOutAndTheWorkerReopens(t *testing.T) {
	f := newFixture(t, sqliteDSN(t), ledger.Config{}, psdm.Config{Workers: 1})
	g := newGate()
	t.Cleanup(g.open)
	// The first session's module hangs.
	open, opens := nthSession(f, 1, func(s hsm.Session) hsm.Session { return gatedModule{s, g} })
	p := startPool(t, f, psdm.Config{Workers: 1, SignTimeout: hungAfter}, open, certified(f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := p.Sell(ctx, newSale("hung-1", 780, "0000-00A1-01"))
	wantUnavailable(t, "the hung sale", err)
	if !errors.Is(err, psdm.ErrSignTimeout) {
		t.Fatalf("the hung sale: %v, want ErrSignTimeout", err)
	}
	wait.For(t, 10*time.Second, "the worker's new session", func() bool { return p.Status()[0].HSMSession })
	if _, err := p.Sell(ctx, newSale("after-2", 780, "0000-00A1-02")); err != nil {
		t.Fatalf("the next sale, on the new session: %v", err)
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("%d sessions opened, want 2", n)
	}
	if st := p.Status()[0]; st.SignErrors != 1 || st.Total != 1 {
		t.Errorf("status %+v, want 1 sign error and 1 indicium", st)
	}
	g.open() // the hung call returns; its stamp is not used
	if r := f.check(); r.Indicia != 1 {
		t.Errorf("%d indicia committed, want 1", r.Indicia)
	}
}

// With one server hung in the HSM, a sale on another server is committed
// in time: the hung stamp fails at the deadline (the committer commits in
// ticket order and would wait on it), and its sale is refused at once.
func TestHungServerDoesNotHoldBackOtherSales(t *testing.T) {
	f := newFixture(t, sqliteDSN(t), ledger.Config{}, psdm.Config{Workers: 1})
	g := newGate()
	t.Cleanup(g.open)
	open, _ := nthSession(f, 1, func(s hsm.Session) hsm.Session { return gatedModule{s, g} })
	p := startPool(t, f, psdm.Config{Workers: 2, SignTimeout: hungAfter}, open, certified(f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hung := make(chan error, 1)
	go func() { _, err := p.Sell(ctx, newSale("hung-1", 780, "0000-00A2-01")); hung <- err }()
	wait.For(t, 10*time.Second, "the first signature to hang", g.reached)
	if _, err := p.Sell(ctx, newSale("healthy-2", 780, "0000-00A2-02")); err != nil {
		t.Fatalf("the sale on the healthy server: %v", err)
	}
	// Handed to the other server, it would come after that server's stamp
	// for the later sale on the same MPSD, and break its chain: refused,
	// retryable.
	wantUnavailable(t, "the hung server's sale", <-hung)
	g.open()
	if r := f.check(); r.Indicia != 1 {
		t.Errorf("%d indicia committed, want 1", r.Indicia)
	}
}

// A compromise's StopSigning returns at once though a server is stuck in
// the HSM (its deadline is far off here, so only StopSigning's own design
// frees it), and the stuck server's stamp, back from the HSM afterwards,
// is not sold: it may be signed by the compromised key.
func TestStopSigningDoesNotWaitOnAHungServer(t *testing.T) {
	f := newFixture(t, sqliteDSN(t), ledger.Config{}, psdm.Config{Workers: 1})
	g := newGate()
	t.Cleanup(g.open)
	open, _ := nthSession(f, 1, func(s hsm.Session) hsm.Session { return gatedModule{s, g} })
	p := startPool(t, f, psdm.Config{Workers: 2, SignTimeout: time.Hour}, open, certified(f))
	hung := make(chan error, 1)
	go func() { _, err := p.Sell(context.Background(), newSale("hung-1", 780, "0000-00A3-01")); hung <- err }()
	wait.For(t, 10*time.Second, "the first signature to hang", g.reached)
	stopped := make(chan error, 1)
	go func() { stopped <- p.StopSigning() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("StopSigning waits on the hung server")
	}
	if k := p.Key(); k.CertSerial != 0 {
		t.Fatalf("pool key %d after StopSigning", k.CertSerial)
	}
	// SetKey gives up on the hung server at its context's end.
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := p.SetKeyContext(short, certified(f)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SetKey with a hung server: %v, want it to give up at its deadline", err)
	}
	if err := p.StopSigning(); err != nil {
		t.Fatal(err)
	}
	g.open() // the hung signature comes back, made by the stopped key
	wantUnavailable(t, "the stamp signed across StopSigning", <-hung)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := p.Sell(ctx, newSale("after-2", 780, "0000-00A3-02"))
	wantUnavailable(t, "a sale after StopSigning", err)
	if r := f.check(); r.Indicia != 0 {
		t.Errorf("%d indicia committed after StopSigning, want 0", r.Indicia)
	}
}

// A stamp the HSM cannot sign is refused as service_unavailable (the
// sale service then releases the card hold; a free sale is not an
// internal error), ops get one hsm_unavailable alert however many stamps
// fail, and it is cleared once the server signs again.
func TestSignFailureIsTypedAndAlerted(t *testing.T) {
	f := newFixture(t, sqliteDSN(t), ledger.Config{}, psdm.Config{Workers: 1})
	var fail atomic.Pointer[error]
	broken := error(fmt.Errorf("pkcs11: sign: %w", errors.New("CKR_DEVICE_ERROR")))
	fail.Store(&broken)
	open := func() (hsm.Session, error) { s, err := f.ks.Session(); return failingModule{s, &fail}, err }
	p := startPool(t, f, psdm.Config{Workers: 1, Alerts: f.al}, open, certified(f))
	ctx := context.Background()
	for i := range 3 {
		_, err := p.Sell(ctx, newSale(fmt.Sprint("broken-", i), 780, fmt.Sprintf("0000-00A4-%02d", i+1)))
		wantUnavailable(t, "a sale the HSM cannot sign", err)
	}
	open1 := func() []alerts.Alert {
		all, err := f.al.List(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		var out []alerts.Alert
		for _, a := range all {
			if a.Kind == alerts.HSMUnavailable {
				out = append(out, a)
			}
		}
		return out
	}
	if as := open1(); len(as) != 1 || as[0].Subject != "psdm/1" {
		t.Fatalf("open hsm_unavailable alerts: %+v, want one for psdm/1", as)
	}
	if st := p.Status()[0]; st.SignErrors != 3 {
		t.Errorf("%d sign errors in status, want 3", st.SignErrors)
	}
	fail.Store(nil) // the HSM is back
	if _, err := p.Sell(ctx, newSale("fixed-4", 780, "0000-00A4-04")); err != nil {
		t.Fatal(err)
	}
	if as := open1(); len(as) != 0 {
		t.Errorf("hsm_unavailable still open after a signature: %+v", as)
	}
	if r := f.check(); r.Indicia != 1 {
		t.Errorf("%d indicia committed, want 1", r.Indicia)
	}
}

// A session the HSM lost (a restart, a failover) is replaced: the stamp
// that found it lost is refused, retryable, and the next is signed on a
// new session.
func TestLostSessionIsReopened(t *testing.T) {
	f := newFixture(t, sqliteDSN(t), ledger.Config{}, psdm.Config{Workers: 1})
	var fail atomic.Pointer[error]
	lost := error(fmt.Errorf("pkcs11: sign: %w: CKR_SESSION_HANDLE_INVALID", hsm.ErrSessionLost))
	fail.Store(&lost)
	// Only the first session is lost.
	open, opens := nthSession(f, 1, func(s hsm.Session) hsm.Session { return failingModule{s, &fail} })
	p := startPool(t, f, psdm.Config{Workers: 1}, open, certified(f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := p.Sell(ctx, newSale("lost-1", 780, "0000-00A5-01"))
	wantUnavailable(t, "the sale on the lost session", err)
	wait.For(t, 10*time.Second, "the worker's new session", func() bool { return opens.Load() == 2 && p.Status()[0].HSMSession })
	if _, err := p.Sell(ctx, newSale("after-2", 780, "0000-00A5-02")); err != nil {
		t.Fatalf("the sale after the session was reopened: %v", err)
	}
}

// An HSM key under the label that is not the key the certificate was
// issued for (another token or slot, a restored token) signs nothing: not
// at start, not after SetKey. Its stamps would verify against no
// published key.
func TestKeyNotCertifiedIsRefused(t *testing.T) {
	f := newFixture(t, sqliteDSN(t), ledger.Config{}, psdm.Config{Workers: 1})
	f.pool.Close()
	f.pool = nil
	if _, err := f.ks.GenerateSigningKey("other"); err != nil {
		t.Fatal(err)
	}
	open := func() (hsm.Session, error) { return f.ks.Session() }
	wrong := psdm.Key{Label: "other", CertSerial: 1, Public: f.pub}
	_, err := psdm.Start(context.Background(), psdm.Config{Workers: 1, RenewEvery: time.Hour, Alerts: f.al}, open, wrong, f.l, quiet)
	if !errors.Is(err, psdm.ErrKeyMismatch) {
		t.Fatalf("start with another key than the certified one: %v, want ErrKeyMismatch", err)
	}
	all, err := f.al.List(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Kind != alerts.KeyMismatch {
		t.Fatalf("alerts %+v, want one key_mismatch", all)
	}
	p := startPool(t, f, psdm.Config{Workers: 1}, open, certified(f))
	if err := p.SetKey(wrong); !errors.Is(err, psdm.ErrKeyMismatch) {
		t.Fatalf("SetKey to another key than the certified one: %v, want ErrKeyMismatch", err)
	}
	if k := p.Key(); k.CertSerial != 0 {
		t.Errorf("pool key %d after a refused SetKey", k.CertSerial)
	}
	_, err = p.Sell(context.Background(), newSale("wrong-1", 780, "0000-00A6-01"))
	wantUnavailable(t, "a sale after the refused key", err)
	if r := f.check(); r.Indicia != 0 {
		t.Errorf("%d indicia committed, want 0", r.Indicia)
	}
}

// Handing stamps to a server stuck in the HSM never blocks: not the sales
// (whatever their number), not Status (/metrics), which share the pool's
// lock with them.
func TestStuckServerDoesNotBlockIssue(t *testing.T) {
	f := newFixture(t, sqliteDSN(t), ledger.Config{}, psdm.Config{Workers: 1})
	g := newGate()
	t.Cleanup(g.open)
	open := func() (hsm.Session, error) { s, err := f.ks.Session(); return gatedModule{s, g}, err }
	p := startPool(t, f, psdm.Config{Workers: 1, SignTimeout: time.Hour}, open, certified(f))
	gone, cancel := context.WithCancel(context.Background())
	cancel() // the callers do not wait for their answers
	issued := make(chan struct{})
	go func() {
		defer close(issued)
		for i := range 1100 { // more than any fixed queue the worker had
			p.Issue(gone, newSale(fmt.Sprint("queued-", i), 780, fmt.Sprintf("%04X-%04X-01", 0xA700, i)))
		}
	}()
	select {
	case <-issued:
	case <-time.After(30 * time.Second):
		t.Fatal("Issue blocks behind a server stuck in the HSM")
	}
	status := make(chan []psdm.Status, 1)
	go func() { status <- p.Status() }()
	select {
	case <-status:
	case <-time.After(10 * time.Second):
		t.Fatal("Status blocks behind a server stuck in the HSM")
	}
	g.open()
}

// A stamp handed to another server after its own failed to sign goes on an
// MPSD only before the later stamps of its ticket: the committer takes a
// ticket's items in order, and a stamp after its sibling broke the MPSD's
// chain, failing the sale and those after it. It is signed in order or
// refused, retryable; the sales after it sell.
func TestHandedOverStampKeepsItsTicketsChain(t *testing.T) {
	f := newFixture(t, sqliteDSN(t), ledger.Config{}, psdm.Config{Workers: 1})
	var fail atomic.Pointer[error]
	broken := errors.New("CKR_FUNCTION_FAILED")
	fail.Store(&broken)
	open, _ := nthSession(f, 1, func(s hsm.Session) hsm.Session { return failingModule{s, &fail} })
	p := startPool(t, f, psdm.Config{Workers: 2}, open, certified(f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.Sell(ctx, newSale("two-1", 780, "0000-00B2-01", "0000-00B2-02")); err != nil {
		wantUnavailable(t, "a two-stamp sale whose first stamp was handed over", err)
		if protocol.AsError(err).Message != "signing unavailable; try again" {
			t.Fatalf("refused %v, want refused as unsigned, not as a broken chain", err)
		}
	}
	fail.Store(nil)
	for i := range 3 {
		if _, err := p.Sell(ctx, newSale(fmt.Sprint("after-", i), 780, fmt.Sprintf("0000-00C2-%02d", i+1))); err != nil {
			t.Fatalf("sale %d after it: %v", i, err)
		}
	}
	if r := f.check(); !r.OK() {
		t.Fatalf("ledger check: %v", r.Violations)
	}
}

// hangingSigner holds a key load while hang is set, until release closes.
type hangingSigner struct {
	hsm.Session
	hang    *atomic.Bool
	release chan struct{}
}

func (m hangingSigner) Signer(label string) (crypto.Signer, error) {
	if m.hang.Load() {
		<-m.release
	}
	return m.Session.Signer(label)
}

// A rotation one server cannot confirm (its key load hangs) leaves Key
// zero while the other servers sign with the new key. Target says what
// they sign with: a compromise of that key must still stop them.
func TestTargetIsTheKeyServersSignWith(t *testing.T) {
	f := newFixture(t, sqliteDSN(t), ledger.Config{}, psdm.Config{Workers: 1})
	var hang atomic.Bool
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	open, _ := nthSession(f, 2, func(s hsm.Session) hsm.Session { return hangingSigner{s, &hang, release} })
	p := startPool(t, f, psdm.Config{Workers: 2, SignTimeout: 300 * time.Millisecond, KeyTimeout: 2 * time.Second}, open, certified(f))
	hang.Store(true)
	if err := p.SetKey(certified(f)); err == nil {
		t.Fatal("a rotation a hung server could not confirm said nothing")
	}
	if p.Key().CertSerial != 0 || p.Target().CertSerial != certified(f).CertSerial {
		t.Fatalf("Key %d and Target %d, want 0 (not confirmed) and %d (signing)", p.Key().CertSerial, p.Target().CertSerial, certified(f).CertSerial)
	}
	if err := p.StopSigning(); err != nil || p.Target().Label != "" {
		t.Fatalf("StopSigning: %v, Target %+v", err, p.Target())
	}
}

// An HSM that stays hung takes a bounded number of sessions: each call
// past its deadline leaves its session to the call and opens another, but
// no more once maxHung calls have not returned.
func TestHungHSMTakesFewSessions(t *testing.T) {
	f := newFixture(t, sqliteDSN(t), ledger.Config{}, psdm.Config{Workers: 1})
	g := newGate()
	t.Cleanup(g.open)
	var opens atomic.Int32
	open := func() (hsm.Session, error) {
		s, err := f.ks.Session()
		opens.Add(1)
		return gatedModule{s, g}, err
	}
	p := startPool(t, f, psdm.Config{Workers: 1, SignTimeout: 100 * time.Millisecond, RetryEvery: 10 * time.Millisecond}, open, certified(f))
	for i := range 20 {
		if _, err := p.Sell(context.Background(), newSale(fmt.Sprint("h-", i), 780, fmt.Sprintf("%04X-00D1-01", 0xD000+i))); err == nil {
			t.Fatalf("sale %d signed on a hung HSM", i)
		}
	}
	if n := opens.Load(); n > 4 {
		t.Fatalf("20 sales on a hung HSM opened %d sessions, want at most 4", n)
	}
}
