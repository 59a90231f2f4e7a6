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
	// handled over the budget too (admit).
	status map[string]string
}

// admit spends one of kiosk's messages and reports whether the message is
// handled. Over the budget only a last will is: an offline status after
// an online one. Nothing else is, an online neither, so a kiosk that flips
// its status over its budget gets one offline through, then only repeats.
// The status is noted here, with the budget, not once handled: messages
// are handled concurrently, and an offline checked before the online just
// let through was noted would be taken for a repeat and dropped.
func (b *msgBudget) admit(kiosk, suffix string, payload []byte) bool {
	if b.limit <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	ok := b.allowLocked(kiosk)
	if suffix != protocol.TopicStatus {
		return ok
	}
	status := string(payload)
	if status != protocol.StatusOnline && status != protocol.StatusOffline {
		return ok
	}
	if b.status == nil {
		b.status = map[string]string{}
	}
	if !ok && status == protocol.StatusOffline && b.status[kiosk] != protocol.StatusOffline {
		ok = true
	}
	if ok {
		b.status[kiosk] = status
	}
	return ok
}

// allowLocked spends one of kiosk's messages, or reports that it has none
// left; b.mu is held.
func (b *msgBudget) allowLocked(kiosk string) bool {
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
