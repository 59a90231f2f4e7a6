package session

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/frank-postage/frank/hub/netlimit"
)

// KnownFor is how long an address a login succeeded from stays known for
// it. The account-wide limit (AccountFailures) does not hold the account's
// owner out from an address they logged in from: strangers' guesses from
// elsewhere would otherwise lock them out for as long as they kept
// guessing. The pair and address limits still hold there.
const KnownFor = 30 * 24 * time.Hour

// KnownPrefix begins the name of a known address's row among the shared
// counts; the sweep keeps those rows for KnownFor (Kept).
const KnownPrefix = "known:"

// knownAddrs are the addresses logins succeeded from, by name, when last.
type knownAddrs struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// knownName is the exact login's: logins are told apart by case, and a
// stranger's "Olivia" must not make an address known for "olivia".
func (l *Logins) knownName(r *http.Request, login string) string {
	return KnownPrefix + l.realm + ":" + login + "@" + netlimit.Source(l.Proxies.ClientIP(r))
}

// Succeeded records that login logged in from r's address: from there
// its owner is not held out by other addresses' failures for KnownFor.
func (l *Logins) Succeeded(r *http.Request, login string) {
	if login == "" || TooLong(login) {
		return
	}
	name, now := l.knownName(r, login), l.limits.Now()
	l.known.mu.Lock()
	if l.known.seen == nil || len(l.known.seen) > 100_000 { // bound memory
		l.known.seen = map[string]time.Time{}
	}
	last, ok := l.known.seen[name]
	l.known.seen[name] = now
	l.known.mu.Unlock()
	// Written again at most hourly: the XML API succeeds at every purchase.
	if db := l.limits.DB; db != nil && (!ok || now.Sub(last) >= time.Hour) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		db.ExecContext(ctx, db.Rebind(`INSERT INTO login_failures (name, window_start, n) VALUES (?, ?, 0)
			ON CONFLICT (name) DO UPDATE SET window_start = excluded.window_start`), name, now.UnixMicro())
	}
}

// knownFrom reports whether login succeeded from r's address within
// KnownFor, on this hub or (with a database) any.
func (l *Logins) knownFrom(r *http.Request, login string) bool {
	if login == "" || TooLong(login) {
		return false
	}
	name, now := l.knownName(r, login), l.limits.Now()
	l.known.mu.Lock()
	at, ok := l.known.seen[name]
	l.known.mu.Unlock()
	if ok && now.Sub(at) < KnownFor {
		return true
	}
	db := l.limits.DB
	if db == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var us int64
	err := db.QueryRowContext(ctx, db.Rebind(`SELECT window_start FROM login_failures WHERE name = ?`), name).Scan(&us)
	if errors.Is(err, sql.ErrNoRows) || err != nil {
		return false
	}
	return now.Sub(time.UnixMicro(us)) < KnownFor
}
