package hub_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/protocol"
)

// A kiosk's credentials alone never move a customer's money: a prepaid
// account pays only with a one-time code the customer made, once, for one
// purchase; the login alone, a wrong code, another customer's code or a
// used one is refused, and a kiosk that keeps guessing is stopped and
// reported.
func TestKioskNeedsCustomersPayCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	newCustomer := func(login string, mills protocol.Mills) int64 {
		a, err := e.h.Accounts().Create(ctx, login, "correct horse battery")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.h.Accounts().Credit(ctx, a.ID, mills, "fund", "seed-"+login); err != nil {
			t.Fatal(err)
		}
		return a.ID
	}
	alice, bob := newCustomer("alice", 10_000), newCustomer("bob", 10_000)
	balance := func(id int64) protocol.Mills {
		a, err := e.h.Accounts().ByID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return a.Balance
	}
	pay := func(id, label string, p protocol.Payment) *protocol.PurchaseResult {
		return decode(t, k.ask(purchase(id, "kiosk-1", label, func(r *protocol.PurchaseRequest) { r.Payment = p })))
	}
	refused := func(what string, res *protocol.PurchaseResult, code protocol.Code) {
		t.Helper()
		if res.Status != protocol.ResultRejected || res.Error.Code != code {
			t.Fatalf("%s: %+v, want %s", what, res, code)
		}
	}
	refused("the login alone", pay("pc-1", "1966-F8CF-01", protocol.Payment{Method: protocol.PayAccount, AccountID: "alice"}), protocol.CodePaymentInvalid)
	refused("a made-up code", pay("pc-2", "1966-F8CF-01", protocol.Payment{Method: protocol.PayAccount, PayCode: "PAY-AAAA-BBBB-CCCC-DDDD"}), protocol.CodeUnauthorized)
	bobs, _, err := e.h.Accounts().NewPayCode(ctx, bob, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	refused("bob's code naming alice", pay("pc-3", "1966-F8CF-01", protocol.Payment{Method: protocol.PayAccount, AccountID: "alice", PayCode: bobs}), protocol.CodeUnauthorized)
	if balance(alice) != 10_000 || balance(bob) != 10_000 {
		t.Fatalf("money moved on refusals: alice %s, bob %s", balance(alice), balance(bob))
	}

	code, _, err := e.h.Accounts().NewPayCode(ctx, alice, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	typed := strings.ToLower(strings.ReplaceAll(code, "-", " ")) // as a customer might type it
	if res := pay("pc-4", "1966-F8CF-01", protocol.Payment{Method: protocol.PayAccount, PayCode: typed}); res.Status != protocol.ResultOK {
		t.Fatalf("alice's own code: %+v", res.Error)
	}
	if res := pay("pc-4", "1966-F8CF-01", protocol.Payment{Method: protocol.PayAccount, PayCode: typed}); res.Status != protocol.ResultOK {
		t.Fatalf("the same request again: %+v", res.Error)
	}
	refused("the used code on a new request", pay("pc-5", "1966-F8CF-02", protocol.Payment{Method: protocol.PayAccount, PayCode: code}), protocol.CodeUnauthorized)
	if balance(alice) != 10_000-780 || balance(bob) != 10_000 {
		t.Fatalf("alice %s (want one stamp less), bob %s", balance(alice), balance(bob))
	}
	// A refused sale gives the code back: the customer may try again.
	again, _, _ := e.h.Accounts().NewPayCode(ctx, alice, 10_000)
	refused("a used label", pay("pc-6", "1966-F8CF-01", protocol.Payment{Method: protocol.PayAccount, PayCode: again}), protocol.CodeLabelUsed)
	if res := pay("pc-7", "1966-F8CF-03", protocol.Payment{Method: protocol.PayAccount, PayCode: again}); res.Status != protocol.ResultOK {
		t.Fatalf("the code after a refused sale: %+v", res.Error)
	}

	// A kiosk guessing codes runs out of tries and ops hear of it.
	for i := range 12 {
		pay("guess-"+string(rune('a'+i)), "1966-F8CF-04", protocol.Payment{Method: protocol.PayAccount, PayCode: "PAY-AAAA-BBBB-CCCC-EEE" + string(rune('A'+i))})
	}
	fresh, _, _ := e.h.Accounts().NewPayCode(ctx, bob, 10_000)
	refused("a right code after the guesses", pay("pc-8", "1966-F8CF-04", protocol.Payment{Method: protocol.PayAccount, PayCode: fresh}), protocol.CodeUnauthorized)
	open, err := e.h.Alerts().List(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range open {
		found = found || a.Kind == alerts.Fraud && strings.Contains(a.Subject, "kiosk-1/pay-codes")
	}
	if !found {
		t.Fatalf("no fraud alert for the guessing kiosk: %+v", open)
	}
	if balance(bob) != 10_000 {
		t.Fatalf("bob's balance moved: %s", balance(bob))
	}
	e.check()
}

// The customer makes the code in the portal, sees it as text and as a QR
// code, and a kiosk pays with it.
func TestPortalMakesPayCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.customer("carol", "10.00")
	st, _, page := b.post("/portal/paycode", "/portal/paycode", url.Values{"max": {"5.00"}})
	m := regexp.MustCompile(`id="code">(PAY-[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4})<`).FindStringSubmatch(page)
	if st != http.StatusOK || m == nil || !strings.Contains(page, "data:image/png;base64,") || !strings.Contains(page, `id="max">$5.00<`) {
		t.Fatalf("pay code page: %d\n%s", st, page)
	}
	res := decode(t, e.kiosk("kiosk-1").ask(purchase("portal-pc", "kiosk-1", "1966-F8CF-01", func(r *protocol.PurchaseRequest) {
		r.Payment = protocol.Payment{Method: protocol.PayAccount, PayCode: m[1]}
	})))
	if res.Status != protocol.ResultOK {
		t.Fatalf("paying with the portal's code: %+v", res.Error)
	}
	if st, _, _ := e.browser().do("POST", "/portal/paycode", url.Values{}); st == http.StatusOK {
		t.Fatal("a pay code without a login")
	}
}

// A pay code pays at most what its customer set, so a kiosk handed it (a
// stolen one) cannot spend the whole balance: a purchase over the most is
// payment_declined, moves no money and is not counted as a guess, and the
// code stays unused; a code needs a most above $0, in the portal too.
func TestPayCodePaysAtMostItsLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a, err := e.h.Accounts().Create(ctx, "carol", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.h.Accounts().Credit(ctx, a.ID, 10_000, "fund", "seed-carol"); err != nil {
		t.Fatal(err)
	}
	code, _, err := e.h.Accounts().NewPayCode(ctx, a.ID, 500)
	if err != nil {
		t.Fatal(err)
	}
	res := decode(t, e.kiosk("kiosk-1").ask(purchase("cap-1", "kiosk-1", "1966-F8CF-01", func(r *protocol.PurchaseRequest) {
		r.Payment = protocol.Payment{Method: protocol.PayAccount, PayCode: code}
	})))
	if res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodePaymentDeclined || !strings.Contains(res.Error.Message, "at most $0.50") {
		t.Fatalf("a $0.78 purchase with a $0.50 code: %+v", res)
	}
	if acct, _ := e.h.Accounts().ByID(ctx, a.ID); acct.Balance != 10_000 {
		t.Fatalf("balance %s after the refusal", acct.Balance)
	}
	if id, err := e.h.Accounts().RedeemPayCode(ctx, code, "kiosk-1/within", 500); err != nil || id != a.ID {
		t.Fatalf("the code within its most after the refusal: %d, %v", id, err)
	}
	if _, _, err := e.h.Accounts().NewPayCode(ctx, a.ID, 0); err == nil {
		t.Fatal("a pay code with no most")
	}
	b := e.customer("dave", "10.00")
	if st, _, page := b.post("/portal/paycode", "/portal/paycode", url.Values{"max": {""}}); st != http.StatusUnprocessableEntity || !strings.Contains(page, "most the code may pay") {
		t.Fatalf("a portal code with no most: %d", st)
	}
}
