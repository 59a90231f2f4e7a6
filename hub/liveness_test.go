package hub_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// A hub settles the open payments of a hub whose lease has lapsed, while
// it runs and without a restart, and leaves a live hub's alone: that hub
// may be selling them now.
func TestDeadHubsPaymentsSettled(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.Ledger.LeaseTTL = 300 * time.Millisecond })
	ctx := context.Background()
	db, err := store.Open(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	open := func(hubName string, lease time.Duration, request string) payments.Key {
		t.Helper()
		now := e.clock.Now()
		if err := db.RenewHubLease(ctx, hubName, now, now, lease); err != nil {
			t.Fatal(err)
		}
		p := payments.New(db, payments.NewGateway(e.cfg.PaymentsURL), accounts.New(db, e.clock.Now), slog.New(slog.DiscardHandler), e.clock.Now)
		p.Hub = hubName
		key := payments.Key{KioskID: "kiosk-1", RequestID: request}
		// The running hub may settle the dead hub's attempt before its
		// authorization is recorded: the dead hub then voids its own hold.
		if _, err := p.Authorize(ctx, key, payments.Source{Token: "tok_approve"}, 780); err != nil &&
			!(lease < 0 && errors.Is(err, payments.ErrOtherHub)) {
			t.Fatal(err)
		}
		return key
	}
	// The running hub may settle the dead hub's hold as soon as it is
	// made, so only the end is counted.
	before := e.cards.Totals().Open
	dead := open("hub-dead", -time.Minute, "dead-1")
	live := open("hub-live", time.Hour, "live-1")
	state := func(k payments.Key) string {
		p, err := e.h.Payments().Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		return p.State
	}
	wait.For(t, 10*time.Second, "the dead hub's payment settled", func() bool { return state(dead) == "voided" })
	if st := state(live); st != "authorized" {
		t.Fatalf("the live hub's payment was settled: %s", st)
	}
	if got := e.cards.Totals().Open; got != before+1 {
		t.Fatalf("%d open authorizations, want %d (the live hub's)", got, before+1)
	}
}

// A purchase whose payment another hub has open is not paid twice: while
// that hub lives the request is answered outcome_unknown, not final (the
// other hub may be selling it); once that hub is dead, its attempt is
// settled first and the resend is served.
func TestOpenAttemptOfAnotherHub(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.Ledger.LeaseTTL = time.Hour }) // the loop stays out of the way
	ctx := context.Background()
	db, err := store.Open(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := e.clock.Now()
	if err := db.RenewHubLease(ctx, "hub-other", now, now, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO payments (kiosk_id, request_id, method, attempt_key, amount, state, captured, refunded, created_at, updated_at, hub)
		VALUES ('kiosk-1', 'shared-1', 'card', 'kiosk-1/shared-1/other', 780, 'authorizing', 0, 0, ?, ?, 'hub-other')`), now.UnixMicro(), now.UnixMicro()); err != nil {
		t.Fatal(err)
	}
	k := e.kiosk("kiosk-1")
	req := purchase("shared-1", "kiosk-1", "1966-F8CF-02", nil)
	if res := decode(t, k.ask(req)); res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeOutcomeUnknown {
		t.Fatalf("sold over a live hub's open attempt: %+v", res)
	}
	// The other hub dies: its attempt is voided by its key, then the
	// resend is paid and sold.
	if err := db.EndHubLease(ctx, "hub-other"); err != nil {
		t.Fatal(err)
	}
	if res := decode(t, k.ask(req)); res.Status != protocol.ResultOK {
		t.Fatalf("after the other hub died: %+v", res.Error)
	}
	wait.For(t, 10*time.Second, "the sale's capture, and no authorization left open", func() bool {
		tot := e.cards.Totals()
		return tot.Open == 0 && tot.Captured == 780
	})
}

// The profiling endpoint is served on loopback only: any other address is
// a configuration error.
func TestPprofLoopbackOnly(t *testing.T) {
	t.Parallel()
	for addr, ok := range map[string]bool{"127.0.0.1:6060": true, "[::1]:6060": true, "localhost:6060": true,
		"0.0.0.0:6060": false, ":6060": false, "10.0.0.5:6060": false, "6060": false} {
		c := hub.Config{PprofListen: addr}
		c.Defaults()
		err := c.Check()
		if got := err == nil || !strings.Contains(err.Error(), "pprof"); got != ok {
			t.Errorf("--pprof %s: %v", addr, err)
		}
	}
}

// A second hub on the same SQLite database is refused at start: on SQLite
// hubs tell each other nothing, so two would judge kiosks and credentials
// blind. The offline commands (hub.Open without Start) still work beside
// it. On PostgreSQL (the suite's second pass) it starts: hubs share it.
func TestSecondHubOnSQLiteRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	h, err := hub.Open(ctx, e.cfg, quietLog())
	if err != nil {
		t.Fatalf("opening for an offline command beside the running hub: %v", err)
	}
	defer h.Close()
	if r, err := h.Ledger().Check(ctx); err != nil || !r.OK() {
		t.Fatalf("ledger check beside the running hub: %v, %v", r, err)
	}
	err = h.Start(ctx)
	if store.IsPostgres(e.dsn()) {
		if err != nil {
			t.Fatalf("a second hub on the same PostgreSQL database: %v, want it to start", err)
		}
		return
	}
	if !errors.Is(err, store.ErrShared) {
		t.Fatalf("a second hub started on the same SQLite database: %v, want ErrShared", err)
	}
}
