package session

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
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
