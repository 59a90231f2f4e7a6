package hub_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// A customer's account debit whose commit happened but whose answer the
// hub never heard (the connection dropped, the database failed over) is
// given back by settlement when no stamp was sold, and a resend of the
// same form sells once, for one debit. Before, the attempt was recorded
// voided at once and nothing gave the money back: the customer paid for
// nothing, or twice for one stamp on a resend.
func TestAccountDebitWithLostCommitGivenBack(t *testing.T) {
	t.Parallel()
	for _, resend := range []bool{false, true} {
		dsn, proxy := startPGProxy(t, peersDB(t), "INSERT INTO account_entries")
		e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn })
		sheet := e.webSheet()
		alice := e.customer("alice", "20.00")
		proxy.armed.Store(true)
		form := url.Values{"class": {"1100"}, "weight_oz": {"1"}, "sheet": {sheet}, "count": {"1"}, "request_id": {"lost-hold-1"}}
		if st, loc, _ := alice.post("/portal/", "/portal/buy", form); st == 303 || proxy.fired.Load() != 1 {
			t.Fatalf("the buy whose debit's answer was lost: %d %s, proxy fired %d", st, loc, proxy.fired.Load())
		}
		want := protocol.Mills(20_000)
		if resend {
			if st, loc, page := alice.post("/portal/", "/portal/buy", form); st != 303 {
				t.Fatalf("the same form again: %d %s %s", st, loc, page)
			}
			want -= 780
		}
		// Settlement's rounds, once the request's claim is let go (just
		// after the answer).
		e.clock.Set(e.clock.Now().Add(10 * time.Minute))
		wait.Until(t, 10*time.Second, "the balance settled", func() error {
			e.h.Round()
			acc, err := e.h.Accounts().ByLogin(context.Background(), "alice")
			if err != nil {
				return err
			}
			if acc.Balance != want {
				return fmt.Errorf("resend %t: the balance is %s, want %s", resend, acc.Balance, want)
			}
			return nil
		})
		e.check()
	}
}
