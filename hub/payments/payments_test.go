package payments_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/claims"
	"github.com/frank-postage/frank/hub/metrics"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/cards"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/wait"
)

// gateway approves everything and, like the real one, refunds once per key.
type gateway struct {
	mu       sync.Mutex
	refunds  map[string]protocol.Mills
	refunded protocol.Mills
}

func (g *gateway) Authorize(_ context.Context, key string, _ protocol.Mills, _ string, _ *payments.Card) (payments.Auth, error) {
	return payments.Auth{ID: "auth-" + key, Brand: "visa", Last4: "4242"}, nil
}
func (g *gateway) Capture(context.Context, string, protocol.Mills) error { return nil }
func (g *gateway) Tokenize(context.Context, *payments.Card) (payments.Token, error) {
	return payments.Token{Token: "tok_approve_1", Brand: "visa", Last4: "4242"}, nil
}
func (g *gateway) Void(context.Context, string) error    { return nil }
func (g *gateway) VoidKey(context.Context, string) error { return nil }
func (g *gateway) Refund(_ context.Context, _ string, amount protocol.Mills, key string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refunds == nil {
		g.refunds = map[string]protocol.Mills{}
	}
	if _, ok := g.refunds[key]; !ok {
		g.refunds[key] = amount
		g.refunded += amount
	}
	return nil
}

// A refund retried, in turn or at once, moves the money and counts it
// once per reference; each stamp of a sale can still be refunded.
func TestRefundOncePerRef(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		gw := &gateway{}
		acc := accounts.New(db, nil)
		pay := payments.New(db, gw, acc, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		a, err := acc.Create(ctx, "ada@example.com", "correct horse battery")
		if err != nil {
			t.Fatal(err)
		}
		if err := acc.Credit(ctx, a.ID, 10_000, "fund", "fund-1"); err != nil {
			t.Fatal(err)
		}
		card := payments.Key{KioskID: "K1", RequestID: "r-card"}
		web := payments.Key{KioskID: "web-1", RequestID: "r-acct"}
		for key, src := range map[payments.Key]payments.Source{card: {Token: "tok"}, web: {AccountID: a.ID}} {
			if _, err := pay.Authorize(ctx, key, src, 2_340); err != nil {
				t.Fatal(err)
			}
			if err := pay.Capture(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
		for _, key := range []payments.Key{card, web} {
			// A retry after a crash, then eight at once, of one stamp's refund.
			for range 2 {
				if err := pay.Refund(ctx, key, 780, "refund:L1"); err != nil {
					t.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					if err := pay.Refund(ctx, key, 780, "refund:L1"); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			// Another stamp of the same sale is its own refund.
			if err := pay.Refund(ctx, key, 780, "refund:L2"); err != nil {
				t.Fatal(err)
			}
			p, err := pay.Get(ctx, key)
			if err != nil || p.Refunded != 1_560 {
				t.Fatalf("%v: refunded %v, %v; want 1560", key, p.Refunded, err)
			}
			// What is left of the sale is 780: more is refused.
			if err := pay.Refund(ctx, key, 1_000, "refund:L3"); protocol.AsError(err).Code != protocol.CodeRemedyNotAllowed {
				t.Fatalf("refund beyond the capture: %v", err)
			}
		}
		if gw.refunded != 1_560 {
			t.Errorf("the gateway refunded %v, want 1560", gw.refunded)
		}
		b, err := acc.ByID(ctx, a.ID)
		if err != nil || b.Balance != 10_000-2_340+1_560 {
			t.Errorf("account balance %v, %v; want %d", b.Balance, err, 10_000-2_340+1_560)
		}
		_, refunded, err := pay.Totals(ctx)
		if err != nil || refunded != 2*1_560 {
			t.Errorf("refunded in total %v, %v", refunded, err)
		}
	})
}

// A hub settles its own open payment once no sale of its process serves
// it (a capture or commit whose outcome was unknown), and never one that
// a sale of its process is still serving.
func TestSettleStale(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		now := time.UnixMicro(1_700_000_000_000_000)
		clock := func() time.Time { return now }
		pay := payments.New(db, &gateway{}, accounts.New(db, nil), slog.New(slog.DiscardHandler), clock)
		pay.Hub = "hub-a"
		cl := claims.New(db, "hub-a", clock)
		pay.Claims = cl
		if err := db.RenewHubLease(ctx, "hub-a", now, now, time.Hour); err != nil {
			t.Fatal(err)
		}
		busy, idle := payments.Key{KioskID: "K1", RequestID: "r-busy"}, payments.Key{KioskID: "K1", RequestID: "r-idle"}
		for _, k := range []payments.Key{busy, idle} {
			if _, err := pay.Authorize(ctx, k, payments.Source{Token: "tok"}, 780); err != nil {
				t.Fatal(err)
			}
		}
		release, err := cl.Take(ctx, busy.KioskID, busy.RequestID) // a sale still serving it
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		if err := pay.SettleStale(ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if p, _ := pay.Get(ctx, idle); p.State != "authorized" {
			t.Fatalf("a payment 0 s old was settled: %s", p.State)
		}
		now = now.Add(time.Minute)
		if err := pay.SettleStale(ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if p, _ := pay.Get(ctx, idle); p.State != "voided" {
			t.Errorf("stale payment with no sale: %s, want voided", p.State)
		}
		if p, _ := pay.Get(ctx, busy); p.State != "authorized" {
			t.Errorf("payment of a sale in progress: %s, want authorized", p.State)
		}
	})
}

// holds is a gateway that keeps each hold's state, and can stall an
// authorization until the test lets it answer.
type holds struct {
	gateway
	mu    sync.Mutex
	state map[string]string // by key: authorized, voided, captured
	stall chan chan struct{}
}

func (g *holds) Authorize(_ context.Context, key string, _ protocol.Mills, _ string, _ *payments.Card) (payments.Auth, error) {
	if g.stall != nil {
		resume := make(chan struct{})
		g.stall <- resume
		<-resume
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state[key] == "" {
		g.state[key] = "authorized"
	}
	return payments.Auth{ID: key, Brand: "visa", Last4: "4242"}, nil
}
func (g *holds) set(key, from, to string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state[key] == from {
		g.state[key] = to
	}
}
func (g *holds) Capture(_ context.Context, id string, _ protocol.Mills) error {
	g.set(id, "authorized", "captured")
	return nil
}
func (g *holds) Void(_ context.Context, id string) error {
	g.set(id, "authorized", "voided")
	return nil
}
func (g *holds) VoidKey(_ context.Context, key string) error {
	g.set(key, "authorized", "voided")
	return nil
}
func (g *holds) open() (n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.state {
		if s == "authorized" {
			n++
		}
	}
	return n
}

// A hub whose lease lapsed while it was still paying (the database was
// away longer than the lease, as in a failover) is settled or taken over
// by another hub; when its authorization comes back, it finds the
// attempt no longer its own and voids its hold itself, so no hold is left
// behind and the other hub's record stands.
func TestLapsedHubFenced(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		now := time.UnixMicro(1_700_000_000_000_000)
		clock := func() time.Time { return now }
		gw := &holds{state: map[string]string{}, stall: make(chan chan struct{})}
		hub := func(name string) *payments.Payments {
			p := payments.New(db, gw, accounts.New(db, nil), slog.New(slog.DiscardHandler), clock)
			p.Hub = name
			if err := db.RenewHubLease(ctx, name, now, now, time.Second); err != nil {
				t.Fatal(err)
			}
			return p
		}
		a, b := hub("hub-a"), hub("hub-b")
		for _, tc := range []struct {
			name     string
			key      payments.Key
			takeOver func() error
			want     string // the row's state after both
		}{
			{"settled as dead", payments.Key{KioskID: "K1", RequestID: "r-settled"}, func() error { return b.SettleDead(ctx) }, "voided"},
			{"taken over", payments.Key{KioskID: "K1", RequestID: "r-taken"}, func() error {
				gw.stall = nil
				_, err := b.Authorize(ctx, payments.Key{KioskID: "K1", RequestID: "r-taken"}, payments.Source{Token: "tok"}, 780)
				return err
			}, "authorized"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := db.RenewHubLease(ctx, "hub-a", now, now, time.Second); err != nil {
					t.Fatal(err)
				}
				gw.stall = make(chan chan struct{})
				stall := gw.stall
				done := make(chan error, 1)
				go func() {
					_, err := a.Authorize(ctx, tc.key, payments.Source{Token: "tok"}, 780)
					done <- err
				}()
				resume := <-stall // hub A waits on the gateway
				now = now.Add(time.Minute)
				lapse(t, db, "hub-a") // on PostgreSQL, by the server's clock
				if err := db.RenewHubLease(ctx, "hub-b", now, now, time.Hour); err != nil {
					t.Fatal(err)
				}
				if err := tc.takeOver(); err != nil {
					t.Fatal(err)
				}
				close(resume)
				if err := <-done; err != payments.ErrOtherHub {
					t.Errorf("hub A's authorization after losing the attempt: %v, want ErrOtherHub", err)
				}
				p, err := a.Get(ctx, tc.key)
				if err != nil || p.State != tc.want {
					t.Errorf("payment %v, %v; want %s", p, err, tc.want)
				}
				want := 0
				if tc.want == "authorized" {
					want = 1 // hub B's own hold, and only that
				}
				if n := gw.open(); n != want {
					t.Errorf("%d holds open at the gateway, want %d", n, want)
				}
				if tc.want == "authorized" {
					if err := b.Void(ctx, tc.key); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	})
}

// The one commit that answers a sale records its payment authorized; the
// capture follows. A hub that dies between the two, or before the commit,
// leaves nothing open: once its lease lapses another hub captures the
// payment of the recorded sale and voids the hold of the one never
// recorded.
func TestCrashBetweenAnswerAndCapture(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		now := time.UnixMicro(1_700_000_000_000_000)
		clock := func() time.Time { return now }
		gw := &holds{state: map[string]string{}}
		hub := func(name string) *payments.Payments {
			p := payments.New(db, gw, accounts.New(db, nil), slog.New(slog.DiscardHandler), clock)
			p.Hub = name
			if err := db.RenewHubLease(ctx, name, now, now, time.Second); err != nil {
				t.Fatal(err)
			}
			return p
		}
		a := hub("hub-a")
		sold, unsold := payments.Key{KioskID: "K1", RequestID: "r-sold"}, payments.Key{KioskID: "K1", RequestID: "r-unsold"}
		pay, err := a.Hold(ctx, sold, payments.Source{Token: "tok"}, 780)
		if err != nil {
			t.Fatal(err)
		}
		recordSale(t, db, pay)
		if _, err := a.Hold(ctx, unsold, payments.Source{Token: "tok"}, 780); err != nil {
			t.Fatal(err)
		}
		if gw.open() != 2 {
			t.Fatalf("%d holds, want 2", gw.open())
		}
		// Hub A dies here: the kiosk has its answer, nothing is captured.
		now = now.Add(time.Minute)
		lapse(t, db, "hub-a") // on PostgreSQL, by the server's clock
		b := hub("hub-b")
		if err := b.SettleDead(ctx); err != nil {
			t.Fatal(err)
		}
		for key, want := range map[payments.Key]string{sold: "captured", unsold: "voided"} {
			p, err := b.Get(ctx, key)
			if err != nil || p.State != want {
				t.Errorf("%v: %v, %v; want %s", key, p, err, want)
			}
			if got := gw.state[p.Ref]; p.Ref != "" && got != want {
				t.Errorf("%v at the gateway: %s, want %s", key, got, want)
			}
		}
		if gw.open() != 0 {
			t.Errorf("%d holds left open", gw.open())
		}
	})
}

// voidHook is a gateway whose VoidKey first runs a hook: the moment a
// settlement gives a hold back.
type voidHook struct {
	*holds
	before func()
}

func (g voidHook) VoidKey(ctx context.Context, key string) error {
	g.before()
	return g.holds.VoidKey(ctx, key)
}

// A hub whose lease lapsed mid-sale (it was starved, or the database was
// failing over) commits its sale just as another hub settles the attempt
// as dead. Whichever lands first, the stamp and the money agree: the sale
// stands on a hold that is captured, or the hold is voided and the sale is
// refused. (Before the attempt was marked voiding ahead of the gateway's
// void, the sale stood on a voided hold: CI's TestClusterSoak.)
func TestSettlementRacesLapsedCommit(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		now := time.UnixMicro(1_700_000_000_000_000)
		clock := func() time.Time { return now }
		gw := &holds{state: map[string]string{}}
		var commit func() error
		hook := voidHook{holds: gw, before: func() {
			if commit != nil {
				c := commit
				commit = nil
				if err := c(); err == nil {
					t.Error("a sale was recorded on the hold being voided")
				}
			}
		}}
		hub := func(name string) *payments.Payments {
			p := payments.New(db, hook, accounts.New(db, nil), slog.New(slog.DiscardHandler), clock)
			p.Hub = name
			if err := db.RenewHubLease(ctx, name, now, now, time.Second); err != nil {
				t.Fatal(err)
			}
			return p
		}
		a, b := hub("hub-a"), hub("hub-b")
		for _, tc := range []struct {
			name string
			key  payments.Key
			// how hub B meets the attempt: settling dead hubs, or the
			// kiosk's resend of the request reaching it
			settle func(payments.Key) error
		}{
			{"settled as dead", payments.Key{KioskID: "K1", RequestID: "r-dead"}, func(payments.Key) error { return b.SettleDead(ctx) }},
			{"resent to another hub", payments.Key{KioskID: "K1", RequestID: "r-resent"}, func(k payments.Key) error {
				p, err := b.Hold(ctx, k, payments.Source{Token: "tok"}, 780)
				if err != nil {
					return err
				}
				return b.Release(ctx, p) // hub B's own hold, its sale refused
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := db.RenewHubLease(ctx, "hub-a", now, now, time.Second); err != nil {
					t.Fatal(err)
				}
				pay, err := a.Hold(ctx, tc.key, payments.Source{Token: "tok"}, 780)
				if err != nil {
					t.Fatal(err)
				}
				now = now.Add(time.Minute) // hub A's lease lapses, hub A still runs
				lapse(t, db, "hub-a")      // on PostgreSQL, by the server's clock
				if err := db.RenewHubLease(ctx, "hub-b", now, now, time.Hour); err != nil {
					t.Fatal(err)
				}
				commit = func() error { return commitSale(db, pay) }
				if err := tc.settle(tc.key); err != nil {
					t.Fatal(err)
				}
				if commit != nil {
					t.Fatal("the settlement voided nothing")
				}
				var sales int
				db.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM sales WHERE kiosk_id = ? AND request_id = ?`), tc.key.KioskID, tc.key.RequestID).Scan(&sales)
				if sales != 0 {
					t.Errorf("%d sales recorded on a voided hold", sales)
				}
				if st := gw.state[tc.key.KioskID+"/"+tc.key.RequestID]; st == "authorized" {
					t.Errorf("hold left %s", st)
				}
			})
		}

		// The other order: hub A's commit lands first. The resend finds the
		// sale recorded and is told to ask again (its precheck then
		// replays the sale); settlement captures it.
		key := payments.Key{KioskID: "K1", RequestID: "r-first"}
		if err := db.RenewHubLease(ctx, "hub-a", now, now, time.Second); err != nil {
			t.Fatal(err)
		}
		pay, err := a.Hold(ctx, key, payments.Source{Token: "tok"}, 780)
		if err != nil {
			t.Fatal(err)
		}
		recordSale(t, db, pay)
		now = now.Add(time.Minute)
		lapse(t, db, "hub-a") // on PostgreSQL, by the server's clock
		if err := db.RenewHubLease(ctx, "hub-b", now, now, time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Hold(ctx, key, payments.Source{Token: "tok"}, 780); err != payments.ErrOtherHub {
			t.Errorf("a resend of a recorded sale: %v, want ErrOtherHub", err)
		}
		if err := b.SettleDead(ctx); err != nil {
			t.Fatal(err)
		}
		if p, err := b.Get(ctx, key); err != nil || p.State != "captured" || gw.state[p.Ref] != "captured" {
			t.Errorf("the recorded sale's payment: %v, %v at the gateway; want captured", p, gw.state[pay.Ref])
		}
		if n := gw.open(); n != 0 {
			t.Errorf("%d holds left open", n)
		}
	})
}

// A sold stamp whose capture the gateway refuses (its hold expired or was
// voided) stands, as it was printed: ops get a capture_refused alert, and
// the payment is recorded voided so that settlement stops asking. Both
// ways a capture happens: after the answer, and by settling a dead hub.
func TestCaptureRefusedAfterSale(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		srv := httptest.NewServer(cards.New(slog.New(slog.DiscardHandler)).Handler())
		defer srv.Close()
		now := time.UnixMicro(1_700_000_000_000_000)
		clock := func() time.Time { return now }
		gw := payments.NewGateway(srv.URL)
		al := alerts.New(db, slog.New(slog.DiscardHandler), clock)
		hub := func(name string) *payments.Payments {
			p := payments.New(db, gw, accounts.New(db, nil), slog.New(slog.DiscardHandler), clock)
			p.Hub, p.Alerts = name, al
			if err := db.RenewHubLease(ctx, name, now, now, time.Second); err != nil {
				t.Fatal(err)
			}
			return p
		}
		a := hub("hub-a")
		// sold records a sale and its authorization, then has the hold
		// voided behind the hub's back.
		sold := func(key payments.Key) *payments.Payment {
			t.Helper()
			pay, err := a.Hold(ctx, key, payments.Source{Token: "tok_approve_1"}, 780)
			if err != nil {
				t.Fatal(err)
			}
			recordSale(t, db, pay)
			if err := gw.Void(ctx, pay.Ref); err != nil {
				t.Fatal(err)
			}
			return pay
		}
		refused := func(key payments.Key) bool {
			list, err := al.List(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range list {
				if x.Kind == alerts.CaptureRefused && x.Subject == "payment/"+key.KioskID+"/"+key.RequestID {
					p, err := a.Get(ctx, key)
					return err == nil && p.State == "voided"
				}
			}
			return false
		}

		later := payments.Key{KioskID: "K1", RequestID: "r-later"}
		a.CaptureLater(sold(later))
		wait.For(t, 10*time.Second, "a capture_refused alert and the payment voided", func() bool { return refused(later) })

		dead := payments.Key{KioskID: "K1", RequestID: "r-dead"}
		sold(dead) // hub A dies before its capture
		now = now.Add(time.Minute)
		lapse(t, db, "hub-a") // on PostgreSQL, by the server's clock
		b := hub("hub-b")
		if err := b.SettleDead(ctx); err != nil {
			t.Fatalf("settling a sale whose capture is refused: %v", err)
		}
		if !refused(dead) {
			t.Error("no capture_refused alert from settling the dead hub, or the payment is not voided")
		}
		if err := b.SettleDead(ctx); err != nil { // nothing left to ask
			t.Fatal(err)
		}
		a.CloseCaptures(ctx)
	})
}

// Only an answer that says the hold is gone (409 here; see
// TestCaptureRefusedOnlyWhenHoldGone) refuses a capture; a server error
// leaves its outcome unknown, to be asked again, not written off.
func TestCaptureServerErrorIsNotRefusal(t *testing.T) {
	status := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		w.Write([]byte(`{"code":"x","message":"busy"}`))
	}))
	defer srv.Close()
	gw := payments.NewGateway(srv.URL)
	ctx := context.Background()
	if err := gw.Capture(ctx, "a1", 780); err == nil || errors.Is(err, payments.ErrNotCaptured) {
		t.Errorf("503: %v, want an error of unknown outcome", err)
	}
	status = http.StatusConflict
	if err := gw.Capture(ctx, "a1", 780); !errors.Is(err, payments.ErrNotCaptured) {
		t.Errorf("409: %v, want ErrNotCaptured", err)
	}
}

// commitSale commits a sale and its payment's authorization together, as
// the ledger's commit does: nothing, and the write's Stale error, if the
// attempt is no longer the payment's to authorize.
func commitSale(db *store.DB, pay *payments.Payment) error {
	ctx := context.Background()
	w := pay.Authorized()
	return db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO sales (kiosk_id, request_id, body_hash, status, total, result, created_at) VALUES (?, ?, ?, 'ok', ?, ?, 1)`),
			pay.KioskID, pay.RequestID, []byte{1}, pay.Amount, []byte("{}")); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, db.Rebind(w.Query), w.Args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return w.Stale
		}
		return nil
	})
}

// recordSale is commitSale that must succeed.
func recordSale(t *testing.T, db *store.DB, pay *payments.Payment) {
	t.Helper()
	if err := commitSale(db, pay); err != nil {
		t.Fatal(err)
	}
}

// Captures queued while the gateway is busy go in batches: a few calls
// for hundreds of captures, each capture done or refused on its own, and
// each recorded on its own: one another hub recorded first is left as
// that hub left it.
func TestCapturesInBatches(t *testing.T) {
	pgtest.ForEachStore(t, testCapturesInBatches)
}

func testCapturesInBatches(t *testing.T, dsn string) {
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sim := cards.New(slog.New(slog.DiscardHandler))
	gate := make(chan struct{})
	var mu sync.Mutex
	calls := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/capture" || r.URL.Path == "/v1/captures" {
			<-gate // busy until every capture is queued
			mu.Lock()
			calls[r.URL.Path]++
			mu.Unlock()
		}
		sim.Handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	gw := payments.NewGateway(srv.URL)
	al := alerts.New(db, slog.New(slog.DiscardHandler), nil)
	p := payments.New(db, gw, accounts.New(db, nil), slog.New(slog.DiscardHandler), nil)
	p.Alerts = al
	const n = 300
	var pays []*payments.Payment
	for i := range n {
		pay, err := p.Hold(ctx, payments.Key{KioskID: "K1", RequestID: fmt.Sprint("r", i)}, payments.Source{Token: "tok_approve_1"}, 780)
		if err != nil {
			t.Fatal(err)
		}
		recordSale(t, db, pay)
		pays = append(pays, pay)
	}
	if err := gw.Void(ctx, pays[150].Ref); err != nil { // one hold lapsed meanwhile
		t.Fatal(err)
	}
	// Another hub recorded one captured already, at a mark of its own.
	if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE payments SET state = 'captured', captured = 780, updated_at = 42 WHERE request_id = ?`), "r200"); err != nil {
		t.Fatal(err)
	}
	for _, pay := range pays {
		p.CaptureLater(pay)
	}
	close(gate)
	p.CloseCaptures(ctx) // waits for the queue
	for i, pay := range pays {
		got, err := p.Get(ctx, pay.Key)
		want := "captured"
		if i == 150 {
			want = "voided"
		}
		if err != nil || got.State != want {
			t.Errorf("payment %d: %v, %v; want %s", i, got, err, want)
		}
		if want == "captured" && got.Captured != 780 {
			t.Errorf("payment %d: %d captured, want 780", i, got.Captured)
		}
	}
	var mark int64
	if err := db.QueryRowContext(ctx, db.Rebind(`SELECT updated_at FROM payments WHERE request_id = ?`), "r200").Scan(&mark); err != nil || mark != 42 {
		t.Errorf("the payment another hub recorded was written again (updated_at %d, %v)", mark, err)
	}
	if tot := sim.Totals(); tot.Captured != (n-1)*780 || tot.Open != 0 {
		t.Errorf("gateway totals %+v, want %d captured and none open", tot, (n-1)*780)
	}
	if list, _ := al.List(ctx, true); len(list) != 1 || list[0].Kind != alerts.CaptureRefused {
		t.Errorf("alerts %+v, want the one capture_refused", list)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["/v1/captures"] == 0 || calls["/v1/capture"]+calls["/v1/captures"] > 40 {
		t.Errorf("gateway calls %v for %d captures, want a few batches", calls, n)
	}
	t.Logf("%d captures in %v", n, calls)
}

// A sale whose commit landed although the hub heard only the connection
// drop (the database failed over with the COMMIT in flight) is found
// answered when the ledger looks again: that answer is the hold's own
// sale, so Release must not void the hold (CI's TestClusterSoak: a stamp
// stood recorded on a voided hold, and its capture was refused).
func TestReleaseKeepsTheHoldOfItsRecordedSale(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		gw := &holds{state: map[string]string{}}
		p := payments.New(db, gw, accounts.New(db, nil), slog.New(slog.DiscardHandler), nil)
		key := payments.Key{KioskID: "K1", RequestID: "r-1"}
		pay, err := p.Hold(ctx, key, payments.Source{Token: "tok"}, 780)
		if err != nil {
			t.Fatal(err)
		}
		recordSale(t, db, pay) // the commit the hub did not hear land
		if err := p.Release(ctx, pay); !errors.Is(err, payments.ErrRecorded) {
			t.Fatalf("Release of the hold its sale recorded: %v, want ErrRecorded", err)
		}
		if got := gw.state[pay.Ref]; got != "authorized" {
			t.Fatalf("the hold at the gateway is %s, want authorized", got)
		}
		// A hold that paid for nothing is still released.
		other := payments.Key{KioskID: "K1", RequestID: "r-2"}
		pay2, err := p.Hold(ctx, other, payments.Source{Token: "tok"}, 780)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Release(ctx, pay2); err != nil {
			t.Fatal(err)
		}
		if got := gw.state[pay2.Ref]; got != "voided" {
			t.Fatalf("an unsold hold at the gateway is %s, want voided", got)
		}
	})
}

// countingGateway counts the authorizations asked for.
type countingGateway struct {
	gateway
	auths atomic.Int32
}

func (g *countingGateway) Authorize(ctx context.Context, key string, amount protocol.Mills, token string, card *payments.Card) (payments.Auth, error) {
	g.auths.Add(1)
	return g.gateway.Authorize(ctx, key, amount, token, card)
}

// HoldChecked writes a new attempt and runs the caller's check in one
// commit: it holds when told to go on; when not, it records the attempt
// voided without asking the gateway; and for a request that has a payment
// already it records nothing, for the caller to go the long way.
func TestHoldChecked(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		gw := &countingGateway{}
		pay := payments.New(db, gw, accounts.New(db, nil), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		var seen int // what the check read: the attempt's own row, in its transaction
		check := func(key payments.Key) *store.Read {
			return &store.Read{Query: db.Rebind(`SELECT COUNT(*) FROM payments WHERE kiosk_id = ? AND request_id = ?`),
				Args: []any{key.KioskID, key.RequestID}, Row: func(scan func(...any) error) error { return scan(&seen) }}
		}
		state := func(key payments.Key) string {
			p, err := pay.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			return p.State
		}

		sold := payments.Key{KioskID: "K1", RequestID: "r-1"}
		p, ok, err := pay.HoldChecked(ctx, sold, "tok", 780, check(sold), func() bool { return seen == 1 })
		if !ok || err != nil || p == nil || p.Ref == "" || gw.auths.Load() != 1 || state(sold) != "authorizing" {
			t.Fatalf("a new sale: %+v %v %v, %d authorizations", p, ok, err, gw.auths.Load())
		}

		refused := payments.Key{KioskID: "K1", RequestID: "r-2"}
		p, ok, err = pay.HoldChecked(ctx, refused, "tok", 780, check(refused), func() bool { return false })
		if !ok || err != nil || p != nil || gw.auths.Load() != 1 || state(refused) != "voided" {
			t.Fatalf("a refused sale: %+v %v %v, %d authorizations, state %s", p, ok, err, gw.auths.Load(), state(refused))
		}

		// r-2 again: its voided attempt stands, untouched; Hold settles it.
		p, ok, err = pay.HoldChecked(ctx, refused, "tok", 780, check(refused), func() bool { t.Fatal("went on"); return true })
		if ok || err != nil || p != nil || gw.auths.Load() != 1 {
			t.Fatalf("a request with a payment: %+v %v %v", p, ok, err)
		}
	})
}

// With a gateway that lists its open holds, a kiosk's card is held before
// anything is recorded, and the sale's commit inserts the payment. Every
// hold that no commit recorded is found at the gateway and voided: a dead
// hub's, once its lease lapses, and this hub's own once no sale serves its
// request. A hub whose lease lapsed mid-sale can then no longer record its
// sale on the voided hold, and a hold its sale recorded is left to be
// settled as its payment.
func TestHoldFirstSwept(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		sim := cards.New(slog.New(slog.DiscardHandler))
		srv := httptest.NewServer(sim.Handler())
		defer srv.Close()
		gw := payments.NewGateway(srv.URL)
		gw.HoldsPage = 1 // every search reads page after page
		now := time.UnixMicro(1_700_000_000_000_000)
		clock := func() time.Time { return now }
		swept := map[string]sweepCount{}
		hub := func(name string) *payments.Payments {
			p := payments.New(db, gw, accounts.New(db, nil), slog.New(slog.DiscardHandler), clock)
			p.Hub, p.Claims = name, claims.New(db, name, clock)
			swept[name] = sweepCount{}
			p.Sweeps = swept[name]
			return p
		}
		a, b := hub("host-a/1/aa"), hub("host-b/2/bb")
		lease := func(p *payments.Payments, d time.Duration) {
			if err := db.RenewHubLease(ctx, p.Hub, now, now, d); err != nil {
				t.Fatal(err)
			}
		}
		lease(a, time.Minute)
		lease(b, time.Hour)
		none := func() *store.Read {
			var one int
			return &store.Read{Query: `SELECT 1 AS one`, Row: func(scan func(...any) error) error { return scan(&one) }}
		}
		hold := func(p *payments.Payments, key payments.Key) *payments.Payment {
			t.Helper()
			pay, ok, err := p.HoldChecked(ctx, key, "tok_approve", 780, none(), func() bool { return true })
			if !ok || err != nil || pay == nil || pay.Ref == "" {
				t.Fatalf("hold %v: %+v %v %v", key, pay, ok, err)
			}
			if _, err := p.Get(ctx, key); !errors.Is(err, sql.ErrNoRows) {
				t.Fatalf("hold %v recorded before its sale: %v", key, err)
			}
			return pay
		}
		commit := func(pay *payments.Payment) int64 {
			t.Helper()
			w := pay.Authorized()
			n, err := db.GroupExec(ctx, w.Query, w.Args...)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		state := func(key payments.Key) string {
			t.Helper()
			p, err := a.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			return p.State
		}
		wantOpen := func(what string, n int) {
			t.Helper()
			if got := sim.Totals().Open; got != n {
				t.Fatalf("%s: %d holds open at the gateway, want %d", what, got, n)
			}
		}

		// Sold: the commit records the hold; no sweep voids it.
		sold := payments.Key{KioskID: "K1", RequestID: "r-sold"}
		if n := commit(hold(a, sold)); n != 1 || state(sold) != "authorized" {
			t.Fatalf("sale's commit: %d rows, %s", n, state(sold))
		}
		// Refused after the hold: released, nothing recorded.
		refused := payments.Key{KioskID: "K1", RequestID: "r-refused"}
		if err := a.Release(ctx, hold(a, refused)); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := b.HoldChecked(ctx, sold, "tok_approve", 780, none(), func() bool { t.Fatal("went on"); return true }); ok {
			t.Fatal("a request with a payment took the short way")
		}
		// Outcome unknown: hub A lost its commit's answer. Hub A, alive,
		// sweeps its own hold, but not while a sale serves the request.
		lost := payments.Key{KioskID: "K1", RequestID: "r-lost"}
		hold(a, lost)
		wantOpen("sold and lost", 2)
		release, err := a.Claims.(*claims.Claims).Take(ctx, lost.KioskID, lost.RequestID)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.SettleStale(ctx, 0); err != nil {
			t.Fatal(err)
		}
		wantOpen("hub A's sale still serving the lost one", 2)
		release()
		if err := a.SettleStale(ctx, 0); err != nil {
			t.Fatal(err)
		}
		wantOpen("hub A swept its lost one", 1)
		if s := state(lost); s != "voided" {
			t.Errorf("the lost sale's hold is recorded %s, want voided", s)
		}

		// Hub A dies before these commits; the second request is then
		// paid by hub B, the kiosk asking again.
		dead := payments.Key{KioskID: "K2", RequestID: "r-dead"}
		zombie := hold(a, dead)
		takenOver := payments.Key{KioskID: "K2", RequestID: "r-taken"}
		hold(a, takenOver)

		if _, err := b.Authorize(ctx, takenOver, payments.Source{Token: "tok_approve"}, 780); err != nil {
			t.Fatal(err)
		}
		wantOpen("hub B's own hold", 4)
		if err := b.SettleDead(ctx); err != nil {
			t.Fatal(err)
		}
		wantOpen("hub A alive", 4)
		now = now.Add(2 * time.Minute)
		lapse(t, db, "host-a/1/aa") // on PostgreSQL, by the server's clock
		lease(b, time.Hour)
		if err := b.SettleDead(ctx); err != nil {
			t.Fatal(err)
		}
		// Left: hub B's. (Hub A's recorded payment is voided too, as a
		// dead hub's payment is when no sale stands on it.)
		wantOpen("hub A dead", 1)
		if s := state(dead); s != "voided" {
			t.Errorf("the dead hub's hold is recorded %s, want voided", s)
		}
		if p, err := b.Get(ctx, takenOver); err != nil || p.State != "authorized" {
			t.Errorf("hub B's payment of the request taken over: %+v %v", p, err)
		}
		// Hub A comes back from a pause: its sale cannot stand.
		if n := commit(zombie); n != 0 {
			t.Errorf("a sale recorded on a swept hold")
		}
		if err := b.Capture(ctx, takenOver); err != nil {
			t.Fatal(err)
		}
		wantOpen("all settled", 0)
		if tot := sim.Totals(); tot.Captured != 780 {
			t.Errorf("captured %d, want 780", tot.Captured)
		}
		// Counted: hub A's lost hold as its own; the dead hub's two by B.
		if got, want := swept[a.Hub], (sweepCount{metrics.HoldOwn: 1}); !maps.Equal(got, want) {
			t.Errorf("hub A counted %v swept, want %v", got, want)
		}
		if got, want := swept[b.Hub], (sweepCount{metrics.HoldDead: 2}); !maps.Equal(got, want) {
			t.Errorf("hub B counted %v swept, want %v", got, want)
		}
	})
}

// sweepCount counts the holds swept, by whose.
type sweepCount map[string]int

func (c sweepCount) HoldSwept(whose string) { c[whose]++ }

// TestHoldsPaged reads the gateway's open holds in pages: every hold once,
// however the pages fall, and more of them than one answer the client
// reads (64 KiB) could carry.
func TestHoldsPaged(t *testing.T) {
	ctx := context.Background()
	sim := cards.New(slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	gw := payments.NewGateway(srv.URL)
	want := map[string]bool{}
	for i := range 700 {
		a, err := gw.Authorize(ctx, fmt.Sprintf("kiosk-0001/%d-request-id-as-long-as-a-uuid/nonce/host.example/1234/abcdef", i), 100, "tok_approve", nil)
		if err != nil {
			t.Fatal(err)
		}
		want[a.ID] = true
	}
	for _, page := range []int{1, 7, 700, 0} { // 0: the default
		gw.HoldsPage = page
		holds, err := gw.Holds(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, h := range holds {
			if got[h.AuthID] || !want[h.AuthID] {
				t.Fatalf("page %d: hold %s read twice or never made", page, h.AuthID)
			}
			got[h.AuthID] = true
		}
		if len(got) != len(want) {
			t.Errorf("pages of %d read %d holds, want %d", page, len(got), len(want))
		}
	}
	// Older than an hour: none.
	if holds, err := gw.Holds(ctx, time.Hour); err != nil || len(holds) != 0 {
		t.Errorf("holds older than an hour: %d, %v", len(holds), err)
	}
}

// lapse moves hub's lease a day into the past, whichever clock judges it:
// on PostgreSQL the server's, which moving the test's clock does not move.
func lapse(t *testing.T, db *store.DB, hub string) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), db.Rebind(`UPDATE hub_leases SET until = until - ? WHERE hub = ?`),
		(24 * time.Hour).Microseconds(), hub); err != nil {
		t.Fatal(err)
	}
}
