package hub

import (
	"context"
	"fmt"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/protocol"
)

// supply is what a kiosk's last heartbeat said it needs.
type supply struct {
	paperOut, labelsLow bool
}

// supplies raises a kiosk's paper_out and labels_low alerts from its
// heartbeats, and clears them once a heartbeat says paper or labels are
// back. The store is written only when a kiosk's need changes (or on its
// first heartbeat since the hub started, which may find an alert left open
// by a hub that stopped).
func (h *Hub) supplies(t *protocol.Telemetry) {
	now := supply{
		paperOut:  t.Paper == "out" || h.cfg.PaperAlert == "near_end" && t.Paper == "near_end",
		labelsLow: t.LabelsLeft < h.cfg.LabelsLow,
	}
	h.supplyMu.Lock()
	before, known := h.supply[t.KioskID]
	h.supply[t.KioskID] = now
	h.supplyMu.Unlock()
	if known && before == now {
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
			h.alerts.Raise(ctx, alerts.PaperOut, subject, fmt.Sprintf("kiosk %s needs paper: the printer says %s", where, t.Paper))
		} else {
			h.alerts.Clear(ctx, alerts.PaperOut, subject, "paper loaded")
		}
	}
	if !known || before.labelsLow != now.labelsLow {
		if now.labelsLow {
			h.alerts.Raise(ctx, alerts.LabelsLow, subject, fmt.Sprintf("kiosk %s has %d labels left (alert below %d); load sheets", where, t.LabelsLeft, h.cfg.LabelsLow))
		} else {
			h.alerts.Clear(ctx, alerts.LabelsLow, subject, "labels loaded")
		}
	}
}
