package hub_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/protocol"
)

// Ops restore the hub's database from a backup taken before a sale whose
// stamp was printed, and declare it (hub ledger restored) before starting
// the hub. Without that, the restored hub issued the lost sale's meter
// number and registers again on the next stamp: two printed stamps with
// one identity, and postage no report held. Now every MPSD the backup
// holds is locked, the next stamp is on a new MPSD numbered past any
// created since the backup, and the ledger still adds up.
func TestRestoredDatabaseIssuesNoStampIdentityAgain(t *testing.T) {
	// A SQLite file, backed up by a copy, on either suite's run: the
	// ledger's tests hold Restored to PostgreSQL too.
	e := newEnvWith(t, func(c *hub.Config) { c.DB = filepath.Join(c.DataDir, "hub.db") })
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	if res := decode(t, k.ask(purchase("rs-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale 1: %+v", res.Error)
	}
	e.h.Close()
	db := filepath.Join(e.cfg.DataDir, "hub.db")
	backup := filepath.Join(t.TempDir(), "hub.db.bak")
	copyFile(t, db, backup)

	// After the backup: a sale, its stamp printed.
	e.clock.Set(e.clock.Now().Add(30 * time.Minute))
	e.start()
	k = e.kiosk("kiosk-1")
	res := decode(t, k.ask(purchase("rs-2", "kiosk-1", "1966-F8CF-02", nil)))
	if res.Status != protocol.ResultOK {
		t.Fatalf("sale 2: %+v", res.Error)
	}
	lost, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	e.h.Close()

	// The disk is lost; ops restore the backup and declare it.
	for _, s := range []string{"", "-wal", "-shm"} {
		os.Remove(db + s)
	}
	copyFile(t, backup, db)
	h, err := hub.Open(ctx, e.cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	locked, floor, err := h.Ledger().Restored(ctx)
	h.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(locked) == 0 || locked[0] != lost.MPSDSerial || floor != lost.MPSDSerial+ledger.RestoreSerialGap {
		t.Fatalf("restored: locked %v, floor %d; want MPSD %d locked and the floor %d past it", locked, floor, lost.MPSDSerial, ledger.RestoreSerialGap)
	}

	e.clock.Set(e.clock.Now().Add(time.Hour))
	e.start()
	k = e.kiosk("kiosk-1")
	res = decode(t, k.ask(purchase("rs-3", "kiosk-1", "1966-F8CF-03", nil)))
	if res.Status != protocol.ResultOK {
		t.Fatalf("sale after the restore: %+v", res.Error)
	}
	next, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	if next.MPSDSerial <= floor {
		t.Fatalf("the stamp after the restore is on MPSD %d (AR %d), not past the floor %d; the lost stamp was MPSD %d AR %d",
			next.MPSDSerial, next.AR, floor, lost.MPSDSerial, lost.AR)
	}
	if got := e.openAlerts(alerts.Tamper, fmt.Sprintf("ledger/restore/%d", floor)); got != 1 {
		t.Fatalf("%d tamper alerts on ledger/restore/%d, want 1", got, floor)
	}
	e.check()
}

// copyFile copies a closed database file, as a backup would.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
