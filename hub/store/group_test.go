package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// Concurrent group writes all land, share commits, and a failing one gets
// its own error without taking the others down; on both dialects, durable
// and soft.
func TestGroupExec(t *testing.T) {
	t.Run("durable", func(t *testing.T) { testGroupExec(t, (*store.DB).GroupExec) })
	t.Run("soft", func(t *testing.T) { testGroupExec(t, (*store.DB).SoftExec) })
}

func testGroupExec(t *testing.T, exec func(*store.DB, context.Context, string, ...any) (int64, error)) {
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
				_, errs[i] = exec(db, ctx, `INSERT INTO g (k, v) VALUES (?, ?)`, k, fmt.Sprint(i))
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
		if k, err := exec(db, ctx, `UPDATE g SET v = 'x' WHERE k < 10`); err != nil || k != 10 {
			t.Fatalf("update affected %d rows: %v", k, err)
		}
		db.Close()
		if _, err := exec(db, ctx, `DELETE FROM g`); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
	})
}

// A batch runs its statements in order in the transaction, reports rows
// affected and rows read (none as sql.ErrNoRows), and a failing statement
// fails the batch and rolls the transaction back; on both dialects.
func TestBatch(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, `CREATE TABLE b (k INTEGER PRIMARY KEY, v BIGINT NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		var n1, n2 int64
		var got int64
		var missing error
		err = db.InBatchTx(ctx, func(tx *store.Tx) error {
			var b store.Batch
			b.Exec(nil, `INSERT INTO b (k, v) VALUES (?, ?)`, 1, int64(10))
			b.Exec(nil, `INSERT INTO b (k, v) VALUES (?, ?)`, 2, int64(20))
			b.Exec(&n1, `UPDATE b SET v = v + ? WHERE k >= ?`, int64(1), 1)
			b.Exec(&n2, `UPDATE b SET v = 0 WHERE k = ?`, 99)
			b.QueryRow(func(scan func(...any) error) error { return scan(&got) }, `SELECT v FROM b WHERE k = ?`, 2)
			b.QueryRow(func(scan func(...any) error) error { missing = scan(&got); return nil }, `SELECT v FROM b WHERE k = ?`, 3)
			if b.Len() != 6 {
				t.Errorf("Len %d", b.Len())
			}
			return tx.Run(ctx, &b)
		})
		if err != nil || n1 != 2 || n2 != 0 || got != 21 || !errors.Is(missing, sql.ErrNoRows) {
			t.Fatalf("batch: err %v, updated %d and %d, read %d, missing row %v", err, n1, n2, got, missing)
		}
		err = db.InBatchTx(ctx, func(tx *store.Tx) error {
			var b store.Batch
			b.Exec(nil, `INSERT INTO b (k, v) VALUES (?, ?)`, 3, int64(30))
			b.Exec(nil, `INSERT INTO b (k, v) VALUES (?, ?)`, 1, int64(0)) // duplicate key
			return tx.Run(ctx, &b)
		})
		var rows int
		db.QueryRowContext(ctx, `SELECT COUNT(*) FROM b`).Scan(&rows)
		if err == nil || !store.IsConflict(err) || rows != 2 {
			t.Fatalf("failing batch: err %v, %d rows (want a conflict and 2 rows)", err, rows)
		}
		// A commit whose batch fails rolls everything back, and leaves the
		// one connection fit for the next transaction (on SQLite the one
		// writing connection, beside one for this test's reads).
		if db.Dialect == store.SQLite {
			db.SetMaxOpenConns(2)
		} else {
			db.SetMaxOpenConns(1)
		}
		err = db.InBatchTx(ctx, func(tx *store.Tx) error {
			var b store.Batch
			b.Exec(nil, `INSERT INTO b (k, v) VALUES (?, ?)`, 4, int64(40))
			if err := tx.Run(ctx, &b); err != nil {
				return err
			}
			var c store.Batch
			c.Insert("b", []string{"k", "v"}, [][]any{{5, int64(50)}, {6, int64(60)}, {2, int64(0)}}) // 2 is taken
			return tx.Commit(ctx, &c)
		})
		db.QueryRowContext(ctx, `SELECT COUNT(*) FROM b`).Scan(&rows)
		if err == nil || rows != 2 {
			t.Fatalf("failing commit: err %v, %d rows (want an error and 2 rows)", err, rows)
		}
		err = db.InBatchTx(ctx, func(tx *store.Tx) error {
			var c store.Batch
			c.Insert("b", []string{"k", "v"}, [][]any{{5, int64(50)}, {6, int64(60)}, {7, int64(70)}})
			return tx.Commit(ctx, &c)
		})
		db.QueryRowContext(ctx, `SELECT COUNT(*) FROM b`).Scan(&rows)
		if err != nil || rows != 5 {
			t.Fatalf("commit after a failed one: err %v, %d rows (want 5)", err, rows)
		}
	})
}

// A soft write is visible to other connections as soon as SoftExec
// returns, and its connection really does not wait for the disk.
func TestSoftExecVisibleAndRelaxed(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, `CREATE TABLE s (k INTEGER PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		if n, err := db.SoftExec(ctx, `INSERT INTO s (k) VALUES (?)`, 1); err != nil || n != 1 {
			t.Fatalf("soft insert: %d %v", n, err)
		}
		other, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		var got int
		if err := other.QueryRowContext(ctx, other.Rebind(`SELECT k FROM s WHERE k = ?`), 1).Scan(&got); err != nil {
			t.Fatalf("another connection does not see the soft write: %v", err)
		}
		// The soft group's own setting, read through its connection.
		n, err := db.SoftExec(ctx, `UPDATE s SET k = k WHERE k = ? AND `+relaxed(db.Dialect), 1)
		if err != nil || n != 1 {
			t.Fatalf("the soft group's connection waits for the disk: %d rows, %v", n, err)
		}
		if db.Dialect == store.Postgres {
			if n, err := db.GroupExec(ctx, `UPDATE s SET k = k WHERE k = ? AND `+relaxed(db.Dialect), 1); err != nil || n != 0 {
				t.Fatalf("the durable group's connection does not wait for the disk: %d rows, %v", n, err)
			}
			return
		}
		// SQLite's one writing connection commits without an fsync; a
		// durable write returns once the WAL is synced after it.
		if commits, synced, _ := db.WALState(); synced >= commits {
			t.Fatalf("soft writes were synced: %d commits, %d synced", commits, synced)
		}
		if _, err := db.GroupExec(ctx, `INSERT INTO s (k) VALUES (?)`, 2); err != nil {
			t.Fatal(err)
		}
		if commits, synced, _ := db.WALState(); synced != commits {
			t.Fatalf("a durable write returned before the WAL was synced: %d commits, %d synced", commits, synced)
		}
	})
}

// Durable SQLite writers that commit while an fsync runs share the next
// one, and each returns only once its own commit is on disk.
func TestWALSyncShared(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE w (k INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			for j := range each {
				before, _, _ := db.WALState()
				err := db.InTx(ctx, func(tx *sql.Tx) error {
					_, err := tx.ExecContext(ctx, `INSERT INTO w (k) VALUES (?)`, i*each+j)
					return err
				})
				if err != nil {
					errs <- err
					return
				}
				// This writer's commit came after the ones counted before.
				if _, synced, _ := db.WALState(); synced <= before {
					errs <- fmt.Errorf("writer %d returned with %d synced, %d commits before its own", i, synced, before)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	commits, synced, syncs := db.WALState()
	if synced != commits || commits < writers*each {
		t.Fatalf("%d commits, %d synced", commits, synced)
	}
	t.Logf("%d commits, %d fsyncs", commits, syncs)
	if syncs >= commits {
		t.Fatalf("%d fsyncs for %d commits: none shared", syncs, commits)
	}
}

// relaxed is a condition true only on a connection that commits without
// waiting for the disk.
func relaxed(d store.Dialect) string {
	if d == store.Postgres {
		return `current_setting('synchronous_commit') = 'off'`
	}
	return `(SELECT synchronous FROM pragma_synchronous) = 1` // NORMAL
}

// A soft write's read runs after it in its transaction: it sees the row
// the write just made, and every write of the batch before it. When a
// batch fails and is redone one write at a time, each read still gets its
// own row.
func TestSoftExecRead(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, `CREATE TABLE r (k INTEGER PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		const n = 100
		seen := make([]int, n+1)
		errs := make([]error, n+1)
		var wg sync.WaitGroup
		for i := range n + 1 {
			k := i
			if i == n {
				k = 7 // a duplicate: one batch fails and is redone
			}
			wg.Go(func() {
				read := &store.Read{Query: `SELECT COUNT(*) FROM r WHERE k = ?`, Args: []any{k},
					Row: func(scan func(...any) error) error { return scan(&seen[i]) }}
				_, errs[i] = db.SoftExecRead(ctx, read, `INSERT INTO r (k) VALUES (?)`, k)
			})
		}
		wg.Wait()
		failed := 0
		for i, err := range errs {
			if err != nil {
				failed++
				continue
			}
			if seen[i] != 1 {
				t.Errorf("write %d's read saw %d rows of its own key, want 1", i, seen[i])
			}
		}
		if failed != 1 {
			t.Fatalf("%d writes failed, want the one duplicate", failed)
		}
	})
}

// After a failed fsync of the WAL the kernel may have dropped what it
// could not write, so no write succeeds again until the database is
// reopened, even when later fsyncs would; and the group commit does not
// redo the write whose sync failed, which did commit.
func TestFailedSyncFailsLaterWrites(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.GroupExec(ctx, `CREATE TABLE f (k INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	db.SetFsync(func(*os.File) error { return syscall.EIO })
	if _, err := db.GroupExec(ctx, `INSERT INTO f (k) VALUES (1)`); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a write whose fsync failed: %v, want EIO", err)
	}
	db.SetFsync(nil)
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO f (k) VALUES (2)`)
		return err
	})
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("a write after the failed fsync: %v, want the same failure", err)
	}
	if _, err := db.SoftExec(ctx, `INSERT INTO f (k) VALUES (3)`); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a soft write after the failed fsync: %v, want the same failure", err)
	}
	var ks []int64
	rows, err := db.QueryContext(ctx, `SELECT k FROM f ORDER BY k`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var k int64
		rows.Scan(&k)
		ks = append(ks, k)
	}
	if len(ks) != 1 || ks[0] != 1 {
		t.Fatalf("rows %v, want only the one whose sync failed ([1])", ks)
	}
}

// WarmRead sees every commit made before it, on both dialects.
func TestWarmRead(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, `CREATE TABLE w (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if _, err := db.GroupExec(ctx, db.Rebind(`INSERT INTO w (k, v) VALUES (?, ?)`), i, i); err != nil {
				t.Fatal(err)
			}
			var n int
			r := &store.Read{Query: `SELECT COUNT(*) FROM w`, Row: func(scan func(...any) error) error { return scan(&n) }}
			if err := db.WarmRead(ctx, r); err != nil || n != i+1 {
				t.Fatalf("WarmRead after %d commits counts %d, %v", i+1, n, err)
			}
		}
	})
}
