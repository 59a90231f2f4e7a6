package sale

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/protocol"
)

// counter is what a refund at the counter needs of the ledger.
type counter interface {
	LabelSale(ctx context.Context, label protocol.LabelSerial) (kioskID, requestID string, err error)
	RefundUnused(ctx context.Context, kioskID, requestID string, label protocol.LabelSerial, notBefore time.Time) (*ledger.Spoiled, error)
	RecordCounterRefund(ctx context.Context, label protocol.LabelSerial, kioskID, requestID string, amount protocol.Mills, by, why string) error
}

// CounterRefund is a stamp bought at a kiosk that store staff or ops took
// back unused, with the label in hand.
type CounterRefund struct {
	Label  protocol.LabelSerial
	By     string // the operator's login
	Reason string
	// Window is how long after the sale a refund is allowed (28 days).
	Window time.Duration
	// May says whether the operator may refund a sale of this kiosk (staff:
	// their stores' kiosks only).
	May func(kioskID string) bool
}

// RefundAtCounter voids an unused kiosk stamp (it goes on the void list
// and is claimed back in the postal report) and gives its postage back to
// the card or account that paid, once, within the window. Web customers
// refund their own stamps in the portal.
func (s *Service) RefundAtCounter(ctx context.Context, c counter, r CounterRefund) (protocol.Mills, error) {
	if strings.TrimSpace(r.Reason) == "" {
		return 0, protocol.Errorf(protocol.CodeInvalidRequest, "say why the stamp is refunded")
	}
	kioskID, requestID, err := c.LabelSale(ctx, r.Label)
	if err != nil {
		return 0, err
	}
	if strings.HasPrefix(kioskID, "web-") || (r.May != nil && !r.May(kioskID)) {
		return 0, protocol.Errorf(protocol.CodeRemedyNotAllowed, "label %s was not sold at a kiosk you look after", r.Label)
	}
	release, err := s.takeLabel(ctx, r.Label)
	if err != nil {
		return 0, err
	}
	defer release()
	sp, err := c.RefundUnused(ctx, kioskID, requestID, r.Label, s.Now().Add(-r.Window))
	if err != nil {
		return 0, err
	}
	key := payments.Key{KioskID: kioskID, RequestID: requestID}
	if err := s.Money.Refund(ctx, key, sp.Postage, "refund:"+r.Label.String()); err != nil {
		return 0, fmt.Errorf("sale: counter refund %s: %w", r.Label, err)
	}
	if err := c.RecordCounterRefund(ctx, r.Label, kioskID, requestID, sp.Postage, r.By, r.Reason); err != nil {
		return 0, err
	}
	s.Log.Info("refunded an unused stamp at the counter", "label", r.Label, "kiosk", kioskID, "by", r.By, "reason", r.Reason, "amount", sp.Postage.String())
	return sp.Postage, nil
}
