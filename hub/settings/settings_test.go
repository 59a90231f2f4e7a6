package settings_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/settings"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
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
