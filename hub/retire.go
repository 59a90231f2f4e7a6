package hub

import (
	"context"
	"errors"
	"fmt"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/sale"
	"github.com/frank-postage/frank/protocol"
)

// Retired is what retiring a kiosk did.
type Retired struct {
	Kiosk        string `json:"kiosk"`
	Lost         bool   `json:"lost"`
	Certificates int    `json:"certificates_revoked"`
	Sheets       int    `json:"sheets_voided"`
	Labels       int    `json:"labels_voided"`
	// Unclaimed are labels it voided as failed whose customer chose no
	// remedy: refunded now, as the kiosk would have.
	Unclaimed int            `json:"failed_labels_refunded"`
	Refunded  protocol.Mills `json:"refunded_mills"`
}

// RetireKiosk takes a kiosk out of the fleet for good, as ops do with one
// that is broken beyond repair, lost or stolen. It may no longer log in
// (its certificates are revoked: a running broker closes its session
// within seconds and refuses it after that; a replaced password likewise),
// enroll or sell. The label sheets loaded into it are voided. Stamps it was
// issued and never reported are voided as if it had died, and their money
// goes back to the customers, as does that of labels it reported failed
// whose customer had no remedy yet. A lost kiosk is declared in the next postal
// report. Its sales and stamps stay in history and reports.
func (h *Hub) RetireKiosk(ctx context.Context, kioskID, why string, lost bool) (*Retired, error) {
	if why == "" {
		why = "retired"
		if lost {
			why = "lost or stolen"
		}
	}
	// Retiring again finishes a retirement cut short (a hub that stopped,
	// a certificate store out of reach): every step after this one is
	// idempotent.
	if err := h.fleet.Retire(ctx, kioskID, why, lost); err != nil && !errors.Is(err, fleet.ErrRetired) {
		return nil, fmt.Errorf("hub: retire %s: %w", kioskID, err)
	}
	r := &Retired{Kiosk: kioskID, Lost: lost}
	var err error
	if r.Certificates, err = h.ca.Revoke(ctx, kioskID, why); err != nil {
		return r, fmt.Errorf("hub: retire %s: revoke its certificates: %w", kioskID, err)
	}
	if r.Sheets, err = h.stock.VoidKiosk(ctx, kioskID); err != nil {
		return r, fmt.Errorf("hub: retire %s: void its sheets: %w", kioskID, err)
	}
	voided, err := h.ledger.VoidIssued(ctx, kioskID, "kiosk_retired")
	if err != nil {
		return r, fmt.Errorf("hub: retire %s: void its unreported stamps: %w", kioskID, err)
	}
	// What is left, the refunds, is recorded due and the leader's tick
	// finishes it; until this, the tick retires the kiosk again.
	if err := h.fleet.RetireDone(ctx, kioskID); err != nil {
		return r, fmt.Errorf("hub: retire %s: %w", kioskID, err)
	}
	for _, v := range voided {
		if v.Unclaimed {
			r.Unclaimed++
		}
	}
	r.Labels = len(voided) - r.Unclaimed
	// Their refunds are recorded due: what fails here, the leader's tick
	// finishes a minute on.
	r.Refunded, err = h.sales.FinishRefunds(ctx, voided)
	if err != nil {
		return r, fmt.Errorf("hub: retire %s: refunds left to the leader: %w", kioskID, err)
	}
	h.log.Warn("kiosk retired", "kiosk", kioskID, "why", why, "lost", lost, "certificates", r.Certificates, "sheets", r.Sheets,
		"labels", r.Labels, "unclaimed", r.Unclaimed, "refunded", r.Refunded.String())
	return r, nil
}

// finishRetirements carries through the retirements a hub stopped in the
// middle of: a kiosk retired, its certificates not yet revoked (a lost
// kiosk could still connect), its stock and unreported stamps not voided
// (their customers not refunded). Every step is idempotent.
func (h *Hub) finishRetirements(ctx context.Context) {
	left, err := h.fleet.RetiredUnfinished(ctx)
	if err != nil {
		h.log.Error("retirements unfinished not read", "err", err)
		return
	}
	for _, u := range left {
		if _, err := h.RetireKiosk(ctx, u.ID, u.Why, false); err != nil {
			h.log.Error("retirement not finished; tried again at the next tick", "kiosk", u.ID, "err", err)
		}
	}
}

// retireSummary retires a kiosk for the console, and says what it did.
func (h *Hub) retireSummary(ctx context.Context, kioskID, why string, lost bool) (string, error) {
	r, err := h.RetireKiosk(ctx, kioskID, why, lost)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d certificates revoked, %d sheets voided, %d unreported stamps voided, %d failed labels nobody claimed, and %s refunded",
		r.Certificates, r.Sheets, r.Labels, r.Unclaimed, r.Refunded), nil
}

// counterRefund takes back an unused kiosk stamp for the console.
func (h *Hub) counterRefund(ctx context.Context, label protocol.LabelSerial, by, why string, may func(kioskID string) bool) (protocol.Mills, error) {
	return h.sales.RefundAtCounter(ctx, h.ledger, sale.CounterRefund{Label: label, By: by, Reason: why, Window: h.cfg.RefundWindow, May: may})
}
