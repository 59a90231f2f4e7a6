package settings_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/settings"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/wait"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// Staff added at once, from two consoles or two hubs, stop at the most a
// kiosk's config carries: no two adds both see room for the last place.
func TestStaffAddedAtOnceMeetTheLimit(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
		if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO stores (id, name, created_at) VALUES (?, ?, ?)`), "S1", "Store one", now.UnixMicro()); err != nil {
			t.Fatal(err)
		}
		s := settings.New(db, func() time.Time { return now })
		const tries = protocol.MaxStaff + 40
		var wg sync.WaitGroup
		errs := make(chan error, tries)
		for i := range tries {
			wg.Go(func() {
				errs <- s.AddStaff(ctx, "S1", fmt.Sprintf("clerk %03d", i), "", fmt.Sprintf("STAFF-%03d", i), "ops")
			})
		}
		wg.Wait()
		close(errs)
		refused := 0
		for err := range errs {
			var pe *protocol.Error
			switch {
			case err == nil:
			case errors.As(err, &pe) && pe.Code == protocol.CodeInvalidRequest:
				refused++
			default:
				t.Fatalf("add staff: %v", err)
			}
		}
		staff, err := s.Staff(ctx, "S1")
		if err != nil {
			t.Fatal(err)
		}
		if len(staff) != protocol.MaxStaff || refused != tries-protocol.MaxStaff {
			t.Fatalf("%d staff kept and %d refused of %d adds, want %d kept", len(staff), refused, tries, protocol.MaxStaff)
		}
		if err := s.AddStaff(ctx, "S9", "clerk", "", "STAFF-9", "ops"); err == nil {
			t.Fatal("staff added to a store that does not exist")
		}
	})
}

// A PIN is checked against every active member's hash, on every core; of
// members who share a PIN the first by name is the one logged in, a
// revoked one is not, and a badge names its member.
func TestCheckStaff(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, t.TempDir()+"/hub.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	if _, err := db.ExecContext(ctx, `INSERT INTO stores (id, name, created_at) VALUES ('S1', 'Store one', 0)`); err != nil {
		t.Fatal(err)
	}
	s := settings.New(db, func() time.Time { return now })
	s.Cost = bcrypt.MinCost
	for i := range 40 {
		if err := s.AddStaff(ctx, "S1", fmt.Sprintf("clerk %02d", i), fmt.Sprintf("%04d", 1000+i), "", "ops"); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range [][3]string{{"zed", "1039", "STAFF-ZED-1"}, {"amy", "7777", ""}, {"bea", "7777", ""}, {"abe", "7777", ""}} {
		if err := s.AddStaff(ctx, "S1", m[0], m[1], m[2], "ops"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RevokeStaff(ctx, "S1", "abe", "ops"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ pin, badge, want string }{
		{"1039", "", "clerk 39"}, // zed's too: the first by name
		{"1000", "", "clerk 00"},
		{"7777", "", "amy"}, // abe's is revoked
		{"4321", "", ""},
		{"", "STAFF-ZED-1", "zed"},
		{"", "STAFF-NOBODY", ""},
	} {
		for range 3 {
			if got, err := s.CheckStaff(ctx, "S1", c.pin, c.badge); err != nil || got != c.want {
				t.Fatalf("pin %q badge %q: %q %v, want %q", c.pin, c.badge, got, err, c.want)
			}
		}
	}
}

// Two first saves of a scope that has no settings yet, from two forms that
// both showed it empty: the second is refused, not saved over the first.
// With no row to lock, both passed the check, and on PostgreSQL the second
// overwrote the first unseen.
func TestSetIfFirstSavesOfAScope(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		s := settings.New(db, nil)
		scope := settings.StoreScope(fmt.Sprintf("s%d", time.Now().UnixNano()))
		empty := settings.Revision(protocol.KioskSettings{})
		// Olga's first save, not yet committed.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO kiosk_settings (scope, body, updated_by, updated_at) VALUES (?, ?, ?, ?)`),
			scope, `{"language":"es"}`, "olga", time.Now().UnixMicro()); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.SetIf(ctx, scope, protocol.KioskSettings{LabelsLow: 7}, "oleg", empty) }()
		if db.Dialect == store.Postgres {
			// Oleg's save reaches the database before Olga's commits.
			wait.For(t, 10*time.Second, "oleg's save waiting", func() bool {
				var n int
				db.QueryRowContext(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted`).Scan(&n)
				return n > 0
			})
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		err = <-done
		if got, _ := s.Get(ctx, scope); err == nil || got.Language != "es" || got.LabelsLow != 0 {
			t.Fatalf("oleg's save over an empty form after olga's: %v; the scope holds %+v, want olga's", err, got)
		}
	})
}
