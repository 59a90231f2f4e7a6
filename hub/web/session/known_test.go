package session

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// Strangers' wrong passwords from many addresses meet the account-wide
// limit, and so do new addresses, the owner's too; but the owner, from an
// address they logged in from, is not held out by them (every hub of the
// cluster knows the address). Its own failures still meet the pair limit.
func TestKnownAddressPassesTheAccountLimit(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		now := time.Now()
		clock := func() time.Time { return now }
		hub1, hub2 := NewLogins("console", nil).Share(db), NewLogins("console", nil).Share(db)
		hub1.SetNow(clock)
		hub2.SetNow(clock)
		try := func(l *Logins, addr string, fail bool) bool {
			t.Helper()
			r := reqFrom(addr)
			ok, _ := l.Allow(r, "olivia")
			if ok && fail {
				l.Fail(r, "olivia")
			}
			if ok && !fail {
				l.Succeeded(r, "olivia")
			}
			if ok {
				l.Done(r, "olivia")
			}
			return ok
		}
		const home = "198.51.100.1:5555"
		if !try(hub1, home, false) {
			t.Fatal("the owner's first login refused")
		}
		// A stranger's own account "Olivia", logged in from their address,
		// makes that address known for "Olivia" only: logins differ by case.
		if r := reqFrom("203.0.113.99:5555"); true {
			hub1.Succeeded(r, "Olivia")
		}
		for i := range AccountFailures { // PairFailures-1 from each address
			if !try(hub1, fmt.Sprintf("203.0.113.%d:5555", i/(PairFailures-1)+1), true) {
				t.Fatalf("guess %d refused before the account's limit", i+1)
			}
		}
		if try(hub2, "203.0.113.99:5555", false) {
			t.Error("a new address passed the account's limit")
		}
		if !try(hub2, home, false) {
			t.Error("the owner, from the address they logged in from, held out by strangers' guesses")
		}
		for range PairFailures {
			try(hub2, home, true)
		}
		if try(hub1, home, false) {
			t.Error("the known address passed its own pair limit")
		}
		now = now.Add(KnownFor + LoginWindow)
		for i := range AccountFailures {
			try(hub1, fmt.Sprintf("203.0.113.%d:5555", i/(PairFailures-1)+1), true)
		}
		if try(hub2, home, false) {
			t.Error("an address known longer ago than KnownFor passed the account's limit")
		}
	})
}
