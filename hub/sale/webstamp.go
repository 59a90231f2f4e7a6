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
	// The card as far as it may be kept: its last four, expiry and name
	// (README: the same key with another card is idempotency_conflict).
	// Nothing derived from the full number: a hash of 16 digits whose
	// last four and issuer are known is soon undone. Empty fields are left
	// out, so a request without a card hashes as before.
	canon, _ := json.Marshal(struct {
		Amount    protocol.Mills
		RateClass string
		Serial    string
		Last4     string
		Exp       string `json:",omitempty"`
		Name      string `json:",omitempty"`
	}{req.Amount, req.RateClass, strings.ToUpper(strings.TrimSpace(req.SerialNumber)), payments.Last4(req.CCNumber),
		strings.TrimSpace(req.CCExp), strings.TrimSpace(req.CCNameOnCard)})
	h := sha256.Sum256(canon)
	o := &order{kioskID: kioskID, requestID: requestID, hash: h[:], channel: "webstamp", owner: ledger.Owner{AccountID: acct.ID}}
	serial := strings.TrimSpace(req.SerialNumber)
	if l, err := protocol.ParseLabelSerial(serial); err == nil {
		o.sheet = &l.Sheet
	} else if sh, err := protocol.ParseSheetSerial(serial); err == nil {
		o.sheet, o.picks = &sh, true // the hub picks the label
	}
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

// pickLabel reads SerialNumber: a label, checked, or a sheet of o's owner
// whose next free label is taken.
func (s *Service) pickLabel(ctx context.Context, o *order, serial string) (protocol.LabelSerial, error) {
	serial = strings.TrimSpace(serial)
	if l, err := protocol.ParseLabelSerial(serial); err == nil {
		if err := s.checkLabels(ctx, o, []protocol.LabelSerial{l}, false); err != nil {
			return protocol.LabelSerial{}, err
		}
		return l, nil
	}
	sheet, err := protocol.ParseSheetSerial(serial)
	if err != nil {
		return protocol.LabelSerial{}, protocol.Errorf(protocol.CodeInvalidRequest, "SerialNumber: want a sheet like 1966-F8CF or a label like 1966-F8CF-03")
	}
	if err := s.ownSheet(ctx, o, sheet); err != nil {
		return protocol.LabelSerial{}, err
	}
	labels, err := s.pickFree(ctx, o, sheet, 1)
	if err != nil {
		return protocol.LabelSerial{}, err
	}
	return labels[0], nil
}

// Times the hub picks a sheet's next free labels again when another sale
// used one between the read and the check.
const pickTries = 3

// pickFree picks n free labels of sheet, the first ones no sale in flight
// on this hub holds, and checks them. A label the hub picked that turns
// out used was taken by another sale meanwhile, not offered by the
// customer: it is picked again, and at last refused as retryable, never
// recorded as fraud.
func (s *Service) pickFree(ctx context.Context, o *order, sheet protocol.SheetSerial, n int) ([]protocol.LabelSerial, error) {
	for try := 1; ; try++ {
		state, err := s.Sheets.State(ctx, sheet)
		if err != nil {
			return nil, err
		}
		free := s.notInFlight(o.kioskID, sheet, state.Free)
		if len(free) < n {
			if len(state.Free) >= n { // in flight: some may come free again
				return nil, busySheet(sheet)
			}
			if len(state.Free) == 0 {
				return nil, protocol.Errorf(protocol.CodeLabelUsed, "every label of sheet %s is used", sheet)
			}
			return nil, protocol.Errorf(protocol.CodeLabelUsed, "sheet %s has %d free labels; %d were asked for", sheet, len(state.Free), n)
		}
		labels := make([]protocol.LabelSerial, n)
		for i := range labels {
			labels[i] = protocol.LabelSerial{Sheet: sheet, Position: uint8(free[i])}
		}
		err = s.checkLabels(ctx, o, labels, true)
		if err != nil && protocol.AsError(err).Code == protocol.CodeServiceUnavailable && try < pickTries {
			continue
		}
		return labels, err
	}
}

// notInFlight is free less the positions of sheet that kioskID's sales in
// flight on this hub hold, under the lock holdLabels takes them with.
func (s *Service) notInFlight(kioskID string, sheet protocol.SheetSerial, free []int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(free))
	for _, p := range free {
		if !s.labels[heldLabel{kioskID, protocol.LabelSerial{Sheet: sheet, Position: uint8(p)}}] {
			out = append(out, p)
		}
	}
	return out
}

// busySheet is the retryable refusal of labels the hub picked that another
// sale took first.
func busySheet(sheet protocol.SheetSerial) error {
	return protocol.Errorf(protocol.CodeServiceUnavailable, "another purchase on sheet %s took its next free label; try again", sheet)
}
