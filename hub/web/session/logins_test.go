package session

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

func reqFrom(peer string, xff ...string) *http.Request {
	r := httptest.NewRequest("POST", "/console/login", nil)
	r.RemoteAddr = peer
	for _, h := range xff {
		r.Header.Add("X-Forwarded-For", h)
	}
	return r
}

func TestClientIPBelievesOnlyTrustedProxies(t *testing.T) {
	p, err := ParseProxies([]string{"10.0.0.5", "192.168.1.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"203.0.113.9:5555", nil, "203.0.113.9"},
		{"203.0.113.9:5555", []string{"1.2.3.4"}, "203.0.113.9"}, // not a proxy of ours: its header is ignored
		{"10.0.0.5:443", []string{"198.51.100.7"}, "198.51.100.7"},
		{"10.0.0.5:443", []string{"6.6.6.6, 198.51.100.7"}, "198.51.100.7"},      // the client wrote the left end
		{"10.0.0.5:443", []string{"198.51.100.7, 192.168.1.20"}, "198.51.100.7"}, // two of our proxies
		{"10.0.0.5:443", []string{"6.6.6.6", "198.51.100.7"}, "198.51.100.7"},    // two header lines
		{"10.0.0.5:443", []string{"junk, 198.51.100.7"}, "198.51.100.7"},
		{"10.0.0.5:443", []string{"198.51.100.7, junk"}, "10.0.0.5"}, // unreadable next to us: trust nothing
		{"10.0.0.5:443", nil, "10.0.0.5"},
		{"[::ffff:10.0.0.5]:443", []string{"198.51.100.7"}, "198.51.100.7"},
	} {
		if got := p.ClientIP(reqFrom(c.peer, c.xff...)); got != c.want {
			t.Errorf("peer %s, X-Forwarded-For %q: %s, want %s", c.peer, c.xff, got, c.want)
		}
	}
	if _, err := ParseProxies([]string{"not-an-address"}); err == nil {
		t.Error("a bad proxy address was accepted")
	}
}

// Behind a trusted proxy, one client's wrong passwords lock neither other
// clients nor, short of the account limit, the same account elsewhere;
// without it, a forged X-Forwarded-For earns no fresh address.
func TestLoginsBehindProxy(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p, _ := ParseProxies([]string{"10.0.0.5"})
	l := NewLogins("console", p)
	l.SetNow(func() time.Time { return now })
	mallory := reqFrom("10.0.0.5:443", "203.0.113.66")
	alice := reqFrom("10.0.0.5:443", "198.51.100.1")
	for range PairFailures {
		l.Fail(mallory, "alice")
	}
	if ok, _ := l.Allow(mallory, "alice"); ok {
		t.Fatal("mallory may go on guessing alice's password")
	}
	if ok, _ := l.Allow(alice, "alice"); !ok {
		t.Fatal("alice, from her own address, is locked out by mallory's guesses")
	}
	if ok, _ := l.Allow(reqFrom("10.0.0.5:443", "198.51.100.2"), "bob"); !ok {
		t.Fatal("bob, behind the same proxy, is locked out")
	}
	// Guessing alice from many addresses meets the account limit.
	for i := range AccountFailures {
		l.Fail(reqFrom("10.0.0.5:443", fmt.Sprintf("203.0.113.%d", i)), "alice")
	}
	if ok, _ := l.Allow(alice, "alice"); ok {
		t.Fatal("no limit on one account guessed from many addresses")
	}
	// Without trusting the proxy, forged headers all count against the peer.
	direct := NewLogins("portal", nil)
	direct.SetNow(func() time.Time { return now })
	for i := range AddressFailures {
		direct.Fail(reqFrom("203.0.113.66:5555", fmt.Sprintf("198.51.100.%d", i)), fmt.Sprintf("user%d", i))
	}
	if ok, _ := direct.Allow(reqFrom("203.0.113.66:5555", "198.51.100.200"), "someone"); ok {
		t.Fatal("a forged X-Forwarded-For bought a fresh address")
	}
	now = now.Add(LoginWindow)
	if ok, _ := direct.Allow(reqFrom("203.0.113.66:5555"), "someone"); !ok {
		t.Fatal("still refused after the window")
	}
}

// An IPv6 client holds a whole /64: guesses from its addresses count as
// one address's, and another /64 is another address.
func TestLoginsCountAnIPv6SlashSixtyFour(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := NewLogins("portal", nil)
	l.SetNow(func() time.Time { return now })
	for i := range AddressFailures {
		l.Fail(reqFrom(fmt.Sprintf("[2001:db8:1:2::%x]:5555", i+1)), fmt.Sprintf("user%d", i))
	}
	if ok, _ := l.Allow(reqFrom("[2001:db8:1:2:ffff::9]:5555"), "someone"); ok {
		t.Fatal("a fresh address in the same /64 bought fresh guesses")
	}
	if ok, _ := l.Allow(reqFrom("[2001:db8:1:3::1]:5555"), "someone"); !ok {
		t.Fatal("the next /64 is refused too")
	}
	if ok, _ := l.Allow(reqFrom("198.51.100.7:5555"), "someone"); !ok {
		t.Fatal("an IPv4 client is refused")
	}
}

// A name longer than any login counts against the address alone: neither
// the in-memory limits nor login_failures keep it, so a 60 KB name costs
// no more than a short one. The address limit still applies to it.
func TestLongLoginNameCountsAgainstTheAddressOnly(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		now := time.Unix(1_700_000_000, 0)
		l := NewLogins("console", nil).Share(db)
		l.SetNow(func() time.Time { return now })
		r := reqFrom("203.0.113.7:5555")
		long := strings.Repeat("x", 60_000)
		for i := range AddressFailures {
			name := fmt.Sprintf("%s%d", long, i)
			if ok, _ := l.Allow(r, name); !ok {
				t.Fatalf("try %d refused under the address limit", i)
			}
			l.Fail(r, name)
			l.Done(r, name)
		}
		if ok, _ := l.Allow(r, "olivia"); ok {
			t.Error("long names did not count against the address")
		}
		var n, longest int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(MAX(LENGTH(name)), 0) FROM login_failures`).Scan(&n, &longest); err != nil {
			t.Fatal(err)
		}
		if n != 1 || longest > 100 {
			t.Errorf("login_failures: %d rows, longest name %d bytes; want the address's one", n, longest)
		}
		l.limits.mu.Lock()
		for k := range l.limits.fails {
			if len(k) > 100 {
				t.Errorf("the limiter keeps a %d-byte key", len(k))
			}
		}
		for k := range l.limits.tries {
			if len(k) > 100 {
				t.Errorf("the limiter keeps a %d-byte try key", len(k))
			}
		}
		l.limits.mu.Unlock()
		if got := LogName(long); strings.Contains(got, "xxx") {
			t.Errorf("LogName of a long name: %.80q", got)
		}
		if got := LogName("olivia"); got != "olivia" {
			t.Errorf("LogName(olivia) = %q", got)
		}
	})
}
