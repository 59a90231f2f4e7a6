package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/wait"
)

// One hub leads at a time; when it resigns (a clean stop) or its session
// ends (it died), the next hub to check leads.
func TestLeader(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := store.Open(ctx, dsn) // another hub's connections
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		now := time.Now()
		la, lb := a.Leader("hub-a", time.Minute), b.Leader("hub-b", time.Minute)
		if !la.Check(ctx, now) || lb.Check(ctx, now) {
			t.Fatalf("a leads %v, b leads %v; want only a", la.Held(), lb.Held())
		}
		if !la.Check(ctx, now) || lb.Check(ctx, now) {
			t.Fatal("leadership moved without a change")
		}
		la.Resign(ctx)
		if la.Held() || !lb.Check(ctx, now) {
			t.Fatalf("after a resigned: a %v, b %v; want b", la.Held(), lb.Held())
		}
		// b dies: on PostgreSQL its session ends with it (here the server
		// ends it), on SQLite its lease runs out.
		later := now
		if a.Dialect == store.SQLite {
			later = now.Add(2 * time.Minute)
		} else if _, err := a.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'`); err != nil {
			t.Fatal(err)
		}
		// The server ends the session a moment later; a hub checks again.
		wait.For(t, 10*time.Second, "another hub to lead once the leader died", func() bool { return la.Check(ctx, later) })
		if lb.Check(ctx, later) {
			t.Fatal("the dead leader's handle still leads")
		}
	})
}

// A leader that is paused, not dead, keeps its session and the lock; once
// its hub's lease has lapsed, the next hub to check ends that session and
// leads. A leader whose lease is live is left alone.
func TestPausedLeaderUnseated(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, pgtest.NewTestDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	paused, err := db.Conn(ctx) // what a paused hub's leader session looks like
	if err != nil {
		t.Fatal(err)
	}
	defer paused.Close()
	if _, err := paused.ExecContext(ctx, `SELECT pg_advisory_lock(x'6672616e6b'::bigint), set_config('application_name', $1, false)`, store.SessionName("hub-paused")); err != nil {
		t.Fatal(err)
	}
	if err := db.RenewHubLease(ctx, "hub-paused", now, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Another database's leader on the same server, named after a hub
	// whose lease here has lapsed, is not ours to end.
	other, err := store.Open(ctx, pgtest.NewTestDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	elsewhere, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer elsewhere.Close()
	if _, err := elsewhere.ExecContext(ctx, `SELECT pg_advisory_lock(x'6672616e6b'::bigint), set_config('application_name', $1, false)`, store.SessionName("hub-elsewhere")); err != nil {
		t.Fatal(err)
	}
	if err := db.RenewHubLease(ctx, "hub-elsewhere", now, now, -time.Minute); err != nil {
		t.Fatal(err)
	}
	l := db.Leader("hub-b", time.Minute)
	if l.Check(ctx, now) || l.Check(ctx, now.Add(30*time.Second)) {
		t.Fatal("a hub led while the leader's lease was live")
	}
	if err := paused.PingContext(ctx); err != nil {
		t.Fatalf("the live leader's session was ended: %v", err)
	}
	lapse(t, db, "hub-paused") // the paused hub renewed nothing
	wait.For(t, 10*time.Second, "another hub to lead once the paused leader's lease lapsed", func() bool { return l.Check(ctx, now) })
	if err := paused.PingContext(ctx); err == nil {
		t.Fatal("the paused leader's session goes on")
	}
	if err := elsewhere.PingContext(ctx); err != nil {
		t.Fatalf("another database's leader was ended: %v", err)
	}
}

// A hub's name is its host's, its pid and more: a long host name, or one
// not in ASCII, is not what PostgreSQL keeps as a session's name. Such a
// hub leads, and once paused past its lease, another takes over.
func TestLeaderWithALongName(t *testing.T) {
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
	now := time.Now()
	long := "hüb-" + strings.Repeat("x", 70) + ".example.com/123456/abcdef12"
	if err := a.RenewHubLease(ctx, long, now, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	la, lb := a.Leader(long, time.Minute), b.Leader("hub-b", time.Minute)
	if !la.Check(ctx, now) || lb.Check(ctx, now) {
		t.Fatalf("a leads %v, b leads %v; want only a", la.Held(), lb.Held())
	}
	lapse(t, a, long) // a renewed nothing
	wait.For(t, 10*time.Second, "b to lead once a's lease lapsed", func() bool { return lb.Check(ctx, now) })
}
