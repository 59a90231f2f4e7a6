package session

import (
	"testing"
	"time"
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
