package store_test

import (
	"context"
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
