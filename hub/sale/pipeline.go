package sale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/metrics"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// The sale pipeline. Every channel (a kiosk's MQTT request, the portal's
// order form, the XML web stamp API) decodes and checks its own request,
// then hands the pipeline an order. The pipeline joins a repeat of a
// request in flight in this process, claims the request for this hub
// against the others, replays an answer recorded before, has the channel
// price the sale, holds its labels, charges, and records the answer. The
// cluster rules live here, once.

// order is one purchase as the pipeline runs it.
type order struct {
	kioskID   string // a kiosk's id, or WebKioskID for a web customer
	requestID string
	hash      []byte // SHA-256 of the channel's canonical request
	channel   string // for logs: kiosk, portal, webstamp
	owner     ledger.Owner
	// labels are the request's labels when it names them (kiosks); they
	// are checked in the same query that looks for an earlier answer. Nil
	// when build picks them.
	labels []protocol.LabelSerial
	// record stores final refusals, so that a resend gets the same bytes.
	// The web channels do not: a customer mends the form and sends it again.
	record bool
	// build prices the request once it is known to be new and names its
	// payment (nil: a free reprint). refusal is the labels' precheck
	// refusal, which build returns unless it has a refusal of its own.
	build func(ctx context.Context, refusal *protocol.Error) (*ledger.Sale, *payments.Source, error)
	// failed, if set, runs when a built sale was not sold.
	failed func(ctx context.Context)
	// pure: build has no effect outside this process and a card token
	// pays, so the sale may be built before its precheck, which then
	// rides with the payment attempt (checkedCharge).
	pure bool
	// paid, if not nil, is the count of the request's payments that the
	// claim's read found: with none, the card is held first (HoldFirst).
	paid *int
	// sheet, for the web channels, is the sheet the order is for: web
	// sales on one sheet take turns, on this hub and across hubs, from
	// their build to their commit. The hub's pick of the next free label
	// then finds the last sale's labels used, not in flight, and a claim
	// of the sheet is undone before the next sale on it is priced.
	sheet *protocol.SheetSerial
	// picks: build picks the labels itself (a sheet's next free ones). A
	// label it picked found used is another sale's, not the customer's
	// offer: retryable, never a fraud alert.
	picks bool
	// remedy is the failed label a free reprint replaces. Its claim, the
	// one a refund of it takes, is held from the build to the commit: the
	// label gets one remedy, and a refund racing the reprint finds it done.
	remedy *protocol.LabelSerial
}

// answer is what a purchase got: the bytes sent (and replayed), the result
// they encode when the sale happened now, or the refusal.
type answer struct {
	out  []byte
	res  *protocol.PurchaseResult
	perr *protocol.Error
}

// result is the answer typed, for the web channels: the sold result, or
// the refusal as an error.
func (a answer) result() (*protocol.PurchaseResult, error) {
	if a.perr != nil {
		return nil, a.perr
	}
	res := a.res
	if res == nil { // a replay: only the bytes were kept
		var err error
		if res, err = protocol.DecodePurchaseResult(a.out); err != nil {
			return nil, fmt.Errorf("sale: stored answer: %w", err)
		}
	}
	if res.Status != protocol.ResultOK {
		return nil, res.Error
	}
	return res, nil
}

// requestClaims makes a request this hub's alone while it serves it. r,
// if not nil, runs in the claim's transaction; read reports whether it did.
type requestClaims interface {
	TakeReading(ctx context.Context, scope, name string, r *store.Read) (release func(), read bool, err error)
}

// run answers an order. A repeat that arrives while the first copy is
// served in this process waits for it and gets the same answer.
func (s *Service) run(ctx context.Context, o *order) answer {
	key := o.kioskID + "/" + o.requestID
	f, first := s.join(key, o.hash)
	if !first {
		<-f.done
		if string(f.hash) != string(o.hash) {
			return s.refused(o.requestID, protocol.Errorf(protocol.CodeIdempotencyConflict,
				"request_id %s was used before with a different request", o.requestID))
		}
		return f.ans
	}
	defer s.leave(key, f)
	f.ans = s.serve(ctx, o)
	return f.ans
}

// serve runs an order this process is not already serving.
func (s *Service) serve(ctx context.Context, o *order) answer {
	// Another hub may hold the same request: wait for it, or take it over
	// from a dead one. Whatever the holder recorded is found below.
	if s.Claims != nil {
		// The precheck rides with the claim when it can: one round trip
		// and, on PostgreSQL, one transaction less per sale.
		var check *ledger.Check
		var r *store.Read
		if o.labels != nil {
			check = s.Book.PrecheckRead(o.kioskID, o.requestID, o.hash, o.labels, o.owner)
			r = &check.Read
			if o.pure {
				r, o.paid = s.Money.PaidRead(payments.Key{KioskID: o.kioskID, RequestID: o.requestID}, r)
			}
		}
		start := time.Now()
		release, read, err := s.Claims.TakeReading(ctx, o.kioskID, o.requestID, r)
		s.stage(metrics.StageClaim, start)
		if err != nil {
			return s.refused(o.requestID, err)
		}
		if !read {
			check, o.paid = nil, nil
		}
		// Released once the answer is final here. The deletion need not
		// delay the answer; this process's next holder waits for it.
		a := s.claimed(ctx, o, check)
		s.releases.Go(release)
		return a
	}
	return s.claimed(ctx, o, nil)
}

// claimed runs an order this hub holds; check, if not nil, is its
// precheck, already run under the claim.
func (s *Service) claimed(ctx context.Context, o *order, check *ledger.Check) answer {
	if check == nil && o.pure && o.labels != nil {
		if a, ok := s.checkedCharge(ctx, o); ok {
			return a
		}
	}
	var prior []byte
	var refusal *protocol.Error
	var err error
	switch {
	case check != nil:
		prior, refusal, err = check.Result()
	case o.labels != nil:
		prior, refusal, err = s.Book.Precheck(ctx, o.kioskID, o.requestID, o.hash, o.labels, o.owner)
	default:
		prior, err = s.Web.Replay(ctx, o.kioskID, o.requestID, o.hash)
	}
	if err != nil {
		return s.reject(ctx, o, err)
	}
	if prior != nil {
		return answer{out: prior}
	}
	if refusal != nil && refusal.Code == protocol.CodeLabelUsed {
		s.fraud(ctx, o.kioskID, o.requestID, o.labels)
	}
	if o.remedy != nil {
		release, err := s.takeLabel(ctx, *o.remedy)
		if err != nil {
			return s.reject(ctx, o, err)
		}
		defer release()
	}
	if o.sheet != nil {
		release, err := s.takeSheet(ctx, *o.sheet)
		if err != nil {
			return s.reject(ctx, o, err)
		}
		defer release()
	}
	sale, src, err := o.build(ctx, refusal)
	if err != nil {
		return s.reject(ctx, o, err)
	}
	// Checked under the claim with no payment found: no attempt needs
	// recording before the card.
	first := check != nil && o.paid != nil && *o.paid == 0
	a, err := s.charge(ctx, sale, src, first)
	if err != nil {
		// A sale whose outcome is not known, or that another hub serves,
		// may stand: what it used (a one-time pay code, a web sheet's
		// claim) stays used.
		if o.failed != nil && protocol.AsError(err).Code != protocol.CodeOutcomeUnknown && !errors.Is(err, payments.ErrOtherHub) {
			o.failed(context.WithoutCancel(ctx))
		}
		if o.picks && protocol.AsError(err).Code == protocol.CodeLabelUsed {
			err = busySheet(*o.sheet) // held in flight or committed by another sale: not this customer's doing
		}
		return s.reject(ctx, o, err)
	}
	return answer{out: a.Bytes, res: a.Result}
}

// checkedCharge runs a kiosk's card sale with its precheck in the payment
// attempt's commit: one turn of the database's writer instead of two. It
// gives up, with nothing recorded and nothing held, when the sale cannot
// be built now, its labels are held by a sale in flight, sales are
// stopped, or the request has a payment already; claimed then goes the
// long way, which checks first and answers each of those as before.
func (s *Service) checkedCharge(ctx context.Context, o *order) (answer, bool) {
	sale, src, err := o.build(ctx, nil)
	if err != nil || src == nil || src.Token == "" {
		return answer{}, false
	}
	release, err := s.holdLabels(sale)
	if err != nil {
		return answer{}, false
	}
	defer release()
	if s.Book.Stopped() != nil {
		return answer{}, false
	}
	check := s.Book.PrecheckRead(o.kioskID, o.requestID, o.hash, o.labels, o.owner)
	clean := func() bool {
		prior, refusal, err := check.Result()
		return err == nil && prior == nil && refusal == nil
	}
	key := payments.Key{KioskID: sale.KioskID, RequestID: sale.RequestID}
	pay, ok, err := s.Money.HoldChecked(ctx, key, src.Token, sale.Total(), &check.Read, clean)
	switch {
	case !ok:
		return answer{}, false
	case err != nil:
		return s.reject(ctx, o, err), true
	case pay == nil: // answered before, or refused: no card was asked
		prior, refusal, err := check.Result()
		switch {
		case err != nil:
			return s.reject(ctx, o, err), true
		case prior != nil:
			return answer{out: prior}, true
		}
		if refusal.Code == protocol.CodeLabelUsed {
			s.fraud(ctx, o.kioskID, o.requestID, o.labels)
		}
		return s.reject(ctx, o, refusal), true
	}
	a, err := s.issue(ctx, sale, pay)
	if err != nil {
		return s.reject(ctx, o, err), true
	}
	return answer{out: a.Bytes, res: a.Result}, true
}

// checkLabels is the precheck of labels a web channel's build names: the
// refusal, if any, after a fraud check of used ones the customer named.
// A used label the hub picked (picked) was taken by another sale since
// the sheet was read: busySheet, retryable, and no fraud.
func (s *Service) checkLabels(ctx context.Context, o *order, labels []protocol.LabelSerial, picked bool) error {
	prior, refusal, err := s.Book.Precheck(ctx, o.kioskID, o.requestID, o.hash, labels, o.owner)
	switch {
	case err != nil:
		return err
	case prior != nil: // cannot happen under the claim: the replay came first
		return protocol.Errorf(protocol.CodeServiceUnavailable, "request %s was answered meanwhile; ask again", o.requestID)
	case refusal != nil && refusal.Code == protocol.CodeLabelUsed && picked:
		return busySheet(labels[0].Sheet)
	case refusal != nil:
		if refusal.Code == protocol.CodeLabelUsed {
			s.fraud(ctx, o.kioskID, o.requestID, labels)
		}
		return webRefusal(labels[0].Sheet, refusal)
	}
	return nil
}

// takeSheet makes the web sales on one sheet take turns, on this hub and
// across hubs, as takeLabel does a label's refunds. A dead hub's turn is
// taken over with its other claims; the claim of a sheet it made stays.
func (s *Service) takeSheet(ctx context.Context, sheet protocol.SheetSerial) (func(), error) {
	if s.Claims == nil {
		return s.serialize("web-sheet:" + sheet.String()), nil
	}
	release, _, err := s.Claims.TakeReading(ctx, "web-sheet", sheet.String(), nil)
	if err != nil {
		if protocol.AsError(err).Code == protocol.CodeOutcomeUnknown { // claims.ErrBusy: not about this request
			return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "another purchase on sheet %s is being served; try again", sheet)
		}
		return nil, err
	}
	return release, nil
}

// reject answers an order that was not sold. A final refusal of a channel
// that records them is stored; a repeat then gets the same bytes.
func (s *Service) reject(ctx context.Context, o *order, err error) answer {
	perr := protocol.AsError(err)
	if perr.Code == protocol.CodeInternal || errors.Is(err, ledger.ErrTamper) {
		s.Log.Error("purchase failed", "channel", o.channel, "kiosk", o.kioskID, "request_id", o.requestID, "err", err)
	}
	if !o.record || errors.Is(err, payments.ErrOtherHub) || ledger.Retryable(perr.Code) {
		return s.refused(o.requestID, perr) // not final: not recorded
	}
	if !s.mayRecordRefusal(ctx, o.kioskID) {
		// Not recorded; an answer another hub recorded meanwhile (it held
		// the request before its lease lapsed) still stands.
		if o.labels != nil {
			if prior, _, err := s.Book.Precheck(ctx, o.kioskID, o.requestID, o.hash, o.labels, o.owner); err == nil && prior != nil {
				return answer{out: prior}
			}
		}
		return s.refused(o.requestID, perr)
	}
	out, rerr := s.Book.Reject(ctx, o.kioskID, o.requestID, o.hash, perr)
	if pe := (*protocol.Error)(nil); errors.As(rerr, &pe) {
		return s.refused(o.requestID, pe) // the request id was used for another request
	}
	if rerr != nil {
		// The request may have been sold meanwhile by another hub, or the
		// record written with its answer lost: not final.
		s.Log.Error("could not record rejection", "request_id", o.requestID, "refusal", perr.Code, "err", rerr)
		return s.refused(o.requestID, protocol.Errorf(protocol.CodeOutcomeUnknown,
			"the refusal of request %s could not be recorded; ask again", o.requestID))
	}
	return answer{out: out, perr: perr}
}

// refused is a refusal that is not recorded: the request could not be
// read, or the refusal is not final. An unexpected fault (the database
// failing over, say) is answered outcome_unknown: the request's earlier
// answer could not be read, and an earlier try may have sold, so a kiosk
// must ask again rather than close the sale as refused.
func (s *Service) refused(requestID string, err error) answer {
	perr := protocol.AsError(err)
	if perr.Code == protocol.CodeInternal {
		s.Log.Error("purchase failed", "request_id", requestID, "err", err)
		perr = protocol.Errorf(protocol.CodeOutcomeUnknown, "the hub could not tell whether request %s was served; ask again", requestID)
	}
	out, _ := json.Marshal(protocol.Rejected(requestID, perr)) // strings only: cannot fail
	return answer{out: out, perr: perr}
}
