package pwcheck_test

import (
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/accounts/pwcheck"
)

// A match is remembered only for the hash it was checked against, only for
// the ttl, and only for the same password: the cache must never let in a
// password bcrypt would refuse.
func TestRememberedOnlyForTheSameHash(t *testing.T) {
	t.Parallel()
	calls := 0
	count := func(h, p []byte) error { calls++; return bcrypt.CompareHashAndPassword(h, p) }
	h1, _ := bcrypt.GenerateFromPassword([]byte("right one"), bcrypt.MinCost)
	h2, _ := bcrypt.GenerateFromPassword([]byte("right one"), bcrypt.MinCost)
	c := pwcheck.New(time.Hour, count)
	for range 2 {
		if !c.Check("alice", string(h1), "right one") {
			t.Fatal("the right password refused")
		}
	}
	if calls != 1 {
		t.Fatalf("the right password twice: %d checks, want 1", calls)
	}
	if c.Check("alice", string(h1), "wrong one") || c.Known("alice", string(h1), "wrong one") {
		t.Fatal("a wrong password let in")
	}
	if c.Known("alice", string(h2), "right one") || c.Known("bob", string(h1), "right one") {
		t.Fatal("a match remembered for another hash or subject")
	}
	c.Forget("alice")
	if c.Known("alice", string(h1), "right one") {
		t.Fatal("remembered after Forget")
	}
	short := pwcheck.New(time.Nanosecond, count)
	short.Check("alice", string(h1), "right one")
	calls = 0
	if !short.Check("alice", string(h1), "right one") || calls != 1 {
		t.Fatalf("past the ttl: %d checks, want 1", calls)
	}
}
