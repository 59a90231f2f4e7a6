package session

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/frank-postage/frank/hub/netlimit"
	"github.com/frank-postage/frank/hub/store"
)

// Proxies are the addresses of the reverse proxies in front of the hub,
// whose X-Forwarded-For may be believed. Nobody else's is.
type Proxies []netip.Prefix

// ParseProxies reads addresses and CIDR prefixes, like "10.0.0.5" or
// "10.0.0.0/24".
func ParseProxies(list []string) (Proxies, error) {
	var out Proxies
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("session: trusted proxy %q: %w", s, err)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("session: trusted proxy %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Trusts reports whether a is one of the trusted proxies.
func (p Proxies) Trusts(a netip.Addr) bool {
	for _, pre := range p {
		if pre.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP is the address a request came from. Behind a trusted proxy it
// is the last address in X-Forwarded-For that is not itself a trusted
// proxy (the right end is the one our proxy wrote; the left end is the
// client's to forge); otherwise the connection's own address.
func (p Proxies) ClientIP(r *http.Request) string {
	peer := peerAddr(r)
	if !peer.IsValid() {
		return r.RemoteAddr
	}
	if !p.Trusts(peer) {
		return peer.String()
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if h == "" {
			continue
		}
		a, err := netip.ParseAddr(h)
		if err != nil {
			return peer.String() // a hop we cannot read: trust nothing further left
		}
		if a = a.Unmap(); !p.Trusts(a) {
			return a.String()
		}
	}
	return peer.String()
}

func peerAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// Login limits, per 15 minutes: a person who mistypes meets the first;
// guessing one account from many addresses meets the second; one address
// trying many accounts meets the third.
const (
	PairFailures    = 5  // one account from one address
	AccountFailures = 20 // one account from anywhere
	AddressFailures = 30 // one address, whatever account it names
	LoginWindow     = 15 * time.Minute
)

// Logins limits password guessing at one login form, per account and per
// client address, where the address is the client's as the trusted
// proxies report it: a proxy in front neither hides a guesser nor locks
// out everyone behind it.
type Logins struct {
	Proxies Proxies
	limits  *Limiter
	realm   string
	perAddr int
	known   knownAddrs
	// allowed holds the keys Allow let each request try with, for Done.
	allowed sync.Map // *http.Request -> []string
}

// NewLogins limits the logins of realm ("portal", "console").
func NewLogins(realm string, proxies Proxies) *Logins {
	limits := NewLimiter(0, LoginWindow)
	limits.Queue = LoginQueue
	return &Logins{Proxies: proxies, realm: realm, limits: limits, perAddr: AddressFailures}
}

// LoginQueue is how long a login waits for others of the same account or
// address under way, once they fill its limit, before it is refused.
const LoginQueue = 2 * time.Second

// NewCodeLimit limits a form that takes a one-time code and no account
// (kiosk enrollment): PairFailures wrong codes per address.
func NewCodeLimit(realm string, proxies Proxies) *Logins {
	l := NewLogins(realm, proxies)
	l.perAddr = PairFailures
	return l
}

// Share counts this form's failures in db too, so that every hub of a
// cluster counts the same failures.
func (l *Logins) Share(db *store.DB) *Logins {
	l.limits.DB = db
	return l
}

// SetNow sets the clock, for tests.
func (l *Logins) SetNow(now func() time.Time) { l.limits.Now = now }

// MaxLogin is the longest login there is: operators' and customers'
// logins are both 3-64 bytes (operators.MaxLogin, accounts' checkLogin).
const MaxLogin = 64

// TooLong reports whether login is longer than any login can be. Such a
// name is a wrong login without a look: it counts against the address
// alone, and is neither kept in the limits nor logged, so a form cannot
// be made to store as much as its body holds for every guess.
func TooLong(login string) bool { return len(login) > MaxLogin }

// LogName is login as a log line may carry it: a name too long to be a
// login is only measured.
func LogName(login string) string {
	if TooLong(login) {
		return fmt.Sprintf("(%d bytes, too long for a login)", len(login))
	}
	return login
}

func (l *Logins) keys(r *http.Request, login string) []limitKey {
	ip := netlimit.Source(l.Proxies.ClientIP(r))
	keys := []limitKey{{l.realm + "-ip:" + ip, l.perAddr}}
	if login != "" && !TooLong(login) {
		login = strings.ToLower(login)
		keys = append(keys, limitKey{l.realm + "-login:" + login, AccountFailures},
			limitKey{l.realm + "-pair:" + login + "@" + ip, PairFailures})
	}
	return keys
}

// Allow reports whether r may try login now ("" for a form without an
// account, like enrollment), and if not, how long to wait. From an
// address login succeeded from (Succeeded), the account-wide limit does
// not apply.
func (l *Logins) Allow(r *http.Request, login string) (bool, time.Duration) {
	keys := l.keys(r, login)
	ok, wait := l.limits.allow(keys)
	if !ok && len(keys) == 3 && l.knownFrom(r, login) {
		account := l.realm + "-login:"
		keys = slices.DeleteFunc(keys, func(k limitKey) bool { return strings.HasPrefix(k.name, account) })
		ok, wait = l.limits.allow(keys)
	}
	if ok {
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = k.name
		}
		l.allowed.Store(r, names)
	}
	return ok, wait
}

// Done ends a try of login from r that Allow let through, failed (counted
// by Fail first) or not. Until it ends (or 30 s pass) the try counts
// against the limits, so that tries sent at once cannot all pass the
// check before the first failure is counted.
func (l *Logins) Done(r *http.Request, login string) {
	if names, ok := l.allowed.LoadAndDelete(r); ok {
		l.limits.Done(names.([]string)...)
		return
	}
	l.limits.Done(l.names(r, login)...)
}

// Fail counts a failed try of login from r.
func (l *Logins) Fail(r *http.Request, login string) {
	l.limits.Fail(l.names(r, login)...)
}

func (l *Logins) names(r *http.Request, login string) []string {
	ks := l.keys(r, login)
	names := make([]string, len(ks))
	for i, k := range ks {
		names[i] = k.name
	}
	return names
}

// ClientIP is r's client address as the trusted proxies report it.
func (l *Logins) ClientIP(r *http.Request) string { return l.Proxies.ClientIP(r) }
