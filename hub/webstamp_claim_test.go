package hub_test

import (
	"context"
	"database/sql"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// webHolder reads which account holds a web sheet: 0 for none.
func webHolder(t *testing.T, db *store.DB, sheet protocol.SheetSerial) int64 {
	t.Helper()
	var acct sql.NullInt64
	if err := db.QueryRowContext(context.Background(), db.Rebind(`SELECT account_id FROM sheets WHERE serial = ?`), uint32(sheet)).Scan(&acct); err != nil {
		t.Fatal(err)
	}
	return acct.Int64
}

// killed leaves hub h as SIGKILL leaves it: its sessions gone (Close),
// its lease live until it lapses on its own. It returns the hub's name.
func killed(t *testing.T, e *env, db *store.DB, h *hub.Hub) string {
	t.Helper()
	name := h.Ledger().Holder()
	h.Close() // ends the lease, which a kill does not
	now := e.clock.Now()
	if err := db.RenewHubLease(context.Background(), name, now, now, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return name
}

// lapse makes hub name's lease lapse, as time passing with no renewal
// would. It moves the lease a day back rather than e.clock ahead: on
// PostgreSQL leases are judged by the server's clock, not the hub's.
func lapse(t *testing.T, db *store.DB, name string) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), db.Rebind(`UPDATE hub_leases SET until = until - ? WHERE hub = ?`),
		(24 * time.Hour).Microseconds(), name); err != nil {
		t.Fatal(err)
	}
}

// A web sale claims its sheet before it is made. A hub killed in between
// (claimed, neither sold nor refused) leaves the claim behind; once its
// lease lapses, the hub settling the dead hubs drops it: the customer did
// not buy the sheet, and another one may. A sheet its customer did buy on
// stays theirs. Here the hub is restarted on its database.
func TestKilledWebSalesSheetClaimDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	db := e.openDB()
	sheet, _ := protocol.ParseSheetSerial(e.webSheet())
	e.customer("mallory", "")
	mallory, err := e.h.Accounts().ByLogin(ctx, "mallory")
	if err != nil {
		t.Fatal(err)
	}
	owner := e.customer("owner", "10.00")
	sold := e.webSheet()
	if st, loc, page := owner.buy(sold, 1); st != http.StatusSeeOther {
		t.Fatalf("a sale before the kill: %d %s %s", st, loc, page)
	}
	// What Sales().Buy does first, then the kill.
	if at, err := e.h.Stock().Claim(ctx, sheet, mallory.ID); err != nil || at == 0 {
		t.Fatalf("claim: %d, %v", at, err)
	}
	name := killed(t, e, db, e.h)
	e.start()
	if got := webHolder(t, db, sheet); got != mallory.ID {
		t.Fatalf("a claim dropped while its hub's lease lives (it may be selling): holder %d", got)
	}
	lapse(t, db, name) // the killed hub's lease lapses
	wait.For(t, 10*time.Second, "the killed sale's claim dropped", func() bool {
		e.h.Round()
		return webHolder(t, db, sheet) == 0
	})
	bob := e.customer("bob", "10.00")
	if st, loc, page := bob.buy(sheet.String(), 1); st != http.StatusSeeOther {
		t.Fatalf("another customer on the sheet no sale was made on: %d %s %s", st, loc, page)
	}
	// The sheet sold on before the kill is its buyer's still.
	if st, _, page := bob.buy(sold, 1); st == http.StatusSeeOther || !strings.Contains(page, string(protocol.CodeLabelNotAssigned)) {
		t.Fatalf("another customer on a sheet sold on: %d; want label_not_assigned", st)
	}
	owner, st := e.portalLogin("owner", firstPassword) // the restarted hub listens elsewhere
	if st != http.StatusSeeOther {
		t.Fatalf("owner's login after the restart: %d", st)
	}
	if st, loc, page := owner.buy(sold, 1); st != http.StatusSeeOther {
		t.Fatalf("the buyer on their sheet after the kill: %d %s %s", st, loc, page)
	}
	e.check()
}

// Two hubs on PostgreSQL: one is killed with a web sale's claim made and
// no sale; the other, settling the dead hub, drops the claim.
func TestKilledWebSalesSheetClaimDroppedOnTwoHubs(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn })
	ctx := context.Background()
	db := e.openDB()
	h2, err := hub.Open(ctx, e.cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h2.Close() })
	if err := h2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	sheet, _ := protocol.ParseSheetSerial(e.webSheet())
	e.customer("mallory", "")
	mallory, err := e.h.Accounts().ByLogin(ctx, "mallory")
	if err != nil {
		t.Fatal(err)
	}
	if at, err := h2.Stock().Claim(ctx, sheet, mallory.ID); err != nil || at == 0 {
		t.Fatalf("claim: %d, %v", at, err)
	}
	name := killed(t, e, db, h2)
	e.h.Round()
	if got := webHolder(t, db, sheet); got != mallory.ID {
		t.Fatalf("a claim dropped while its hub's lease lives (it may be selling): holder %d", got)
	}
	lapse(t, db, name)
	wait.For(t, 10*time.Second, "the killed hub's claim dropped", func() bool {
		e.h.Round()
		return webHolder(t, db, sheet) == 0
	})
	bob := e.customer("bob", "10.00")
	if st, loc, page := bob.buy(sheet.String(), 1); st != http.StatusSeeOther {
		t.Fatalf("another customer on the sheet no sale was made on: %d %s %s", st, loc, page)
	}
}
