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

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// stampState is the state of the indicium on label.
func (e *env) stampState(label string) string {
	e.t.Helper()
	var st string
	db := e.openDB()
	if err := db.QueryRowContext(context.Background(), db.Rebind(`SELECT state FROM indicia WHERE label = ? ORDER BY id DESC LIMIT 1`), label).Scan(&st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// openAlerts counts the open alerts of kind on subject.
func (e *env) openAlerts(kind, subject string) int {
	e.t.Helper()
	as, err := e.h.Alerts().List(context.Background(), true)
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, a := range as {
		if a.Kind == kind && a.Subject == subject {
			n++
		}
	}
	return n
}

// A label the kiosk reported failed, whose customer chose no remedy before
// the kiosk died, is refunded when ops retire the kiosk, once, however
// many ticks follow (the audit's HIGH finding).
func TestRetiredKioskRefundsItsUnremediedFailedLabels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	e.failLabel(k, "aud-1", "1966-F8CF-01")
	// Another failed label got its reprint: it is owed nothing.
	e.failLabel(k, "aud-2", "1966-F8CF-02")
	if res := decode(t, k.ask(reprintOf("rp-2", "aud-2", "1966-F8CF-02", "1966-F8CF-03"))); res.Status != protocol.ResultOK {
		t.Fatalf("reprint: %+v", res.Error)
	}
	if err := e.h.Ledger().RecordPrint(ctx, &protocol.PrintReport{RequestID: "rp-2", KioskID: "kiosk-1", Labels: []protocol.LabelOutcome{
		{LabelSerial: "1966-F8CF-03", Outcome: protocol.Printed}}}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "captures", func() bool { return e.cards.Totals().Captured == 2*780 })
	r, err := e.h.RetireKiosk(ctx, "kiosk-1", "broken", false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Unclaimed != 1 || r.Refunded != 780 {
		t.Fatalf("retire: %+v, want the one unclaimed failed label refunded 780", r)
	}
	t0 := e.clock.Now()
	for i := 1; i <= 3; i++ {
		e.clock.Set(t0.Add(time.Duration(i) * time.Hour))
		e.h.Tick(ctx)
	}
	if got := e.cards.Totals().Refunded; got != 780 {
		t.Fatalf("refunded %d mills, want 780 once", got)
	}
	e.check()
}

// The leader refunds a failed label nobody claimed once the remedy
// window and its margin are over, when its kiosk did not (it died, or lost
// the hub); once, and not one that got its reprint, nor a locked kiosk's
// until ops unlock it. The kiosk's own late sweep then finds the refund
// done, and a reprint of the label is refused.
func TestLeaderRefundsUnclaimedFailedLabels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	e.failLabel(k, "un-1", "1966-F8CF-01")
	e.failLabel(k, "un-2", "1966-F8CF-02")
	if res := decode(t, k.ask(reprintOf("rp-2", "un-2", "1966-F8CF-02", "1966-F8CF-03"))); res.Status != protocol.ResultOK {
		t.Fatalf("reprint: %+v", res.Error)
	}
	k2 := e.kiosk("kiosk-2")
	if res := decode(t, k2.ask(purchase("un-3", "kiosk-2", "2222-0001-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	rep := &protocol.PrintReport{RequestID: "un-3", KioskID: "kiosk-2", Labels: []protocol.LabelOutcome{
		{LabelSerial: "2222-0001-01", Outcome: protocol.PrintFailed, Reason: "jam"}}}
	if err := e.h.Ledger().RecordPrint(ctx, rep); err != nil {
		t.Fatal(err)
	}
	if err := e.h.Fleet().SetLocked(ctx, "kiosk-2", "olive", true); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "captures", func() bool { return e.cards.Totals().Captured == 3*780 })
	t0 := e.clock.Now()
	// Still the customer's to choose, or the kiosk's to refund.
	e.clock.Set(t0.Add(ledger.MaxRemedyWindow))
	e.h.Tick(ctx)
	if got := e.cards.Totals().Refunded; got != 0 {
		t.Fatalf("refunded %d mills within the remedy window and its margin", got)
	}
	for i := range 3 {
		e.clock.Set(t0.Add(ledger.UnclaimedAfter + time.Duration(i+1)*time.Minute))
		e.h.Tick(ctx)
	}
	if got := e.cards.Totals().Refunded; got != 780 {
		t.Fatalf("refunded %d mills, want 780 once (the unclaimed label of the kiosk not locked)", got)
	}
	// The kiosk comes back and its sweep asks: the refund is done, once.
	out, _ := e.h.Sales().Refund(ctx, "kiosk-1", refundOf("rf-sweep", "un-1", "1966-F8CF-01"))
	if r := decodeRefund(t, out); r.Status != protocol.ResultOK || r.AmountMills != 780 {
		t.Fatalf("the kiosk's refund after the hub's: %s", out)
	}
	if res := decode(t, k.ask(reprintOf("rp-1", "un-1", "1966-F8CF-01", "1966-F8CF-04"))); res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeRemedyNotAllowed {
		t.Fatalf("reprint of a label the hub refunded: %+v", res)
	}
	if got := e.cards.Totals().Refunded; got != 780 {
		t.Fatalf("refunded %d mills, want 780 once", got)
	}
	// Ops unlock kiosk-2: its customer is refunded at the next tick.
	if err := e.h.Fleet().SetLocked(ctx, "kiosk-2", "olive", false); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(t0.Add(ledger.UnclaimedAfter + 10*time.Minute))
	e.h.Tick(ctx)
	if got := e.cards.Totals().Refunded; got != 2*780 {
		t.Fatalf("refunded %d mills after the unlock, want %d", got, 2*780)
	}
	e.check()
}

// A kiosk with valid credentials that buys stamps, never reports them, and
// days later says they failed and asks their refunds (or a reprint) is
// refused remedy_not_allowed: the stamps stay issued (staff may still take
// one back at the counter), nothing is refunded, and ops get late_remedy.
// Within the limit a remedy still voids and refunds (the audit's MEDIUM
// finding).
func TestLateRemedyRefusedAndAlerted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	t0 := e.clock.Now()
	const n = 12
	labels := make([]string, n)
	for i := range n {
		labels[i] = fmt.Sprintf("%s-%02d", []string{"1966-F8CF", "1966-F8D0"}[i/10], i%10+1)
		if res := decode(t, k.ask(purchase(fmt.Sprintf("late-%d", i), "kiosk-1", labels[i], nil))); res.Status != protocol.ResultOK {
			t.Fatalf("sale: %+v", res.Error)
		}
	}
	wait.For(t, 10*time.Second, "captures", func() bool { return e.cards.Totals().Captured == n*780 })

	// Just within the limit: a kiosk that lost the hub a while.
	e.clock.Set(t0.Add(ledger.RemedyLimit - time.Minute))
	out, _ := e.h.Sales().Refund(ctx, "kiosk-1", refundOf("rf-in", "late-0", labels[0]))
	if r := decodeRefund(t, out); r.Status != protocol.ResultOK || r.AmountMills != 780 {
		t.Fatalf("refund within the limit: %s", out)
	}

	// Three days on: the stamps were mailed.
	e.clock.Set(t0.Add(72 * time.Hour))
	before := e.cards.Totals()
	rep := &protocol.PrintReport{RequestID: "late-1", KioskID: "kiosk-1", Labels: []protocol.LabelOutcome{
		{LabelSerial: labels[1], Outcome: protocol.PrintFailed, Reason: "jam"}}}
	if err := e.h.Ledger().RecordPrint(ctx, rep); err != nil {
		t.Fatal(err)
	}
	if got := e.openAlerts(alerts.LateRemedy, "kiosk/kiosk-1"); got != 1 {
		t.Fatalf("%d late_remedy alerts on kiosk-1 after a late failure report, want 1", got)
	}
	for i := 1; i < n; i++ {
		b, _ := json.Marshal(protocol.RefundRequest{RequestID: fmt.Sprintf("rf-%d", i), KioskID: "kiosk-1",
			Label: protocol.LabelRef{RequestID: fmt.Sprintf("late-%d", i), LabelSerial: labels[i]}})
		out, _ := e.h.Sales().Refund(ctx, "kiosk-1", b)
		if r := decodeRefund(t, out); r.Status != protocol.ResultRejected || r.Error.Code != protocol.CodeRemedyNotAllowed || !r.Error.Expired {
			t.Fatalf("refund of a stamp issued 72 h ago: %s, want remedy_not_allowed, expired", out)
		}
	}
	if res := decode(t, k.ask(reprintOf("rp-late", "late-2", labels[2], "1966-F8D0-05"))); res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeRemedyNotAllowed || !res.Error.Expired {
		t.Fatalf("reprint of a stamp issued 72 h ago: %+v, want remedy_not_allowed, expired", res)
	}
	e.h.Tick(ctx)
	if got := e.cards.Totals().Refunded - before.Refunded; got != 0 {
		t.Fatalf("refunded %d mills for stamps issued 72 h earlier and never reported", got)
	}
	for i := 1; i < n; i++ {
		if st := e.stampState(labels[i]); st != "issued" {
			t.Fatalf("stamp %s is %s after a late failure report or remedy request, want issued", labels[i], st)
		}
	}
	if got := e.openAlerts(alerts.LateRemedy, "kiosk/kiosk-1"); got != 1 {
		t.Fatalf("%d late_remedy alerts on kiosk-1, want 1", got)
	}
	// Staff still take a genuine one back at the counter.
	staff := e.operator("sue", "staff", "store-a")
	form := url.Values{"label": {labels[3]}, "reason": {"jammed, kiosk was offline"}, "handed_in": {"yes"}}
	if st, _, page := staff.post("/console/stock", "/console/refunds", form); st != http.StatusOK || !strings.Contains(page, "Refunded $0.78") {
		t.Fatalf("counter refund: %d", st)
	}
	// The kiosk, back, asks that label's refund: refused, but not as
	// expired, for it had its remedy, so the kiosk does not send staff
	// to pay it again.
	out, _ = e.h.Sales().Refund(ctx, "kiosk-1", refundOf("rf-after-counter", "late-3", labels[3]))
	if r := decodeRefund(t, out); r.Status != protocol.ResultRejected || r.Error.Code != protocol.CodeRemedyNotAllowed || r.Error.Expired {
		t.Fatalf("the kiosk's refund of a label refunded at the counter: %s, want remedy_not_allowed, not expired", out)
	}
	e.check()
}

// Failed prints are counted when their stamps are voided, not when they
// were issued: a kiosk that says, an hour and a half after its sales, that
// ten of them failed raises failed_prints.
func TestFailedPrintsCountedWhenVoided(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	t0 := e.clock.Now()
	var rep []protocol.LabelOutcome
	for i := range 10 {
		label := fmt.Sprintf("1966-F8CF-%02d", i+1)
		if res := decode(t, k.ask(purchase(fmt.Sprintf("fp-%d", i), "kiosk-1", label, nil))); res.Status != protocol.ResultOK {
			t.Fatalf("sale: %+v", res.Error)
		}
		rep = append(rep, protocol.LabelOutcome{LabelSerial: label, Outcome: protocol.PrintFailed, Reason: "jam"})
	}
	e.clock.Set(t0.Add(90 * time.Minute))
	for i, lo := range rep {
		if err := e.h.Ledger().RecordPrint(ctx, &protocol.PrintReport{RequestID: fmt.Sprintf("fp-%d", i), KioskID: "kiosk-1",
			Labels: []protocol.LabelOutcome{lo}}); err != nil {
			t.Fatal(err)
		}
	}
	e.h.Tick(ctx)
	if got := e.openAlerts(alerts.FailedPrints, "kiosk/kiosk-1"); got != 1 {
		t.Fatalf("%d failed_prints alerts for 10 stamps voided in the last hour, want 1", got)
	}
}

// A kiosk ops locked gets no remedy, as it gets no sale: kiosk_locked.
// Once unlocked, its customer's refund goes through.
func TestLockedKioskGetsNoRemedy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	e.failLabel(k, "lk-1", "1966-F8CF-01")
	wait.For(t, 10*time.Second, "capture", func() bool { return e.cards.Totals().Captured == 780 })
	if err := e.h.Fleet().SetLocked(ctx, "kiosk-1", "olive", true); err != nil {
		t.Fatal(err)
	}
	out, _ := e.h.Sales().Refund(ctx, "kiosk-1", refundOf("rf-lk", "lk-1", "1966-F8CF-01"))
	if r := decodeRefund(t, out); r.Status != protocol.ResultRejected || r.Error.Code != protocol.CodeKioskLocked {
		t.Fatalf("refund on a locked kiosk: %s", out)
	}
	if res := decode(t, k.ask(reprintOf("rp-lk", "lk-1", "1966-F8CF-01", "1966-F8CF-02"))); res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeKioskLocked {
		t.Fatalf("reprint on a locked kiosk: %+v", res)
	}
	if got := e.cards.Totals().Refunded; got != 0 {
		t.Fatalf("a locked kiosk's remedy refunded %d mills", got)
	}
	if err := e.h.Fleet().SetLocked(ctx, "kiosk-1", "olive", false); err != nil {
		t.Fatal(err)
	}
	out, _ = e.h.Sales().Refund(ctx, "kiosk-1", refundOf("rf-lk", "lk-1", "1966-F8CF-01"))
	if r := decodeRefund(t, out); r.Status != protocol.ResultOK || r.AmountMills != 780 {
		t.Fatalf("refund once unlocked: %s", out)
	}
}
