package front

import (
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/frank-postage/frank/protocol"
)

// A kiosk's status is noted when it is admitted, with its budget, not when
// it is handled: handlers run concurrently, and a last will admitted before
// the online let through just before it was handled was taken for a repeat
// of an older offline and dropped, leaving the kiosk shown online.
func TestLastWillAdmittedBehindAnOnlineNotYetHandled(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	b := &msgBudget{now: func() time.Time { return now }, limit: rate.Limit(1), burst: 2, by: map[string]*rate.Limiter{}}
	status := func(s string) bool { return b.admit("k1", protocol.TopicStatus, []byte(s)) }
	if !status(protocol.StatusOffline) || !status(protocol.StatusOnline) {
		t.Fatal("statuses within the budget dropped")
	}
	// The online is not handled yet; the kiosk is over its budget.
	if b.admit("k1", protocol.TopicPurchase, []byte(`{}`)) {
		t.Fatal("a purchase over the budget admitted")
	}
	if !status(protocol.StatusOffline) {
		t.Fatal("the last will after an online was dropped over the budget")
	}
	if status(protocol.StatusOffline) || status(protocol.StatusOnline) || status("junk") {
		t.Fatal("a repeat, an online or another status admitted over the budget")
	}
}
