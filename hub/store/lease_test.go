package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/wait"
)

// Hubs sharing PostgreSQL judge each other's leases by the server's clock,
// not their own: a hub whose clock runs ahead by more than the lease
// neither ends a live leader's session and leads, nor takes a live hub for
// dead; one whose clock runs behind is not taken for dead by the others.
func TestSkewedHubLeavesLiveLeaderAlone(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewTestDatabase(t)
	a, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const ttl = 30 * time.Second              // a hub lease, at the recommended --lease-ttl 15s
	aNow := time.Now().Add(-45 * time.Second) // a's clock runs behind
	bNow := time.Now().Add(45 * time.Second)  // b's runs ahead
	if err := a.RenewHubLease(ctx, "hub-a", aNow, aNow, ttl); err != nil {
		t.Fatal(err)
	}
	if err := b.RenewHubLease(ctx, "hub-b", bNow, bNow, ttl); err != nil {
		t.Fatal(err)
	}
	la, lb := a.Leader("hub-a", ttl), b.Leader("hub-b", ttl)
	if !la.Check(ctx, aNow) {
		t.Fatal("a does not lead")
	}
	for _, c := range []struct {
		judge *store.DB
		now   time.Time
		hub   string
	}{{b, bNow, "hub-a"}, {a, aNow, "hub-b"}, {b, bNow, "hub-b"}, {a, aNow, "hub-a"}} {
		if alive, err := c.judge.HubAlive(ctx, c.hub, c.now); err != nil || !alive {
			t.Errorf("%s, renewed just now, judged at %s: alive %v, %v", c.hub, c.now.Format(time.TimeOnly), alive, err)
		}
	}
	// The server ends a session a moment after it is told to: b checks
	// for a while, as it would each round.
	wait.Never(t, 2*time.Second, "b, whose clock runs 45 s ahead, ended live leader a's session and leads", func() bool {
		return lb.Check(ctx, bNow)
	})
	if !la.Check(ctx, aNow) {
		t.Fatal("a no longer leads")
	}
}

// On PostgreSQL a lease lapses by the server's clock, whatever the hub's:
// a paused leader's session is ended once its lease has lapsed there, and
// a hub lease written already lapsed (a negative ttl) is not alive.
func TestHubLeaseLapsesByTheServersClock(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewTestDatabase(t)
	a, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	now := time.Now().Add(time.Hour) // no hub's clock counts
	if err := a.RenewHubLease(ctx, "hub-a", now, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.RenewHubLease(ctx, "hub-dead", now, now, -time.Minute); err != nil {
		t.Fatal(err)
	}
	if alive, err := b.HubAlive(ctx, "hub-dead", now.Add(-2*time.Hour)); err != nil || alive {
		t.Fatalf("a hub whose lease lapsed a minute ago on the server's clock: alive %v, %v", alive, err)
	}
	la, lb := a.Leader("hub-a", time.Minute), b.Leader("hub-b", time.Minute)
	if !la.Check(ctx, now) || lb.Check(ctx, now) {
		t.Fatalf("a leads %v, b leads %v; want only a", la.Held(), lb.Held())
	}
	lapse(t, a, "hub-a") // a is paused and renews nothing
	wait.For(t, 10*time.Second, "b to lead once a's lease lapsed on the server's clock", func() bool { return lb.Check(ctx, now) })
}

// A job lease on PostgreSQL is also held and lapses by the server's clock:
// a holder whose clock runs ahead does not take a live lease.
func TestJobLeaseByTheServersClock(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, pgtest.NewTestDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	take := func(holder string, at time.Time) bool {
		t.Helper()
		ok, err := db.TryLease(ctx, "reports", holder, at, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	now := time.Now()
	if !take("hub-a", now) || take("hub-b", now.Add(time.Hour)) {
		t.Fatal("a holder whose clock runs an hour ahead took a live lease")
	}
	if _, err := db.ExecContext(ctx, `UPDATE job_leases SET until = until - $1 WHERE name = 'reports'`, 2*time.Minute.Microseconds()); err != nil {
		t.Fatal(err)
	}
	if !take("hub-b", now.Add(-time.Hour)) || take("hub-a", now) {
		t.Fatal("the lapsed lease did not pass to hub-b, whose clock runs an hour behind")
	}
}

// lapse moves hub's lease on PostgreSQL, judged by the server's clock, two
// minutes into the past, as if the hub had renewed nothing since.
func lapse(t *testing.T, db *store.DB, hub string) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), `UPDATE hub_leases SET until = until - $1 WHERE hub = $2`,
		2*time.Minute.Microseconds(), hub); err != nil {
		t.Fatal(err)
	}
}
