package session

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
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
	// sees them: the failures, and on PostgreSQL the tries under way
	// (claim). The counts in memory still hold if it fails.
	DB *store.DB
	// Queue is how long a try that only tries under way leave no room for
	// waits for them to end before it is refused (0: not at all).
	Queue time.Duration

	mu    sync.Mutex
	fails map[string]*window
	// tries are the tries each key has under way, oldest first: a try
	// counts against the limit from Allow until Done ends it, or tryFor
	// has passed, so guesses sent at once cannot all pass the check
	// before the first failure is counted.
	tries map[string][]*try
}

// try is a try under way: when it began, and whether the database counts
// it too, for Done to end it there.
type try struct {
	at     time.Time
	shared bool
}

// tryFor is how long a try counts as under way when its caller never says
// how it ended: a hub killed mid-check holds its keys no longer.
const tryFor = 30 * time.Second

type window struct {
	start time.Time
	n     int
}

// NewLimiter allows max failures per key per window.
func NewLimiter(max int, w time.Duration) *Limiter {
	return &Limiter{Max: max, Window: w, Now: time.Now, fails: map[string]*window{}, tries: map[string][]*try{}}
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

// underWayWait is the wait a try is told when only tries under way, not
// failures, leave it no room.
const underWayWait = time.Second

// allow is allowOnce, asked again for up to Queue while only tries under
// way leave no room: logins of one account at once (a webstamp client's
// purchases, each a login) wait their turn instead of failing, and the
// guesses under way stay within the limit.
func (l *Limiter) allow(keys []limitKey) (bool, time.Duration) {
	deadline := time.Now().Add(l.Queue)
	pause := 2 * time.Millisecond
	for {
		ok, wait := l.allowOnce(keys)
		if ok || wait != underWayWait || !time.Now().Add(pause).Before(deadline) {
			return ok, wait
		}
		time.Sleep(pause) // the tries under way may end on another hub: nothing here to wait on
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// allowOnce checks the keys against this hub's counts, then, on PostgreSQL,
// claims the try where every hub counts it: tries counted in memory alone
// would let each hub of a cluster pass the limit's worth at once.
func (l *Limiter) allowOnce(keys []limitKey) (bool, time.Duration) {
	now := l.Now()
	claims := l.DB != nil && l.DB.Dialect == store.Postgres
	var shared map[string]*window
	if !claims {
		shared = l.shared(keys) // the claim reads them itself
	}
	tries, wait := l.allowHere(keys, shared, now)
	if wait > 0 {
		return false, wait
	}
	if !claims {
		return true, 0
	}
	ok, wait, err := l.claim(keys, now)
	if err != nil {
		return true, 0 // the counts in memory hold
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, t := range tries {
		if ok {
			t.shared = true
		} else {
			l.drop(keys[i].name, t)
		}
	}
	return ok, wait
}

// allowHere checks the keys against the counts in memory (and shared, the
// database's failures) and, if every key may try, counts the try under
// way; tries are the keys' new tries, wait > 0 if refused.
func (l *Limiter) allowHere(keys []limitKey, shared map[string]*window, now time.Time) (tries []*try, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
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
			wait = max(wait, underWayWait) // until a try under way ends
		}
	}
	if wait > 0 {
		return nil, wait
	}
	tries = make([]*try, len(keys))
	for i, k := range keys {
		tries[i] = &try{at: now}
		l.tries[k.name] = append(l.tries[k.name], tries[i])
	}
	return tries, 0
}

// underWay counts key's tries under way at now, dropping those past
// tryFor; l.mu is held.
func (l *Limiter) underWay(key string, now time.Time) int {
	t := l.tries[key]
	for len(t) > 0 && now.Sub(t[0].at) >= tryFor {
		t = t[1:]
	}
	if len(t) == 0 {
		delete(l.tries, key)
		return 0
	}
	l.tries[key] = t
	return len(t)
}

// drop forgets key's try t; l.mu is held.
func (l *Limiter) drop(key string, t *try) {
	ts := slices.DeleteFunc(l.tries[key], func(u *try) bool { return u == t })
	if len(ts) == 0 {
		delete(l.tries, key)
	} else {
		l.tries[key] = ts
	}
}

// Done ends a try of every key, failed (counted by Fail first) or not.
func (l *Limiter) Done(keys ...string) {
	var release []string
	l.mu.Lock()
	for _, k := range keys {
		ts := l.tries[k]
		if len(ts) == 0 {
			continue
		}
		// Which try of the key this was is not known: any the database
		// counts ends there too.
		i := slices.IndexFunc(ts, func(t *try) bool { return t.shared })
		if i < 0 {
			i = 0
		} else {
			release = append(release, k)
		}
		l.drop(k, ts[i])
	}
	l.mu.Unlock()
	if len(release) > 0 {
		l.release(release, l.Now())
	}
}

// triesPrefix begins the name of a key's count of tries under way among
// the shared counts (PostgreSQL only): n tries began, the latest at
// window_start. Past tryFor from then none counts, so tries a killed hub
// never ended hold its keys at most tryFor after the last try began (and
// a key at its limit takes no more tries).
const triesPrefix = "tries:"

// triesLock is the class of the advisory locks that make claims of one
// key one at a time in the cluster (two 32-bit keys: a space apart from
// the one-key locks of the claims package and the leader).
const triesLock = 0x6c696d

// claim counts a try under way against every key in the database if the
// key's failures in the window and tries under way, on every hub, leave
// room for it; if not, wait is how long to wait.
func (l *Limiter) claim(keys []limitKey, now time.Time) (ok bool, wait time.Duration, err error) {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, func(a, b limitKey) int { return strings.Compare(a.name, b.name) })
	keys = slices.CompactFunc(keys, func(a, b limitKey) bool { return a.name == b.name })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	expired := now.Add(-tryFor)
	err = l.DB.InTx(ctx, func(tx *sql.Tx) error {
		keyArgs, nameArgs, rowArgs := make([]any, len(keys)), make([]any, 0, 2*len(keys)), make([]any, 0, 2*len(keys))
		for i, k := range keys {
			keyArgs[i] = k.name
			nameArgs = append(nameArgs, k.name, triesPrefix+k.name)
			rowArgs = append(rowArgs, triesPrefix+k.name, now.UnixMicro())
		}
		// Locked in the keys' order, so two claims that share keys wait
		// for each other, never each for a lock the other holds. Until
		// the commit, no other claim of these keys reads the counts.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(`+strconv.Itoa(triesLock)+`, hashtext(k)) FROM (VALUES `+
			placeholders(len(keys), "(%s::text)", 1)+`) AS v (k)`, keyArgs...); err != nil {
			return fmt.Errorf("session: lock the tries of %d keys: %w", len(keys), err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT name, window_start, n FROM login_failures WHERE name IN (`+
			placeholders(len(nameArgs), "%s", 1)+`)`, nameArgs...)
		if err != nil {
			return fmt.Errorf("session: read the counts of %d keys: %w", len(keys), err)
		}
		counts := map[string]*window{}
		for rows.Next() {
			var name string
			var start int64
			w := &window{}
			if err := rows.Scan(&name, &start, &w.n); err != nil {
				rows.Close()
				return fmt.Errorf("session: read the counts: %w", err)
			}
			w.start = time.UnixMicro(start)
			counts[name] = w
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("session: read the counts: %w", err)
		}
		for _, k := range keys {
			n := 0 // failures in the window and tries under way
			if w := counts[k.name]; w != nil && now.Sub(w.start) < l.Window {
				n = w.n
				if w.n >= k.max {
					wait = max(wait, w.start.Add(l.Window).Sub(now))
				}
			}
			if w := counts[triesPrefix+k.name]; w != nil && w.start.After(expired) {
				n += w.n
			}
			if n >= k.max {
				wait = max(wait, underWayWait) // until a try under way ends
			}
		}
		if wait > 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO login_failures (name, window_start, n) VALUES `+
			placeholders(len(keys), "(%s, %s, 1)", 2)+`
			ON CONFLICT (name) DO UPDATE SET
			n = CASE WHEN login_failures.window_start <= `+fmt.Sprintf("$%d", len(rowArgs)+1)+` THEN 1 ELSE login_failures.n + 1 END,
			window_start = GREATEST(login_failures.window_start, excluded.window_start)`, append(rowArgs, expired.UnixMicro())...); err != nil {
			return fmt.Errorf("session: count the tries of %d keys: %w", len(keys), err)
		}
		ok = true
		return nil
	})
	return ok, wait, err
}

// placeholders is n PostgreSQL tuples of format, each of per
// placeholders, numbered from $1, joined by commas.
func placeholders(n int, format string, per int) string {
	out := make([]string, n)
	for i := range out {
		ps := make([]any, per)
		for j := range ps {
			ps[j] = fmt.Sprintf("$%d", i*per+j+1)
		}
		out[i] = fmt.Sprintf(format, ps...)
	}
	return strings.Join(out, ", ")
}

// release ends a try under way of every key in the database: the count
// goes, or drops by one. One row a statement, outside a transaction:
// a statement that holds one row waits for a claim, never the other way
// round as well.
func (l *Limiter) release(keys []string, now time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	expired := now.Add(-tryFor).UnixMicro()
	for _, k := range keys {
		res, err := l.DB.ExecContext(ctx, `DELETE FROM login_failures WHERE name = $1 AND (n <= 1 OR window_start <= $2)`, triesPrefix+k, expired)
		if err != nil {
			return
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			l.DB.ExecContext(ctx, `UPDATE login_failures SET n = n - 1 WHERE name = $1 AND n > 0`, triesPrefix+k)
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
		return fmt.Errorf("session: prune login failures: %w", err)
	}
	for _, k := range kept {
		if _, err := db.ExecContext(ctx, db.Rebind(`DELETE FROM login_failures WHERE name LIKE ? AND window_start < ?`), k.Prefix+"%", k.Before.UnixMicro()); err != nil {
			return fmt.Errorf("session: prune login failures %s: %w", k.Prefix, err)
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
