package payments_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/claims"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/cards"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// simEnv is the testbench gateway behind a hook that can answer a call
// itself, on a store, with a clock the test moves.
type simEnv struct {
	db  *store.DB
	sim *cards.Gateway
	gw  *payments.Gateway
	acc *accounts.Accounts
	now time.Time

	mu sync.Mutex
	// hook, if set, sees each call first; it answers by writing w and
	// returning true. next serves the call at the gateway.
	hook func(path string, body []byte, w http.ResponseWriter, next func(http.ResponseWriter)) bool
}

func newSimEnv(t *testing.T, dsn string) *simEnv {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &simEnv{db: db, sim: cards.New(slog.New(slog.DiscardHandler)), acc: accounts.New(db, nil), now: time.UnixMicro(1_700_000_000_000_000)}
	h := e.sim.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		e.mu.Lock()
		hook := e.hook
		e.mu.Unlock()
		if hook != nil && hook(r.URL.Path, body, w, func(w http.ResponseWriter) { h.ServeHTTP(w, r) }) {
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	e.gw = payments.NewGateway(srv.URL)
	return e
}

func (e *simEnv) setHook(h func(path string, body []byte, w http.ResponseWriter, next func(http.ResponseWriter)) bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hook = h
}

// hub is a hub named name with a lease of ttl from now.
func (e *simEnv) hub(t *testing.T, name string, ttl time.Duration) *payments.Payments {
	t.Helper()
	clock := func() time.Time { return e.now }
	p := payments.New(e.db, e.gw, e.acc, slog.New(slog.DiscardHandler), clock)
	p.Hub, p.Claims = name, claims.New(e.db, name, clock)
	if err := e.db.RenewHubLease(context.Background(), name, e.now, e.now, ttl); err != nil {
		t.Fatal(err)
	}
	return p
}

func selectOne() *store.Read {
	var one int
	return &store.Read{Query: `SELECT 1 AS one`, Row: func(scan func(...any) error) error { return scan(&one) }}
}

// VoidKey takes only the gateway's HTTP 404 for "never approved": a 5xx
// whose text says 404 is a void that did not happen. (Before, any error
// whose text held "404" passed: a message, a URL's port, a local port.)
func TestVoidKeyOnlyHTTP404(t *testing.T) {
	var status int
	var msg string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		w.Write([]byte(`{"code":"x","message":"` + msg + `"}`))
	}))
	defer srv.Close()
	gw := payments.NewGateway(srv.URL)
	ctx := context.Background()
	for _, tc := range []struct {
		status int
		msg    string
		ok     bool
	}{
		{http.StatusNotFound, "no such authorization", true},
		{http.StatusServiceUnavailable, "acquirer link down (upstream 404)", false},
		{http.StatusInternalServerError, "404", false},
		{http.StatusBadGateway, "dial tcp 10.0.0.1:14040: connection reset", false},
		{http.StatusConflict, "captured; refund it instead", false},
	} {
		status, msg = tc.status, tc.msg
		err := gw.VoidKey(ctx, "K1/r1/0123456789ab/hub")
		if (err == nil) != tc.ok {
			t.Errorf("%d %q: %v, want ok=%v", tc.status, tc.msg, err, tc.ok)
		}
		var se *payments.StatusError
		if err != nil && (!errors.As(err, &se) || se.Status != tc.status) {
			t.Errorf("%d %q: %v carries no StatusError of its status", tc.status, tc.msg, err)
		}
	}
	// No answer at all, at an address whose port holds 404: not voided.
	srv.Close()
	if err := gw.VoidKey(ctx, "K1/r1/0123456789ab/hub"); err == nil {
		t.Error("a void that reached no gateway passed")
	}
}

// A hold no sale recorded, whose void by key failed with a 5xx whose text
// held "404", was recorded voided and left open, and no sweep looked at it
// again (its row was its own attempt's). Now the failed void leaves the
// attempt voiding, and the sweeps void it; a hold whose row reads voided
// while it is open at the gateway is voided again by every sweep until it
// takes.
func TestSweptHoldLeftOpenBy404Text(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		e := newSimEnv(t, dsn)
		var failed atomic.Bool
		e.setHook(func(path string, body []byte, w http.ResponseWriter, next func(http.ResponseWriter)) bool {
			if path == "/v1/void" && bytes.Contains(body, []byte(`"key"`)) && !failed.Swap(true) {
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"code":"unavailable","message":"acquirer link down (upstream 404)"}`))
				return true
			}
			return false
		})
		a := e.hub(t, "host-a/1/aa", time.Minute)
		key := payments.Key{KioskID: "K1", RequestID: "r1"}
		if pay, ok, err := a.HoldChecked(ctx, key, "tok_approve", 780, selectOne(), func() bool { return true }); !ok || err != nil || pay == nil {
			t.Fatal(pay, ok, err)
		}
		// Hub A dies before its commit.
		e.now = e.now.Add(2 * time.Minute)
		lapse(t, e.db, "host-a/1/aa") // on PostgreSQL, by the server's clock
		b := e.hub(t, "host-b/2/bb", time.Hour)
		if err := b.SettleDead(ctx); err == nil {
			t.Error("a sweep whose void failed reported no error")
		}
		if p, err := b.Get(ctx, key); err != nil || p.State != "voiding" {
			t.Errorf("after the failed void the payment is %+v, %v; want voiding", p, err)
		}
		if err := b.SettleDead(ctx); err != nil {
			t.Fatal(err)
		}
		if open := e.sim.Totals().Open; open != 0 {
			t.Errorf("%d hold(s) left open at the gateway", open)
		}
		if p, err := b.Get(ctx, key); err != nil || p.State != "voided" {
			t.Errorf("payment %+v, %v; want voided", p, err)
		}

		// A row left voided by the old bug, its hold open: swept again.
		leaked := payments.Key{KioskID: "K1", RequestID: "r2"}
		pay, ok, err := b.HoldChecked(ctx, leaked, "tok_approve", 780, selectOne(), func() bool { return true })
		if !ok || err != nil || pay == nil {
			t.Fatal(pay, ok, err)
		}
		w := pay.Authorized()
		if _, err := e.db.GroupExec(ctx, w.Query, w.Args...); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.ExecContext(ctx, e.db.Rebind(`UPDATE payments SET state = 'voided' WHERE kiosk_id = ? AND request_id = ?`), leaked.KioskID, leaked.RequestID); err != nil {
			t.Fatal(err)
		}
		if e.sim.Totals().Open != 1 {
			t.Fatalf("want the leaked hold open")
		}
		if err := b.SettleStale(ctx, 0); err != nil {
			t.Fatal(err)
		}
		if open := e.sim.Totals().Open; open != 0 {
			t.Errorf("a hold recorded voided is still open at the gateway after a sweep")
		}
	})
}

// Only a status that says the capture will never be (402 declined; 404,
// 409, 410: the hold is gone) refuses a capture, one by one or in a batch; a 408, a 429 or a 5xx leaves its
// outcome unknown, to be asked again by settlement, not written off.
func TestCaptureRefusedOnlyWhenHoldGone(t *testing.T) {
	var status int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/captures" {
			w.Write([]byte(`{"results":[{"auth_id":"a1","status":` + strconv.Itoa(status) + `,"message":"m"}]}`))
			return
		}
		w.WriteHeader(status)
		w.Write([]byte(`{"code":"x","message":"m"}`))
	}))
	defer srv.Close()
	gw := payments.NewGateway(srv.URL)
	ctx := context.Background()
	for _, tc := range []struct {
		status  int
		refused bool
	}{
		{http.StatusPaymentRequired, true}, {http.StatusNotFound, true}, {http.StatusConflict, true}, {http.StatusGone, true},
		{http.StatusRequestTimeout, false}, {http.StatusTooManyRequests, false}, {http.StatusBadRequest, false},
		{http.StatusInternalServerError, false}, {http.StatusServiceUnavailable, false},
	} {
		status = tc.status
		err := gw.Capture(ctx, "a1", 780)
		if err == nil || errors.Is(err, payments.ErrNotCaptured) != tc.refused {
			t.Errorf("capture %d: %v, want refused=%v", tc.status, err, tc.refused)
		}
		errs, err := gw.CaptureBatch(ctx, []payments.Capture{{AuthID: "a1", Amount: 780}})
		if err != nil || len(errs) != 1 || errs[0] == nil || errors.Is(errs[0], payments.ErrNotCaptured) != tc.refused {
			t.Errorf("batch capture %d: %v %v, want refused=%v", tc.status, errs, err, tc.refused)
		}
	}
}

// A hold whose sale is recorded and already captured (a capture worker or
// settlement got there first) is not released: Release says ErrRecorded,
// as for one recorded authorized. Before, it voided (refused, or the sale
// went free) and failed.
func TestReleaseKeepsACapturedHold(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		e := newSimEnv(t, dsn)
		p := e.hub(t, "hub-a", time.Hour)
		key := payments.Key{KioskID: "K1", RequestID: "r-1"}
		pay, err := p.Hold(ctx, key, payments.Source{Token: "tok_approve"}, 780)
		if err != nil {
			t.Fatal(err)
		}
		recordSale(t, e.db, pay)
		if err := p.Capture(ctx, key); err != nil {
			t.Fatal(err)
		}
		if err := p.Release(ctx, pay); !errors.Is(err, payments.ErrRecorded) {
			t.Fatalf("Release of a captured hold: %v, want ErrRecorded", err)
		}
		if got, err := p.Get(ctx, key); err != nil || got.State != "captured" || got.Captured != 780 {
			t.Errorf("payment %+v, %v; want captured 780", got, err)
		}
		if tot := e.sim.Totals(); tot.Captured != 780 || tot.Open != 0 {
			t.Errorf("gateway %+v, want 780 captured, none open", tot)
		}
	})
}

// fundCard is an approved test card.
var fundCard = &payments.Card{Number: "4242424242424242", Exp: "1230", Name: "A"}

// A top-up whose capture's outcome is unknown (the gateway captured, the
// answer was lost) was voided (refused: captured), the customer told
// nothing was charged, and the payment left authorized forever, the
// money taken and never credited. Now it stays authorized, the customer
// is told it is pending, and settlement captures it again (a retry at the
// gateway) and credits it once; the same form sent again credits it too,
// once. The gateway's totals and the database's agree.
func TestFundCaptureUnknown(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		e := newSimEnv(t, dsn)
		a := e.hub(t, "host-a/1/aa", time.Hour)
		acct, err := e.acc.Create(ctx, "alice", "correct horse battery staple")
		if err != nil {
			t.Fatal(err)
		}
		balance := func() protocol.Mills {
			t.Helper()
			got, err := e.acc.ByID(ctx, acct.ID)
			if err != nil {
				t.Fatal(err)
			}
			return got.Balance
		}
		agree := func(what string) {
			t.Helper()
			captured, _, err := a.Totals(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if gw := e.sim.Totals(); gw.Captured != int64(captured) || gw.Open != 0 {
				t.Errorf("%s: gateway %+v, database captured %d", what, gw, captured)
			}
		}
		// lose answers the capture with a 502: after the gateway captured
		// (lost answer), or before (it never did).
		lose := func(after bool) {
			e.setHook(func(path string, _ []byte, w http.ResponseWriter, next func(http.ResponseWriter)) bool {
				if path != "/v1/capture" {
					return false
				}
				if after {
					next(httptest.NewRecorder())
				}
				w.WriteHeader(http.StatusBadGateway)
				return true
			})
		}
		pending := func(err error) bool { return protocol.AsError(err).Code == protocol.CodeOutcomeUnknown }

		// Captured, the answer lost: settled by SettleStale.
		lose(true)
		if err := a.Fund(ctx, acct.ID, fundCard, 10_000, "req-1"); !pending(err) {
			t.Fatalf("Fund with its capture's answer lost: %v, want outcome_unknown", err)
		}
		key := payments.Key{KioskID: payments.FundKioskID(acct.ID), RequestID: "req-1"}
		if p, err := a.Get(ctx, key); err != nil || p.State != "authorized" {
			t.Fatalf("pending top-up %+v, %v; want authorized", p, err)
		}
		e.setHook(nil)
		e.now = e.now.Add(time.Hour)
		for range 2 {
			if err := a.SettleStale(ctx, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if b := balance(); b != 10_000 {
			t.Errorf("balance %v after settlement, want 10000", b)
		}
		agree("settled")

		// Never captured, the answer lost: the same form sent again
		// finishes it; once more changes nothing.
		lose(false)
		if err := a.Fund(ctx, acct.ID, fundCard, 5_000, "req-2"); !pending(err) {
			t.Fatalf("Fund with its capture unanswered: %v, want outcome_unknown", err)
		}
		e.setHook(nil)
		for range 2 {
			if err := a.Fund(ctx, acct.ID, fundCard, 5_000, "req-2"); err != nil {
				t.Fatalf("the pending form sent again: %v", err)
			}
		}
		if b := balance(); b != 15_000 {
			t.Errorf("balance %v after the form was sent again, want 15000", b)
		}
		agree("sent again")
		if err := a.Fund(ctx, acct.ID, fundCard, 7_000, "req-2"); protocol.AsError(err).Code != protocol.CodeInvalidRequest {
			t.Errorf("another amount on a used request id: %v, want invalid_request", err)
		}

		// A dead hub's pending top-up, captured: another hub captures and
		// credits it, never voids it.
		lose(true)
		if err := a.Fund(ctx, acct.ID, fundCard, 2_000, "req-3"); !pending(err) {
			t.Fatalf("Fund: %v, want outcome_unknown", err)
		}
		e.setHook(nil)
		e.now = e.now.Add(2 * time.Hour) // hub A's lease lapses
		lapse(t, e.db, "host-a/1/aa")    // on PostgreSQL, by the server's clock
		b := e.hub(t, "host-b/2/bb", time.Hour)
		if err := b.SettleDead(ctx); err != nil {
			t.Fatal(err)
		}
		if got := balance(); got != 17_000 {
			t.Errorf("balance %v after a dead hub's top-up was settled, want 17000", got)
		}
		agree("dead hub's")
	})
}

// A top-up whose capture the gateway refuses because the hold is gone
// charged nothing: the customer is told so, and the payment is voided,
// not left for settlement.
func TestFundCaptureRefused(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		e := newSimEnv(t, dsn)
		a := e.hub(t, "hub-a", time.Hour)
		acct, err := e.acc.Create(ctx, "bob", "correct horse battery staple")
		if err != nil {
			t.Fatal(err)
		}
		// The hold is voided behind the hub's back before the capture.
		e.setHook(func(path string, body []byte, w http.ResponseWriter, next func(http.ResponseWriter)) bool {
			if path == "/v1/capture" {
				e.gw.Void(ctx, string(bytes.Split(bytes.Split(body, []byte(`"auth_id":"`))[1], []byte(`"`))[0]))
			}
			return false
		})
		err = a.Fund(ctx, acct.ID, fundCard, 10_000, "req-1")
		if protocol.AsError(err).Code != protocol.CodePaymentDeclined {
			t.Fatalf("Fund with its capture refused: %v, want payment_declined", err)
		}
		key := payments.Key{KioskID: payments.FundKioskID(acct.ID), RequestID: "req-1"}
		if p, err := a.Get(ctx, key); err != nil || p.State != "voided" {
			t.Errorf("refused top-up %+v, %v; want voided", p, err)
		}
		if got, _ := e.acc.ByID(ctx, acct.ID); got.Balance != 0 {
			t.Errorf("balance %v, want 0", got.Balance)
		}
		if tot := e.sim.Totals(); tot.Captured != 0 || tot.Open != 0 {
			t.Errorf("gateway %+v, want nothing captured or open", tot)
		}
	})
}

// A top-up's request_id with a slash made its attempt's key misread by
// the sweep (fund-7/x/y/NONCE/HUB as request x of hub y/NONCE/HUB, dead),
// and the leader voided a live hub's hold. Such ids are refused before
// any card is asked, by Fund and by every hold.
func TestSlashInFundRequestID(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		e := newSimEnv(t, dsn)
		a := e.hub(t, "host-a/1/aa", time.Hour)
		b := e.hub(t, "host-b/2/bb", time.Hour)
		invalid := func(err error) bool { return protocol.AsError(err).Code == protocol.CodeInvalidRequest }
		if err := a.Fund(ctx, 7, fundCard, 10_000, "x/y"); !invalid(err) {
			t.Errorf("Fund with request_id x/y: %v, want invalid_request", err)
		}
		key := payments.Key{KioskID: payments.FundKioskID(7), RequestID: "x/y"}
		if _, err := a.Authorize(ctx, key, payments.Source{Card: fundCard}, 10_000); !invalid(err) {
			t.Errorf("Authorize with request_id x/y: %v, want invalid_request", err)
		}
		if _, ok, err := a.HoldChecked(ctx, payments.Key{KioskID: "K1", RequestID: "a/b"}, "tok_approve", 780, selectOne(), func() bool { return true }); !invalid(err) {
			t.Errorf("HoldChecked with request_id a/b: %v %v, want invalid_request", ok, err)
		}
		if n := e.sim.Totals().Open; n != 0 {
			t.Errorf("%d holds made for invalid ids", n)
		}
		// A hold at the gateway under such a key (made before the check)
		// is no hub's to sweep.
		if _, err := e.gw.Authorize(ctx, "fund-7/x/y/0123456789ab/host-a/1/aa", 10_000, "tok_approve", nil); err != nil {
			t.Fatal(err)
		}
		if err := b.SettleDead(ctx); err != nil {
			t.Fatal(err)
		}
		if n := e.sim.Totals().Open; n != 1 {
			t.Errorf("the sweep voided a hold whose key it cannot read")
		}
		if _, err := b.Get(ctx, payments.Key{KioskID: "fund-7", RequestID: "x"}); !errors.Is(err, sql.ErrNoRows) {
			t.Errorf("a payment recorded under a misread key: %v", err)
		}
	})
}

// A top-up captured whose credit fails stays authorized, not captured
// and forgotten: the next settlement captures it again (a retry at the
// gateway) and credits it, once.
func TestFundCreditFailsAfterCapture(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		e := newSimEnv(t, dsn)
		a := e.hub(t, "hub-a", time.Hour)
		first, err := e.acc.Create(ctx, "carol", "correct horse battery staple")
		if err != nil {
			t.Fatal(err)
		}
		// The next account's id, before it exists: its credit fails.
		id := first.ID + 1
		if err := a.Fund(ctx, id, fundCard, 10_000, "req-1"); protocol.AsError(err).Code != protocol.CodeOutcomeUnknown {
			t.Fatalf("Fund whose credit failed: %v, want outcome_unknown", err)
		}
		key := payments.Key{KioskID: payments.FundKioskID(id), RequestID: "req-1"}
		if p, err := a.Get(ctx, key); err != nil || p.State != "authorized" {
			t.Fatalf("top-up %+v, %v; want authorized", p, err)
		}
		next, err := e.acc.Create(ctx, "dave", "correct horse battery staple")
		if err != nil || next.ID != id {
			t.Fatalf("account %v, %v; want id %d", next, err, id)
		}
		e.now = e.now.Add(time.Hour)
		for range 2 {
			if err := a.SettleStale(ctx, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := e.acc.ByID(ctx, id); err != nil || got.Balance != 10_000 {
			t.Errorf("balance %v, %v; want 10000", got.Balance, err)
		}
		captured, _, _ := a.Totals(ctx)
		if gw := e.sim.Totals(); gw.Captured != int64(captured) || captured != 10_000 || gw.Open != 0 {
			t.Errorf("gateway %+v, database captured %d; want 10000 each", gw, captured)
		}
	})
}

// A gateway's own text, passed on to logs and kiosks, never carries a card
// number, however spaced, nor the reusable token of a card it would not
// keep; other text stays.
func TestGatewayTextKeepsNoCardNumber(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/tokens":
			w.Write([]byte(`{"token":"pm_REUSABLE_VAULT_TOKEN","brand":"visa","last4":"1111"}`))
		case "/v1/authorize":
			w.WriteHeader(http.StatusPaymentRequired)
			w.Write([]byte(`{"code":"invalid","message":"card 4111 1111-1111 1111 exp 12/39 rejected (ref 12345)"}`))
		default:
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte(`{"code":"upstream","message":"issuer said 5500005555555559 is closed"}`))
		}
	}))
	defer srv.Close()
	gw := payments.NewGateway(srv.URL)
	ctx := context.Background()
	_, err := gw.Tokenize(ctx, &payments.Card{Number: "4111111111111111", Exp: "12/39"})
	if err == nil || strings.Contains(err.Error(), "REUSABLE") {
		t.Errorf("tokenize: %v", err)
	}
	for _, err := range []error{
		gw.Capture(ctx, "a1", 780),
		func() error { _, err := gw.Authorize(ctx, "k/r", 780, "tok_x", nil); return err }(),
	} {
		msg := fmt.Sprint(err)
		if err == nil || strings.Contains(strings.NewReplacer(" ", "", "-", "").Replace(msg), "1111111111") || strings.Contains(msg, "5555555559") {
			t.Errorf("a card number in %q", msg)
		}
		if !strings.Contains(msg, "[digits removed]") {
			t.Errorf("the gateway's text is gone from %q", msg)
		}
	}
}
