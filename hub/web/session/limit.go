package session

import (
	"sync"
	"time"
)

// Limiter slows password guessing: after Max failed logins for a key (a
// login name, or a client address) within Window, that key is refused
// until the window ends. Successful logins do not reset the count, so an
// attacker who knows one password gains nothing for the others.
type Limiter struct {
	Max    int
	Window time.Duration
	Now    func() time.Time

	mu    sync.Mutex
	fails map[string]*window
}

type window struct {
	start time.Time
	n     int
}

// NewLimiter allows max failures per key per window.
func NewLimiter(max int, w time.Duration) *Limiter {
	return &Limiter{Max: max, Window: w, Now: time.Now, fails: map[string]*window{}}
}

// Allow reports whether every key may try now; if not, how long to wait.
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
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.Now()
	var wait time.Duration
	for _, k := range keys {
		w := l.fails[k.name]
		if w == nil || now.Sub(w.start) >= l.Window {
			continue
		}
		if w.n >= k.max {
			wait = max(wait, w.start.Add(l.Window).Sub(now))
		}
	}
	return wait == 0, wait
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
}
