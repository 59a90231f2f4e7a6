package fleet_test

import (
	"context"
	"errors"
	"testing"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// A kiosk with any sale, or any payment, keeps its store: Add in another
// store refuses it with invalid_request and changes nothing (the new store
// is not even made). Add in its own store, and a move of a kiosk with
// neither, work.
func TestKioskWithHistoryKeepsItsStore(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		reg := fleet.New(db)
		for _, k := range []string{"sold", "paid", "idle"} {
			if _, err := reg.Add(ctx, k, "store-1"); err != nil {
				t.Fatal(err)
			}
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO sales (kiosk_id, request_id, body_hash, status, total, result, created_at) VALUES ('sold', 'r1', ?, 'rejected', 0, ?, 1)`,
				[]any{[]byte{1}, []byte("{}")}},
			{`INSERT INTO payments (kiosk_id, request_id, method, attempt_key, amount, state, created_at, updated_at) VALUES ('paid', 'r1', 'card', 'a1', 780, 'voided', 1, 1)`, nil},
		} {
			if _, err := db.ExecContext(ctx, db.Rebind(q.sql), q.args...); err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range []string{"sold", "paid"} {
			if _, err := reg.Add(ctx, k, "store-2"); !errors.Is(err, &protocol.Error{Code: protocol.CodeInvalidRequest}) {
				t.Errorf("%s moved to store-2: %v, want invalid_request", k, err)
			}
			if got, err := reg.Get(ctx, k); err != nil || got.Store != "store-1" {
				t.Errorf("%s after the refused move: %+v %v", k, got, err)
			}
			if _, err := reg.Add(ctx, k, "store-1"); err != nil {
				t.Errorf("%s added again in its own store: %v", k, err)
			}
		}
		var stores int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM stores WHERE id = 'store-2'`).Scan(&stores); err != nil || stores != 0 {
			t.Errorf("store-2 made by the refused moves: %d %v", stores, err)
		}
		if _, err := reg.Add(ctx, "idle", "store-2"); err != nil {
			t.Fatalf("idle, which never sold, moved: %v", err)
		}
		if got, err := reg.Get(ctx, "idle"); err != nil || got.Store != "store-2" {
			t.Errorf("idle after its move: %+v %v", got, err)
		}
	})
}
