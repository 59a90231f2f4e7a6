package front

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/frank-postage/frank/protocol"
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
	// status is each kiosk's last online or offline handled. The broker
	// sends a kiosk's last will once, so an offline that changes it is
	// handled over the budget too (lastWill).
	status map[string]string
}

// lastWill reports whether a message over kiosk's budget is still handled:
// an offline status after an online one. Nothing else is, an online
// neither: a kiosk that flips its status over its budget gets one offline
// through, and then only repeats, which are dropped.
func (b *msgBudget) lastWill(kiosk, suffix, payload string) bool {
	if suffix != protocol.TopicStatus || payload != protocol.StatusOffline {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	last, ok := b.status[kiosk]
	return !ok || last != protocol.StatusOffline
}

// sawStatus notes kiosk's status handled, if it is online or offline.
func (b *msgBudget) sawStatus(kiosk, status string) {
	if status != protocol.StatusOnline && status != protocol.StatusOffline {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.status == nil {
		b.status = map[string]string{}
	}
	b.status[kiosk] = status
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
