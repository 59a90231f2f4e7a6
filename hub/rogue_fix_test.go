package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/cards"
	"github.com/frank-postage/frank/testbench/verify"
)

// refundOf is a kiosk-1 refund request for label of sale saleID.
func refundOf(id, saleID, label string) []byte {
	b, _ := json.Marshal(protocol.RefundRequest{RequestID: id, KioskID: "kiosk-1",
		Label: protocol.LabelRef{RequestID: saleID, LabelSerial: label}})
	return b
}

// reprintOf is a kiosk-1 free reprint of label (sale saleID) on onto.
func reprintOf(id, saleID, label, onto string) []byte {
	return purchase(id, "kiosk-1", onto, func(r *protocol.PurchaseRequest) {
		r.Payment = protocol.Payment{Method: protocol.PayNone}
		r.ReprintOf = &protocol.LabelRef{RequestID: saleID, LabelSerial: label}
	})
}

func decodeRefund(t testing.TB, raw []byte) *protocol.RefundResult {
	t.Helper()
	var r protocol.RefundResult
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("refund result %s: %v", raw, err)
	}
	if r.Error != nil {
		met.Store(r.Error.Code, true)
	}
	return &r
}

// A stolen kiosk sends a free reprint and a refund of one failed label at
// once (the front serves messages in parallel), again and again. Each
// label gets one remedy: the reprint or the money, never both, and a
// refund that is refused moves no money.
func TestReprintRefundRaceGivesOneRemedy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	more := []string{"7A00-0001", "7A00-0002", "7A00-0003"}
	e.loadStock("store-a", "kiosk-1", more...)
	k := e.kiosk("kiosk-1")
	ctx := context.Background()
	trials, reprints, refunds := 0, 0, 0
	for _, sheet := range append([]string{"1966-F8CF", "1966-F8D0"}, more...) {
		for p := 1; p <= protocol.LabelsPerSheet; p += 2 {
			trials++
			failed, onto := fmt.Sprintf("%s-%02d", sheet, p), fmt.Sprintf("%s-%02d", sheet, p+1)
			sid := fmt.Sprintf("race-%d", trials)
			e.failLabel(k, sid, failed)
			before := e.cards.Totals()
			var rp, rf []byte
			var wg sync.WaitGroup
			rpGo := func() { rp, _ = e.h.Sales().Purchase(ctx, "kiosk-1", reprintOf("rp-"+sid, sid, failed, onto)) }
			rfGo := func() { rf, _ = e.h.Sales().Refund(ctx, "kiosk-1", refundOf("rf-"+sid, sid, failed)) }
			if trials%2 == 0 { // either may start first
				rpGo, rfGo = rfGo, rpGo
			}
			wg.Go(rpGo)
			wg.Go(rfGo)
			wg.Wait()
			refunded := e.cards.Totals().Refunded - before.Refunded
			reprint, refund := decode(t, rp), decodeRefund(t, rf)
			reprinted, paidBack := reprint.Status == protocol.ResultOK, refund.Status == protocol.ResultOK
			switch {
			case reprinted == paidBack:
				t.Errorf("trial %d: reprint %s, refund %s: want exactly one remedy", trials, rp, rf)
			case paidBack && (refunded != 780 || refund.AmountMills != 780):
				t.Errorf("trial %d: refund answered %s, card refunded %d", trials, rf, refunded)
			case reprinted && refunded != 0:
				t.Errorf("trial %d: reprinted and the card refunded %d (refund answer %s)", trials, refunded, rf)
			case reprinted && refund.Error.Code != protocol.CodeRemedyNotAllowed:
				t.Errorf("trial %d: refund after the reprint: %s", trials, rf)
			case paidBack && reprint.Error.Code != protocol.CodeRemedyNotAllowed:
				t.Errorf("trial %d: reprint after the refund: %s", trials, rp)
			}
			if reprinted {
				reprints++
			} else {
				refunds++
			}
		}
	}
	t.Logf("%d trials: %d reprints, %d refunds", trials, reprints, refunds)
	e.check()
}

// halfRefunded sells label on kiosk-1 as sale, has it fail to print, and
// records its refund for the kiosk's request refund as a hub does before
// the money moves, and stops there. It returns the gateway's totals from
// before the refund.
func (e *env) halfRefunded(k *kioskClient, sale, refund string, label protocol.LabelSerial) cards.Totals {
	e.t.Helper()
	e.failLabel(k, sale, label.String())
	before := e.cards.Totals()
	if _, err := e.h.Ledger().ReserveRefund(context.Background(), "kiosk-1", sale, label, refund); err != nil {
		e.t.Fatal(err)
	}
	return before
}

// A hub that recorded a refund and stopped before the money moved: the
// label's remedy is the refund, so a reprint is refused, and the kiosk's
// next refund request finishes it, moving the money once.
func TestRefundRecordedBeforeMoneyIsFinished(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.kiosk("kiosk-1")
	ctx := context.Background()
	label, _ := protocol.ParseLabelSerial("1966-F8CF-01")
	before := e.halfRefunded(k, "half-1", "rf-half-1", label)
	res := decode(t, k.ask(reprintOf("rp-half-1", "half-1", label.String(), "1966-F8CF-02")))
	if res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeRemedyNotAllowed {
		t.Fatalf("reprint of a label being refunded: %+v", res)
	}
	for _, id := range []string{"rf-half-1", "rf-half-1", "rf-sweep"} { // the same request again, then the kiosk's sweep
		out, _ := e.h.Sales().Refund(ctx, "kiosk-1", refundOf(id, "half-1", label.String()))
		if r := decodeRefund(t, out); r.Status != protocol.ResultOK || r.AmountMills != 780 {
			t.Fatalf("refund %s: %s", id, out)
		}
	}
	if got := e.cards.Totals().Refunded - before.Refunded; got != 780 {
		t.Fatalf("card refunded %d mills, want 780 once", got)
	}
	e.check()
}

// The ledger check finds a failed label that got both remedies, as the
// race did before the refund was recorded first.
func TestLedgerCheckFindsDoubleRemedy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.kiosk("kiosk-1")
	ctx := context.Background()
	e.failLabel(k, "dbl-1", "1966-F8CF-01")
	if res := decode(t, k.ask(reprintOf("rp-dbl-1", "dbl-1", "1966-F8CF-01", "1966-F8CF-02"))); res.Status != protocol.ResultOK {
		t.Fatalf("reprint: %+v", res.Error)
	}
	e.check()
	// The card refunded too, as the losing refund did.
	db := e.openDB()
	if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO payment_refunds (kiosk_id, request_id, ref, amount, created_at) VALUES (?, ?, ?, ?, ?)`),
		"kiosk-1", "dbl-1", "refund:1966-F8CF-01", 780, time.Now().UnixMicro()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE payments SET refunded = refunded + 780 WHERE kiosk_id = ? AND request_id = ?`), "kiosk-1", "dbl-1"); err != nil {
		t.Fatal(err)
	}
	r, err := e.h.Ledger().Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Violations) != 1 || !strings.Contains(r.Violations[0], "got a free reprint and their postage refunded") {
		t.Fatalf("violations %q", r.Violations)
	}
}

// A kiosk's own stock message cannot take a sheet loaded into another
// kiosk of its store, or given to a customer; ops can move one, and a
// kiosk loads its own sheets again and fresh ones as before.
func TestKioskLoadLeavesOthersSheets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	pw, err := e.h.Fleet().Add(ctx, "kiosk-3", "store-a") // kiosk-1's store
	if err != nil {
		t.Fatal(err)
	}
	e.pw["kiosk-3"] = pw
	rogue := e.kiosk("kiosk-3")
	load := func(k *kioskClient, id string, sheets ...string) *protocol.StockResult {
		t.Helper()
		b, _ := json.Marshal(protocol.StockLoad{RequestID: id, KioskID: k.id, Sheets: sheets})
		raw := k.send(protocol.TopicStock, b)
		res, err := protocol.DecodeStockResult(raw)
		if err != nil {
			t.Fatalf("stock result %s: %v", raw, err)
		}
		if res.Error != nil {
			met.Store(res.Error.Code, true)
		}
		return res
	}
	if res := load(rogue, "steal-1", "1966-F8CF"); res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeLabelAssignedElsewhere {
		t.Fatalf("load of kiosk-1's sheet: %+v", res)
	}
	// Nothing moved: one sheet refused refuses the message.
	if res := load(rogue, "steal-2", "1966-F8D0", "1966-F8CF"); res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeLabelAssignedElsewhere {
		t.Fatalf("load of two of kiosk-1's sheets: %+v", res)
	}
	victim := e.kiosk("kiosk-1")
	for i, label := range []string{"1966-F8CF-01", "1966-F8D0-01"} {
		if res := decode(t, victim.ask(purchase(fmt.Sprintf("v-%d", i), "kiosk-1", label, nil))); res.Status != protocol.ResultOK {
			t.Fatalf("kiosk-1's sale on its own sheet: %+v", res.Error)
		}
	}
	if res := decode(t, rogue.ask(purchase("r-1", "kiosk-3", "1966-F8CF-02", nil))); res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeLabelNotAssigned {
		t.Fatalf("kiosk-3's sale on kiosk-1's sheet: %+v", res)
	}
	// A customer's sheet of the store is the customer's.
	e.customer("carol", "10.00")
	acct, err := e.h.Accounts().ByLogin(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	e.loadStock("store-a", "kiosk-1", "7A00-0001")
	sh, _ := protocol.ParseSheetSerial("7A00-0001")
	if err := e.h.Stock().AssignToAccount(ctx, sh, acct.ID); err != nil {
		t.Fatal(err)
	}
	if res := load(rogue, "steal-3", "7A00-0001"); res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeLabelAssignedElsewhere {
		t.Fatalf("load of a customer's sheet: %+v", res)
	}
	// A fresh sheet loads, and loads again (a resend, a second scan).
	if err := e.h.Stock().Import(ctx, "store-a", []protocol.SheetSerial{0x7A000002}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"fresh-1", "fresh-2"} {
		if res := load(rogue, id, "7A00-0002"); res.Status != protocol.ResultOK || len(res.Sheets) != 1 {
			t.Fatalf("load of a fresh sheet: %+v", res)
		}
	}
	if res := load(victim, "take-back", "7A00-0002"); res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeLabelAssignedElsewhere {
		t.Fatalf("kiosk-1 takes kiosk-3's sheet: %+v", res)
	}
	// Ops move a sheet (hub stock load): that still works.
	if _, err := e.h.Stock().Load(ctx, "kiosk-3", []protocol.SheetSerial{0x1966F8CF}); err != nil {
		t.Fatalf("ops move a sheet: %v", err)
	}
	if res := decode(t, rogue.ask(purchase("r-2", "kiosk-3", "1966-F8CF-02", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("kiosk-3's sale on the sheet ops gave it: %+v", res.Error)
	}
	e.check()
}

// A kiosk's stamps carry its store's ZIP: a request naming another origin
// is refused (recorded, so a resend gets the same bytes), and one that
// names the store's is signed with it. A store ops gave no ZIP signs what
// its kiosks send, as before.
func TestKioskSignsItsStoresZIP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if err := e.h.Fleet().SetStoreZIP(ctx, "store-a", "94544"); err != nil {
		t.Fatal(err)
	}
	k := e.kiosk("kiosk-1")
	elsewhere := purchase("zip-1", "kiosk-1", "1966-F8CF-01", func(r *protocol.PurchaseRequest) { r.OriginZIP = "10001" })
	raw := k.ask(elsewhere)
	res := decode(t, raw)
	if res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeInvalidRequest || !strings.Contains(res.Error.Message, "origin_zip") {
		t.Fatalf("sale from another ZIP: %s", raw)
	}
	if again := k.ask(elsewhere); !bytes.Equal(again, raw) {
		t.Fatalf("resend differs:\n%s\n%s", again, raw)
	}
	res = decode(t, k.ask(purchase("zip-2", "kiosk-1", "1966-F8CF-01", nil))) // origin_zip 94544
	if res.Status != protocol.ResultOK {
		t.Fatalf("sale from the store's ZIP: %+v", res.Error)
	}
	keys, err := verify.FetchKeys(ctx, "http://"+e.h.HTTPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if in, err := keys.Verify(res.Indicia[0].Matrix); err != nil || in.OriginZIP != 94544 {
		t.Fatalf("indicium %+v %v", in, err)
	}
	e.failLabel(k, "zip-4", "1966-F8CF-03")
	// The store moves: its kiosks follow at once on this hub.
	if err := e.h.Fleet().SetStoreZIP(ctx, "store-a", "20187"); err != nil {
		t.Fatal(err)
	}
	if res := decode(t, k.ask(purchase("zip-3", "kiosk-1", "1966-F8CF-02", nil))); res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeInvalidRequest {
		t.Fatalf("sale from the store's old ZIP: %+v", res)
	}
	// A failed label's reprint is a sale of the kiosk too.
	if res := decode(t, k.ask(reprintOf("zip-5", "zip-4", "1966-F8CF-03", "1966-F8CF-04"))); res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeInvalidRequest {
		t.Fatalf("reprint from the store's old ZIP: %+v", res)
	}
	if res := decode(t, k.ask(purchase("zip-6", "kiosk-1", "1966-F8CF-02", func(r *protocol.PurchaseRequest) { r.OriginZIP = "20187" }))); res.Status != protocol.ResultOK {
		t.Fatalf("sale from the store's new ZIP: %+v", res.Error)
	}
	// store-b has no ZIP.
	res = decode(t, e.kiosk("kiosk-2").ask(purchase("zip-7", "kiosk-2", "2222-0001-01", func(r *protocol.PurchaseRequest) { r.OriginZIP = "10001" })))
	if res.Status != protocol.ResultOK {
		t.Fatalf("sale of a store without a ZIP: %+v", res.Error)
	}
	if in, err := keys.Verify(res.Indicia[0].Matrix); err != nil || in.OriginZIP != 10001 {
		t.Fatalf("indicium %+v %v", in, err)
	}
	e.check()
}

// A refund recorded whose money never moved, its kiosk never asking again
// (its hub stopped between the two), is finished by the leader's tick a
// minute on: the card is refunded once, however many ticks follow.
func TestRefundRecordedIsFinishedByTheHub(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.kiosk("kiosk-1")
	ctx := context.Background()
	label, _ := protocol.ParseLabelSerial("1966-F8CF-01")
	before := e.halfRefunded(k, "half-2", "rf-half-2", label)
	e.h.Tick(ctx)
	if got := e.cards.Totals().Refunded - before.Refunded; got != 0 {
		t.Fatalf("refunded %d mills while the kiosk's own request may still be under way", got)
	}
	e.clock.Set(e.clock.Now().Add(2 * time.Minute))
	for range 2 {
		e.h.Tick(ctx)
		if got := e.cards.Totals().Refunded - before.Refunded; got != 780 {
			t.Fatalf("card refunded %d mills after the tick, want 780 once", got)
		}
	}
	// The kiosk asks at last: told ok, nothing moves again.
	out, _ := e.h.Sales().Refund(ctx, "kiosk-1", refundOf("rf-half-2", "half-2", label.String()))
	if r := decodeRefund(t, out); r.Status != protocol.ResultOK || r.AmountMills != 780 {
		t.Fatalf("the kiosk's refund: %s", out)
	}
	if got := e.cards.Totals().Refunded - before.Refunded; got != 780 {
		t.Fatalf("card refunded %d mills, want 780 once", got)
	}
	e.check()
}

// A refund recorded whose money did not move is finished by the hub even
// when the customers' refund window is shorter than the gateway was away:
// that window is a policy for stamps, not for money owed. Before, with
// --refund-window 1m the leader looked at no refund at all.
func TestRefundDueFinishedPastAShortRefundWindow(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.RefundWindow = time.Minute })
	k := e.kiosk("kiosk-1")
	ctx := context.Background()
	label, _ := protocol.ParseLabelSerial("1966-F8CF-01")
	before := e.halfRefunded(k, "half-3", "rf-half-3", label)
	e.clock.Set(e.clock.Now().Add(3 * time.Hour)) // the gateway was down, the kiosk gone
	e.h.Tick(ctx)
	if got := e.cards.Totals().Refunded - before.Refunded; got != 780 {
		t.Fatalf("card refunded %d mills three hours on, want 780", got)
	}
	e.check()
}

// A stolen kiosk cannot give a failed print one of the hub's own void
// reasons, and a stamp taken back at the counter gets no kiosk remedy,
// even while that refund's money has not moved: staff finish it there.
func TestCounterRefundedStampGetsNoKioskRemedy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.kiosk("kiosk-1")
	ctx := context.Background()

	// A failed print reported with the counter's reason is a failed print.
	if res := decode(t, k.ask(purchase("forged", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	rep, _ := json.Marshal(protocol.PrintReport{RequestID: "forged", KioskID: "kiosk-1",
		Labels: []protocol.LabelOutcome{{LabelSerial: "1966-F8CF-01", Outcome: protocol.PrintFailed, Reason: "refund_requested"}}})
	if err := e.h.Ledger().RecordPrint(ctx, mustPrintReport(t, rep)); err != nil {
		t.Fatal(err)
	}
	voids, err := e.h.Ledger().VoidList(ctx)
	if err != nil || len(voids) != 1 || voids[0].Reason != "print_failed" {
		t.Fatalf("void list %+v, %v: want the label voided as print_failed", voids, err)
	}
	if res := decode(t, k.ask(reprintOf("rp-forged", "forged", "1966-F8CF-01", "1966-F8CF-02"))); res.Status != protocol.ResultOK {
		t.Fatalf("reprint of a failed print: %+v", res.Error)
	}

	// A printed stamp taken back at the counter, its refund cut short
	// before the money moved.
	if res := decode(t, k.ask(purchase("kept", "kiosk-1", "1966-F8CF-03", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	label, _ := protocol.ParseLabelSerial("1966-F8CF-03")
	if _, err := e.h.Ledger().RefundUnused(ctx, "kiosk-1", "kept", label, time.Time{}, "sue", "customer changed mind"); err != nil {
		t.Fatal(err)
	}
	before := e.cards.Totals()
	if res := decode(t, k.ask(reprintOf("rp-kept", "kept", "1966-F8CF-03", "1966-F8CF-04"))); res.Error == nil || res.Error.Code != protocol.CodeRemedyNotAllowed {
		t.Fatalf("reprint of a stamp taken back at the counter: %+v", res)
	}
	out, _ := e.h.Sales().Refund(ctx, "kiosk-1", refundOf("rf-kept", "kept", "1966-F8CF-03"))
	if r := decodeRefund(t, out); r.Error == nil || r.Error.Code != protocol.CodeRemedyNotAllowed {
		t.Fatalf("kiosk refund of a stamp taken back at the counter: %s", out)
	}
	staff := e.operator("sue", "staff", "store-a")
	form := url.Values{"label": {"1966-F8CF-03"}, "reason": {"customer changed mind"}, "handed_in": {"yes"}}
	if st, _, page := staff.post("/console/stock", "/console/refunds", form); st != http.StatusOK || !strings.Contains(page, "Refunded $0.78") {
		t.Fatalf("the counter refund again: %d %s", st, page)
	}
	if got := e.cards.Totals().Refunded - before.Refunded; got != 780 {
		t.Fatalf("card refunded %d mills, want 780 once", got)
	}
	e.check()
}

// A kiosk that reports most of its labels failed (a stolen one printing
// stamps and having them refunded) is alerted by the leader's tick; a
// kiosk with the odd jam is not.
func TestManyFailedPrintsAlerted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k1, k2 := e.kiosk("kiosk-1"), e.kiosk("kiosk-2")
	for i := range 12 {
		label := fmt.Sprintf("%s-%02d", []string{"1966-F8CF", "1966-F8D0"}[i/10], i%10+1)
		if i == 11 { // one printed
			if res := decode(t, k1.ask(purchase("fp-12", "kiosk-1", label, nil))); res.Status != protocol.ResultOK {
				t.Fatalf("sale: %+v", res.Error)
			}
			continue
		}
		e.failLabel(k1, fmt.Sprintf("fp-%d", i+1), label)
	}
	if res := decode(t, k2.ask(purchase("jam-1", "kiosk-2", "2222-0001-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("kiosk-2 sale: %+v", res.Error)
	}
	rep, _ := json.Marshal(protocol.PrintReport{RequestID: "jam-1", KioskID: "kiosk-2",
		Labels: []protocol.LabelOutcome{{LabelSerial: "2222-0001-01", Outcome: protocol.PrintFailed, Reason: "jam"}}})
	if err := e.h.Ledger().RecordPrint(context.Background(), mustPrintReport(t, rep)); err != nil {
		t.Fatal(err)
	}
	e.h.Tick(context.Background())
	as, err := e.h.Alerts().List(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for _, a := range as {
		if a.Kind == alerts.FailedPrints {
			subjects = append(subjects, a.Subject)
			if !strings.Contains(a.Message, "11 of its 12") {
				t.Errorf("message %q", a.Message)
			}
		}
	}
	if len(subjects) != 1 || subjects[0] != "kiosk/kiosk-1" {
		t.Fatalf("failed_prints alerts for %v, want kiosk/kiosk-1 alone", subjects)
	}
}
