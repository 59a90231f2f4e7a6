package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// ledgerLines is what the ledger may log about one kiosk in a minute.
const ledgerLines = 10

// checkBounded fails unless the lines about kiosk-1 matching words number
// at least one (the first is logged) and at most ledgerLines, then moves
// the clock a minute on and has next log once more, saying how many were
// left out.
func checkBounded(t *testing.T, e *env, logs *hubLog, sent int, next func(), words ...string) {
	t.Helper()
	words = append(words, "kiosk=kiosk-1")
	if n := len(logs.lines(words...)); n < 1 || n > ledgerLines {
		t.Fatalf("%d of them logged %d lines %q, want 1 to %d", sent, n, words[0], ledgerLines)
	}
	e.clock.Set(e.clock.Now().Add(time.Minute))
	next()
	if n := len(logs.lines(append(words, "lines_left_out=")...)); n != 1 {
		t.Fatalf("a minute on, %d lines say how many were left out, want 1", n)
	}
}

// A stolen kiosk's print reports naming labels never issued to it (10 a
// report, 20 reports a second) wrote a line for each label: the lines
// about it are now bounded, one a report at most.
func TestRepeatPrintReportsLogBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	logs := e.restartLogging()
	ctx := context.Background()
	report := func(i int) {
		rep := &protocol.PrintReport{RequestID: fmt.Sprintf("never-%d", i), KioskID: "kiosk-1"}
		for j := range 10 {
			rep.Labels = append(rep.Labels, protocol.LabelOutcome{LabelSerial: fmt.Sprintf("9999-%04X-%02d", i, j+1), Outcome: protocol.Printed})
		}
		if err := e.h.Ledger().RecordPrint(ctx, rep); err != nil {
			t.Fatal(err)
		}
	}
	const sent = 30
	for i := range sent {
		report(i)
	}
	checkBounded(t, e, logs, sent, func() { report(sent) }, "no issued indicium")
}

// A stolen kiosk asking the refund of a stamp issued days ago, again and
// again, got a WARN line each time: now the lines are bounded, and the
// late_remedy alert stays one.
func TestLateRemediesLogBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	logs := e.restartLogging()
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	const label = "1966-F8CF-01"
	if res := decode(t, k.ask(purchase("old-sale", "kiosk-1", label, nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	wait.For(t, 10*time.Second, "the capture", func() bool { return e.cards.Totals().Captured == 780 })
	e.clock.Set(e.clock.Now().Add(72 * time.Hour))
	refund := func(i int) {
		b, _ := json.Marshal(protocol.RefundRequest{RequestID: fmt.Sprintf("rf-%d", i), KioskID: "kiosk-1",
			Label: protocol.LabelRef{RequestID: "old-sale", LabelSerial: label}})
		out, _ := e.h.Sales().Refund(ctx, "kiosk-1", b)
		if r := decodeRefund(t, out); r.Status != protocol.ResultRejected || r.Error.Code != protocol.CodeRemedyNotAllowed {
			t.Fatalf("refund %d of a stamp issued 72 h ago: %s", i, out)
		}
	}
	const sent = 30
	for i := range sent {
		refund(i)
	}
	if got := e.openAlerts(alerts.LateRemedy, "kiosk/kiosk-1"); got != 1 {
		t.Fatalf("%d late_remedy alerts, want 1", got)
	}
	checkBounded(t, e, logs, sent, func() { refund(sent) }, "remedy refused")
	if ledger.RemedyLimit >= 72*time.Hour {
		t.Fatal("the test's stamp is not late")
	}
}

// A stolen kiosk publishing "offline" on its status topic got a WARN
// "kiosk offline" line, and its alert raised again, for each message: a
// repeat is now not news, and a kiosk flipping its status, which changes
// it each time, has its lines bounded; the kiosk_offline alert stays one.
func TestOfflineStatusesLogBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	logs := e.restartLogging()
	const sent = 30
	for range sent {
		hub.KioskStatusOffline(e.h, "kiosk-1")
	}
	if n := len(logs.lines(`msg="kiosk offline"`, "kiosk=kiosk-1")); n != 1 {
		t.Fatalf("%d repeated offlines logged %d lines, want 1", sent, n)
	}
	for range sent {
		hub.KioskStatusOnline(e.h, "kiosk-1")
		hub.KioskStatusOffline(e.h, "kiosk-1")
	}
	if got := e.openAlerts(alerts.KioskOffline, "kiosk/kiosk-1"); got != 1 {
		t.Fatalf("%d kiosk_offline alerts, want 1", got)
	}
	flip := func() {
		hub.KioskStatusOnline(e.h, "kiosk-1")
		hub.KioskStatusOffline(e.h, "kiosk-1")
	}
	checkBounded(t, e, logs, sent, flip, `msg="kiosk offline"`)
}
