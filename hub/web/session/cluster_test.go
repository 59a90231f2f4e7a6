package session

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// hubsOn are n limiters of max tries per window on one PostgreSQL
// database, as n hubs of a cluster have, on one clock.
func hubsOn(t *testing.T, n, max int, now *time.Time) []*Limiter {
	t.Helper()
	db, err := store.Open(context.Background(), pgtest.NewTestDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	hubs := make([]*Limiter, n)
	for i := range hubs {
		hubs[i] = NewLimiter(max, 15*time.Minute)
		hubs[i].Now, hubs[i].DB = func() time.Time { return *now }, db
	}
	return hubs
}

// Guesses sent at once, spread over three hubs of one database, meet one
// limit: a try under way counts on every hub from the moment one let it
// through (before, each hub let the limit's worth through: 15 of 60). A
// try ends on every hub at Done, and one its hub never ended (the hub
// was killed mid-check) stops counting after tryFor.
func TestLimiterTriesUnderWayAcrossHubs(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	hubs := hubsOn(t, 3, 5, &now)
	allowed := 0
	for i := range 60 {
		if ok, wait := hubs[i%len(hubs)].Allow("login:a", "ip:1"); ok {
			allowed++
		} else if wait <= 0 {
			t.Fatal("refused with no wait")
		}
	}
	if allowed != 5 {
		t.Fatalf("%d of 60 guesses at once over %d hubs let through, want 5 (one limit)", allowed, len(hubs))
	}
	hubs[0].Done("login:a", "ip:1")
	if ok, _ := hubs[1].Allow("login:a", "ip:1"); !ok {
		t.Fatal("a try done on one hub still counts on another")
	}
	if ok, _ := hubs[2].Allow("login:a", "ip:1"); ok {
		t.Fatal("a sixth try with five under way")
	}
	// Hub 0 dies with its tries under way; past tryFor they count no more.
	now = now.Add(tryFor)
	if ok, _ := hubs[2].Allow("login:a", "ip:1"); !ok {
		t.Fatal("tries a dead hub never ended still count after tryFor")
	}
	// Failures and tries under way add up across hubs.
	now = now.Add(tryFor)
	for range 3 {
		hubs[1].Fail("login:b")
	}
	if ok, _ := hubs[0].Allow("login:b"); !ok {
		t.Fatal("refused under the limit")
	}
	if ok, _ := hubs[2].Allow("login:b"); !ok {
		t.Fatal("refused under the limit")
	}
	if ok, wait := hubs[1].Allow("login:b"); ok || wait != time.Second {
		t.Fatalf("3 failures and 2 tries under way: %v %v, want refused for a second", ok, wait)
	}
}

// The same, truly at once: 60 guesses in as many goroutines over three
// hubs, none ended before all are answered.
func TestLimiterTriesAtOnceAcrossHubs(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	hubs := hubsOn(t, 3, 5, &now)
	var mu sync.Mutex
	var wg sync.WaitGroup
	allowed := 0
	for i := range 60 {
		wg.Go(func() {
			if ok, _ := hubs[i%len(hubs)].Allow("login:a", "ip:1"); ok {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed != 5 {
		t.Fatalf("%d of 60 guesses at once over %d hubs let through, want 5 (one limit)", allowed, len(hubs))
	}
}

// The console's login form on two hubs: one address guessing one account,
// all guesses sent at once, split over the hubs, meets the pair limit.
func TestConsoleLoginsAtOnceAcrossHubs(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, pgtest.NewTestDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hubs := []*Logins{NewLogins("console", Proxies{}).Share(db), NewLogins("console", Proxies{}).Share(db)}
	for _, h := range hubs {
		h.limits.Queue = 0 // the guesses never end here: each would wait out the queue
	}
	allowed := 0
	for i := range 40 {
		r := httptest.NewRequest("POST", "/console/login", nil)
		r.RemoteAddr = "203.0.113.9:4000"
		if ok, _ := hubs[i%2].Allow(r, "ana"); ok {
			allowed++
		}
	}
	if allowed != PairFailures {
		t.Fatalf("%d guesses of one account from one address let through at once over 2 hubs; the limit is %d", allowed, PairFailures)
	}
}
