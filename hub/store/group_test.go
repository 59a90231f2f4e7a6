package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// Concurrent group writes all land, share commits, and a failing one gets
// its own error without taking the others down; on both dialects.
func TestGroupExec(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `CREATE TABLE g (k INTEGER PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		const n = 200
		errs := make([]error, n+1)
		var wg sync.WaitGroup
		for i := range n + 1 {
			k := i
			if i == n {
				k = 7 // a duplicate key: exactly one of the two writes of k=7 fails
			}
			wg.Go(func() {
				_, errs[i] = db.GroupExec(ctx, `INSERT INTO g (k, v) VALUES (?, ?)`, k, fmt.Sprint(i))
			})
		}
		wg.Wait()
		failed := 0
		for _, err := range errs {
			if err != nil {
				failed++
			}
		}
		var rows int
		db.QueryRowContext(ctx, `SELECT COUNT(*) FROM g`).Scan(&rows)
		if failed != 1 || rows != n {
			t.Fatalf("%d writes failed and %d rows landed; want 1 and %d", failed, rows, n)
		}
		if k, err := db.GroupExec(ctx, `UPDATE g SET v = 'x' WHERE k < 10`); err != nil || k != 10 {
			t.Fatalf("update affected %d rows: %v", k, err)
		}
		db.Close()
		if _, err := db.GroupExec(ctx, `DELETE FROM g`); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
	})
}
