package claims_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/claims"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// The database server stops answering on the hub's claims session (a
// primary frozen, or cut off by the network before a failover: its TCP
// connection neither answers nor resets). A claim fails once
// store.WriteTimeout has passed, instead of holding every purchase of the
// hub until the kernel gives the connection up, and the next claim is taken
// on another session.
func TestClaimFailsWhenTheServerStopsAnswering(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewTestDatabase(t)
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	other, err := store.Open(ctx, dsn) // another hub, to look
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	c := claims.New(db, "hub-a", time.Now)
	rel, err := c.Take(ctx, "kiosk-1", "r-1")
	if err != nil {
		t.Fatal(err)
	}
	defer rel()
	var pid int
	if err := other.QueryRowContext(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted LIMIT 1`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		rel2, err := c.Take(ctx, "kiosk-1", "r-2")
		if err == nil {
			rel2()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a claim was taken on a session whose server does not answer")
		}
	case <-time.After(store.WriteTimeout + 10*time.Second):
		t.Fatalf("a claim has not returned %s after the server stopped answering: every purchase of the hub waits on the one session", time.Since(start).Round(time.Second))
	}
	syscall.Kill(pid, syscall.SIGCONT)
	stopped = false
	rel3, err := c.Take(ctx, "kiosk-1", "r-3")
	if err != nil {
		t.Fatalf("a claim once the server answers again: %v", err)
	}
	rel3()
}
