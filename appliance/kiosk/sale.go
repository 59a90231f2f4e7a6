package kiosk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"strings"
	"time"

	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/appliance/payterm"
	"github.com/frank-postage/frank/appliance/printer"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/label"
)

// labelChecker reads the label under the print head.
type labelChecker interface {
	UnderHead(ctx context.Context) (string, error)
}

// labelFault is a label not printed because the one under the head is not
// the one the stamp was signed for, or could not be read.
type labelFault struct{ reason, detail string }

func (e *labelFault) Error() string { return "kiosk: " + e.detail }

func (e *labelFault) Fault() string { return e.reason }

// LabelPrinter prints one label and reports faults; appliance/printer.
type LabelPrinter interface {
	Print(img image.Image) error
}

// Progress is where the sale in hand is, so the touchscreen can say what
// the customer waits for.
type Progress struct {
	Step  string `json:"step"`            // idle, weighing, paying (on the terminal), issuing (at the hub), printing
	Label int    `json:"label,omitempty"` // printing: which label, from 1
	Of    int    `json:"of,omitempty"`    // printing: of how many
}

// Progress returns the step of the sale in hand.
func (k *Kiosk) Progress() Progress {
	if p := k.progress.Load(); p != nil {
		return *p
	}
	return Progress{Step: "idle"}
}

func (k *Kiosk) setProgress(p Progress) { k.progress.Store(&p) }

// PayTerminal is the touchscreen's payment method: the kiosk takes the
// card on its terminal and sends the hub the token.
const PayTerminal = "terminal"

// notSelling lists why no sale may start; labelsGiven skips the stock
// check for an order that names its labels.
func (k *Kiosk) notSelling(labelsGiven bool) []string {
	k.refreshPrinter() // a fault just cleared must not refuse this sale
	var why []string
	for _, r := range k.Status().Reasons {
		if r == "out_of_labels" && labelsGiven || r == "hub_offline" {
			continue // the hub round trip says so itself
		}
		why = append(why, r)
	}
	return why
}

// Order is what the customer chose.
type Order struct {
	RateClass string `json:"rate_class"`
	// WeightMg is what the screen showed; 0 takes the scale's reading.
	WeightMg int64            `json:"weight_mg"`
	Quantity *int             `json:"quantity,omitempty"` // stamps, 1 to protocol.MaxItems; default 1
	Labels   []string         `json:"labels,omitempty"`   // default: the next free labels of the loaded stock
	Payment  protocol.Payment `json:"payment"`
}

// Validate refuses, as invalid_request (payment_invalid for its payment),
// an order no sale could come of: nothing reaches the journal, the scale,
// the card terminal or the hub for it.
func (o *Order) Validate() error {
	bad := func(format string, args ...any) error {
		return protocol.Errorf(protocol.CodeInvalidRequest, format, args...)
	}
	switch {
	case o.WeightMg < 0 || o.WeightMg > protocol.MaxWeightMg:
		return bad("weight_mg: want 1 to %d, or 0 for the scale's reading", protocol.MaxWeightMg)
	case o.Quantity != nil && (*o.Quantity < 1 || *o.Quantity > protocol.MaxItems):
		return bad("quantity: want 1 to %d stamps", protocol.MaxItems)
	case len(o.Labels) > protocol.MaxItems:
		return bad("labels: want at most %d", protocol.MaxItems)
	case o.Quantity != nil && len(o.Labels) > 0 && *o.Quantity != len(o.Labels):
		return bad("quantity %d and %d labels: give one or the other", *o.Quantity, len(o.Labels))
	}
	if o.Payment.Method != PayTerminal {
		// Before the journal: a card number typed as a token is never
		// written down.
		return o.Payment.Validate()
	}
	return nil
}

// count is how many stamps the order is for.
func (o *Order) count() int {
	if o.Quantity != nil {
		return *o.Quantity
	}
	return 1
}

// LabelResult is one label's outcome.
type LabelResult struct {
	LabelSerial string         `json:"label_serial"`
	MeterNumber string         `json:"meter_number,omitempty"`
	Amount      protocol.Mills `json:"amount_mills"`
	Outcome     string         `json:"outcome"`
	Reason      string         `json:"reason,omitempty"`
}

// Receipt is what the customer is shown.
type Receipt struct {
	RequestID string          `json:"request_id"`
	Status    string          `json:"status"`
	Error     *protocol.Error `json:"error,omitempty"`
	Total     protocol.Mills  `json:"total_mills"` // postage on labels that printed
	Labels    []LabelResult   `json:"labels,omitempty"`
}

// saleRecord is a finished sale as the kiosk remembers it.
type saleRecord struct {
	items   []protocol.PurchaseItem
	service string
	labels  []LabelResult
	// For the receipt: when, and how it was paid (never more of the card
	// than its brand and last four digits).
	at       time.Time
	payment  protocol.Payment
	approval string
}

// Sell runs one sale: price, ask the hub, print each label, report.
func (k *Kiosk) Sell(ctx context.Context, o Order) (*Receipt, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	k.saleMu.Lock()
	defer k.saleMu.Unlock()
	defer k.setProgress(Progress{Step: "idle"})
	rt := k.Rates()
	if rt == nil {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no rate table from the hub yet")
	}
	if why := k.notSelling(len(o.Labels) > 0); why != nil {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "out of service: %s", strings.Join(why, ", "))
	}
	// A new sale means the last customer has left the screen. A hub slow
	// to refund must not keep the next customer waiting: the sweep retries.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	k.refundAbandoned(rctx, 0)
	cancel()
	price, err := rt.Price(o.RateClass, o.WeightMg)
	if k.dev.Scale != nil {
		// The scale prices the sale. A weight from the screen that prices
		// differently is stale: the customer must see the new price first.
		k.setProgress(Progress{Step: "weighing"})
		mg, werr := k.weigh(ctx)
		if werr != nil {
			return nil, werr
		}
		p, perr := rt.Price(o.RateClass, mg)
		if perr != nil {
			return nil, perr
		}
		if o.WeightMg != 0 && (err != nil || p != price) {
			return nil, protocol.Errorf(protocol.CodeInvalidRequest, "weight_mg: the scale now reads %d mg, which costs %s, not the %d mg shown; weigh again", mg, p, o.WeightMg)
		}
		o.WeightMg, price, err = mg, p, nil
	}
	if err != nil {
		return nil, err
	}
	labels := o.Labels
	if len(labels) == 0 {
		if labels, err = k.stock.next(o.count(), k.heldLabels(ctx)); err != nil {
			return nil, err
		}
	}
	req := &protocol.PurchaseRequest{RequestID: newRequestID(), KioskID: k.cfg.ID, OriginZIP: k.cfg.OriginZIP,
		RateTable: rt.Version, Payment: o.Payment}
	for _, l := range labels {
		req.Items = append(req.Items, protocol.PurchaseItem{RateClass: o.RateClass, WeightMg: o.WeightMg, AmountMills: price, LabelSerial: l})
	}
	if o.Payment.Method == PayTerminal {
		// The customer pays on the terminal; the hub gets its token only.
		// Nothing the hub would refuse on sight may reach the card.
		if err := req.ValidateOrder(); err != nil {
			return nil, err
		}
		if k.dev.Terminal == nil {
			return nil, protocol.Errorf(protocol.CodePaymentInvalid, "this kiosk has no card terminal")
		}
		k.setProgress(Progress{Step: "paying"})
		tok, err := k.dev.Terminal.Charge(ctx, req.RequestID, int64(price)*int64(len(labels)))
		switch {
		case errors.Is(err, payterm.ErrDeclined):
			return nil, protocol.Errorf(protocol.CodePaymentDeclined, "the card was declined; nothing was charged")
		case errors.Is(err, payterm.ErrTimeout):
			return nil, protocol.Errorf(protocol.CodePaymentTimeout, "no card was presented; nothing was charged")
		case err != nil:
			k.log.Error("card terminal", "err", err)
			if gone(k.dev.Terminal) {
				k.setErr("terminal_offline")
			} else {
				k.setErr("terminal_error")
			}
			return nil, protocol.Errorf(protocol.CodePaymentInvalid, "the card terminal failed; nothing was charged")
		}
		req.Payment = protocol.Payment{Method: protocol.PayCardToken, Token: tok.Token, Brand: tok.Brand, Last4: tok.Last4}
	}
	svc, _ := rt.Class(o.RateClass)
	return k.buy(ctx, req, svc.Print)
}

// Reprint asks for a free reprint of a label of an earlier sale that failed
// to print, on the next free label.
func (k *Kiosk) Reprint(ctx context.Context, requestID, label string) (*Receipt, error) {
	k.saleMu.Lock()
	defer k.saleMu.Unlock()
	defer k.setProgress(Progress{Step: "idle"})
	k.mu.Lock()
	rec := k.done[requestID]
	k.mu.Unlock()
	var item *protocol.PurchaseItem
	if rec != nil {
		for i := range rec.items {
			if rec.items[i].LabelSerial == label {
				item = &rec.items[i]
			}
		}
	}
	if item == nil {
		return nil, protocol.Errorf(protocol.CodeRemedyNotAllowed, "this kiosk sold no label %s in sale %s", label, requestID)
	}
	if err := k.remedyAllowed(ctx, requestID, label); err != nil {
		return nil, err
	}
	rt := k.Rates()
	if rt == nil {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no rate table from the hub yet")
	}
	next, err := k.stock.next(1, k.heldLabels(ctx))
	if err != nil {
		return nil, err
	}
	it := *item
	it.LabelSerial = next[0]
	req := &protocol.PurchaseRequest{RequestID: newRequestID(), KioskID: k.cfg.ID, OriginZIP: k.cfg.OriginZIP, RateTable: rt.Version,
		Items: []protocol.PurchaseItem{it}, Payment: protocol.Payment{Method: protocol.PayNone},
		ReprintOf: &protocol.LabelRef{RequestID: requestID, LabelSerial: label}}
	rc, err := k.buy(ctx, req, rec.service)
	if err == nil && rc.Status == protocol.ResultOK {
		k.remedied(requestID, label, journal.Reprinted)
	}
	return rc, err
}

// Refund asks for the money back for a label that failed to print.
func (k *Kiosk) Refund(ctx context.Context, requestID, label string) (*protocol.RefundResult, error) {
	if err := k.remedyAllowed(ctx, requestID, label); err != nil {
		return nil, err
	}
	return k.refund(ctx, requestID, label)
}

// remedyAllowed refuses a reprint or refund for a label not recorded
// failed: the hub would void and pay back a stamp that printed, and the
// journal's printed would be overwritten.
func (k *Kiosk) remedyAllowed(ctx context.Context, requestID, label string) error {
	if k.journal != nil {
		s, err := k.journal.Get(ctx, requestID)
		switch {
		case err == nil:
			for _, l := range s.Labels {
				if l.Serial == label && l.State == journal.Failed {
					return nil
				}
			}
		case !errors.Is(err, journal.ErrUnknownSale):
			k.log.Error("journal", "err", err)
		}
	}
	k.mu.Lock()
	rec := k.done[requestID]
	k.mu.Unlock()
	if rec != nil {
		for _, l := range rec.labels {
			if l.LabelSerial == label && l.Outcome == protocol.PrintFailed {
				return nil
			}
		}
	}
	return protocol.Errorf(protocol.CodeRemedyNotAllowed, "label %s of sale %s is not one this kiosk failed to print", label, requestID)
}

// refund asks the hub to refund a label the caller knows failed.
func (k *Kiosk) refund(ctx context.Context, requestID, label string) (*protocol.RefundResult, error) {
	req := &protocol.RefundRequest{RequestID: newRequestID(), KioskID: k.cfg.ID, Label: protocol.LabelRef{RequestID: requestID, LabelSerial: label}}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	raw, err := k.call(ctx, protocol.TopicRefund, req.RequestID, req)
	if err != nil {
		return nil, err
	}
	res, err := protocol.DecodeRefundResult(raw)
	if err == nil && res.Status == protocol.ResultOK {
		k.remedied(requestID, label, journal.Refunded)
	}
	return res, err
}

// buy sends a purchase, prints what comes back and reports each label.
func (k *Kiosk) buy(ctx context.Context, req *protocol.PurchaseRequest, service string) (*Receipt, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("kiosk: request: %w", err)
	}
	labels := make([]string, len(req.Items))
	for i, it := range req.Items {
		labels[i] = it.LabelSerial
	}
	// Journal writes use a context of their own: a customer walking away
	// must not leave a step half recorded.
	jctx := context.WithoutCancel(ctx)
	k.mu.Lock()
	k.inHand[req.RequestID] = true
	k.begun[req.RequestID] = k.uptime()
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		delete(k.inHand, req.RequestID)
		k.mu.Unlock()
	}()
	if k.journal != nil {
		if err := k.journal.Begin(jctx, req.RequestID, payload, labels); err != nil {
			k.log.Error("journal", "err", err)
			return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "the kiosk cannot record the sale; nothing was charged")
		}
	}
	k.step("begun")
	k.setProgress(Progress{Step: "issuing"})
	raw, err := k.callRaw(ctx, protocol.TopicPurchase, req.RequestID, payload)
	var res *protocol.PurchaseResult
	var items map[string]protocol.PurchaseItem // by label serial
	if err == nil {
		res, err = protocol.DecodePurchaseResult(raw)
		if err == nil && res.Status == protocol.ResultOK {
			items, err = pairIndicia(req, res)
		}
		if err != nil {
			// An answer the kiosk cannot use is not recorded, and nothing
			// prints: the settler asks the hub again, reports every label
			// failed and refunds it, as for a hub that did not answer.
			k.log.Error("the hub's answer is not usable; nothing printed", "request_id", req.RequestID, "err", err)
			k.setErr("hub_bad_answer")
			return nil, protocol.Errorf(protocol.CodeServiceUnavailable,
				"the hub's answer could not be used; nothing is printed, and anything charged for this sale is refunded")
		}
		if undecided(res) {
			err = errUndecided
		}
	}
	if err != nil {
		// The hub may yet have sold: the settler keeps asking, holds the
		// labels meanwhile, and refunds whatever was charged.
		k.setErr("hub_no_answer")
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable,
			"no answer from the hub; nothing is printed, and anything charged for this sale is refunded once the hub answers")
	}
	if k.journal != nil {
		if err := k.journal.Answer(jctx, req.RequestID, raw); err != nil {
			// Printed with no answer on record, a stamp would be reported
			// failed and refunded after a power cut, in the customer's
			// hand. Left unprinted, the settler asks the hub again and
			// refunds it, as for a hub that did not answer.
			k.log.Error("journal: the hub's answer not recorded; nothing printed", "request_id", req.RequestID, "err", err)
			k.setErr("journal_error")
			return nil, protocol.Errorf(protocol.CodeServiceUnavailable,
				"the kiosk cannot record the sale; nothing is printed, and anything charged for this sale is refunded")
		}
	}
	k.step("answered")
	rc := &Receipt{RequestID: req.RequestID, Status: res.Status, Error: res.Error}
	if res.Status != protocol.ResultOK {
		k.finish(jctx, req.RequestID)
		k.setErr(string(res.Error.Code))
		switch res.Error.Code {
		case protocol.CodeLabelUsed, protocol.CodeLabelUnknown, protocol.CodeLabelNotAssigned:
			// Our view of the stock was wrong: never offer those labels again.
			for _, it := range req.Items {
				k.stock.consume(it.LabelSerial)
			}
		}
		return rc, nil
	}
	report := protocol.PrintReport{RequestID: req.RequestID, KioskID: k.cfg.ID}
	for i, issued := range res.Indicia {
		k.stock.consume(issued.LabelSerial)
		lr := LabelResult{LabelSerial: issued.LabelSerial, MeterNumber: issued.MeterNumber, Amount: issued.AmountMills}
		err := k.journalPrinting(jctx, req.RequestID, issued.LabelSerial)
		if err == nil {
			k.step("printing")
			k.setProgress(Progress{Step: "printing", Label: i + 1, Of: len(res.Indicia)})
			err = k.printOne(items[issued.LabelSerial], issued, service)
			k.step("printed")
		}
		if err != nil {
			lr.Outcome, lr.Reason = protocol.PrintFailed, failReason(err)
			k.setErr(lr.Reason)
			k.log.Error("label not printed", "label", issued.LabelSerial, "err", err)
			k.journalLabel(jctx, req.RequestID, issued.LabelSerial, journal.Failed, lr.Reason)
		} else {
			lr.Outcome = protocol.Printed
			rc.Total += issued.AmountMills
			k.journalLabel(jctx, req.RequestID, issued.LabelSerial, journal.Printed, "")
		}
		rc.Labels = append(rc.Labels, lr)
		report.Labels = append(report.Labels, protocol.LabelOutcome{LabelSerial: lr.LabelSerial, Outcome: lr.Outcome, Reason: lr.Reason})
	}
	// The customer does not wait for the hub to confirm the report: the
	// confirmation closes the sale when it comes (onAnswer), and the
	// settler sends the report again until it does.
	k.publishAsync(protocol.TopicPrint, report)
	k.mu.Lock()
	k.sales++
	pay := protocol.Payment{Method: req.Payment.Method, Brand: req.Payment.Brand, Last4: req.Payment.Last4}
	k.done[req.RequestID] = &saleRecord{items: req.Items, service: service, labels: rc.Labels, at: k.now(), payment: pay, approval: res.Approval}
	k.mu.Unlock()
	return rc, nil
}

// pairIndicia checks that the hub's stamps are one for each label asked,
// by label serial, before any prints: a stamp for no label asked, two for
// one label, or a label left without one is an answer the kiosk cannot
// use. It returns the items asked, by label serial.
func pairIndicia(req *protocol.PurchaseRequest, res *protocol.PurchaseResult) (map[string]protocol.PurchaseItem, error) {
	items := make(map[string]protocol.PurchaseItem, len(req.Items))
	for _, it := range req.Items {
		items[it.LabelSerial] = it
	}
	if len(res.Indicia) != len(items) {
		return nil, fmt.Errorf("kiosk: %d stamps from the hub for %d labels", len(res.Indicia), len(items))
	}
	seen := make(map[string]bool, len(items))
	for _, in := range res.Indicia {
		if _, ok := items[in.LabelSerial]; !ok || seen[in.LabelSerial] {
			return nil, fmt.Errorf("kiosk: a stamp from the hub for label %s, not one asked for once", in.LabelSerial)
		}
		seen[in.LabelSerial] = true
	}
	return items, nil
}

// printOne checks that the hub signed what was asked for, then prints it.
// A kiosk never prints an indicium for another label or amount.
func (k *Kiosk) printOne(want protocol.PurchaseItem, got protocol.IssuedIndicium, service string) error {
	in, err := protocol.ParseIndicium(got.Matrix)
	if err != nil {
		return fmt.Errorf("kiosk: indicium from hub: %w", err)
	}
	if in.Label.String() != want.Label().String() || in.Postage != want.AmountMills || in.RateCategory != want.RateClass ||
		got.LabelSerial != in.Label.String() {
		return fmt.Errorf("kiosk: indicium from hub is for %s %s %d, asked %s %s %d",
			in.Label, in.RateCategory, in.Postage, want.LabelSerial, want.RateClass, want.AmountMills)
	}
	img, err := label.Render(label.FromIndicium(in, got.Matrix, service), k.cfg.LabelSize)
	if err != nil {
		return err
	}
	if k.cfg.LabelCheck != nil {
		under, err := k.cfg.LabelCheck.UnderHead(context.Background())
		switch {
		case err != nil:
			k.wrongStock("label_unread")
			return &labelFault{"label_unread", fmt.Sprintf("label %s: the serial under the print head was not read: %v", want.LabelSerial, err)}
		case under != in.Label.String():
			k.wrongStock("wrong_label")
			return &labelFault{"wrong_label", fmt.Sprintf("label %s was signed, but %s is under the print head", want.LabelSerial, under)}
		}
	}
	return k.printer.Print(img)
}

// failReason maps a print error to the reason a PrintReport carries.
func failReason(err error) string {
	var fe interface{ Fault() string }
	switch {
	case errors.As(err, &fe):
		return fe.Fault()
	case errors.Is(err, errJournal):
		return "journal_error"
	case errors.Is(err, printer.ErrSilent):
		return "printer_silent"
	}
	return "printer_error"
}

// newRequestID is a new request id, later ones sorting later (see
// protocol.NewRequestID).
func newRequestID() string { return protocol.NewRequestID() }
