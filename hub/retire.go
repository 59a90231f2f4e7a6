package hub

import (
	"context"
	"fmt"

	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/hub/sale"
	"github.com/frank-postage/frank/protocol"
)

// Retired is what retiring a kiosk did.
type Retired struct {
	Kiosk        string         `json:"kiosk"`
	Lost         bool           `json:"lost"`
	Certificates int            `json:"certificates_revoked"`
	Sheets       int            `json:"sheets_voided"`
	Labels       int            `json:"labels_voided"`
	Refunded     protocol.Mills `json:"refunded_mills"`
}

// RetireKiosk takes a kiosk out of the fleet for good, as ops do with one
// that is broken beyond repair, lost or stolen. It may no longer log in
// (its certificates are revoked: a running broker closes its session
// within seconds and refuses it after that; a replaced password likewise),
// enroll or sell. The label sheets loaded into it are voided. Stamps it was
// issued and never reported are voided as if it had died, and their money
// goes back to the customers. A lost kiosk is declared in the next postal
// report. Its sales and stamps stay in history and reports.
func (h *Hub) RetireKiosk(ctx context.Context, kioskID, why string, lost bool) (*Retired, error) {
	if why == "" {
		why = "retired"
		if lost {
			why = "lost or stolen"
		}
	}
	if err := h.fleet.Retire(ctx, kioskID, why, lost); err != nil {
		return nil, err
	}
	r := &Retired{Kiosk: kioskID, Lost: lost}
	var err error
	if r.Certificates, err = h.ca.Revoke(ctx, kioskID, why); err != nil {
		return r, err
	}
	if r.Sheets, err = h.stock.VoidKiosk(ctx, kioskID); err != nil {
		return r, err
	}
	voided, err := h.ledger.VoidIssued(ctx, kioskID, "kiosk_retired")
	if err != nil {
		return r, err
	}
	r.Labels = len(voided)
	for _, v := range voided {
		sp, err := h.ledger.FailedLabel(ctx, kioskID, v.RequestID, v.Label)
		if err != nil {
			return r, fmt.Errorf("hub: retire %s: %w", kioskID, err)
		}
		if err := h.payments.Refund(ctx, payments.Key{KioskID: kioskID, RequestID: sp.PaidBy}, sp.Postage, "refund:"+v.Label.String()); err != nil {
			return r, fmt.Errorf("hub: retire %s: refund of %s: %w", kioskID, v.Label, err)
		}
		if err := h.ledger.RecordRefund(ctx, v.Label, kioskID, "retired", sp.Postage); err != nil {
			return r, fmt.Errorf("hub: retire %s: %w", kioskID, err)
		}
		r.Refunded += sp.Postage
	}
	h.log.Warn("kiosk retired", "kiosk", kioskID, "why", why, "lost", lost, "certificates", r.Certificates, "sheets", r.Sheets,
		"labels", r.Labels, "refunded", r.Refunded.String())
	return r, nil
}

// retireSummary retires a kiosk for the console, and says what it did.
func (h *Hub) retireSummary(ctx context.Context, kioskID, why string, lost bool) (string, error) {
	r, err := h.RetireKiosk(ctx, kioskID, why, lost)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d certificates revoked, %d sheets voided, %d unreported stamps voided and %s refunded",
		r.Certificates, r.Sheets, r.Labels, r.Refunded), nil
}

// counterRefund takes back an unused kiosk stamp for the console.
func (h *Hub) counterRefund(ctx context.Context, label protocol.LabelSerial, by, why string, may func(kioskID string) bool) (protocol.Mills, error) {
	return h.sales.RefundAtCounter(ctx, h.ledger, sale.CounterRefund{Label: label, By: by, Reason: why, Window: h.cfg.RefundWindow, May: may})
}
