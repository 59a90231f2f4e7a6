package front

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// budgetKiosks bounds the kiosks whose message budgets are kept before the
// full ones (a new one would be the same) are dropped.
const budgetKiosks = 10_000

// msgBudget is each kiosk's budget of messages the hub handles: the one the
// embedded broker keeps at its door, kept here too for a hub behind
// mosquitto, which has none. A stolen kiosk could otherwise send as fast as
// its link allows, and every per-kiosk bound in the hub that assumes the
// broker's rate (refusals recorded, log lines, fraud checks) would scale
// with it. A message over the budget is dropped unread: every kiosk
// message is sent again until it is answered, or is a heartbeat.
type msgBudget struct {
	mu    sync.Mutex
	now   func() time.Time
	limit rate.Limit
	burst int
	by    map[string]*rate.Limiter
}

// allow spends one of kiosk's messages, or reports that it has none left.
func (b *msgBudget) allow(kiosk string) bool {
	if b.limit <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	l := b.by[kiosk]
	if l == nil {
		if len(b.by) >= budgetKiosks {
			for k, l := range b.by {
				if l.TokensAt(now) >= float64(b.burst) {
					delete(b.by, k)
				}
			}
		}
		l = rate.NewLimiter(b.limit, b.burst)
		b.by[kiosk] = l
	}
	return l.AllowN(now, 1)
}
