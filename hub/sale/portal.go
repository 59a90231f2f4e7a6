package sale

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"time"

	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/protocol"
)

// Order is a web customer's purchase in the portal (patent Fig. 8): Count
// stamps of one service and weight on the next free labels of one sheet.
type Order struct {
	RateClass string               `json:"rate_class"`
	WeightMg  int64                `json:"weight_mg"`
	Sheet     protocol.SheetSerial `json:"sheet"`
	Count     int                  `json:"count"`
}

// claimer gives a web sheet to its first customer, and takes it back when
// the sale it was claimed for is not made (stock.Stock).
type claimer interface {
	Claim(ctx context.Context, sheet protocol.SheetSerial, accountID int64) (claimedAt int64, err error)
	Unclaim(ctx context.Context, sheet protocol.SheetSerial, accountID, claimedAt int64) error
}

// replayer finds the stored answer to a request already served.
type replayer interface {
	Replay(ctx context.Context, kioskID, requestID string, bodyHash []byte) ([]byte, error)
	takerBack
}

// Buy sells an order to a logged-in customer, paid from the prepaid
// balance, or with the stored card when the balance is short. requestID
// makes a resubmitted form safe: it gets the first answer.
func (s *Service) Buy(ctx context.Context, acct *accounts.Account, o Order, requestID string) (*protocol.PurchaseResult, error) {
	if !protocol.ValidRequestID(requestID) {
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "request id: want 1-64 of [A-Za-z0-9_-]")
	}
	if o.Count < 1 || o.Count > protocol.LabelsPerSheet {
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "count: want 1 to %d stamps", protocol.LabelsPerSheet)
	}
	kioskID := WebKioskID(acct.ID)
	canon, _ := json.Marshal(o) // numbers and strings only: cannot fail
	h := sha256.Sum256(canon)
	ord := &order{kioskID: kioskID, requestID: requestID, hash: h[:], channel: "portal", owner: ledger.Owner{AccountID: acct.ID},
		sheet: &o.Sheet, picks: true}
	ord.build = func(ctx context.Context, _ *protocol.Error) (*ledger.Sale, *payments.Source, error) {
		return s.buy(ctx, ord, acct, o)
	}
	return s.run(ctx, ord).result()
}

// buy prices a new order on the next free labels of its sheet. It runs
// holding the sheet (order.sheet), so the claim it makes is undone, if the
// sale is not made, before any other sale on the sheet is priced.
func (s *Service) buy(ctx context.Context, ord *order, acct *accounts.Account, o Order) (_ *ledger.Sale, _ *payments.Source, err error) {
	priced := s.Now()
	rt, err := s.Rates.Current(priced)
	if err != nil {
		return nil, nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no rate table is in force")
	}
	price, err := rt.Price(o.RateClass, o.WeightMg)
	if err != nil {
		return nil, nil, err
	}
	zip, err := acct.ZIP.Number()
	if err != nil || zip == 0 {
		return nil, nil, protocol.Errorf(protocol.CodeInvalidRequest, "set the ZIP code you mail from first")
	}
	claimedAt, err := s.Claimer.Claim(ctx, o.Sheet, acct.ID)
	if err != nil {
		return nil, nil, err
	}
	if claimedAt != 0 {
		// The sheet is the customer's once a sale on it is made, not for
		// naming it: refused here, or by the payment or the commit, it is
		// unclaimed again. A sale whose outcome is unknown keeps it (the
		// pipeline does not call failed then), so a sale that did commit
		// never loses its sheet.
		unclaim := func(ctx context.Context) {
			if err := s.Claimer.Unclaim(ctx, o.Sheet, acct.ID, claimedAt); err != nil {
				s.Log.Error("web sheet claim not undone", "sheet", o.Sheet, "account", acct.ID, "err", err)
			}
		}
		ord.failed = unclaim
		defer func() {
			if err != nil {
				unclaim(context.WithoutCancel(ctx))
			}
		}()
	}
	if err := s.ownSheet(ctx, ord, o.Sheet); err != nil {
		return nil, nil, err
	}
	labels, err := s.pickFree(ctx, ord, o.Sheet, o.Count)
	if err != nil {
		return nil, nil, err
	}
	sale := &ledger.Sale{KioskID: ord.kioskID, RequestID: ord.requestID, BodyHash: ord.hash, UserID: WebUserBase + uint64(acct.ID), OriginZIP: zip, Priced: priced,
		Account: acct.ID}
	for _, l := range labels {
		sale.Items = append(sale.Items, ledger.Item{RateClass: o.RateClass, Postage: price, Label: l})
	}
	src := payments.Source{AccountID: acct.ID}
	if acct.Balance < sale.Total() && acct.CardToken() != "" {
		src = payments.Source{Token: acct.CardToken()}
	}
	return sale, &src, nil
}

// ownSheet refuses a sheet that is not the order's owner's, as the
// labels' precheck does (label_unknown, label_not_assigned), before
// anything is read of its labels: how many are left on a sheet is for its
// owner to know.
func (s *Service) ownSheet(ctx context.Context, ord *order, sheet protocol.SheetSerial) error {
	_, refusal, err := s.Book.Precheck(ctx, ord.kioskID, ord.requestID, ord.hash, []protocol.LabelSerial{{Sheet: sheet, Position: 1}}, ord.owner)
	switch {
	case err != nil:
		return err
	case refusal != nil && refusal.Code != protocol.CodeLabelUsed: // a used label is the owner's to hear of
		return webRefusal(sheet, refusal)
	}
	return nil
}

// webRefusal words the ledger's precheck refusal of a web customer's
// sheet for them: the ledger's speaks of kiosks.
func webRefusal(sheet protocol.SheetSerial, refusal *protocol.Error) *protocol.Error {
	if refusal.Code == protocol.CodeLabelNotAssigned {
		return protocol.Errorf(protocol.CodeLabelNotAssigned, "sheet %s is not assigned to your account", sheet)
	}
	return refusal
}

// RefundUnused gives a customer back the postage of a stamp they did not
// use, once, if it was bought within window.
func (s *Service) RefundUnused(ctx context.Context, acct *accounts.Account, requestID string, label protocol.LabelSerial, window time.Duration) (protocol.Mills, error) {
	kioskID := WebKioskID(acct.ID)
	amount, err := s.takeBack(ctx, s.Web, kioskID, requestID, label, s.Now().Add(-window), "", "")
	if err != nil {
		return 0, err
	}
	s.Log.Info("refunded an unused web stamp", "account", acct.ID, "label", label, "amount", amount.String())
	return amount, nil
}
