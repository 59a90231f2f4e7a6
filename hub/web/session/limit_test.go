package session

import (
	"context"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := NewLimiter(3, 10*time.Minute)
	l.Now = func() time.Time { return now }
	for range 3 {
		if ok, _ := l.Allow("login:a", "ip:1"); !ok {
			t.Fatal("refused before the limit")
		}
		l.Fail("login:a", "ip:1")
		l.Done("login:a", "ip:1")
	}
	if ok, wait := l.Allow("login:a", "ip:2"); ok || wait != 10*time.Minute {
		t.Fatalf("login a after 3 failures: %v %v", ok, wait)
	}
	if ok, _ := l.Allow("login:b", "ip:1"); ok {
		t.Fatal("address 1 after 3 failures was let through for another login")
	}
	if ok, _ := l.Allow("login:b", "ip:2"); !ok {
		t.Fatal("an untouched login and address were refused")
	}
	now = now.Add(10 * time.Minute)
	if ok, _ := l.Allow("login:a", "ip:1"); !ok {
		t.Fatal("still refused after the window")
	}
}

// Two hubs on one database count the same failures: a guesser who spreads
// tries over the hubs meets one limit, and a new window starts once the
// last one ended.
func TestLimiterShared(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		now := time.Unix(1_700_000_000, 0)
		hubs := []*Limiter{NewLimiter(4, 10*time.Minute), NewLimiter(4, 10*time.Minute)}
		for _, l := range hubs {
			l.Now, l.DB = func() time.Time { return now }, db
		}
		for i := range 4 {
			l := hubs[i%2]
			if ok, _ := l.Allow("login:a"); !ok {
				t.Fatalf("refused after %d failures spread over two hubs", i)
			}
			l.Fail("login:a")
			l.Done("login:a")
		}
		for i, l := range hubs {
			if ok, wait := l.Allow("login:a"); ok || wait != 10*time.Minute {
				t.Fatalf("hub %d after 4 failures over both: %v %v", i, ok, wait)
			}
		}
		now = now.Add(10 * time.Minute)
		if ok, _ := hubs[1].Allow("login:a"); !ok {
			t.Fatal("still refused after the window")
		}
		hubs[1].Fail("login:a") // the first of a new window
		hubs[1].Done("login:a")
		if ok, _ := hubs[0].Allow("login:a"); !ok {
			t.Fatal("one failure in a new window refused")
		}
		if err := SweepFailures(ctx, db, now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		var n int
		db.QueryRowContext(ctx, `SELECT COUNT(*) FROM login_failures`).Scan(&n)
		if n != 0 {
			t.Fatalf("%d counts left after the sweep", n)
		}
	})
}

// Tries sent at once count from the check: of 60 guesses that all arrive
// before any has failed, only the limit's worth are let through (before,
// all 60 were checked). A try counts until Done, or tryFor.
func TestLimiterCountsTriesUnderWay(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := NewLimiter(5, 15*time.Minute)
	l.Now = func() time.Time { return now }
	allowed := 0
	for range 60 {
		if ok, wait := l.Allow("login:a", "ip:1"); ok {
			allowed++
		} else if wait <= 0 {
			t.Fatal("refused with no wait")
		}
	}
	if allowed != 5 {
		t.Fatalf("%d of 60 guesses at once let through, want 5", allowed)
	}
	l.Done("login:a", "ip:1")
	if ok, _ := l.Allow("login:a", "ip:1"); !ok {
		t.Fatal("a try that was done still counted")
	}
	for range 5 {
		l.Fail("login:a", "ip:1")
		l.Done("login:a", "ip:1")
	}
	if ok, wait := l.Allow("login:a", "ip:1"); ok || wait < 14*time.Minute {
		t.Fatalf("after 5 failures: %v %v", ok, wait)
	}
	now = now.Add(15 * time.Minute)
	l.Allow("login:b", "ip:2") // never ended
	for range 4 {
		l.Allow("login:b", "ip:2")
	}
	if ok, _ := l.Allow("login:b", "ip:2"); ok {
		t.Fatal("a sixth try with five under way")
	}
	now = now.Add(tryFor)
	if ok, _ := l.Allow("login:b", "ip:2"); !ok {
		t.Fatal("tries never ended still count after tryFor")
	}
}
