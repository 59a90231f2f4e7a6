package fleet_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// On SQLite the registry keeps what it read until another process writes
// to the database: the hub's own writes (its sales) leave a kiosk cached
// past cacheFor, and a kiosk retired from a shell (another process, here
// another connection) stops selling within it.
func TestCachedUntilAnotherProcessWrites(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hub.db")
	db, err := store.Open(ctx, path)
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
	// The hub's own write, behind the registry's back: not seen, as only
	// a foreign write clears the cache (the hub's own changes Forget).
	if _, err := db.GroupExec(ctx, `UPDATE kiosks SET locked_at = 1, locked_by = 'test' WHERE kiosk_id = 'kiosk-1'`); err != nil {
		t.Fatal(err)
	}
	wait.Never(t, 3*time.Second, "the cached kiosk read again after the hub's own write", func() bool {
		_, err := reg.UserID(ctx, "kiosk-1")
		return err != nil
	})
	if _, err := db.GroupExec(ctx, `UPDATE kiosks SET locked_at = NULL, locked_by = NULL WHERE kiosk_id = 'kiosk-1'`); err != nil {
		t.Fatal(err)
	}
	shell, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer shell.Close()
	if err := fleet.New(shell).Retire(ctx, "kiosk-1", "stolen", true); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "the kiosk retired from a shell refused", func() bool {
		_, err := reg.UserID(ctx, "kiosk-1")
		return protocol.AsError(err).Code == protocol.CodeUnknownKiosk
	})
}
