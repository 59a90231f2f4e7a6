package store_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/wait"
)

// A hub upgraded in a running cluster migrates the schema while the other
// hubs sell. A migration waiting for a table's lock (behind a long read,
// such as the leader's ledger check) queued every later statement on that
// table behind it, with no end: every hub's sales stopped. It now waits at
// most a second at a time, giving way in between, so a sale's statement
// goes through, and the migration is done once the read ends.
func TestMigrationGivesWayToRunningHubs(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewTestDatabase(t)
	old, err := store.OpenVersion(ctx, dsn, 45)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	read, err := old.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer read.Rollback()
	var n int
	if err := read.QueryRowContext(ctx, `SELECT COUNT(*) FROM sheets`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	migrated := make(chan error, 1)
	go func() {
		db, err := store.OpenVersion(ctx, dsn, 46)
		if err == nil {
			db.Close()
		}
		migrated <- err
	}()
	wait.For(t, 30*time.Second, "the migration waiting for the sheets table", func() bool {
		var waiting int
		err := old.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND relation = 'sheets'::regclass`).Scan(&waiting)
		return err == nil && waiting > 0
	})
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := old.ExecContext(sctx, `SELECT 1 FROM sheets WHERE serial = 0`); err != nil {
		t.Fatalf("a sale's statement on sheets stalled behind the waiting migration: %v", err)
	}
	select {
	case err := <-migrated:
		t.Fatalf("migrated while a read held its table: %v", err)
	default:
	}
	read.Rollback()
	select {
	case err := <-migrated:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the migration was not done a minute after the read ended")
	}
}
