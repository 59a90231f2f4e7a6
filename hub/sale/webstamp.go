package sale

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/protocol"
)

// sheets finds free labels on a customer's sheet.
type sheets interface {
	State(ctx context.Context, sheet protocol.SheetSerial) (protocol.SheetState, error)
}

// WebUserBase offsets web customers' ids in the indicium's user field, so
// they never collide with kiosks' (both count from 1).
const WebUserBase = 1 << 32

// WebKioskID is the sales namespace of a web customer.
func WebKioskID(accountID int64) string { return "web-" + strconv.FormatInt(accountID, 10) }

// WebStamp sells one stamp through the patent's XML API
// (server.bp_RequestWebStampParams) to an authenticated customer.
// SerialNumber names the sheet to print on (the next free label is used)
// or one label. The customer pays with the card in the request (checked and
// passed to the gateway, never kept), else from the prepaid balance, else
// with the stored card. requestID makes a retry safe.
func (s *Service) WebStamp(ctx context.Context, acct *accounts.Account, req *protocol.WebStampRequest, requestID string) (*protocol.XMLIndicium, error) {
	if req.LoginID != acct.Login {
		return nil, protocol.Errorf(protocol.CodeUnauthorized, "LoginID %q is not the authenticated customer", req.LoginID)
	}
	zip, err := acct.ZIP.Number()
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "the account has no valid ZIP code")
	}
	kioskID := WebKioskID(acct.ID)
	// The request as sent, not the label it gets: a retry of a sheet's
	// "next free label" must find the first answer, not the next label.
	canon, _ := json.Marshal(struct {
		Amount    protocol.Mills
		RateClass string
		Serial    string
		Last4     string
	}{req.Amount, req.RateClass, strings.ToUpper(strings.TrimSpace(req.SerialNumber)), payments.Last4(req.CCNumber)})
	h := sha256.Sum256(canon)
	o := &order{kioskID: kioskID, requestID: requestID, hash: h[:], channel: "webstamp", owner: ledger.Owner{AccountID: acct.ID}}
	o.build = func(ctx context.Context, _ *protocol.Error) (*ledger.Sale, *payments.Source, error) {
		return s.webStamp(ctx, o, acct, req, zip)
	}
	res, err := s.run(ctx, o).result()
	if err != nil {
		return nil, err
	}
	in := res.Indicia[0]
	return &protocol.XMLIndicium{MeterNumber: in.MeterNumber, RateClass: in.RateClass, Amount: in.AmountMills, Matrix: in.Matrix, LPO: s.Licence}, nil
}

// webStamp prices a new web stamp request on the label it names.
func (s *Service) webStamp(ctx context.Context, o *order, acct *accounts.Account, req *protocol.WebStampRequest, zip uint32) (*ledger.Sale, *payments.Source, error) {
	priced := s.Now()
	rt, err := s.Rates.Current(priced)
	if err != nil {
		return nil, nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no rate table is in force")
	}
	class, ok := rt.Class(req.RateClass)
	if !ok {
		return nil, nil, protocol.Errorf(protocol.CodeRateClassUnknown, "rate class %q is not in rate table %s", req.RateClass, rt.Version)
	}
	if !validAmount(class, req.Amount) {
		return nil, nil, protocol.Errorf(protocol.CodeAmountMismatch, "%s for %s is not a price of rate table %s (1 oz is %s)",
			req.Amount.String(), class.Name, rt.Version, class.FirstOunce)
	}
	label, err := s.pickLabel(ctx, o, req.SerialNumber)
	if err != nil {
		return nil, nil, err
	}
	if err := s.checkLabels(ctx, o, []protocol.LabelSerial{label}); err != nil {
		return nil, nil, err
	}
	src := payments.Source{AccountID: acct.ID}
	switch {
	case req.CCNumber != "":
		src = payments.Source{Card: &payments.Card{Number: req.CCNumber, Exp: req.CCExp, Name: req.CCNameOnCard}}
	case acct.Balance < req.Amount && acct.CardToken() != "":
		src = payments.Source{Token: acct.CardToken()}
	}
	sale := &ledger.Sale{KioskID: o.kioskID, RequestID: o.requestID, BodyHash: o.hash, UserID: WebUserBase + uint64(acct.ID), Priced: priced,
		OriginZIP: zip, Items: []ledger.Item{{RateClass: req.RateClass, Postage: req.Amount, Label: label}}}
	return sale, &src, nil
}

// validAmount reports whether amount is the class's price for some weight:
// the XML request names an amount, not a weight.
func validAmount(c protocol.RateClass, amount protocol.Mills) bool {
	for extra := range protocol.Ounces(c.MaxWeightMg) {
		if c.FirstOunce+protocol.Mills(extra)*c.AdditionalOunce == amount {
			return true
		}
		if c.AdditionalOunce == 0 {
			break
		}
	}
	return false
}

// pickLabel reads SerialNumber: a label, or a sheet of o's owner whose
// next free label is taken.
func (s *Service) pickLabel(ctx context.Context, o *order, serial string) (protocol.LabelSerial, error) {
	serial = strings.TrimSpace(serial)
	if l, err := protocol.ParseLabelSerial(serial); err == nil {
		return l, nil
	}
	sheet, err := protocol.ParseSheetSerial(serial)
	if err != nil {
		return protocol.LabelSerial{}, protocol.Errorf(protocol.CodeInvalidRequest, "SerialNumber: want a sheet like 1966-F8CF or a label like 1966-F8CF-03")
	}
	if err := s.ownSheet(ctx, o, sheet); err != nil {
		return protocol.LabelSerial{}, err
	}
	state, err := s.Sheets.State(ctx, sheet)
	if err != nil {
		return protocol.LabelSerial{}, err
	}
	if len(state.Free) == 0 {
		return protocol.LabelSerial{}, protocol.Errorf(protocol.CodeLabelUsed, "every label of sheet %s is used", sheet)
	}
	return protocol.LabelSerial{Sheet: sheet, Position: uint8(state.Free[0])}, nil
}
