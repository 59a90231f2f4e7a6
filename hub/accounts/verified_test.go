package accounts

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// A right password pays for bcrypt once, not on every login: the login
// limits count only failures, so 30 clients logging in again and again
// with their own passwords slowed another customer's login from 255 ms to
// 3 s. A password changed on another hub (another Accounts on the same
// database) is checked again at once: the old one stops working.
func TestRightPasswordCheckedOnce(t *testing.T) {
	var compares atomic.Int32
	compareHash = func(hash, pw []byte) error {
		compares.Add(1)
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
		here, there := New(db, nil), New(db, nil)
		here.Cost, there.Cost = bcrypt.MinCost, bcrypt.MinCost
		acct, err := here.Create(ctx, "alice", "first password")
		if err != nil {
			t.Fatal(err)
		}
		compares.Store(0)
		for range 5 {
			if _, err := here.Authenticate(ctx, "alice", "first password"); err != nil {
				t.Fatal(err)
			}
		}
		if n := compares.Load(); n != 1 {
			t.Fatalf("5 logins with the right password paid %d bcrypt checks, want 1", n)
		}
		if _, err := here.Authenticate(ctx, "alice", "a wrong password"); !errors.Is(err, ErrAuth) {
			t.Fatalf("a wrong password after a right one: %v", err)
		}
		if err := there.ChangePassword(ctx, acct.ID, "first password", "second password"); err != nil {
			t.Fatal(err)
		}
		if _, err := here.Authenticate(ctx, "alice", "first password"); !errors.Is(err, ErrAuth) {
			t.Fatalf("the old password, changed on another hub: %v", err)
		}
		if _, err := here.Authenticate(ctx, "alice", "second password"); err != nil {
			t.Fatalf("the new password: %v", err)
		}
	})
}
