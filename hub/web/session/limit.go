package session

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"time"

	"github.com/frank-postage/frank/hub/store"
)

// Limiter slows password guessing: after Max failed logins for a key (a
// login name, or a client address) within Window, that key is refused
// until the window ends. Successful logins do not reset the count, so an
// attacker who knows one password gains nothing for the others.
type Limiter struct {
	Max    int
	Window time.Duration
	Now    func() time.Time

	// DB, if set, also keeps the counts where every hub of a cluster
	// sees them. The counts in memory still hold if it fails.
	DB *store.DB

	mu    sync.Mutex
	fails map[string]*window
	// tries are the tries each key has under way, by when each began: a
	// try counts against the limit from Allow until Done ends it, or
	// tryFor has passed, so guesses sent at once cannot all pass
	// the check before the first failure is counted.
	tries map[string][]time.Time
}

// tryFor is how long a try counts as under way when its caller never says
// how it ended.
const tryFor = 30 * time.Second

type window struct {
	start time.Time
	n     int
}

// NewLimiter allows max failures per key per window.
func NewLimiter(max int, w time.Duration) *Limiter {
	return &Limiter{Max: max, Window: w, Now: time.Now, fails: map[string]*window{}, tries: map[string][]time.Time{}}
}

// Allow reports whether every key may try now; if not, how long to wait.
// An allowed try counts against the keys until Done.
func (l *Limiter) Allow(keys ...string) (bool, time.Duration) {
	ks := make([]limitKey, len(keys))
	for i, k := range keys {
		ks[i] = limitKey{k, l.Max}
	}
	return l.allow(ks)
}

// limitKey is a key with a limit of its own.
type limitKey struct {
	name string
	max  int
}

func (l *Limiter) allow(keys []limitKey) (bool, time.Duration) {
	shared := l.shared(keys)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.Now()
	var wait time.Duration
	for _, k := range keys {
		failed := 0
		for _, w := range []*window{l.fails[k.name], shared[k.name]} {
			if w == nil || now.Sub(w.start) >= l.Window {
				continue
			}
			failed = max(failed, w.n)
			if w.n >= k.max {
				wait = max(wait, w.start.Add(l.Window).Sub(now))
			}
		}
		if failed+l.underWay(k.name, now) >= k.max {
			wait = max(wait, time.Second) // until a try under way ends
		}
	}
	if wait > 0 {
		return false, wait
	}
	for _, k := range keys {
		l.tries[k.name] = append(l.tries[k.name], now)
	}
	return true, 0
}

// underWay counts key's tries under way at now, dropping those past
// tryFor; l.mu is held.
func (l *Limiter) underWay(key string, now time.Time) int {
	t := l.tries[key]
	for len(t) > 0 && now.Sub(t[0]) >= tryFor {
		t = t[1:]
	}
	if len(t) == 0 {
		delete(l.tries, key)
		return 0
	}
	l.tries[key] = t
	return len(t)
}

// Done ends a try of every key, failed (counted by Fail first) or not.
func (l *Limiter) Done(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if t := l.tries[k]; len(t) > 1 {
			l.tries[k] = t[1:]
		} else {
			delete(l.tries, k)
		}
	}
}

// shared reads the keys' counts from the database; none if it has none or
// cannot be read.
func (l *Limiter) shared(keys []limitKey) map[string]*window {
	if l.DB == nil || len(keys) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	args := make([]any, len(keys))
	for i, k := range keys {
		args[i] = k.name
	}
	rows, err := l.DB.QueryContext(ctx, l.DB.Rebind(`SELECT name, window_start, n FROM login_failures WHERE name IN (`+
		strings.TrimSuffix(strings.Repeat("?, ", len(keys)), ", ")+`)`), args...)
	if err != nil {
		return nil
	}
	defer rows.Close()
	out := map[string]*window{}
	for rows.Next() {
		var name string
		var start int64
		w := &window{}
		if rows.Scan(&name, &start, &w.n) == nil {
			w.start = time.UnixMicro(start)
			out[name] = w
		}
	}
	return out
}

// Kept names counts whose window is longer than the sweep's: those whose
// name starts with Prefix are deleted only once they began before Before.
type Kept struct {
	Prefix string // no % or _
	Before time.Time
}

// SweepFailures deletes the counts whose window began before before, but
// those a Kept names, deleted by their own.
func SweepFailures(ctx context.Context, db *store.DB, before time.Time, kept ...Kept) error {
	q, args := `DELETE FROM login_failures WHERE window_start < ?`, []any{before.UnixMicro()}
	for _, k := range kept {
		q += ` AND name NOT LIKE ?`
		args = append(args, k.Prefix+"%")
	}
	if _, err := db.ExecContext(ctx, db.Rebind(q), args...); err != nil {
		return err
	}
	for _, k := range kept {
		if _, err := db.ExecContext(ctx, db.Rebind(`DELETE FROM login_failures WHERE name LIKE ? AND window_start < ?`), k.Prefix+"%", k.Before.UnixMicro()); err != nil {
			return err
		}
	}
	return nil
}

// Fail counts a failed login against every key.
func (l *Limiter) Fail(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.Now()
	if len(l.fails) > 100_000 { // bound memory under a spray of names
		for k, w := range l.fails {
			if now.Sub(w.start) >= l.Window {
				delete(l.fails, k)
			}
		}
	}
	for _, k := range keys {
		w := l.fails[k]
		if w == nil || now.Sub(w.start) >= l.Window {
			w = &window{start: now}
			l.fails[k] = w
		}
		w.n++
	}
	if l.DB != nil {
		l.failShared(keys, now)
	}
}

// failShared counts a failure against keys in the database: a new window
// once the last one ended.
func (l *Limiter) failShared(keys []string, now time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	at, ended := now.UnixMicro(), now.Add(-l.Window).UnixMicro()
	l.DB.InTx(ctx, func(tx *sql.Tx) error {
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, l.DB.Rebind(`INSERT INTO login_failures (name, window_start, n) VALUES (?, ?, 1)
				ON CONFLICT (name) DO UPDATE SET
				n = CASE WHEN login_failures.window_start <= ? THEN 1 ELSE login_failures.n + 1 END,
				window_start = CASE WHEN login_failures.window_start <= ? THEN excluded.window_start ELSE login_failures.window_start END`),
				k, at, ended, ended); err != nil {
				return err
			}
		}
		return nil
	})
}
