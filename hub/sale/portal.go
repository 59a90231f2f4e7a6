package sale

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
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

// claimer gives a web sheet to its first customer.
type claimer interface {
	Claim(ctx context.Context, sheet protocol.SheetSerial, accountID int64) error
}

// replayer finds the stored answer to a request already served.
type replayer interface {
	Replay(ctx context.Context, kioskID, requestID string, bodyHash []byte) ([]byte, error)
	RefundUnused(ctx context.Context, kioskID, requestID string, label protocol.LabelSerial, notBefore time.Time) (*ledger.Spoiled, error)
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
	// A form sent twice at once: the second waits for the first's answer.
	f, first := s.join(kioskID+"/"+requestID, h[:])
	if !first {
		<-f.done
		if string(f.hash) != string(h[:]) {
			return nil, protocol.Errorf(protocol.CodeIdempotencyConflict, "request id %s was used before for another order", requestID)
		}
		if f.perr != nil {
			return nil, f.perr
		}
	} else {
		f.out, f.perr = s.order(ctx, acct, o, requestID, h[:])
		s.leave(kioskID+"/"+requestID, f)
		if f.perr != nil {
			return nil, f.perr
		}
	}
	res, err := protocol.DecodePurchaseResult(f.out)
	if err != nil {
		return nil, err
	}
	if res.Status != protocol.ResultOK {
		return nil, res.Error
	}
	return res, nil
}

// order answers an order: the stored answer of a request served before,
// else a new sale.
func (s *Service) order(ctx context.Context, acct *accounts.Account, o Order, requestID string, hash []byte) ([]byte, *protocol.Error) {
	out, err := s.Web.Replay(ctx, WebKioskID(acct.ID), requestID, hash)
	if err == nil && out == nil {
		out, err = s.buy(ctx, acct, o, requestID, hash)
	}
	if err != nil {
		perr := protocol.AsError(err)
		if perr.Code == protocol.CodeInternal {
			s.Log.Error("portal purchase failed", "account", acct.ID, "request_id", requestID, "err", err)
		}
		return nil, perr
	}
	return out, nil
}

func (s *Service) buy(ctx context.Context, acct *accounts.Account, o Order, requestID string, hash []byte) ([]byte, error) {
	rt, err := s.Rates.Current(s.Now())
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no rate table is in force")
	}
	price, err := rt.Price(o.RateClass, o.WeightMg)
	if err != nil {
		return nil, err
	}
	zip, err := acct.ZIP.Number()
	if err != nil || zip == 0 {
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "set the ZIP code you mail from first")
	}
	if err := s.Claimer.Claim(ctx, o.Sheet, acct.ID); err != nil {
		return nil, err
	}
	state, err := s.Sheets.State(ctx, o.Sheet)
	if err != nil {
		return nil, err
	}
	if len(state.Free) < o.Count {
		return nil, protocol.Errorf(protocol.CodeLabelUsed, "sheet %s has %d free labels; %d were asked for", o.Sheet, len(state.Free), o.Count)
	}
	kioskID := WebKioskID(acct.ID)
	sale := &ledger.Sale{KioskID: kioskID, RequestID: requestID, BodyHash: hash, UserID: WebUserBase + uint64(acct.ID), OriginZIP: zip}
	labels := make([]protocol.LabelSerial, o.Count)
	for i := range labels {
		labels[i] = protocol.LabelSerial{Sheet: o.Sheet, Position: uint8(state.Free[i])}
		sale.Items = append(sale.Items, ledger.Item{RateClass: o.RateClass, Postage: price, Label: labels[i]})
	}
	prior, refusal, err := s.Book.Precheck(ctx, kioskID, requestID, hash, labels, ledger.Owner{AccountID: acct.ID})
	if err != nil || prior != nil {
		return prior, err
	}
	if refusal != nil {
		if refusal.Code == protocol.CodeLabelUsed {
			s.fraud(ctx, kioskID, requestID, labels)
		}
		return nil, refusal
	}
	src := payments.Source{AccountID: acct.ID}
	if acct.Balance < sale.Total() && acct.CardToken() != "" {
		src = payments.Source{Token: acct.CardToken()}
	}
	return s.charge(ctx, sale, &src)
}

// RefundUnused gives a customer back the postage of a stamp they did not
// use, once, if it was bought within window.
func (s *Service) RefundUnused(ctx context.Context, acct *accounts.Account, requestID string, label protocol.LabelSerial, window time.Duration) (protocol.Mills, error) {
	kioskID := WebKioskID(acct.ID)
	sp, err := s.Web.RefundUnused(ctx, kioskID, requestID, label, s.Now().Add(-window))
	if err != nil {
		return 0, err
	}
	key := payments.Key{KioskID: kioskID, RequestID: requestID}
	if err := s.Money.Refund(ctx, key, sp.Postage, "refund:"+label.String()); err != nil {
		return 0, fmt.Errorf("sale: refund %s: %w", label, err)
	}
	if err := s.Book.RecordRefund(ctx, label, kioskID, requestID, sp.Postage); err != nil {
		return 0, err
	}
	s.Log.Info("refunded an unused web stamp", "account", acct.ID, "label", label, "amount", sp.Postage.String())
	return sp.Postage, nil
}
