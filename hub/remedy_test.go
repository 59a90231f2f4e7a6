package hub_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// A registered customer whose balance falls short is offered the order the
// balance pays for, or a top-up that keeps the order (the patent's Fig. 8,
// step 810). A card kept at the top-up is the gateway's token, and pays
// later purchases the balance does not cover, in the portal and through
// the XML API with the card fields left blank.
func TestPortalShortFundsRemedy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	remedyForm := regexp.MustCompile(`(?s)<div class="card" id="remedy">.*?</div>`)
	hidden := regexp.MustCompile(`name="(\w+)" value="([^"]*)"`)

	// Fewer stamps: $2.00 pays for 2 of 5 First-Class stamps.
	tia := e.customer("tia", "2.00")
	sheet := e.webSheet()
	st, _, page := tia.buy(sheet, 5)
	block := remedyForm.FindString(page)
	if st != http.StatusUnprocessableEntity || !strings.Contains(block, "Buy 2 stamps for $1.56 instead") || !strings.Contains(block, "Top up $1.90 and buy all 5") {
		t.Fatalf("short funds: %d, remedy %q", st, block)
	}
	form := url.Values{}
	for _, m := range hidden.FindAllStringSubmatch(block, -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	if st, loc, _ := tia.do("POST", "/portal/buy", form); st != http.StatusSeeOther || !strings.Contains(loc, "Bought+2+stamps") && !strings.Contains(loc, "Bought%202%20stamps") {
		t.Fatalf("the order that fits: %d %s", st, loc)
	}

	// A top-up that keeps the order, and keeps the card.
	uma := e.customer("uma", "2.00")
	sheet2 := e.webSheet()
	_, _, page = uma.buy(sheet2, 5)
	link := regexp.MustCompile(`id="topup-keep" href="([^"]+)"`).FindStringSubmatch(page)
	if link == nil {
		t.Fatalf("no top-up link:\n%s", page)
	}
	href := html.UnescapeString(link[1])
	_, _, fund := uma.do("GET", href, nil)
	if !strings.Contains(fund, `id="kept-order"`) || !strings.Contains(fund, `value="1.90"`) {
		t.Fatalf("the top-up page does not keep the order:\n%s", fund)
	}
	form = url.Values{"card": {"4242 4242 4242 4242"}, "exp": {"12/39"}, "name": {"Uma"}, "save_card": {"yes"}}
	for _, m := range hidden.FindAllStringSubmatch(fund, -1) {
		if m[1] != "csrf" {
			form.Set(m[1], html.UnescapeString(m[2]))
		}
	}
	form.Set("amount", "1.90")
	st, loc, page := uma.post(href, "/portal/fund", form)
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/portal/purchases/") {
		t.Fatalf("top-up and buy: %d %s %s", st, loc, page)
	}
	acct, err := e.h.Accounts().ByLogin(ctx, "uma")
	if err != nil {
		t.Fatal(err)
	}
	if acct.Balance != 0 || acct.CardLast4 != "4242" || !strings.HasPrefix(acct.CardToken(), "tok_") || strings.Contains(acct.CardToken(), "4242424242424242") {
		t.Fatalf("after the top-up: balance %d, card %q %q", acct.Balance, acct.CardLast4, acct.CardToken())
	}
	// The kept card pays what the empty balance cannot: in the portal...
	if st, loc, page := uma.buy(sheet2, 2); st != http.StatusSeeOther || !strings.HasPrefix(loc, "/portal/purchases/") {
		t.Fatalf("buy with the kept card: %d %s %s", st, loc, page)
	}
	// ...and through the XML API with no card fields.
	body := fmt.Sprintf(`<server.bp_RequestWebStampParams><LoginID>uma</LoginID><Amount>780</Amount><RateClass>1100</RateClass>`+
		`<FIM>0</FIM><SerialNumber>%s</SerialNumber></server.bp_RequestWebStampParams>`, sheet2)
	if st, b := postWebStamp(t, e, "uma", "kept-card-1", body); st != http.StatusOK || !strings.Contains(b, "<Indicium>") {
		t.Fatalf("XML with the kept card: %d %s", st, b)
	}
	e.check()
}
