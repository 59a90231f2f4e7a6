package fleet_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/hub/sale"
	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/wait"
)

// The registry keeps the kiosks it read until kiosks_version moves: a
// change it does not show is not seen (here a lock made with the trigger
// dropped), and a kiosk retired from a shell (another process, here
// another connection) stops selling within cacheFor.
func TestCachedUntilKiosksChange(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		reg := fleet.New(db)
		if _, err := reg.Add(ctx, "kiosk-1", "store-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.UserID(ctx, "kiosk-1"); err != nil {
			t.Fatal(err)
		}
		off, on := `DROP TRIGGER kiosks_version_update`,
			`CREATE TRIGGER kiosks_version_update AFTER UPDATE ON kiosks BEGIN UPDATE kiosks_version SET v = v + 1; END`
		if db.Dialect == store.Postgres {
			off, on = `ALTER TABLE kiosks DISABLE TRIGGER kiosks_version_bump`, `ALTER TABLE kiosks ENABLE TRIGGER kiosks_version_bump`
		}
		for _, q := range []string{off, `UPDATE kiosks SET locked_at = 1, locked_by = 'test' WHERE kiosk_id = 'kiosk-1'`} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		wait.Never(t, 3*time.Second, "the cached kiosk read again with kiosks_version unmoved", func() bool {
			_, err := reg.UserID(ctx, "kiosk-1")
			return err != nil
		})
		for _, q := range []string{`UPDATE kiosks SET locked_at = NULL, locked_by = NULL WHERE kiosk_id = 'kiosk-1'`, on} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		shell, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer shell.Close()
		if err := fleet.New(shell).Retire(ctx, "kiosk-1", "stolen", true); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 5*time.Second, "the kiosk retired from a shell refused", func() bool {
			_, err := reg.UserID(ctx, "kiosk-1")
			return err != nil && protocol.AsError(err).Code == protocol.CodeUnknownKiosk
		})
	})
}

// A kiosk id in one of the hub's own namespaces would share its keys: a
// web customer's sales and payments (sale.WebKioskID), a prepaid account's
// top-ups (payments.FundKioskID), the claims scope of refunds; and a kiosk
// in the web store could load web customers' sheets. Provisioning refuses
// them, in any case, and provisions nothing; ids that only look alike pass.
func TestReservedIDsRefused(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := fleet.New(db)
	for _, c := range []struct{ kiosk, store string }{
		{sale.WebKioskID(7), "store-1"}, {strings.ToUpper(sale.WebKioskID(7)), "store-1"},
		{payments.FundKioskID(7), "store-1"}, {"Fund-8", "store-1"},
		{"refund-label", "store-1"}, {"REFUND-LABEL", "store-1"}, {"refund-x", "store-1"},
		{"staff-login", "store-1"}, {"Staff-Login", "store-1"},
		{"kiosk-1", stock.WebStore}, {"kiosk-1", "WEB"},
	} {
		_, err := reg.Add(ctx, c.kiosk, c.store)
		if !errors.Is(err, fleet.ErrReservedID) {
			t.Errorf("add %s in %s: %v, want it refused as reserved", c.kiosk, c.store, err)
			continue
		}
		if !strings.Contains(err.Error(), "choose another") {
			t.Errorf("add %s in %s: %v, want a message that says what to do", c.kiosk, c.store, err)
		}
	}
	if ks, err := reg.List(ctx); err != nil || len(ks) != 0 {
		t.Fatalf("after refusals: kiosks %v, %v", ks, err)
	}
	for _, id := range []string{"webkiosk", "kiosk-web-1", "web1", "funder", "refunder", "kiosk-refund-label"} {
		if _, err := reg.Add(ctx, id, "webshop"); err != nil {
			t.Errorf("add %s: %v", id, err)
		}
	}
}

// A wrong password for a kiosk id that does not exist takes a bcrypt
// comparison, as one for a kiosk that does: how long a refusal takes does
// not tell a stranger which kiosk ids are real. (Without it the unknown id
// was refused a thousand times sooner.) The test checks the work done, not
// the time it took: one comparison each, the unknown id's with a hash made
// at the kiosks' cost.
func TestUnknownKioskTakesAsLong(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := fleet.New(db)
	reg.Passwords = true
	reg.Cost = bcrypt.MinCost // not the default: the unknown id's hash must follow it
	if _, err := reg.Add(ctx, "kiosk-1", "store-1"); err != nil {
		t.Fatal(err)
	}
	var stored string
	if err := db.QueryRowContext(ctx, `SELECT password_hash FROM kiosks WHERE kiosk_id = 'kiosk-1'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	cost, err := bcrypt.Cost([]byte(stored))
	if err != nil {
		t.Fatal(err)
	}
	compares := fleet.CountCompares(reg)
	for range 3 {
		before := compares.Load()
		if _, ok := reg.Authenticate("kiosk-1", "not the password", true); ok {
			t.Fatal("kiosk-1 logged in with a wrong password")
		}
		if n := compares.Load() - before; n != 1 {
			t.Fatalf("a wrong password for a real kiosk made %d bcrypt comparisons, want 1", n)
		}
		fleet.ForgetUnknownHash(reg)
		before = compares.Load()
		if _, ok := reg.Authenticate("kiosk-404", "not the password", true); ok {
			t.Fatal("kiosk-404 logged in")
		}
		if n := compares.Load() - before; n != 0 {
			t.Fatalf("an unknown id made %d comparisons with stored hashes", n)
		}
		h := fleet.UnknownHash(reg)
		if h == nil {
			t.Fatal("a wrong password for an unknown id was refused without a bcrypt comparison")
		}
		if c, err := bcrypt.Cost(h); err != nil || c != cost {
			t.Fatalf("an unknown id is compared with a hash of cost %d (%v), the kiosks' is %d", c, err, cost)
		}
	}
	// Without slow the check is the cheap one only, for either.
	fleet.ForgetUnknownHash(reg)
	before := compares.Load()
	reg.Authenticate("kiosk-1", "not the password", false)
	reg.Authenticate("kiosk-404", "not the password", false)
	if n := compares.Load() - before; n != 0 || fleet.UnknownHash(reg) != nil {
		t.Fatalf("without slow: %d comparisons, unknown id's hash %q", n, fleet.UnknownHash(reg))
	}
}
