package kiosk

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/protocol"
)

// saleJournal keeps every step of a sale durable before the kiosk acts on
// it; appliance/journal.
type saleJournal interface {
	Begin(ctx context.Context, requestID string, request []byte, labels []string) error
	Answer(ctx context.Context, requestID string, result []byte) error
	SetLabel(ctx context.Context, requestID, serial string, state journal.LabelState, reason string) error
	Reported(ctx context.Context, requestID string) error
	Finish(ctx context.Context, requestID string) error
	Unfinished(ctx context.Context) ([]*journal.Sale, error)
	Get(ctx context.Context, requestID string) (*journal.Sale, error)
	AddSheets(ctx context.Context, serials []string) error
	DropSheet(ctx context.Context, serial string) error
	UndoLoad(ctx context.Context, serial string) error
	Sheets(ctx context.Context) ([]string, error)
	CommandDone(ctx context.Context, commandID string, result []byte) error
	CommandResult(ctx context.Context, commandID string) ([]byte, error)
	SetSetting(ctx context.Context, key string, value []byte) error
	Setting(ctx context.Context, key string) ([]byte, error)
	SetClock(now func() time.Time)
	NotBefore(t time.Time)
}

// UseJournal makes every sale step durable in j before it is acted on,
// with the times on the kiosk's clock; call it before Connect, which
// settles what j holds unfinished.
func (k *Kiosk) UseJournal(j saleJournal) {
	j.SetClock(k.now)
	k.journal = j
	// Nothing is dated before the shift staff last ended, whatever this
	// start's clock reads, or it would be in no shift's report.
	if b, err := j.Setting(context.Background(), shiftKey); err == nil && b != nil {
		if t, err := time.Parse(time.RFC3339Nano, string(b)); err == nil {
			j.NotBefore(t)
		}
	}
	k.stockUnknown.Store(true) // until recoverSales has asked the hub
}

// Recovered is closed once the sales a power cut left unfinished are
// settled.
func (k *Kiosk) Recovered() <-chan struct{} { return k.recovered }

// recoverSales settles, once connected, every sale the journal holds open: a
// request never answered is sent again with its id to learn the outcome; a
// label that printed is reported printed; any other label (including one
// that was on its way to the printer) is reported failed, so the hub voids
// its indicium, and refunded. No label is printed again. A sale the hub
// does not answer now is left to the settler, its labels held.
func (k *Kiosk) recoverSales() {
	defer close(k.recovered)
	if k.journal == nil {
		return
	}
	k.saleMu.Lock() // no new sale until the old ones are settled
	defer k.saleMu.Unlock()
	for !k.link.Up() || k.Rates() == nil {
		select {
		case <-k.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	ctx := context.Background()
	if k.reloadStock(ctx) {
		k.stockUnknown.Store(false)
		k.statusChanged() // the hub judges the labels left from now on
	} // else retryStock says so once the hub has answered for every sheet
	open, err := k.journal.Unfinished(ctx)
	if err != nil {
		k.log.Error("journal: cannot settle unfinished sales", "err", err)
		return
	}
	for _, s := range open {
		if err := k.settle(ctx, s, "power_cut"); err != nil {
			k.log.Error("unfinished sale not settled; the settler tries again", "request_id", s.RequestID, "err", err)
			continue
		}
		k.log.Info("unfinished sale settled", "request_id", s.RequestID)
	}
}

// settle finishes a sale nobody waits on any more: it learns the hub's
// answer if it has none (sending the request again with its id), reports
// every label (printed, or failed for why) until the hub confirms, and
// refunds every label that did not print, since the customer has gone.
func (k *Kiosk) settle(ctx context.Context, s *journal.Sale, why string) error {
	if s.Result == nil {
		raw, err := k.callRaw(ctx, protocol.TopicPurchase, s.RequestID, s.Request)
		if err != nil {
			return err
		}
		if res, err := protocol.DecodePurchaseResult(raw); err == nil && undecided(res) {
			return errUndecided
		}
		if err := k.journal.Answer(context.WithoutCancel(ctx), s.RequestID, raw); err != nil {
			return err
		}
		s.Result = raw
	}
	// The hub has answered: the rest (report, refunds, journal) is not cut
	// short by the budget the settler gave a possibly silent hub; each
	// call is still bounded by the kiosk's deadline.
	ctx = context.WithoutCancel(ctx)
	res, err := protocol.DecodePurchaseResult(s.Result)
	if err != nil {
		return err
	}
	if res.Status != protocol.ResultOK {
		k.rejected(s.Labels, res.Error)
		return k.journal.Finish(ctx, s.RequestID)
	}
	for _, in := range res.Indicia {
		k.stock.consume(in.LabelSerial)
	}
	printed, failed := s.Settle(why)
	if !s.Reported {
		for _, l := range failed {
			if err := k.journal.SetLabel(ctx, s.RequestID, l.Serial, journal.Failed, l.Reason); err != nil {
				return err
			}
		}
		if err := k.report(ctx, s.RequestID, printed, failed); err != nil {
			return err
		}
	}
	for _, l := range failed {
		res, err := k.refund(ctx, s.RequestID, l.Serial)
		if err != nil {
			return err
		}
		st := journal.Refunded
		if res.Status != protocol.ResultOK {
			if res.Error == nil || res.Error.Code != protocol.CodeRemedyNotAllowed {
				return fmt.Errorf("kiosk: refund of %s: %w", l.Serial, res.Error)
			}
			st = k.refusedRefund(s, l.Serial, res.Error)
		}
		if err := k.journal.SetLabel(ctx, s.RequestID, l.Serial, st, l.Reason); err != nil {
			return err
		}
	}
	return k.journal.Finish(ctx, s.RequestID)
}

// errUndecided is a purchase the hub answered outcome_unknown: not final.
var errUndecided = errors.New("kiosk: the hub cannot tell yet whether the sale happened")

// undecided reports whether a purchase answer leaves the sale's fate open:
// the hub may have sold (a commit it could not confirm, or another hub still
// serving the request), so the sale stays open, its labels held, and is
// asked again. Any other answer is final.
func undecided(res *protocol.PurchaseResult) bool {
	return res.Status != protocol.ResultOK && res.Error != nil && res.Error.Code == protocol.CodeOutcomeUnknown
}

// report sends a sale's print report and waits for the hub to confirm it;
// the journal then records it reported. A report the hub refuses outright
// is not sent again.
func (k *Kiosk) report(ctx context.Context, requestID string, printed, failed []journal.Label) error {
	rep := protocol.PrintReport{RequestID: requestID, KioskID: k.cfg.ID}
	for _, l := range printed {
		rep.Labels = append(rep.Labels, protocol.LabelOutcome{LabelSerial: l.Serial, Outcome: protocol.Printed})
	}
	for _, l := range failed {
		rep.Labels = append(rep.Labels, protocol.LabelOutcome{LabelSerial: l.Serial, Outcome: protocol.PrintFailed, Reason: l.Reason})
	}
	raw, err := k.call(ctx, protocol.TopicPrint, requestID, rep)
	if err != nil {
		return err
	}
	k.printConfirmed(ctx, raw)
	return nil
}

// printConfirmed records the hub's confirmation of a print report, and
// closes the sale once nothing more is owed on it.
func (k *Kiosk) printConfirmed(ctx context.Context, raw []byte) {
	res, err := protocol.DecodePrintResult(raw)
	if err != nil {
		k.log.Error("unreadable print confirmation from hub", "err", err)
		return
	}
	if res.Status != protocol.ResultOK {
		k.log.Error("the hub refused a print report; not sent again", "request_id", res.RequestID, "error", res.Error)
	}
	if k.journal == nil {
		return
	}
	// The hub has confirmed: the record of it must not fail for the
	// caller's deadline running out meanwhile.
	ctx = context.WithoutCancel(ctx)
	k.step("reported")
	if err := k.journal.Reported(ctx, res.RequestID); err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	s, err := k.journal.Get(ctx, res.RequestID)
	if err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	k.closeIfSettled(ctx, s)
}

// closeIfSettled closes a reported sale once no label of it is owed a
// reprint or refund.
func (k *Kiosk) closeIfSettled(ctx context.Context, s *journal.Sale) {
	for _, l := range s.Labels {
		if l.Owed() {
			return // a failed label waits for its reprint or refund
		}
	}
	k.finish(ctx, s.RequestID)
}

// settleLoop settles, every ResendEvery, the sales nobody waits on any
// more: one the hub never answered (the customer was told so) is sent again
// until the hub answers, then reported and refunded; one whose print report
// was never confirmed is reported again. Their labels stay held meanwhile.
func (k *Kiosk) settleLoop() {
	k.afterRecovery(k.cfg.ResendEvery, func() {
		if k.link.Up() {
			k.settleOpen(context.Background())
		}
	})
}

func (k *Kiosk) settleOpen(ctx context.Context) {
	open, err := k.journal.Unfinished(ctx)
	if err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	for _, s := range open {
		// Each sale may take a round trip, so the list goes stale: a
		// customer's sale listed while in hand may be answered, printed and
		// reported by now. It is taken in hand and read again, and a
		// customer's sale in hand is left alone.
		if !k.take(s.RequestID) {
			continue
		}
		k.settleOne(ctx, s.RequestID)
		k.mu.Lock()
		delete(k.inHand, s.RequestID)
		k.mu.Unlock()
	}
}

// settleOne settles one open sale, in hand, as it now stands in the journal.
func (k *Kiosk) settleOne(ctx context.Context, requestID string) {
	s, err := k.journal.Get(ctx, requestID)
	if err != nil || s.Closed {
		if err != nil {
			k.log.Error("journal", "err", err)
		}
		return
	}
	// One try each round: a silent hub must not hold the loop.
	cctx, cancel := context.WithTimeout(ctx, k.cfg.ResendEvery)
	defer cancel()
	switch {
	case s.Result == nil:
		if err := k.settle(cctx, s, "no_answer"); err != nil {
			k.log.Warn("sale still without an answer from the hub; its labels stay held", "request_id", s.RequestID, "err", err)
		} else {
			k.log.Info("sale the hub answered late settled: nothing printed, anything charged refunded", "request_id", s.RequestID)
		}
	case !s.Reported:
		printed, failed := s.Settle("power_cut")
		if err := k.report(cctx, s.RequestID, printed, failed); err != nil {
			k.log.Warn("print report not confirmed yet; sent again later", "request_id", s.RequestID, "err", err)
		}
	case customerGone(s):
		// Settled once, its refunds cut short: the customer was
		// told it failed, so they are owed now, not after the
		// remedy window.
		if err := k.settle(cctx, s, "no_answer"); err != nil {
			k.log.Warn("refund of a settled sale not done yet; tried again later", "request_id", s.RequestID, "err", err)
		}
	default:
		// Reported, and not closed when the confirmation came (a
		// journal write failed then).
		k.closeIfSettled(ctx, s)
	}
}

// customerGone reports whether a reported sale still owes a label that
// settling marked failed (no answer, or a power cut): its customer left, and
// only the refund is missing.
func customerGone(s *journal.Sale) bool {
	for _, l := range s.Labels {
		if l.State == journal.Failed && (l.Reason == "no_answer" || l.Reason == "power_cut") {
			return true
		}
	}
	return false
}

// take puts requestID in hand for the settler, unless a customer's sale
// holds it.
func (k *Kiosk) take(requestID string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.inHand[requestID] {
		return false
	}
	k.inHand[requestID] = true
	return true
}

// rejected forgets labels the hub says are not ours to use.
func (k *Kiosk) rejected(labels []journal.Label, e *protocol.Error) {
	if e == nil {
		return
	}
	switch e.Code {
	case protocol.CodeLabelUsed, protocol.CodeLabelUnknown, protocol.CodeLabelNotAssigned:
		for _, l := range labels {
			k.stock.consume(l.Serial)
		}
	}
}

// heldLabels are the labels of sales whose fate the hub has not told yet:
// they may carry an indicium, so no new sale may offer them.
func (k *Kiosk) heldLabels(ctx context.Context) map[string]bool {
	held := map[string]bool{}
	if k.journal == nil {
		return held
	}
	open, err := k.journal.Unfinished(ctx)
	if err != nil {
		k.log.Error("journal", "err", err)
		return held
	}
	for _, s := range open {
		if s.Result == nil {
			for _, l := range s.Labels {
				held[l.Serial] = true
			}
		}
	}
	return held
}

// sweepAbandoned refunds, once the start-up settling is done, the failed
// labels whose customer chose no remedy within the window.
func (k *Kiosk) sweepAbandoned() {
	k.afterRecovery(min(k.cfg.RemedyWindow/4, 30*time.Second), func() {
		k.saleMu.Lock()
		k.refundAbandoned(context.Background(), k.remedyWindow())
		k.saleMu.Unlock()
	})
}

// afterRecovery runs fn every period once the start-up settling is done,
// until the kiosk closes.
func (k *Kiosk) afterRecovery(period time.Duration, fn func()) {
	select {
	case <-k.recovered:
	case <-k.stop:
		return
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
			fn()
		}
	}
}

// refundAbandoned refunds every label of a sale begun at least window ago
// that failed to print and got neither a reprint nor a refund: its
// customer has gone, and must not pay for a stamp they did not get. saleMu
// is held.
func (k *Kiosk) refundAbandoned(ctx context.Context, window time.Duration) {
	if k.journal == nil {
		return
	}
	open, err := k.journal.Unfinished(ctx)
	if err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	k.forgetClosed(open)
	for _, s := range open {
		if !s.Reported || k.age(s) < window {
			continue // settled at start, or still the customer's to choose
		}
		for _, l := range s.Labels {
			if l.State != journal.Failed {
				continue
			}
			res, err := k.refund(ctx, s.RequestID, l.Serial)
			switch {
			case err != nil:
				k.log.Error("unclaimed failed label not refunded; tried again later", "request_id", s.RequestID, "label", l.Serial, "err", err)
				return // the hub is not answering
			case res.Status == protocol.ResultOK:
				k.log.Info("refunded a failed label nobody claimed", "request_id", s.RequestID, "label", l.Serial, "amount", res.AmountMills.String())
			case res.Error != nil && res.Error.Code == protocol.CodeRemedyNotAllowed:
				k.remedied(s.RequestID, l.Serial, k.refusedRefund(s, l.Serial, res.Error))
			default:
				k.log.Error("unclaimed failed label refused a refund", "request_id", s.RequestID, "label", l.Serial, "err", res.Error)
			}
		}
	}
}

// refusedRefund is what a refund the hub refused for good (remedy_not_allowed)
// leaves label of sale s. Refused as expired (asked past
// protocol.RemedyLimit, by the hub's clock), it is refused: the customer is
// owed what staff decide at the counter. Otherwise the hub has remedied it
// already (a refund whose answer was lost is answered ok again, so this is
// a reprint or a refund at the counter): closed as refunded, and not left
// for staff to pay again. The hub judges, not this kiosk's clock, which a
// Pi without a real-time clock may have wrong after a restart.
func (k *Kiosk) refusedRefund(s *journal.Sale, label string, perr *protocol.Error) journal.LabelState {
	if !perr.Expired {
		return journal.Refunded
	}
	k.log.Warn("the hub refused the refund of a label that did not print, asked too late; staff settle it at the counter",
		"request_id", s.RequestID, "label", label, "err", perr)
	return journal.Refused
}

// age is how long ago sale s began: by the monotonic clock for a sale
// begun since the start, so that a step of the wall clock neither holds
// nor hastens its refund; by the journal's wall time for one from before,
// the only time there is for it.
func (k *Kiosk) age(s *journal.Sale) time.Duration {
	k.mu.Lock()
	at, ok := k.begun[s.RequestID]
	k.mu.Unlock()
	if ok {
		return k.uptime() - at
	}
	return k.now().Sub(s.Started)
}

// forgetClosed drops the start of every sale not in open. saleMu is held,
// so no sale is beginning.
func (k *Kiosk) forgetClosed(open []*journal.Sale) {
	live := make(map[string]bool, len(open))
	for _, s := range open {
		live[s.RequestID] = true
	}
	k.mu.Lock()
	maps.DeleteFunc(k.begun, func(id string, _ time.Duration) bool { return !live[id] })
	k.mu.Unlock()
}

// remedied records that a failed label got its reprint or refund, and
// closes its sale once nothing more is owed on it.
func (k *Kiosk) remedied(requestID, serial string, st journal.LabelState) {
	if k.journal == nil {
		return
	}
	ctx := context.Background()
	k.journalLabel(ctx, requestID, serial, st, "")
	s, err := k.journal.Get(ctx, requestID)
	if err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	for _, l := range s.Labels {
		if l.Owed() {
			return
		}
	}
	if s.Reported {
		k.finish(ctx, requestID)
	}
}

func (k *Kiosk) journalLabel(ctx context.Context, requestID, serial string, st journal.LabelState, reason string) {
	if k.journal == nil {
		return
	}
	if err := k.journal.SetLabel(ctx, requestID, serial, st, reason); err != nil {
		k.log.Error("journal", "err", err)
	}
}

// errJournal is a label not printed because the journal could not record
// that it was being printed: printed unrecorded, a power cut would have it
// reported failed and refunded while in the customer's hand.
var errJournal = errors.New("kiosk: the journal did not record the label printing")

// journalPrinting records that a label goes to the printer, before it does.
func (k *Kiosk) journalPrinting(ctx context.Context, requestID, serial string) error {
	if k.journal == nil {
		return nil
	}
	if err := k.journal.SetLabel(ctx, requestID, serial, journal.Printing, ""); err != nil {
		k.log.Error("journal", "err", err)
		return fmt.Errorf("%w: %w", errJournal, err)
	}
	return nil
}

func (k *Kiosk) finish(ctx context.Context, requestID string) {
	if k.journal == nil {
		return
	}
	if err := k.journal.Finish(ctx, requestID); err != nil {
		k.log.Error("journal", "err", err)
	}
}
