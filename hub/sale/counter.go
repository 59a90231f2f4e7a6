package sale

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/protocol"
)

// counter is what a refund at the counter needs of the ledger.
type counter interface {
	LabelSale(ctx context.Context, label protocol.LabelSerial) (kioskID, requestID string, err error)
	takerBack
}

// takerBack takes back unused stamps: the ledger.
type takerBack interface {
	RefundUnused(ctx context.Context, kioskID, requestID string, label protocol.LabelSerial, notBefore time.Time, by, why string) (*ledger.Spoiled, error)
	ReleaseTakenBack(ctx context.Context, kioskID, requestID string, label protocol.LabelSerial) error
}

// MaxReason bounds a counter refund's reason, which is kept with the
// refund and shown in the console and its exports.
const MaxReason = 200

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
	switch {
	case strings.TrimSpace(r.Reason) == "":
		return 0, protocol.Errorf(protocol.CodeInvalidRequest, "say why the stamp is refunded")
	case utf8.RuneCountInString(r.Reason) > MaxReason || strings.ContainsFunc(r.Reason, unicode.IsControl):
		return 0, protocol.Errorf(protocol.CodeInvalidRequest, "say why the stamp is refunded in one line of at most %d characters", MaxReason)
	}
	// A label never sold and one sold at another's kiosk get one answer:
	// staff do not learn which of another store's labels carry a stamp.
	notYours := protocol.Errorf(protocol.CodeRemedyNotAllowed, "label %s was not sold at a kiosk you look after", r.Label)
	kioskID, requestID, err := c.LabelSale(ctx, r.Label)
	switch {
	case errors.Is(err, &protocol.Error{Code: protocol.CodeLabelUnknown}):
		return 0, notYours
	case err != nil:
		return 0, err
	case strings.HasPrefix(kioskID, "web-") || (r.May != nil && !r.May(kioskID)):
		return 0, notYours
	}
	amount, err := s.takeBack(ctx, c, kioskID, requestID, r.Label, s.Now().Add(-r.Window), r.By, r.Reason)
	if err != nil {
		return 0, err
	}
	s.Log.Info("refunded an unused stamp at the counter", "label", r.Label, "kiosk", kioskID, "by", r.By, "reason", r.Reason, "amount", amount.String())
	return amount, nil
}

// takeBack voids an unused stamp of kioskID's sale requestID and gives its
// postage back, under the label's claim. Its refund is recorded with the
// void, before the money moves: a hub that stops in between leaves it due
// to the leader (FinishRefunds), and a retry finishes it.
func (s *Service) takeBack(ctx context.Context, b takerBack, kioskID, requestID string, label protocol.LabelSerial, notBefore time.Time, by, why string) (protocol.Mills, error) {
	release, err := s.takeLabel(ctx, label)
	if err != nil {
		return 0, err
	}
	defer release()
	sp, err := b.RefundUnused(ctx, kioskID, requestID, label, notBefore, by, why)
	if err != nil {
		return 0, err
	}
	return sp.Postage, s.payBack(ctx, b, kioskID, requestID, sp.PaidBy, label, sp.Postage)
}

// payBack refunds amount for a stamp of sale requestID taken back, to the
// sale paidBy that paid for it (requestID's own, or for a free reprint the
// sale it reprints; "" is requestID). A refund the payment refuses for good
// is released: nothing moved, and the stamp may be asked for again.
func (s *Service) payBack(ctx context.Context, b takerBack, kioskID, requestID, paidBy string, label protocol.LabelSerial, amount protocol.Mills) error {
	if paidBy == "" {
		paidBy = requestID
	}
	key := payments.Key{KioskID: kioskID, RequestID: paidBy}
	if err := s.Money.Refund(ctx, key, amount, "refund:"+label.String()); err != nil {
		if MoneyRefused(err) {
			if rerr := b.ReleaseTakenBack(context.WithoutCancel(ctx), kioskID, requestID, label); rerr != nil {
				s.Log.Error("refund of a stamp taken back not released", "kiosk", kioskID, "label", label, "err", rerr)
			}
		}
		return fmt.Errorf("sale: refund %s: %w", label, err)
	}
	return nil
}
