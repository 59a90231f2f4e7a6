package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Record is one indicium a worker issued, waiting for its sale's commit.
// A worker has at most one sale in flight per MPSD, so a record's Base is
// the MPSD's registers as committed, or the record before it in the sale.
type Record struct {
	Serial      uint32         // the MPSD
	Base        Slot           // registers the record was issued against
	Funding     protocol.Mills // moved from the GPSD to the MPSD before this stamp
	Item        Item
	AR, DR      protocol.Mills // after this stamp, as signed into the indicium
	CertSerial  uint32
	MeterNumber string
	Indicium    []byte
	// Done is called once, when the sale has committed (true) or failed
	// (false), in record order. The worker frees the MPSD then.
	Done func(ok bool)
}

type unit struct {
	sale   *Sale
	recs   []*Record
	result []byte
	prior  []byte // a duplicate's stored result
	err    error
	done   chan struct{}
}

// Commit writes the sale and its records in the next group commit and
// returns the result bytes to send. A refusal decided at commit (a label
// taken meanwhile, the GPSD short, a tampered MPSD) comes back as an error,
// and the records are dropped: none of their indicia was sent anywhere.
func (l *Ledger) Commit(ctx context.Context, s *Sale, recs []*Record) ([]byte, error) {
	res := protocol.PurchaseResult{RequestID: s.RequestID, Status: protocol.ResultOK}
	for _, r := range recs {
		res.Indicia = append(res.Indicia, protocol.IssuedIndicium{MeterNumber: r.MeterNumber, RateClass: r.Item.RateClass,
			AmountMills: r.Item.Postage, LabelSerial: r.Item.Label.String(), Matrix: r.Indicium})
	}
	result, err := json.Marshal(&res)
	if err != nil {
		l.finish(&unit{recs: recs}, false)
		return nil, fmt.Errorf("ledger: commit: %w", err)
	}
	u := &unit{sale: s, recs: recs, result: result, done: make(chan struct{})}
	select {
	case l.queue <- u:
	case <-l.stop:
		l.finish(u, false)
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "the hub is shutting down")
	}
	<-u.done // the committer always finishes a unit it took
	switch {
	case u.prior != nil:
		return u.prior, nil
	case u.err != nil:
		return nil, u.err
	}
	return u.result, nil
}

// committer is the one goroutine that writes sales: it takes what is queued,
// up to MaxBatch, and commits it in one transaction (group commit).
func (l *Ledger) committer() {
	defer close(l.stopped)
	for {
		var first *unit
		select {
		case first = <-l.queue:
		case <-l.stop:
			// Finish what is already queued, then stop.
			for {
				select {
				case u := <-l.queue:
					l.commitBatch([]*unit{u})
				default:
					return
				}
			}
		}
		batch := []*unit{first}
	fill:
		for len(batch) < l.cfg.MaxBatch {
			select {
			case u := <-l.queue:
				batch = append(batch, u)
			default:
				break fill
			}
		}
		l.commitBatch(batch)
	}
}

func (l *Ledger) commitBatch(batch []*unit) {
	ctx := context.Background()
	var locks []uint32
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		for _, u := range batch {
			u.err, u.prior = nil, nil
		}
		var err error
		locks, err = l.writeBatch(ctx, tx, batch)
		return err
	})
	for _, s := range locks {
		l.lock(s, "registers differ from what its holder committed")
	}
	if err != nil && len(batch) > 1 {
		// One sale spoiled the batch (a constraint another hub raced us
		// to); commit the others one by one so only it fails.
		for _, u := range batch {
			l.commitBatch([]*unit{u})
		}
		return
	}
	if err != nil {
		u := batch[0]
		u.err = l.classify(ctx, u, err)
		if u.err == nil {
			u.prior, _ = l.Replay(ctx, u.sale.KioskID, u.sale.RequestID, u.sale.BodyHash)
		}
	}
	for _, u := range batch {
		l.finish(u, err == nil && u.err == nil && u.prior == nil)
	}
}

// finish releases a unit's GPSD reservations, tells its workers, and wakes
// the seller.
func (l *Ledger) finish(u *unit, ok bool) {
	var f protocol.Mills
	for _, r := range u.recs {
		f += r.Funding
	}
	l.unreserve(f)
	for _, r := range u.recs {
		if r.Done != nil {
			r.Done(ok)
		}
	}
	if u.done != nil {
		close(u.done)
	}
}

// classify explains why a one-sale commit failed.
func (l *Ledger) classify(ctx context.Context, u *unit, err error) error {
	if prior, rerr := l.Replay(ctx, u.sale.KioskID, u.sale.RequestID, u.sale.BodyHash); prior != nil || rerr != nil {
		return rerr // nil with prior: a duplicate, answered with the first result
	}
	if store.IsConflict(err) {
		for _, r := range u.recs {
			if live, _ := l.LabelLive(ctx, r.Item.Label); live {
				return protocol.Errorf(protocol.CodeLabelUsed, "label %s already carries an indicium", r.Item.Label)
			}
		}
	}
	l.log.Error("sale not committed", "kiosk", u.sale.KioskID, "request_id", u.sale.RequestID, "err", err)
	return protocol.Errorf(protocol.CodeServiceUnavailable, "the sale could not be recorded; nothing was charged")
}

// writeBatch writes every unit it can and sets err on those it refuses. It
// returns the MPSDs to lock once the transaction is over.
func (l *Ledger) writeBatch(ctx context.Context, tx *sql.Tx, batch []*unit) ([]uint32, error) {
	now := l.cfg.Now()
	refuse := func(u *unit, err error) {
		if u.err == nil {
			u.err = err
		}
	}
	// Load each MPSD once, locked, and check every record against it.
	mpsds := map[uint32]*PSD{}
	var toLock []uint32
	for _, u := range batch {
		for _, r := range u.recs {
			if _, ok := mpsds[r.Serial]; ok {
				continue
			}
			p, err := l.loadPSD(ctx, l.mac, tx, r.Serial, true)
			var te *TamperError
			switch {
			case errors.As(err, &te):
				toLock = append(toLock, r.Serial)
				p = nil
			case err != nil:
				return toLock, err
			case p.Locked != "" || p.LeaseHolder != l.cfg.Holder:
				p = nil
			}
			mpsds[r.Serial] = p
		}
	}
	for _, u := range batch {
		// Registers as this unit's records expect them, MPSD by MPSD.
		cur := map[uint32]Slot{}
		for _, r := range u.recs {
			p := mpsds[r.Serial]
			if p == nil {
				refuse(u, protocol.Errorf(protocol.CodeServiceUnavailable, "mpsd %d is out of service; try again", r.Serial))
				continue
			}
			base, seen := cur[r.Serial]
			if !seen {
				base = Slot{AR: p.AR, DR: p.DR}
			}
			if r.Base.AR != base.AR || r.Base.DR != base.DR {
				// The row moved without its holder: someone wrote it.
				refuse(u, protocol.Errorf(protocol.CodeServiceUnavailable, "mpsd %d is out of service; try again", r.Serial))
				toLock = append(toLock, r.Serial)
				continue
			}
			if r.AR != base.AR+r.Item.Postage || r.DR != base.DR+r.Funding-r.Item.Postage || r.Funding < 0 {
				return toLock, fmt.Errorf("ledger: record for %s does not follow from mpsd %d's registers", r.Item.Label, r.Serial)
			}
			cur[r.Serial] = Slot{AR: r.AR, DR: r.DR}
		}
	}

	// Funding comes out of the GPSD, in queue order, while it lasts.
	var g *PSD
	var gAR, gDR protocol.Mills // the GPSD as loaded, walked forward for the audit trail
	var audit []auditEntry
	for _, u := range batch {
		if u.err != nil {
			continue
		}
		var need protocol.Mills
		for _, r := range u.recs {
			need += r.Funding
		}
		if need == 0 {
			continue
		}
		if g == nil {
			var err error
			if g, err = l.loadPSD(ctx, l.mac, tx, GPSDSerial, true); err != nil {
				if errors.Is(err, ErrTamper) {
					toLock = append(toLock, GPSDSerial)
				}
				return toLock, err
			}
			gAR, gDR = g.AR, g.DR
		}
		if g.DR < need {
			refuse(u, protocol.Errorf(protocol.CodeFundsUnavailable, "the postage fund is short; try again shortly"))
			continue
		}
		g.DR -= need
		g.AR += need
	}

	// Write what is left.
	var sales, indicia, fundings [][]any
	final := map[uint32]*Record{}
	for _, u := range batch {
		if u.err != nil {
			continue
		}
		s := u.sale
		sales = append(sales, []any{s.KioskID, s.RequestID, s.BodyHash, "ok", s.Total(), u.result, micros(now)})
		for _, r := range u.recs {
			if r.Funding > 0 {
				gAR, gDR = gAR+r.Funding, gDR-r.Funding
				fundings = append(fundings, []any{r.Serial, r.Funding, micros(now), s.RequestID})
				audit = append(audit,
					auditEntry{PSD: GPSDSerial, Kind: auditFundOut, Amount: r.Funding, AR: gAR, DR: gDR, Ref: fmt.Sprintf("mpsd %d", r.Serial)},
					auditEntry{PSD: r.Serial, Kind: auditFundIn, Amount: r.Funding, AR: r.Base.AR, DR: r.Base.DR + r.Funding, Ref: "gpsd"})
			}
			audit = append(audit, auditEntry{PSD: r.Serial, Kind: auditSale, Amount: r.Item.Postage, AR: r.AR, DR: r.DR,
				Ref: s.KioskID + "/" + s.RequestID + "/" + r.Item.Label.String()})
			indicia = append(indicia, []any{s.KioskID, s.RequestID, r.Serial, r.Item.Label.String(), r.Item.RateClass,
				r.Item.Postage, r.AR, r.DR, r.CertSerial, r.Indicium, micros(now)})
			final[r.Serial] = r
		}
	}
	if len(sales) == 0 {
		return toLock, nil
	}
	if err := l.insertRows(ctx, tx, "sales", []string{"kiosk_id", "request_id", "body_hash", "status", "total", "result", "created_at"}, sales); err != nil {
		return toLock, fmt.Errorf("ledger: record sales: %w", err)
	}
	if err := l.insertRows(ctx, tx, "indicia", []string{"kiosk_id", "request_id", "mpsd", "label", "rate_class", "postage", "ar", "dr", "cert_serial", "data", "created_at"}, indicia); err != nil {
		return toLock, fmt.Errorf("ledger: record indicia: %w", err)
	}
	if len(fundings) > 0 {
		if err := l.insertRows(ctx, tx, "fundings", []string{"mpsd", "amount", "at", "request_id"}, fundings); err != nil {
			return toLock, fmt.Errorf("ledger: record fundings: %w", err)
		}
	}
	if err := l.appendAudit(ctx, tx, now, audit); err != nil {
		return toLock, err
	}
	for serial, r := range final {
		p := mpsds[serial]
		p.AR, p.DR = r.AR, r.DR
		if err := l.storePSD(ctx, l.mac, tx, p); err != nil {
			return toLock, err
		}
	}
	if g != nil {
		if err := l.storePSD(ctx, l.mac, tx, g); err != nil {
			return toLock, err
		}
	}
	return toLock, nil
}
