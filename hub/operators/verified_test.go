package operators

import (
	"context"
	"errors"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// countCompares makes compareHash record the cost of every hash it is
// handed, for the rest of the test.
func countCompares(t *testing.T) (costs func() []int) {
	var mu sync.Mutex
	var seen []int
	compareHash = func(hash, pw []byte) error {
		c, _ := bcrypt.Cost(hash)
		mu.Lock()
		seen = append(seen, c)
		mu.Unlock()
		return bcrypt.CompareHashAndPassword(hash, pw)
	}
	t.Cleanup(func() { compareHash = bcrypt.CompareHashAndPassword })
	return func() []int {
		mu.Lock()
		defer mu.Unlock()
		out := seen
		seen = nil
		return out
	}
}

func openStore(t *testing.T, dsn string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// An operator's right password pays for bcrypt once, not on every console
// login: the login limits count only failures, so store staff logging in
// again and again could keep the hub's cores busy. A password reset on
// another hub (another Operators on the same database) is checked again
// at once: the old one stops working.
func TestRightPasswordCheckedOnce(t *testing.T) {
	costs := countCompares(t)
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := openStore(t, dsn)
		here, there := New(db, nil), New(db, nil)
		here.Cost, there.Cost = bcrypt.MinCost, bcrypt.MinCost
		if _, err := here.Add(ctx, "olga", "operator password 1", RoleOps, nil); err != nil {
			t.Fatal(err)
		}
		costs()
		for range 5 {
			if op, err := here.Authenticate(ctx, "olga", "operator password 1"); err != nil || op.Login != "olga" {
				t.Fatalf("the right password: %+v, %v", op, err)
			}
		}
		if n := len(costs()); n != 1 {
			t.Fatalf("5 logins with the right password paid %d bcrypt checks, want 1", n)
		}
		if _, err := here.Authenticate(ctx, "olga", "a wrong password"); !errors.Is(err, ErrAuth) {
			t.Fatalf("a wrong password after a right one: %v", err)
		}
		if _, err := there.Add(ctx, "olga", "operator password 2", RoleOps, nil); err != nil {
			t.Fatal(err)
		}
		costs()
		if _, err := here.Authenticate(ctx, "olga", "operator password 1"); !errors.Is(err, ErrAuth) {
			t.Fatalf("the old password, reset on another hub: %v", err)
		}
		if _, err := here.Authenticate(ctx, "olga", "operator password 2"); err != nil {
			t.Fatalf("the new password: %v", err)
		}
		if n := len(costs()); n != 2 {
			t.Fatalf("the old and the new password after a reset: %d bcrypt checks, want 2", n)
		}
	})
}

// An unknown login is compared against a hash at the hub's cost, not a
// fixed one: at another cost it would answer faster or slower than a
// known login, telling a stranger which logins exist.
func TestUnknownLoginAtTheHubsCost(t *testing.T) {
	costs := countCompares(t)
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := openStore(t, dsn)
		for _, cost := range []int{bcrypt.MinCost, bcrypt.MinCost + 1} {
			ops := New(db, nil)
			ops.Cost = cost
			for range 2 {
				if _, err := ops.Authenticate(ctx, "nobody", "operator password 1"); !errors.Is(err, ErrAuth) {
					t.Fatalf("an unknown login: %v, want ErrAuth", err)
				}
			}
			if got := costs(); len(got) != 2 || got[0] != cost || got[1] != cost {
				t.Fatalf("an unknown login twice at cost %d compared at costs %v, want [%d %d]", cost, got, cost, cost)
			}
		}
	})
}
