package hub_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/accounts"
)

// A customer holds at most accounts.MaxOpenPayCodes unused pay codes, and
// old ones are deleted: anyone who registers could make codes without end,
// a row each that was never deleted, hundreds a second.
func TestPayCodesBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mallory := e.customer("mallory", "")
	newCode := func() (int, string) {
		st, _, page := mallory.post("/portal/paycode", "/portal/paycode", url.Values{"max": {"5.00"}})
		return st, page
	}
	for i := range accounts.MaxOpenPayCodes {
		if st, page := newCode(); st != http.StatusOK || !strings.Contains(page, "PAY-") {
			t.Fatalf("pay code %d: %d %.300s", i+1, st, page)
		}
	}
	if st, page := newCode(); st != http.StatusTooManyRequests || !strings.Contains(page, "pay codes not yet used") {
		t.Fatalf("one more pay code: %d %.300s, want 429 and why", st, page)
	}
	rows := func() (n int) {
		db := e.openDB()
		defer db.Close()
		if err := db.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM pay_codes").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := rows(); n != accounts.MaxOpenPayCodes {
		t.Fatalf("%d pay codes stored, want %d", n, accounts.MaxOpenPayCodes)
	}
	// Once they expired and their retention passed, the next code is made
	// and the old rows are gone.
	e.clock.Set(e.clock.Now().Add(accounts.PayCodeTTL + accounts.PayCodeRetention + time.Minute))
	if st, _, _ := mallory.do("POST", "/portal/login", url.Values{"login": {"mallory"}, "password": {"correct horse battery"}}); st != http.StatusSeeOther {
		t.Fatalf("log in again, the session expired: %d", st)
	}
	if st, page := newCode(); st != http.StatusOK {
		t.Fatalf("a pay code after the others expired: %d %.300s", st, page)
	}
	if n := rows(); n != 1 {
		t.Fatalf("%d pay codes stored, want 1: the expired ones kept", n)
	}
}
