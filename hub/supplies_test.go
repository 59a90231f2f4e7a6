package hub_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// A kiosk's heartbeats raise and clear its supply alerts at the configured
// thresholds: paper near its end (with --paper-alert near_end), and fewer
// labels than --labels-low.
func TestSupplyAlerts(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.PaperAlert, c.LabelsLow = "near_end", 5 })
	k := e.kiosk("kiosk-1")
	at := time.Now().UTC()
	beat := func(paper string, labels int) {
		at = at.Add(time.Second) // the hub may take them in any order; their times order them
		b, _ := json.Marshal(protocol.Telemetry{KioskID: "kiosk-1", At: at, Paper: paper, Printer: "ok", Scale: "ok", LabelsLeft: labels, InService: true})
		k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicTelemetry), 1, false, b).WaitTimeout(5 * time.Second)
	}
	open := func(kind string) bool {
		as, err := e.h.Alerts().List(context.Background(), true)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.Kind == kind && a.Subject == "kiosk/kiosk-1" {
				return true
			}
		}
		return false
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		wait.For(t, 10*time.Second, what, cond)
	}
	beat("ok", 6)
	beat("near_end", 4)
	waitFor("paper_out and labels_low", func() bool { return open(alerts.PaperOut) && open(alerts.LabelsLow) })
	beat("ok", 5)
	waitFor("both cleared", func() bool { return !open(alerts.PaperOut) && !open(alerts.LabelsLow) })
	as, _ := e.h.Alerts().List(context.Background(), false)
	for _, a := range as {
		if (a.Kind == alerts.PaperOut || a.Kind == alerts.LabelsLow) && (a.Acked == nil || a.AckedBy == "") {
			t.Fatalf("alert %+v not cleared by the hub", a)
		}
	}
}

// A heartbeat's printer fault, open label door and far-off clock each
// raise their alert, and the next heartbeat without them clears it.
func TestKioskFaultAlerts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.kiosk("kiosk-1")
	at := e.clock.Now().UTC()
	beat := func(tm protocol.Telemetry) {
		at = at.Add(time.Second)
		if tm.At.IsZero() {
			tm.At = at
		}
		tm.KioskID, tm.Scale, tm.LabelsLeft = "kiosk-1", "ok", 100
		b, _ := json.Marshal(tm)
		k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicTelemetry), 1, false, b).WaitTimeout(5 * time.Second)
	}
	open := func(kind string) bool {
		as, _ := e.h.Alerts().List(context.Background(), true)
		for _, a := range as {
			if a.Kind == kind && a.Subject == "kiosk/kiosk-1" {
				return true
			}
		}
		return false
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		wait.For(t, 10*time.Second, what, cond)
	}
	beat(protocol.Telemetry{Paper: "ok", Printer: "jam", Reasons: []string{"printer_fault", "door_open"}})
	waitFor("printer_fault and door_open", func() bool { return open(alerts.PrinterFault) && open(alerts.DoorOpen) })
	if open(alerts.ClockSkew) || open(alerts.PaperOut) {
		t.Fatal("a jam raised more than its alerts")
	}
	beat(protocol.Telemetry{Paper: "ok", Printer: "ok", InService: true, At: at.Add(time.Hour)})
	waitFor("clock_skew, the others cleared", func() bool {
		return open(alerts.ClockSkew) && !open(alerts.PrinterFault) && !open(alerts.DoorOpen)
	})
	beat(protocol.Telemetry{Paper: "ok", Printer: "ok", InService: true})
	waitFor("clock_skew cleared", func() bool { return !open(alerts.ClockSkew) })
}

// A kiosk that has just started reports its labels unknown until it has
// asked the hub about its sheets: no labels_low is raised or cleared from
// such a heartbeat, though its other alerts are judged as ever. (The fleet
// soak's paper-out twin raised labels_low from its first status change,
// sent before its stock reload after a start had finished.)
func TestNoLabelsAlertWhileKioskLearnsItsStock(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.LabelsLow = 5 })
	k := e.kiosk("kiosk-1")
	at := time.Now().UTC()
	beat := func(paper string, labels int, unknown bool) {
		at = at.Add(time.Second)
		b, _ := json.Marshal(protocol.Telemetry{KioskID: "kiosk-1", At: at, Paper: paper, Printer: "ok", Scale: "ok",
			LabelsLeft: labels, LabelsUnknown: unknown, InService: true})
		k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicTelemetry), 1, false, b).WaitTimeout(5 * time.Second)
	}
	// count counts the kiosk's alerts of a kind: all, or the open ones.
	count := func(kind string, openOnly bool) int {
		as, err := e.h.Alerts().List(context.Background(), openOnly)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, a := range as {
			if a.Kind == kind && a.Subject == "kiosk/kiosk-1" {
				n++
			}
		}
		return n
	}
	raised := func(kind string) int { return count(kind, false) }
	open := func(kind string) bool { return count(kind, true) > 0 }
	// A kiosk's heartbeats are judged one at a time, labels last: once the
	// paper alert a heartbeat changed shows, the one before it is judged.
	beat("out", 0, true)
	wait.For(t, 10*time.Second, "paper_out", func() bool { return open(alerts.PaperOut) })
	beat("ok", 0, true)
	wait.For(t, 10*time.Second, "paper_out cleared", func() bool { return !open(alerts.PaperOut) })
	if n := raised(alerts.LabelsLow); n != 0 {
		t.Fatalf("labels_low raised %d times from heartbeats whose labels are unknown", n)
	}
	beat("out", 3, false)
	wait.For(t, 10*time.Second, "labels_low and paper_out", func() bool { return open(alerts.LabelsLow) && open(alerts.PaperOut) })
	beat("ok", 40, true) // restarted: labels unknown again, whatever it counts
	wait.For(t, 10*time.Second, "paper_out cleared again", func() bool { return !open(alerts.PaperOut) })
	beat("out", 40, true)
	wait.For(t, 10*time.Second, "paper_out again", func() bool { return open(alerts.PaperOut) })
	if !open(alerts.LabelsLow) {
		t.Fatal("labels_low cleared by a heartbeat whose labels are unknown")
	}
	beat("ok", 40, false)
	wait.For(t, 10*time.Second, "both cleared", func() bool { return !open(alerts.PaperOut) && !open(alerts.LabelsLow) })
}
