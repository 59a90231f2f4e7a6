package claims_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/claims"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/wait"
)

// twoHubs opens dsn for two live hubs, a and b, whose clock is *now, and
// returns b's database. On PostgreSQL each hub has sessions of its own, as
// hub processes do. kill is hub a's death: its sessions end (PostgreSQL)
// and its lease lapses (both).
func twoHubs(t *testing.T, dsn string) (db *store.DB, now *time.Time, a, b *claims.Claims, kill func()) {
	t.Helper()
	ctx := context.Background()
	open := func() *store.DB {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	db = open()
	dbA := db
	if db.Dialect == store.Postgres {
		dbA = open()
	}
	now = new(time.Time)
	*now = time.UnixMicro(1_700_000_000_000_000)
	clock := func() time.Time { return *now }
	for _, h := range []string{"hub-a", "hub-b"} {
		if err := db.RenewHubLease(ctx, h, *now, *now, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	kill = func() {
		if dbA != db {
			dbA.Close()
		}
		*now = now.Add(2 * time.Minute)
		if err := db.RenewHubLease(ctx, "hub-b", *now, *now, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	return db, now, claims.New(dbA, "hub-a", clock), claims.New(db, "hub-b", clock), kill
}

// Two hubs on one database: a request is held by one at a time, the other
// waits for it, a dead hub's claim is taken over at once, and a live hub's
// never.
func TestOneHubAtATime(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, now, a, b, kill := twoHubs(t, dsn)

		// Many goroutines on both hubs: never two holders at once.
		var holders, most, served atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			c := a
			if i%2 == 1 {
				c = b
			}
			wg.Go(func() {
				release, err := c.Take(ctx, "k1", "r1")
				if err != nil {
					t.Error(err)
					return
				}
				n := holders.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				served.Add(1)
				holders.Add(-1)
				release()
			})
		}
		wg.Wait()
		if most.Load() != 1 || served.Load() != 16 {
			t.Fatalf("at most %d holders at once, %d served; want 1 and 16", most.Load(), served.Load())
		}

		// A live hub's claim is not taken: TryTake says no, Take gives up
		// with ErrBusy when its context ends.
		release, err := a.Take(ctx, "k1", "r2")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, err := b.TryTake(ctx, "k1", "r2"); ok || err != nil {
			t.Fatalf("took a live hub's claim: %v %v", ok, err)
		}
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		if _, err := b.Take(short, "k1", "r2"); !errors.Is(err, claims.ErrBusy) {
			t.Fatalf("Take of a live hub's claim: %v, want ErrBusy", err)
		}
		cancel()
		// A claim nobody will come back for: a dies holding it.
		if _, err := a.Take(ctx, "k2", "r3"); err != nil {
			t.Fatal(err)
		}
		// Hub a dies: b takes its claims over at once.
		kill()
		rb2, ok, err := b.TryTake(ctx, "k1", "r2")
		if !ok || err != nil {
			t.Fatalf("dead hub's claim not taken over: %v %v", ok, err)
		}
		release() // a's late release must not free b's claim
		if _, ok, _ := a.TryTake(ctx, "k1", "r2"); ok {
			t.Fatal("a dead hub's late release freed the claim its taker holds")
		}
		rb2()

		if db.Dialect == store.Postgres {
			// Claims are the sessions' locks: no row was ever written,
			// and the dead hub's went with its session.
			var rows int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM request_claims`).Scan(&rows); err != nil || rows != 0 {
				t.Fatalf("%d claim rows (%v), want 0", rows, err)
			}
			r3, ok, err := b.TryTake(ctx, "k2", "r3")
			if !ok || err != nil {
				t.Fatalf("a dead hub's other claim not taken over: %v %v", ok, err)
			}
			r3()
			return
		}
		// A claim row nobody came back for is swept.
		*now = now.Add(2 * time.Hour)
		if err := db.RenewHubLease(ctx, "hub-b", *now, *now, time.Minute); err != nil {
			t.Fatal(err)
		}
		if n, err := b.Sweep(ctx, time.Hour); n != 1 || err != nil {
			t.Fatalf("swept %d, %v; want 1", n, err)
		}
		if _, ok, _ := b.TryTake(ctx, "k2", "r3"); !ok {
			t.Fatal("a swept claim cannot be taken")
		}
	})
}

// A caller whose time runs out while Take is still asking the database
// gets ErrBusy, as when it runs out waiting, not the store's error: the
// request's outcome is still unknown, and the kiosk asks again. (CI once
// got "context deadline exceeded" from a busy PostgreSQL here.)
func TestTakeOutOfTimeIsBusy(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		c := claims.New(db, "hub-a", nil)
		ended, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.Take(ended, "k1", "r1"); !errors.Is(err, claims.ErrBusy) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Take with its time run out: %v, want ErrBusy with the cause", err)
		}
		release, err := c.Take(ctx, "k1", "r1") // nothing was left held
		if err != nil {
			t.Fatal(err)
		}
		release()
	})
}

// The read taken with a claim sees what the claim's earlier holder
// recorded before it let go, also when the claim had to be waited for;
// a claim taken over from a dead hub reports that its read did not run
// under it, and the caller reads for itself.
func TestReadUnderTheClaim(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, now, a, b, kill := twoHubs(t, dsn)
		// What a hub "records" while it holds k1/r1: a claim of another
		// scope stands in for the answer.
		var answers int
		read := &store.Read{Query: `SELECT COUNT(*) FROM hub_leases WHERE hub = 'answer-r1'`,
			Row: func(scan func(...any) error) error { return scan(&answers) }}

		ra, err := a.Take(ctx, "k1", "r1")
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan bool, 1)
		go func() {
			rb, read, err := b.TakeReading(ctx, "k1", "r1", read)
			if err != nil {
				t.Error(err)
				got <- false
				return
			}
			rb()
			got <- read
		}()
		// Hub b asks while a holds the claim; a records, then lets go.
		if err := db.RenewHubLease(ctx, "answer-r1", *now, *now, time.Minute); err != nil {
			t.Fatal(err)
		}
		ra()
		select {
		case underClaim := <-got:
			if !underClaim || answers != 1 {
				t.Fatalf("read under the claim %v, saw %d answers; want true and 1", underClaim, answers)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("hub b never took the released claim")
		}

		// Hub a dies holding k1/r2: b takes it over. A row taken over
		// from a dead hub says its read did not run under it; a lock the
		// dead session let go of is taken as any other.
		if _, err := a.Take(ctx, "k1", "r2"); err != nil {
			t.Fatal(err)
		}
		kill()
		rb, underClaim, err := b.TakeReading(ctx, "k1", "r2", read)
		if err != nil {
			t.Fatal(err)
		}
		rb()
		if want := db.Dialect == store.Postgres; underClaim != want {
			t.Fatalf("a claim taken over from a dead hub says its read ran under it: %v, want %v", underClaim, want)
		}
	})
}

// A hub serving its SQLite database alone holds its claims in the process:
// one holder at a time, a held claim not taken by TryTake, no row written,
// and the read left to the caller.
func TestAloneWritesNoRows(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := claims.Alone(db, "hub-a", nil)
	var holders, most atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			release, err := c.Take(ctx, "k1", "r1")
			if err != nil {
				t.Error(err)
				return
			}
			n := holders.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			holders.Add(-1)
			release()
		})
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d holders at once, want 1", most.Load())
	}
	ran := false
	read := &store.Read{Query: `SELECT 1`, Row: func(scan func(...any) error) error { ran = true; var x int; return scan(&x) }}
	release, underClaim, err := c.TakeReading(ctx, "k1", "r2", read)
	if err != nil || underClaim || ran {
		t.Fatalf("TakeReading alone: read under the claim %v, ran %v, %v; want neither", underClaim, ran, err)
	}
	if _, ok, err := c.TryTake(ctx, "k1", "r2"); ok || err != nil {
		t.Fatalf("TryTake took a claim this process holds: %v %v", ok, err)
	}
	var rows int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM request_claims`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("%d claim rows (%v), want 0", rows, err)
	}
	release()
	r3, ok, err := c.TryTake(ctx, "k1", "r2")
	if !ok || err != nil {
		t.Fatalf("a released claim cannot be taken: %v %v", ok, err)
	}
	r3()
}

// A soft batch that fails closes its PostgreSQL session rather than put it
// back in the pool, so the claims that session held go with it (another
// hub may then serve those requests; their commits decide which sale
// stands) and are never left locked by a pooled session nobody releases
// them on. A claim row outlives the failure.
func TestFailedSoftBatchLetsGo(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		dbA, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer dbA.Close()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		a, b := claims.New(dbA, "hub-a", nil), claims.New(db, "hub-b", nil)
		for _, h := range []string{"hub-a", "hub-b"} {
			if err := db.RenewHubLease(ctx, h, time.Now(), time.Now(), time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		release, err := a.Take(ctx, "k1", "r1")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		// A statement that fails as it runs in hub a's soft session.
		if _, err := dbA.SoftExec(ctx, `INSERT INTO hub_leases (hub) VALUES (?)`, "no-until"); err == nil {
			t.Fatal("a failing soft statement did not fail")
		}
		if db.Dialect == store.Postgres {
			// The server lets go of the closed session's locks as its
			// backend exits, a moment after the close.
			if err := wait.Poll(10*time.Second, func() error {
				rb, ok, err := b.TryTake(ctx, "k1", "r1")
				if err != nil || !ok {
					return fmt.Errorf("claim not free after the holder's soft batch failed: %v %v", ok, err)
				}
				rb()
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		} else if _, ok, err := b.TryTake(ctx, "k1", "r1"); ok || err != nil {
			t.Fatalf("a claim row taken after its holder's soft batch failed: %v %v", ok, err)
		}
		// Hub a's next claims work, on a new session.
		r2, err := a.Take(ctx, "k1", "r2")
		if err != nil {
			t.Fatal(err)
		}
		r2()
	})
}
