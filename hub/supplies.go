package hub

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/protocol"
)

// supply is what a kiosk's last heartbeat said it needs, and when.
type supply struct {
	paperOut, labelsLow          bool
	labelsKnown                  bool // labelsLow was judged: a kiosk just started does not know its labels yet
	printerFault, doorOpen, skew bool
	printer                      string
	at                           time.Time
}

// reorderWindow is how far apart two heartbeats may arrive out of order
// (the front handles messages concurrently); an older one within it is
// stale. A kiosk clock set back further is believed.
const reorderWindow = time.Minute

// supplies raises a kiosk's paper_out and labels_low alerts from its
// heartbeats, and clears them once a heartbeat says paper or labels are
// back. The store is written only when a kiosk's need changes (or on its
// first heartbeat since the hub started, which may find an alert left open
// by a hub that stopped).
func (h *Hub) supplies(t *protocol.Telemetry) {
	labelsLow, paperAlert := h.thresholds(t.KioskID)
	now := supply{
		paperOut:    t.Paper == "out" || paperAlert == "near_end" && t.Paper == "near_end",
		labelsLow:   t.LabelsLeft < labelsLow,
		labelsKnown: true,
		// Paper has its own alert; any other printer state but ok is a fault.
		printerFault: t.Printer != "ok" && t.Printer != "paper_out" && t.Printer != "",
		doorOpen:     slices.Contains(t.Reasons, "door_open"),
		skew:         t.At.Sub(h.clockNow()).Abs() > alerts.ClockSkewLimit,
		printer:      t.Printer,
		at:           t.At,
	}
	// One kiosk's heartbeats are judged one at a time and in their order,
	// so an alert is never left open behind a later all-clear.
	h.supplyMu.Lock()
	defer h.supplyMu.Unlock()
	before, known := h.supply[t.KioskID]
	if known && now.at.Before(before.at) && before.at.Sub(now.at) < reorderWindow {
		return
	}
	if t.LabelsUnknown { // judged when the kiosk knows; till then as before
		now.labelsLow, now.labelsKnown = before.labelsLow, before.labelsKnown
	}
	h.supply[t.KioskID] = now
	if known && before.paperOut == now.paperOut && before.labelsLow == now.labelsLow && before.labelsKnown == now.labelsKnown &&
		before.printerFault == now.printerFault && before.doorOpen == now.doorOpen && before.skew == now.skew {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	where := t.KioskID
	if k, err := h.fleet.Get(ctx, t.KioskID); err == nil {
		where = fmt.Sprintf("%s in store %s", t.KioskID, k.Store)
	}
	subject := "kiosk/" + t.KioskID
	if !known || before.paperOut != now.paperOut {
		if now.paperOut {
			h.alerts.Raise(ctx, alerts.PaperOut, subject, fmt.Sprintf("kiosk %s needs paper: the printer says %s", where, said(t.Paper, protocol.TelemetryPaper)))
		} else {
			h.alerts.Clear(ctx, alerts.PaperOut, subject, "paper loaded")
		}
	}
	flag := func(was, is bool, kind, raise, clear string) {
		switch {
		case known && was == is:
		case is:
			h.alerts.Raise(ctx, kind, subject, raise)
		default:
			h.alerts.Clear(ctx, kind, subject, clear)
		}
	}
	flag(before.printerFault, now.printerFault, alerts.PrinterFault, fmt.Sprintf("kiosk %s's printer says %s", where, said(t.Printer, protocol.TelemetryPrinter)), "the printer is back")
	flag(before.doorOpen, now.doorOpen, alerts.DoorOpen, fmt.Sprintf("kiosk %s's label door is open: it does not sell", where), "the door is closed")
	flag(before.skew, now.skew, alerts.ClockSkew, fmt.Sprintf("kiosk %s's clock reads %s, %s off the hub's: its receipts and logs carry its time (stamps carry the hub's date)",
		where, t.At.Format(time.RFC3339), t.At.Sub(h.clockNow()).Round(time.Second)), "its clock is right again")
	if now.labelsKnown && (!before.labelsKnown || before.labelsLow != now.labelsLow) {
		if now.labelsLow {
			h.alerts.Raise(ctx, alerts.LabelsLow, subject, fmt.Sprintf("kiosk %s has %d labels left (alert below %d); load sheets", where, t.LabelsLeft, labelsLow))
		} else {
			h.alerts.Clear(ctx, alerts.LabelsLow, subject, "labels loaded")
		}
	}
}

// said is a device state from a heartbeat as an alert quotes it: one of the
// protocol's words (DecodeTelemetry refuses any other), never the kiosk's
// own text.
func said(state string, words []string) string {
	if slices.Contains(words, state) {
		return state
	}
	return "an unknown state"
}
