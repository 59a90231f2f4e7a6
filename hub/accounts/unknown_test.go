package accounts

import (
	"context"
	"errors"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// An unknown login is compared against a hash at the hub's cost, not a
// fixed one: at another cost it would answer faster or slower than a
// known login, telling a stranger which logins exist.
func TestUnknownLoginAtTheHubsCost(t *testing.T) {
	var mu sync.Mutex
	var costs []int
	compareHash = func(hash, pw []byte) error {
		c, _ := bcrypt.Cost(hash)
		mu.Lock()
		costs = append(costs, c)
		mu.Unlock()
		return bcrypt.CompareHashAndPassword(hash, pw)
	}
	t.Cleanup(func() { compareHash = bcrypt.CompareHashAndPassword })
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		for _, cost := range []int{bcrypt.MinCost, bcrypt.MinCost + 1} {
			a := New(db, nil)
			a.Cost = cost
			mu.Lock()
			costs = nil
			mu.Unlock()
			for range 2 {
				if _, err := a.Authenticate(ctx, "nobody", "some password"); !errors.Is(err, ErrAuth) {
					t.Fatalf("an unknown login: %v, want ErrAuth", err)
				}
			}
			mu.Lock()
			got := costs
			mu.Unlock()
			if len(got) != 2 || got[0] != cost || got[1] != cost {
				t.Fatalf("an unknown login twice at cost %d compared at costs %v, want [%d %d]", cost, got, cost, cost)
			}
		}
	})
}
