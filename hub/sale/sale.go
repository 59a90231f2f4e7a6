// Package sale is the hub's purchase service (patent Figs. 3 and 8): it
// turns a kiosk's purchase request into a result. It checks every rule
// before any money moves, authorizes the payment, has the PSDM workers sign
// the stamps, captures the payment once the sale is recorded, and answers a
// repeated request_id with the bytes it sent the first time. It also serves
// the two remedies for a stamp that failed to print: a free reprint and a
// refund.
package sale

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/metrics"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// seller issues and commits indicia; the PSDM pool.
type seller interface {
	Issue(ctx context.Context, s *ledger.Sale) (ledger.Answer, error)
}

// saleRecords keeps sales and their answers; the ledger.
type saleRecords interface {
	Stopped() error
	Precheck(ctx context.Context, kioskID, requestID string, bodyHash []byte, labels []protocol.LabelSerial, owner ledger.Owner) ([]byte, *protocol.Error, error)
	PrecheckRead(kioskID, requestID string, bodyHash []byte, labels []protocol.LabelSerial, owner ledger.Owner) *ledger.Check
	Reject(ctx context.Context, kioskID, requestID string, bodyHash []byte, perr *protocol.Error) ([]byte, error)
	UsedLabels(ctx context.Context, labels []protocol.LabelSerial) ([]protocol.LabelSerial, error)
	RecordReuse(ctx context.Context, label protocol.LabelSerial, kioskID, requestID string) error
	FailedLabel(ctx context.Context, kioskID, requestID string, label protocol.LabelSerial) (*ledger.Spoiled, error)
	ReserveRefund(ctx context.Context, kioskID, saleID string, label protocol.LabelSerial, refundID string) (*ledger.Spoiled, error)
	ReleaseRefund(ctx context.Context, kioskID string, label protocol.LabelSerial) error
	takerBack
}

// kiosks knows each kiosk's number for the indicium's user field and the
// ZIP its store mails from, and refuses a locked one (fleet.Registry,
// read once a sale).
type kiosks interface {
	InService(ctx context.Context, kioskID string) (fleet.Kiosk, error)
}

// rateBook gives the table in force.
type rateBook interface {
	Current(now time.Time) (protocol.RateTable, error)
}

// money takes and gives back payments.
type money interface {
	Hold(ctx context.Context, key payments.Key, src payments.Source, amount protocol.Mills) (*payments.Payment, error)
	HoldChecked(ctx context.Context, key payments.Key, token string, amount protocol.Mills, check *store.Read, goOn func() bool) (*payments.Payment, bool, error)
	PaidRead(key payments.Key, r *store.Read) (*store.Read, *int)
	HoldFirst(ctx context.Context, key payments.Key, token string, amount protocol.Mills) (*payments.Payment, error)
	Release(ctx context.Context, pay *payments.Payment) error
	CaptureLater(pay *payments.Payment)
	Refund(ctx context.Context, key payments.Key, amount protocol.Mills, ref string) error
}

// payCodes are the customers' one-time codes for paying at a kiosk.
type payCodes interface {
	AccountID(ctx context.Context, login string) (int64, error)
	RedeemPayCode(ctx context.Context, code, purchase string, amount protocol.Mills) (int64, error)
	ReleasePayCode(ctx context.Context, code, purchase string) error
}

// meter counts fresh sales and times their stages for the metrics.
type meter interface {
	Sale()
	Sold(class string, postage protocol.Mills)
	Stage(stage string, d time.Duration)
}

// alerter raises alerts for ops.
type alerter interface {
	Raise(ctx context.Context, kind, subject, message string)
}

// Service answers purchase requests.
type Service struct {
	Seller   seller
	Book     saleRecords
	Kiosks   kiosks
	Rates    rateBook
	Money    money
	Accounts payCodes
	Sheets   sheets
	Alerts   alerter
	Claimer  claimer       // web sheets; the portal only
	Claims   requestClaims // may be nil: one hub alone
	Web      replayer      // the ledger, for the portal
	Meter    meter         // may be nil
	// Licence is the vendor's postal licence, returned in the XML
	// <Indicium>'s LPO field (patent: generated "based upon" it).
	Licence string
	Log     *slog.Logger
	Now     func() time.Time

	mu       sync.Mutex
	inflight map[string]*flight       // kiosk/request -> the sale answering it
	labels   map[heldLabel]bool       // labels of sales in flight
	badCodes map[string]*rate.Limiter // wrong pay codes by kiosk
	refusals map[string]*rate.Limiter // refusals recorded, by kiosk
	reuses   map[string]*rate.Limiter // offers of used labels recorded, by kiosk
	reuseOut map[string]bool          // kiosks told out of reuse records, until they have some again
	releases sync.WaitGroup           // claims being released after their answers
}

// Wait waits for the claims of answered requests to be released; the hub
// calls it once no more requests arrive, before it closes the store.
func (s *Service) Wait() { s.releases.Wait() }

// Wrong pay codes a kiosk may send: a burst, then one a minute. A code has
// 80 bits, so this is about noticing, not about the odds.
const (
	payCodeBurst = 10
	payCodeEvery = time.Minute
)

// Final refusals recorded for one kiosk: a burst, then one every
// RefusalEvery. Each is a durable commit and a row kept for good, so that a
// resend gets the same bytes; a kiosk in service is refused a few times a
// day. Past the budget a refusal is answered the same, not recorded (a
// resend is judged again), and ops are told once: a stolen kiosk within
// its message budget would otherwise add 1.7 million rows a day.
const (
	RefusalBurst = 100
	RefusalEvery = 30 * time.Second
)

// limiterOf is kioskID's limiter in *m, made with a full burst on first
// use. The caller holds s.mu.
func limiterOf(m *map[string]*rate.Limiter, kioskID string, every time.Duration, burst int) *rate.Limiter {
	if *m == nil {
		*m = map[string]*rate.Limiter{}
	}
	l := (*m)[kioskID]
	if l == nil {
		l = rate.NewLimiter(rate.Every(every), burst)
		(*m)[kioskID] = l
	}
	return l
}

// mayRecordRefusal takes one of kioskID's recorded refusals, and raises a
// fraud alert as the kiosk runs out of them.
func (s *Service) mayRecordRefusal(ctx context.Context, kioskID string) bool {
	s.mu.Lock()
	l := limiterOf(&s.refusals, kioskID, RefusalEvery, RefusalBurst)
	now := s.Now()
	ok := l.AllowN(now, 1)
	out := ok && l.TokensAt(now) < 1
	s.mu.Unlock()
	if out {
		s.Alerts.Raise(ctx, alerts.Fraud, "kiosk/"+kioskID+"/refusals",
			fmt.Sprintf("kiosk %s was refused %d requests in a short time; its refusals are answered but no longer recorded", kioskID, RefusalBurst))
	}
	return ok
}

// mayRecordReuse takes n of kioskID's reuse records; out is true the first
// time it has too few, until it has enough again.
func (s *Service) mayRecordReuse(kioskID string, n int) (ok, out bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := limiterOf(&s.reuses, kioskID, RefusalEvery, RefusalBurst)
	if s.reuseOut == nil {
		s.reuseOut = map[string]bool{}
	}
	if l.AllowN(s.Now(), n) {
		delete(s.reuseOut, kioskID)
		return true, false
	}
	out = !s.reuseOut[kioskID]
	s.reuseOut[kioskID] = true
	return false, out
}

// flight is a sale in progress; a repeat of its request waits for it.
type flight struct {
	hash []byte
	done chan struct{}
	ans  answer
}

// Purchase answers one purchase request that arrived on kioskID's topic.
// It always returns bytes to publish; the error is for logs and metrics.
func (s *Service) Purchase(ctx context.Context, kioskID string, payload []byte) ([]byte, *protocol.Error) {
	req, err := protocol.DecodePurchaseRequest(payload)
	if err != nil {
		id := ""
		if req != nil {
			id = req.RequestID
		}
		return s.refuse(id, err)
	}
	if req.KioskID != kioskID {
		return s.refuse(req.RequestID, protocol.Errorf(protocol.CodeKioskMismatch,
			"kiosk_id %s in a message on kiosk %s's topic", req.KioskID, kioskID))
	}
	canon, err := json.Marshal(req)
	if err != nil {
		return s.refuse(req.RequestID, fmt.Errorf("sale: canonical form: %w", err))
	}
	h := sha256.Sum256(canon)
	labels := make([]protocol.LabelSerial, len(req.Items))
	for i, it := range req.Items {
		labels[i] = it.Label()
	}
	o := &order{kioskID: kioskID, requestID: req.RequestID, hash: h[:], channel: "kiosk",
		owner: ledger.Owner{KioskID: kioskID}, labels: labels, record: true,
		pure: req.ReprintOf == nil && req.Payment.Method == protocol.PayCardToken}
	if r := req.ReprintOf; r != nil {
		old, _ := protocol.ParseLabelSerial(r.LabelSerial) // validated by the decoder
		o.remedy = &old
	}
	o.build = func(ctx context.Context, refusal *protocol.Error) (*ledger.Sale, *payments.Source, error) {
		sale, err := s.prepare(ctx, req, o.hash)
		if err != nil {
			return nil, nil, err
		}
		if refusal != nil {
			return nil, nil, refusal
		}
		if req.ReprintOf != nil {
			return sale, nil, nil // free
		}
		src, err := s.source(ctx, req)
		if err != nil {
			return nil, nil, err
		}
		return sale, &src, nil
	}
	if req.Payment.Method == protocol.PayAccount {
		// Refused, and the money stayed where it was: the customer's code
		// works again while it lasts.
		o.failed = func(ctx context.Context) {
			if err := s.Accounts.ReleasePayCode(ctx, req.Payment.PayCode, kioskID+"/"+req.RequestID); err != nil {
				s.Log.Error("pay code not released", "request_id", req.RequestID, "err", err)
			}
		}
	}
	a := s.run(ctx, o)
	return a.out, a.perr
}

// charge holds the sale's labels, holds the payment src (nil: a free
// reprint), and has the stamps signed and recorded with the payment's
// authorization, in one durable commit. The capture follows the answer.
// A sale not recorded gives the hold back. first holds a card token with
// nothing recorded before (payments.HoldFirst): the request was found
// with no payment under its claim.
func (s *Service) charge(ctx context.Context, sale *ledger.Sale, src *payments.Source, first bool) (ledger.Answer, error) {
	release, err := s.holdLabels(sale)
	if err != nil {
		return ledger.Answer{}, err
	}
	defer release()
	if err := s.Book.Stopped(); err != nil {
		return ledger.Answer{}, err // before any money is held
	}
	var pay *payments.Payment
	if src != nil {
		key := payments.Key{KioskID: sale.KioskID, RequestID: sale.RequestID}
		if first && src.Token != "" {
			pay, err = s.Money.HoldFirst(ctx, key, src.Token, sale.Total())
		} else {
			pay, err = s.Money.Hold(ctx, key, *src, sale.Total())
		}
		if err != nil {
			return ledger.Answer{}, err
		}
	}
	return s.issue(ctx, sale, pay)
}

// issue has the stamps of sale signed and recorded with pay's
// authorization (nil: free), and captures or releases pay.
func (s *Service) issue(ctx context.Context, sale *ledger.Sale, pay *payments.Payment) (ledger.Answer, error) {
	if pay != nil {
		w := pay.Authorized()
		sale.Payment = &w
		if pay.Method == "card" {
			sale.Approval = pay.Ref
		}
	}
	start := time.Now()
	out, err := s.Seller.Issue(ctx, sale)
	s.stage(metrics.StageCommit, start)
	var refused *protocol.Error
	switch {
	case pay == nil:
	case err != nil && !errors.As(err, &refused):
		// Not a refusal: the commit's outcome is not known (the database
		// went away mid-commit, or the wait ended). The payment was
		// recorded authorized with the sale, or is still an attempt, or
		// (its card held first) was not recorded at all; settlement
		// captures the first, voids the second, and sweeps the third's
		// hold.
		s.Log.Warn("sale outcome unknown; its payment is settled later", "kiosk", sale.KioskID, "request_id", sale.RequestID, "err", err)
		return ledger.Answer{}, protocol.Errorf(protocol.CodeOutcomeUnknown, "the sale's outcome is not known yet; ask again with the same request_id")
	case err != nil || out.Result == nil:
		// Refused, or answered before (the bytes are an earlier answer):
		// this hold paid for nothing.
		switch verr := s.Money.Release(context.WithoutCancel(ctx), pay); {
		case errors.Is(verr, payments.ErrRecorded):
			// The answer found was this hold's own sale, committed as
			// the database failed over: it is paid for, not refused.
			s.Money.CaptureLater(pay)
			if err != nil {
				// A refusal of a sale the database holds: the kiosk asks
				// again and is answered from the ledger.
				return ledger.Answer{}, protocol.Errorf(protocol.CodeOutcomeUnknown, "the sale's outcome is not known yet; ask again with the same request_id")
			}
		case verr != nil:
			s.Log.Error("authorization not voided; settlement settles it", "request_id", sale.RequestID, "err", verr)
		}
	default:
		s.Money.CaptureLater(pay)
	}
	if err != nil {
		return ledger.Answer{}, err
	}
	if s.Meter != nil && out.Result != nil {
		s.Meter.Sale()
		for _, it := range sale.Items {
			s.Meter.Sold(it.RateClass, it.Postage)
		}
	}
	return out, nil
}

// stage records the time since start in stage, if a meter is set.
func (s *Service) stage(stage string, start time.Time) {
	if s.Meter != nil {
		s.Meter.Stage(stage, time.Since(start))
	}
}

// source turns the request's payment into what the payment service takes.
// A prepaid account pays only with the customer's one-time pay code.
func (s *Service) source(ctx context.Context, req *protocol.PurchaseRequest) (payments.Source, error) {
	p := req.Payment
	switch p.Method {
	case protocol.PayCardToken:
		return payments.Source{Token: p.Token}, nil
	case protocol.PayAccount:
		if !s.mayTryCode(req.KioskID) {
			return payments.Source{}, protocol.Errorf(protocol.CodeUnauthorized, "too many wrong pay codes from this kiosk; try again in a minute")
		}
		id, err := s.Accounts.RedeemPayCode(ctx, p.PayCode, req.KioskID+"/"+req.RequestID, req.Total())
		var over *accounts.ErrPayCodeLimit
		if errors.As(err, &over) { // the customer's own code: not a guess
			return payments.Source{}, protocol.Errorf(protocol.CodePaymentDeclined,
				"the purchase is %s and the pay code pays at most %s; make a new one in the portal", req.Total(), over.Max)
		}
		if errors.Is(err, accounts.ErrPayCode) {
			s.wrongCode(ctx, req.KioskID, req.RequestID)
			return payments.Source{}, protocol.Errorf(protocol.CodeUnauthorized, "the pay code is wrong, used or expired; make a new one in the portal")
		}
		if err != nil {
			return payments.Source{}, err
		}
		if p.AccountID != "" {
			if named, err := s.Accounts.AccountID(ctx, p.AccountID); err != nil || named != id {
				s.Accounts.ReleasePayCode(ctx, p.PayCode, req.KioskID+"/"+req.RequestID)
				return payments.Source{}, protocol.Errorf(protocol.CodeUnauthorized, "the pay code is not for account %s", p.AccountID)
			}
		}
		return payments.Source{AccountID: id}, nil
	}
	return payments.Source{}, protocol.Errorf(protocol.CodePaymentInvalid, "payment method %q", p.Method)
}

// mayTryCode reports whether kioskID may try another pay code now.
func (s *Service) mayTryCode(kioskID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.badCodes[kioskID]
	return l == nil || l.Tokens() >= 1
}

// wrongCode counts a wrong pay code against kioskID, and tells ops when the
// kiosk runs out of tries: a kiosk guessing codes is a stolen kiosk.
func (s *Service) wrongCode(ctx context.Context, kioskID, requestID string) {
	s.mu.Lock()
	l := limiterOf(&s.badCodes, kioskID, payCodeEvery, payCodeBurst)
	l.Allow()
	out := l.Tokens() < 1
	s.mu.Unlock()
	s.Log.Warn("wrong pay code", "kiosk", kioskID, "request_id", requestID)
	if out {
		s.Alerts.Raise(ctx, alerts.Fraud, "kiosk/"+kioskID+"/pay-codes",
			fmt.Sprintf("kiosk %s sent %d wrong pay codes in a row (request %s); its account payments wait", kioskID, payCodeBurst, requestID))
	}
}

// prepare checks the request against the current rates and the kiosk, and
// a reprint against the label it replaces.
func (s *Service) prepare(ctx context.Context, req *protocol.PurchaseRequest, hash []byte) (*ledger.Sale, error) {
	kiosk, err := s.Kiosks.InService(ctx, req.KioskID)
	if err != nil {
		return nil, err
	}
	priced := s.Now()
	if kiosk.Zone != nil {
		// The store's day: the table in force there, and its stamps' date.
		priced = priced.In(kiosk.Zone)
	}
	rt, err := s.Rates.Current(priced)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no rate table is in force")
	}
	if req.RateTable != rt.Version {
		return nil, protocol.Errorf(protocol.CodeRateTableStale,
			"priced on rate table %s; %s is in force", req.RateTable, rt.Version)
	}
	zip, _ := req.OriginZIP.Number() // validated by the decoder
	// The stamp says where the mail comes from: the kiosk's store, when
	// ops gave its ZIP, and not whatever a kiosk (a stolen one) claims.
	if want, err := kiosk.ZIP.Number(); err == nil && want != zip {
		return nil, protocol.Errorf(protocol.CodeInvalidRequest,
			"origin_zip %s is not the ZIP of the kiosk's store, %s; the kiosk's origin_zip must be its store's", req.OriginZIP, kiosk.ZIP)
	}
	sale := &ledger.Sale{KioskID: req.KioskID, RequestID: req.RequestID, BodyHash: hash, OriginZIP: zip, UserID: kiosk.UserID, Priced: priced}
	for i, it := range req.Items {
		if req.ReprintOf != nil {
			// The reprint takes the failed stamp's service and postage below.
			sale.Items = append(sale.Items, ledger.Item{Label: it.Label()})
			continue
		}
		price, err := rt.Price(it.RateClass, it.WeightMg)
		if err != nil {
			return nil, err
		}
		if price != it.AmountMills {
			return nil, protocol.Errorf(protocol.CodeAmountMismatch,
				"items[%d]: %s at %d mg costs %d mills, request says %d", i, it.RateClass, it.WeightMg, price, it.AmountMills)
		}
		sale.Items = append(sale.Items, ledger.Item{RateClass: it.RateClass, Postage: price, Label: it.Label()})
	}
	if r := req.ReprintOf; r != nil {
		old, _ := protocol.ParseLabelSerial(r.LabelSerial)
		sp, err := s.Book.FailedLabel(ctx, req.KioskID, r.RequestID, old)
		if err != nil {
			return nil, err
		}
		// The reprint is the same stamp: same service, same postage, paid.
		// It is dated today, so today's table must ask the same postage for
		// it; after a rate change the customer gets a refund instead.
		if price, err := rt.Price(sp.RateClass, req.Items[0].WeightMg); err != nil || price != sp.Postage {
			return nil, protocol.Errorf(protocol.CodeRemedyNotAllowed,
				"the postage of label %s's service changed since it was sold (rate table %s); ask for a refund instead", old, rt.Version)
		}
		sale.Items[0].RateClass, sale.Items[0].Postage = sp.RateClass, sp.Postage
		sale.ReprintOf = &old
	}
	return sale, nil
}

// fraud records each offer of a used label and raises a fraud alert for
// it, within the kiosk's budget of such records, as for refusals (each label
// one): past it, a stolen kiosk offering used labels over and over is one
// alert, not two rows and an alert per label and message.
func (s *Service) fraud(ctx context.Context, kioskID, requestID string, labels []protocol.LabelSerial) {
	used, err := s.Book.UsedLabels(ctx, labels)
	if err != nil {
		s.Log.Error("fraud check", "err", err)
		return
	}
	if len(used) == 0 {
		return
	}
	ok, out := s.mayRecordReuse(kioskID, len(used))
	if out {
		s.Alerts.Raise(ctx, alerts.Fraud, "kiosk/"+kioskID+"/reuse",
			fmt.Sprintf("kiosk %s offered %d or more used labels in a short time; its offers are refused but no longer recorded", kioskID, RefusalBurst))
	}
	if !ok {
		return
	}
	for _, l := range used {
		if err := s.Book.RecordReuse(ctx, l, kioskID, requestID); err != nil {
			s.Log.Error("fraud record", "err", err)
		}
		s.Alerts.Raise(ctx, alerts.Fraud, "label/"+l.String(),
			fmt.Sprintf("kiosk %s offered label %s, which already carries an indicium (request %s)", kioskID, l, requestID))
	}
}

// Refund answers a refund request for a label that failed to print. A
// resend that arrives while the first copy is served waits for it and gets
// the same answer, and two requests for one label (a sweep and a customer's
// tap) take turns: the second finds the refund done.
func (s *Service) Refund(ctx context.Context, kioskID string, payload []byte) ([]byte, *protocol.Error) {
	req, err := protocol.DecodeRefundRequest(payload)
	if err != nil {
		id := ""
		if req != nil {
			id = req.RequestID
		}
		return refundAnswer(id, 0, err)
	}
	if req.KioskID != kioskID {
		return refundAnswer(req.RequestID, 0, protocol.Errorf(protocol.CodeKioskMismatch, "kiosk_id %s in a message on kiosk %s's topic", req.KioskID, kioskID))
	}
	canon, _ := json.Marshal(req) // strings only: cannot fail
	h := sha256.Sum256(canon)
	key := "refund:" + kioskID + "/" + req.RequestID
	f, first := s.join(key, h[:])
	if !first {
		<-f.done
		if string(f.hash) != string(h[:]) {
			return refundAnswer(req.RequestID, 0, protocol.Errorf(protocol.CodeIdempotencyConflict,
				"request_id %s was used before with a different body", req.RequestID))
		}
		return f.ans.out, f.ans.perr
	}
	defer s.leave(key, f)
	// A locked kiosk (suspected stolen) gets no remedy, as it gets no sale.
	if _, err := s.Kiosks.InService(ctx, kioskID); err != nil {
		f.ans.out, f.ans.perr = refundAnswer(req.RequestID, 0, err)
		return f.ans.out, f.ans.perr
	}
	label, _ := protocol.ParseLabelSerial(req.Label.LabelSerial)
	release, err := s.takeLabel(ctx, label)
	if err != nil {
		f.ans.out, f.ans.perr = refundAnswer(req.RequestID, 0, err)
		return f.ans.out, f.ans.perr
	}
	defer release()
	amt, err := s.refund(ctx, kioskID, req, label)
	f.ans.out, f.ans.perr = refundAnswer(req.RequestID, amt, err)
	return f.ans.out, f.ans.perr
}

// FinishRefunds moves the money of refunds recorded before it moved
// (ledger.RefundsDue), as the kiosk's own request asked again would, under
// the label's claim: the payment's refund is keyed by the label, so money
// moves once. A label whose claim is busy is left for the next round. It
// returns the money moved.
func (s *Service) FinishRefunds(ctx context.Context, due []ledger.RefundDue) (protocol.Mills, error) {
	var errs []error
	var total protocol.Mills
	for _, d := range due {
		wait, cancel := context.WithTimeout(ctx, 5*time.Second)
		release, err := s.takeLabel(wait, d.Label)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("sale: finish refund of %s: %w", d.Label, err))
			continue
		}
		var amt protocol.Mills
		if d.TakenBack {
			amt, err = d.Amount, s.payBack(ctx, s.Book, d.KioskID, d.SaleID, d.PaidBy, d.Label, d.Amount)
		} else {
			req := &protocol.RefundRequest{RequestID: d.RefundID, KioskID: d.KioskID,
				Label: protocol.LabelRef{RequestID: d.SaleID, LabelSerial: d.Label.String()}}
			amt, err = s.refund(ctx, d.KioskID, req, d.Label)
		}
		release()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		total += amt
		s.Log.Info("refund recorded earlier finished", "kiosk", d.KioskID, "label", d.Label, "amount", amt.String())
	}
	return total, errors.Join(errs...)
}

// takeLabel makes a label's refunds take turns, on this hub and across
// hubs: the second finds the first's refund done.
func (s *Service) takeLabel(ctx context.Context, label protocol.LabelSerial) (func(), error) {
	if s.Claims != nil {
		release, _, err := s.Claims.TakeReading(ctx, "refund-label", label.String(), nil)
		return release, err
	}
	return s.serialize("refund-label:" + label.String()), nil
}

// refund gives a failed label's postage back. Its remedy is recorded a
// refund before any money moves, so a reprint of the label racing it (on
// this hub or another, or after this one died) is refused, and a refund
// refused for it never moves money. A refund recorded whose money did not
// go through is finished by the next request for the label: the payment's
// refund is keyed by the label, so it moves once.
func (s *Service) refund(ctx context.Context, kioskID string, req *protocol.RefundRequest, label protocol.LabelSerial) (protocol.Mills, error) {
	sp, err := s.Book.ReserveRefund(ctx, kioskID, req.Label.RequestID, label, req.RequestID)
	if err != nil {
		return 0, err
	}
	key := payments.Key{KioskID: kioskID, RequestID: sp.PaidBy}
	if err := s.Money.Refund(ctx, key, sp.Postage, "refund:"+label.String()); err != nil {
		if MoneyRefused(err) {
			// Nothing moved, and nothing will: the label may still have
			// its other remedy.
			if rerr := s.Book.ReleaseRefund(context.WithoutCancel(ctx), kioskID, label); rerr != nil {
				s.Log.Error("refund reservation not released", "kiosk", kioskID, "label", label, "err", rerr)
			}
		}
		s.Log.Error("refund failed", "kiosk", kioskID, "label", label, "err", err)
		return 0, fmt.Errorf("sale: refund %s: %w", label, err)
	}
	s.Log.Info("refunded a stamp that failed to print", "kiosk", kioskID, "label", label, "amount", sp.Postage.String())
	return sp.Postage, nil
}

// MoneyRefused reports whether a refund's error is a final refusal: no
// money moved and a retry moves none. Any other error may hide a refund
// that went through.
func MoneyRefused(err error) bool {
	var perr *protocol.Error
	return errors.As(err, &perr) && perr.Code != protocol.CodeInternal && !ledger.Retryable(perr.Code)
}

// refundAnswer is the RefundResult for amount or err.
func refundAnswer(requestID string, amount protocol.Mills, err error) ([]byte, *protocol.Error) {
	res := protocol.RefundResult{RequestID: requestID, Status: protocol.ResultOK, AmountMills: amount}
	var perr *protocol.Error
	if err != nil {
		perr = protocol.AsError(err)
		res = protocol.RefundResult{RequestID: requestID, Status: protocol.ResultRejected, Error: perr}
	}
	out, _ := json.Marshal(res) // strings and numbers only: cannot fail
	return out, perr
}

// serialize waits until no one else holds key, holds it, and returns its
// release.
func (s *Service) serialize(key string) func() {
	for {
		f, first := s.join(key, nil)
		if first {
			return func() { s.leave(key, f) }
		}
		<-f.done
	}
}

func (s *Service) join(key string, hash []byte) (*flight, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	if f, ok := s.inflight[key]; ok {
		return f, false
	}
	f := &flight{hash: hash, done: make(chan struct{})}
	s.inflight[key] = f
	return f, true
}

// initLocked makes the in-flight maps on first use; s.mu is held.
func (s *Service) initLocked() {
	if s.inflight == nil {
		s.inflight = map[string]*flight{}
		s.labels = map[heldLabel]bool{}
	}
}

func (s *Service) leave(key string, f *flight) {
	s.mu.Lock()
	delete(s.inflight, key)
	s.mu.Unlock()
	close(f.done)
}

// heldLabel is a label held by a sale in flight of one kiosk (or web
// customer). Holds are per kiosk: they are taken before the labels are
// checked to be the kiosk's, so a kiosk naming another's labels must not
// hold them against it. Two kiosks' sales of one label (a sheet moved
// between them mid-sale) meet the database's one live stamp per label.
type heldLabel struct {
	kiosk string
	label protocol.LabelSerial
}

// holdLabels refuses labels that belong to another sale of the kiosk in
// flight, and holds the sale's labels until it ends.
func (s *Service) holdLabels(sale *ledger.Sale) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	for _, it := range sale.Items {
		if s.labels[heldLabel{sale.KioskID, it.Label}] {
			return nil, protocol.Errorf(protocol.CodeLabelUsed, "label %s is being used by another sale", it.Label)
		}
	}
	for _, it := range sale.Items {
		s.labels[heldLabel{sale.KioskID, it.Label}] = true
	}
	return func() {
		s.mu.Lock()
		for _, it := range sale.Items {
			delete(s.labels, heldLabel{sale.KioskID, it.Label})
		}
		s.mu.Unlock()
	}, nil
}

// refuse builds a rejection that is not recorded: the request could not be
// read, or the refusal does not belong to this request_id.
func (s *Service) refuse(requestID string, err error) ([]byte, *protocol.Error) {
	perr := protocol.AsError(err)
	if perr.Code == protocol.CodeInternal {
		s.Log.Error("purchase failed", "request_id", requestID, "err", err)
	}
	out, _ := json.Marshal(protocol.Rejected(requestID, perr)) // strings only: cannot fail
	return out, perr
}
