package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/protocol"
)

// Staff take back an unused kiosk stamp at the counter: their stores'
// kiosks only, with the label in hand and a reason, within 28 days, once.
// The card gets the postage back, the indicium goes on the void list, and
// the status lookup says so.
func TestCounterRefundAndVoidList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	var meter string
	for i, label := range []string{"1966-F8CF-01", "1966-F8CF-02", "1966-F8CF-03"} {
		res := decode(t, k.ask(purchase("ctr-"+label, "kiosk-1", label, nil)))
		if res.Status != protocol.ResultOK {
			t.Fatalf("sale %d: %+v", i, res.Error)
		}
		meter = res.Indicia[0].MeterNumber
	}
	refund := func(b *browser, label, why string, inHand bool) (int, string) {
		t.Helper()
		form := url.Values{"label": {label}, "reason": {why}}
		if inHand {
			form.Set("handed_in", "yes")
		}
		st, _, page := b.post("/console/stock", "/console/refunds", form)
		return st, page
	}
	before := e.cards.Totals()
	other := e.operator("sam", "staff", "store-b")
	if st, page := refund(other, "1966-F8CF-01", "wrong class", true); st != http.StatusUnprocessableEntity || !strings.Contains(page, "not sold at a kiosk you look after") {
		t.Fatalf("another store's staff: %d", st)
	}
	staff := e.operator("sue", "staff", "store-a")
	if st, _ := refund(staff, "1966-F8CF-01", "wrong class", false); st != http.StatusUnprocessableEntity {
		t.Fatalf("without the label in hand: %d", st)
	}
	if st, _ := refund(staff, "1966-F8CF-01", "", true); st != http.StatusUnprocessableEntity {
		t.Fatalf("without a reason: %d", st)
	}
	if st, page := refund(staff, "1966-F8CF-01", "wrong class", true); st != http.StatusOK || !strings.Contains(page, "Refunded $0.78") {
		t.Fatalf("refund: %d %s", st, page)
	}
	if st, page := refund(staff, "1966-F8CF-01", "again", true); st != http.StatusUnprocessableEntity || !strings.Contains(page, "refunded already") {
		t.Fatalf("second refund: %d", st)
	}
	if after := e.cards.Totals(); after.Refunded-before.Refunded != 780 {
		t.Fatalf("card refunded %d mills, want 780", after.Refunded-before.Refunded)
	}
	// Past the window: refused, and the stamp stays valid.
	e.clock.Set(e.clock.Now().Add(29 * 24 * time.Hour))
	ops := e.operator("olive", "ops")
	if st, page := refund(ops, "1966-F8CF-02", "too late", true); st != http.StatusUnprocessableEntity || !strings.Contains(page, "refund window") {
		t.Fatalf("after 29 days: %d", st)
	}

	// The void list and the status lookup, for verifiers.
	get := func(path string, out any) {
		t.Helper()
		resp, err := http.Get("http://" + e.h.HTTPAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(out) != nil {
			t.Fatalf("%s: %s", path, resp.Status)
		}
	}
	var voids []ledger.Void
	get("/api/v1/voided", &voids)
	if len(voids) != 1 || voids[0].Label != "1966-F8CF-01" || voids[0].Meter != meter || voids[0].Reason != "refund_requested" {
		t.Fatalf("void list %+v", voids)
	}
	for label, want := range map[string]string{"1966-F8CF-01": "voided", "1966-F8CF-02": "valid", "1966-F8CF-09": "unknown"} {
		var st map[string]string
		get("/api/v1/indicia/"+meter+"/"+label, &st)
		if st["status"] != want {
			t.Errorf("status of %s: %v, want %s", label, st, want)
		}
	}
	var st map[string]string
	get("/api/v1/indicia/XX9Z00000001/1966-F8CF-01", &st)
	if st["status"] != "unknown" {
		t.Errorf("another vendor's meter: %v", st)
	}
	// The refund is a refund claim in the postal report, and the books add up.
	rep, err := e.h.Ledger().BuildReport(ctx, e.clock.Now().Add(-60*24*time.Hour), e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Voided) != 1 || rep.Voided[0].Label != "1966-F8CF-01" {
		t.Fatalf("refund claims %+v", rep.Voided)
	}
	if _, err := e.h.Ledger().SubmitReport(ctx, rep, e.h.Postal()); err != nil {
		t.Fatal(err)
	}
	e.check()
}

// A stamp taken back, at the counter or in the portal, has its refund
// recorded with the void, before the money moves: a hub that stops in
// between leaves the refund due, and the leader's tick a minute on moves
// the money, once, to the card or the prepaid balance that paid.
func TestTakenBackRefundFinishedByTheHub(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if res := decode(t, e.kiosk("kiosk-1").ask(purchase("tb-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("kiosk sale: %+v", res.Error)
	}
	sheet := e.webSheet()
	alice := e.customer("alice", "20.00")
	st, loc, page := alice.buy(sheet, 1)
	if st != http.StatusSeeOther {
		t.Fatalf("web sale: %d %s", st, page)
	}
	web := strings.SplitN(loc, "?", 2)[0]
	before := e.cards.Totals()
	// Each hub stops once the ledger has taken the stamp back.
	for _, tb := range []struct{ label, by, why string }{{"1966-F8CF-01", "sue", "wrong class"}, {sheet + "-01", "", ""}} {
		label, _ := protocol.ParseLabelSerial(tb.label)
		kioskID, saleID, err := e.h.Ledger().LabelSale(ctx, label)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.h.Ledger().RefundUnused(ctx, kioskID, saleID, label, time.Time{}, tb.by, tb.why); err != nil {
			t.Fatal(err)
		}
	}
	e.h.Tick(ctx) // too soon: the refund may still be under way
	if got := e.cards.Totals().Refunded - before.Refunded; got != 0 {
		t.Fatalf("refunded %d mills at once", got)
	}
	e.clock.Set(e.clock.Now().Add(2 * time.Minute))
	e.h.Tick(ctx)
	e.h.Tick(ctx)
	if got := e.cards.Totals().Refunded - before.Refunded; got != 780 {
		t.Fatalf("card refunded %d mills, want 780 once", got)
	}
	if _, _, page := alice.do("GET", web, nil); !strings.Contains(page, "alice · $20.00") {
		t.Fatalf("the web stamp's postage is not back on the balance:\n%s", page)
	}
	form := url.Values{"label": {"1966-F8CF-01"}, "reason": {"again"}, "handed_in": {"yes"}}
	if st, _, page := e.operator("sue", "staff", "store-a").post("/console/stock", "/console/refunds", form); st != http.StatusUnprocessableEntity || !strings.Contains(page, "refunded already") {
		t.Fatalf("the counter refund asked again: %d", st)
	}
	e.check()
}

// A label may carry a stamp signed and never sold (spoiled) besides its
// live one: the status lookup given the stamp's ar answers for that stamp,
// so a verifier holding the spoiled one does not hear valid.
func TestIndiciumStatusByAR(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	res := decode(t, e.kiosk("kiosk-1").ask(purchase("ar-1", "kiosk-1", "1966-F8CF-01", nil)))
	if res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	in, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	spoiledAR := int64(in.AR) + 1000
	if _, err := e.openDB().Exec(fmt.Sprintf(`INSERT INTO spoiled (kiosk_id, request_id, mpsd, label, rate_class, postage, ar, dr, cert_serial, data, reason, created_at)
		VALUES ('kiosk-1', 'ar-0', %d, '1966-F8CF-01', '1100', 780, %d, 0, 1, '', 'commit_failed', 0)`, in.MPSDSerial, spoiledAR)); err != nil {
		t.Fatal(err)
	}
	status := func(query string) string {
		t.Helper()
		resp, err := http.Get("http://" + e.h.HTTPAddr + "/api/v1/indicia/" + in.MeterNumber() + "/1966-F8CF-01" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Status string }
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
			return resp.Status
		}
		return out.Status
	}
	for query, want := range map[string]string{"": "valid", fmt.Sprintf("?ar=%d", in.AR): "valid", fmt.Sprintf("?ar=%d", spoiledAR): "voided",
		"?ar=1": "unknown", "?ar=x": "400 Bad Request"} {
		if got := status(query); got != want {
			t.Errorf("status%s: %s, want %s", query, got, want)
		}
	}
}

// A free reprint taken back at the counter is refunded to the sale that
// paid for the label it replaced, once: asked again, it is refunded
// already, as any other stamp.
func TestCounterRefundOfAReprint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.kiosk("kiosk-1")
	e.failLabel(k, "s-1", "1966-F8CF-01")
	res := decode(t, k.ask(reprintOf("rp-1", "s-1", "1966-F8CF-01", "1966-F8CF-02")))
	if res.Status != protocol.ResultOK {
		t.Fatal(res.Error)
	}
	before := e.cards.Totals().Refunded
	staff := e.operator("sue", "staff", "store-a")
	form := url.Values{"label": {"1966-F8CF-02"}, "reason": {"wrong class"}, "handed_in": {"yes"}}
	if st, _, page := staff.post("/console/stock", "/console/refunds", form); st != http.StatusOK || !strings.Contains(page, "Refunded $0.78") {
		t.Fatalf("the reprint taken back: %d", st)
	}
	form.Set("reason", "again")
	if st, _, page := staff.post("/console/stock", "/console/refunds", form); st != http.StatusUnprocessableEntity || !strings.Contains(page, "refunded already") {
		t.Errorf("taken back again: %d", st)
	}
	if got := e.cards.Totals().Refunded - before; got != 780 {
		t.Errorf("the card was refunded %d mills, want 780 once", got)
	}
}
