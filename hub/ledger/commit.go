package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// How a sale is committed.
//
// The PSDM pool opens a Ticket for each sale, in one global order, and its
// workers submit one Part per stamp, each worker in the order it issues
// them. A worker issues against the registers its previous part left, so an
// MPSD's parts form a chain, and the committer writes sales strictly in
// ticket order, many to a transaction (group commit). Every part that was
// signed is written: as sold, or, if its sale fails, as spoiled (the
// registers moved, the indicium was never sent, the postage is claimed back
// in the postal report). Only a part that cannot be written (its GPSD
// funding is short, its MPSD was tampered with or lost) breaks its chain:
// it and the parts issued after it on that MPSD fail, and the worker goes
// back to the committed registers.

// Part is one stamp a worker issued (or failed to issue) for a sale.
type Part struct {
	Ticket      *Ticket
	Index       int            // the item's place in the sale
	Err         error          // set when the worker could not issue it
	Serial      uint32         // the MPSD
	Gen         uint64         // the worker's chain generation for this MPSD
	Base        Slot           // registers it was issued against
	Funding     protocol.Mills // moved from the GPSD before this stamp
	AR, DR      protocol.Mills // after this stamp, as signed
	CertSerial  uint32
	MeterNumber string
	Indicium    []byte
	// Done reports whether the part's register change was committed (sold
	// or spoiled). false breaks the chain: the worker must go back to the
	// MPSD's committed registers.
	Done func(committed bool)
}

// Ticket is a sale waiting for its parts and its commit.
type Ticket struct {
	sale  *Sale
	parts []*Part
	have  int
	out   Answer
	err   error
	done  chan struct{}
	// uncertain: a transaction that may have committed this sale failed
	// (the connection can go with the COMMIT in flight), so a refusal now
	// may only mean it was recorded then.
	uncertain bool
}

// Answer is a purchase's answer: the bytes sent, stored and replayed, and
// the result they encode when the sale was committed now (nil when the
// bytes are an earlier answer found at commit time).
type Answer struct {
	Bytes  []byte
	Result *protocol.PurchaseResult
}

// Wait returns the answer to send, or the refusal.
func (t *Ticket) Wait(ctx context.Context) (Answer, error) {
	select {
	case <-t.done:
		return t.out, t.err
	case <-ctx.Done():
		return Answer{}, ctx.Err()
	}
}

type message struct {
	open *Ticket
	part *Part
}

// OpenTicket registers a sale; its parts must follow through Submit. The caller
// opens tickets in the order its workers will issue them.
func (l *Ledger) OpenTicket(s *Sale) (*Ticket, error) {
	if err := l.Stopped(); err != nil {
		return nil, err
	}
	t := &Ticket{sale: s, parts: make([]*Part, len(s.Items)), done: make(chan struct{})}
	select {
	case l.queue <- message{open: t}:
		return t, nil
	case <-l.stop:
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "the hub is shutting down")
	}
}

// RefuseKey has the committer sell no stamp signed with the key of
// certSerial from now on, as a compromise asks: a stamp signed before the
// workers stopped, still waiting for its commit, is written as spoiled and
// its sale refused (service_unavailable, nothing charged), where the
// compromise sweep would void it after its buyer was told ok. Stamps
// already committed are the sweep's.
func (l *Ledger) RefuseKey(certSerial uint32) {
	l.refuseMu.Lock()
	defer l.refuseMu.Unlock()
	next := map[uint32]bool{certSerial: true}
	if cur := l.refusedKeys.Load(); cur != nil {
		if (*cur)[certSerial] {
			return
		}
		maps.Copy(next, *cur)
	}
	l.refusedKeys.Store(&next)
}

// Refuses says whether RefuseKey was called for certSerial.
func (l *Ledger) Refuses(certSerial uint32) bool {
	r := l.refusedKeys.Load()
	return r != nil && (*r)[certSerial]
}

// Submit hands a part to the committer.
func (l *Ledger) Submit(p *Part) {
	l.queue <- message{part: p}
}

// mpsdState is what the committer knows an MPSD holds in the database.
type mpsdState struct {
	ar, dr  protocol.Mills
	control []byte
}

// committer is the one goroutine that writes sales.
func (l *Ledger) committer() {
	defer close(l.stopped)
	// The answers of a commit wait for its sync on their own goroutine,
	// in commit order, while the next batch commits.
	synced := make(chan func(), 64)
	syncerDone := make(chan struct{})
	go func() {
		defer close(syncerDone)
		for f := range synced {
			f()
		}
	}()
	defer func() {
		close(synced)
		<-syncerDone
	}()
	l.synced = synced
	var order []*Ticket // opened, not yet committed
	known := map[uint32]*mpsdState{}
	take := func(m message) {
		if m.open != nil {
			order = append(order, m.open)
			return
		}
		t := m.part.Ticket
		t.parts[m.part.Index] = m.part
		t.have++
	}
	for {
		select {
		case m := <-l.queue:
			take(m)
		case <-l.stop:
			// Finish what can be finished; fail what cannot.
		drain:
			for {
				select {
				case m := <-l.queue:
					take(m)
				default:
					break drain
				}
			}
			for len(order) > 0 && order[0].have == len(order[0].parts) {
				n := l.commitBatch(order[:1], known)
				order = order[n:]
			}
			for _, t := range order {
				for _, p := range t.parts {
					if p != nil && p.Done != nil {
						p.Done(false)
					}
				}
				l.finish(t, Answer{}, protocol.Errorf(protocol.CodeServiceUnavailable, "the hub is shutting down"))
			}
			return
		}
	fill: // take everything already waiting, then commit
		for {
			select {
			case m := <-l.queue:
				take(m)
			default:
				break fill
			}
		}
		for {
			n := 0
			for n < len(order) && n < l.cfg.MaxBatch && order[n].have == len(order[n].parts) {
				n++
			}
			if n == 0 {
				break
			}
			l.commitBatch(order[:n], known)
			order = order[n:]
		}
	}
}

// commitBatch writes a run of complete tickets. If the transaction fails it
// writes them one by one, so one bad sale (a constraint another hub raced
// us to) does not take the others with it.
func (l *Ledger) commitBatch(batch []*Ticket, known map[uint32]*mpsdState) int {
	ctx, cancel := l.db.WriteContext()
	defer cancel()
	var out *batchOutcome
	start := time.Now()
	synced, err := l.db.InBatchTxUnsynced(ctx, func(tx *store.Tx) error {
		var err error
		out, err = l.writeBatch(ctx, tx, batch, known)
		return err
	})
	l.stats.busy.Add(int64(time.Since(start)))
	if err == nil {
		l.stats.commits.Add(1)
		l.stats.sales.Add(int64(len(batch)))
	}
	if err != nil {
		for s := range known {
			delete(known, s) // reread everything after a failed transaction
		}
		if errors.Is(err, store.ErrSync) {
			// An earlier commit's sync failed: this one was refused.
			for _, t := range batch {
				for _, p := range t.parts {
					if p.Done != nil {
						p.Done(false)
					}
				}
			}
			l.unsynced(batch, err)
			return len(batch)
		}
		if ctx.Err() != nil {
			// The database did not answer in time (store.WriteTimeout): any
			// sale of the batch may have committed, and asking again, sale
			// by sale, would wait as long for each.
			l.log.Error("sales not committed: the database did not answer", "sales", len(batch), "err", err)
			for _, t := range batch {
				for _, p := range t.parts {
					if p.Done != nil {
						p.Done(false)
					}
				}
				l.finish(t, Answer{}, fmt.Errorf("ledger: sale %s/%s: outcome unknown: %w", t.sale.KioskID, t.sale.RequestID, err))
			}
			return len(batch)
		}
		if len(batch) > 1 {
			for i := range batch {
				batch[i].uncertain = batch[i].uncertain || !store.IsConflict(err)
				l.commitBatch(batch[i:i+1], known)
			}
			return len(batch)
		}
		l.log.Error("sale not committed", "kiosk", batch[0].sale.KioskID, "request_id", batch[0].sale.RequestID, "err", err)
		for _, p := range batch[0].parts {
			if p.Done != nil {
				p.Done(false)
			}
		}
		l.finish(batch[0], Answer{}, l.classify(ctx, batch[0], err))
		return 1
	}
	for s, st := range out.states {
		known[s] = st
	}
	for _, s := range out.lock {
		delete(known, s)
		l.lock(s, "registers or control code changed under their holder")
	}
	// The workers go on from the committed registers at once; if the
	// sync fails, the ledger halts and nothing more is committed.
	for _, t := range batch {
		for _, p := range t.parts {
			if p.Done != nil {
				p.Done(out.committed[p])
			}
		}
	}
	answer := func() {
		for i, t := range batch {
			l.finish(t, out.results[i], certain(t, out.errs[i]))
		}
	}
	if synced == nil { // durable already
		answer()
		return len(batch)
	}
	l.synced <- func() {
		if err := synced(); err != nil {
			l.unsynced(batch, err)
			return
		}
		answer()
	}
	return len(batch)
}

// unsynced ends a batch that committed but may not be on disk: not one of
// its sales is answered, nor read back (a read would find it), and no sale
// is opened until the hub restarts and reads the disk again.
func (l *Ledger) unsynced(batch []*Ticket, err error) {
	l.Halt(err.Error())
	for _, t := range batch {
		l.finish(t, Answer{}, fmt.Errorf("ledger: sale %s/%s: outcome unknown: %w", t.sale.KioskID, t.sale.RequestID, err))
	}
}

// certain turns the refusal of a sale an earlier failed transaction may
// have committed into an unknown outcome: its payment is then settled
// from what the database holds once it answers again, never voided on a
// guess while the stamp stands recorded.
func certain(t *Ticket, err error) error {
	var perr *protocol.Error
	if !t.uncertain || err == nil || !errors.As(err, &perr) {
		return err
	}
	if _, ok := Prior(err); ok {
		return err
	}
	return fmt.Errorf("ledger: sale %s/%s: outcome unknown after a failed commit (now: %s)", t.sale.KioskID, t.sale.RequestID, perr.Message)
}

// finish releases a ticket's GPSD promises and wakes its seller.
func (l *Ledger) finish(t *Ticket, out Answer, err error) {
	var f protocol.Mills
	for _, p := range t.parts {
		if p != nil {
			f += p.Funding
		}
	}
	l.unreserve(f)
	if prior, ok := Prior(err); ok {
		out, err = Answer{Bytes: prior}, nil
	}
	t.out, t.err = out, err
	close(t.done)
}

// classify explains why a one-sale transaction failed.
func (l *Ledger) classify(ctx context.Context, t *Ticket, err error) error {
	if prior, rerr := l.Replay(ctx, t.sale.KioskID, t.sale.RequestID, t.sale.BodyHash); prior != nil || rerr != nil {
		if rerr != nil {
			return rerr
		}
		return &replayed{prior}
	}
	var tamper *TamperError
	switch {
	case t.uncertain, !store.IsConflict(err) && !errors.As(err, &tamper):
		// The connection may have gone with the COMMIT in flight, now or
		// in the batch this sale was first part of.
		return fmt.Errorf("ledger: sale %s/%s: outcome unknown: %w", t.sale.KioskID, t.sale.RequestID, err)
	case store.IsConflict(err):
		for _, it := range t.sale.Items {
			if live, _ := l.LabelLive(ctx, it.Label); live {
				return protocol.Errorf(protocol.CodeLabelUsed, "label %s already carries an indicium", it.Label)
			}
		}
		if t.sale.ReprintOf != nil {
			return protocol.Errorf(protocol.CodeRemedyNotAllowed, "label %s already had its reprint or refund", t.sale.ReprintOf)
		}
	}
	return protocol.Errorf(protocol.CodeServiceUnavailable, "the sale could not be recorded; nothing was charged")
}

// replayed carries an earlier result found at commit time.
type replayed struct{ out []byte }

func (r *replayed) Error() string { return "ledger: request answered before" }

// Prior returns the stored result if err says the request was answered
// before, by this hub or another.
func Prior(err error) ([]byte, bool) {
	var r *replayed
	if errors.As(err, &r) {
		return r.out, true
	}
	return nil, false
}

type batchOutcome struct {
	results   []Answer
	errs      []error
	committed map[*Part]bool
	states    map[uint32]*mpsdState
	lock      []uint32
}

// writeBatch writes the tickets in order. It returns each ticket's result
// or refusal, which parts were committed, and the MPSDs to lock.
//
// It reads, decides and writes in three batches, whatever the number of
// sales: on PostgreSQL each batch is one round trip. The rows it locks are
// taken in one order on every hub (its MPSDs, whose rows hold their audit
// chains' heads, the GPSD, its payments, then sheets by serial), so two
// hubs' commits queue, and never deadlock.
func (l *Ledger) writeBatch(ctx context.Context, tx *store.Tx, batch []*Ticket, known map[uint32]*mpsdState) (*batchOutcome, error) {
	now := l.cfg.Now()
	out := &batchOutcome{results: make([]Answer, len(batch)), errs: make([]error, len(batch)),
		committed: map[*Part]bool{}, states: map[uint32]*mpsdState{}}

	// 1. Read the MPSDs this batch touches, and the GPSD if it funds any, as
	// the database holds them now. On PostgreSQL, where another hub may have
	// raced us, also each sale's earlier answer and each label's use. (The
	// constraints catch a race either way; this only spares the batch a
	// retry.)
	type chain struct {
		p        *PSD
		cur      Slot // registers after the last part accepted
		broken   bool
		modified bool
	}
	chains := map[uint32]*chain{}
	var serials []uint32
	funds := false
	for _, t := range batch {
		for _, p := range t.parts {
			if p.Err != nil {
				continue
			}
			funds = funds || p.Funding > 0
			if chains[p.Serial] == nil {
				chains[p.Serial] = &chain{p: &PSD{Serial: p.Serial}}
				serials = append(serials, p.Serial)
			}
		}
	}
	slices.Sort(serials)
	var reads store.Batch
	for _, serial := range serials {
		reads.QueryRow(chains[serial].p.scan, l.psdQuery(true), serial)
	}
	var g *PSD
	if funds {
		g = &PSD{Serial: GPSDSerial}
		reads.QueryRow(g.scan, l.psdQuery(true), GPSDSerial)
	}
	// The chains' head times, each a statement after the rows' locks (see
	// auditHeadAtQuery).
	for _, serial := range serials {
		h := &chains[serial].p.head
		reads.QueryRow(func(scan func(...any) error) error { return scan(&h.at) }, auditHeadAtQuery, serial)
	}
	if g != nil {
		reads.QueryRow(func(scan func(...any) error) error { return scan(&g.head.at) }, auditHeadAtQuery, GPSDSerial)
	}
	var refused map[uint32]bool // keys whose stamps are not sold (RefuseKey)
	if r := l.refusedKeys.Load(); r != nil {
		refused = *r
	}
	priors := make([]error, len(batch)) // an earlier answer or a conflict
	used := map[string]bool{}           // labels that carry an indicium
	if l.db.Dialect == store.Postgres || refused != nil {
		// On SQLite too once a key is refused: a copy of a sale answered
		// before gets that answer, where its refused stamp would be
		// spoiled before any constraint found the copy.
		l.queueChecks(&reads, batch, priors, used)
	}
	// The sheets of web customers' sales, locked in one order after the
	// PSDs (a kiosk's sheets are never a web customer's).
	owners := map[protocol.SheetSerial]*sheetOwner{}
	for _, t := range batch {
		if t.sale.Account != 0 {
			for _, it := range t.sale.Items {
				owners[it.Label.Sheet] = &sheetOwner{}
			}
		}
	}
	for _, sh := range slices.Sorted(maps.Keys(owners)) {
		o := owners[sh]
		reads.QueryRow(func(scan func(...any) error) error { return scan(&o.account, &o.used, &o.kiosk) },
			stock.WebOwnerQuery+l.db.ForUpdate(), uint32(sh))
	}
	var floor int64
	reads.QueryRow(func(scan func(...any) error) error { return scan(&floor) }, floorQuery)
	if err := tx.Run(ctx, &reads); err != nil {
		return nil, fmt.Errorf("ledger: read: %w", err)
	}
	now = notBefore(now, floor) // never into a period a report was built for
	for _, serial := range serials {
		now = chainTime(now, &chains[serial].p.head)
	}
	if g != nil {
		now = chainTime(now, &g.head)
	}
	for _, serial := range serials {
		c := chains[serial]
		row := c.p
		k := known[serial]
		if k == nil || k.ar != row.AR || k.dr != row.DR || !bytes.Equal(k.control, row.Control) {
			// Not what we last wrote (or never seen): check the seal.
			ok, err := verifySeal(l.mac, l.cfg.ControlKey, row)
			if err != nil {
				return nil, err
			}
			if !ok {
				out.lock = append(out.lock, serial)
				c.broken = true
				continue
			}
		}
		if row.Locked != "" || row.LeaseHolder != l.cfg.Holder {
			c.broken = true
			continue
		}
		c.cur = Slot{AR: row.AR, DR: row.DR}
	}
	if g != nil {
		ok, err := verifySeal(l.mac, l.cfg.ControlKey, g)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, &TamperError{Serial: GPSDSerial}
		}
	}

	// 2. Decide which parts can be written at all, in order on their
	// chains, and which sales can still be sold; record their payments'
	// authorizations.
	unavailable := func(serial uint32) error {
		return protocol.Errorf(protocol.CodeServiceUnavailable, "mpsd %d is out of service; try again", serial)
	}
	writables := make([][]*Part, len(batch))
	saleErrs := make([]error, len(batch))
	paid := make([]int64, len(batch))
	var gdr protocol.Mills // the GPSD's DR as the sales so far leave it
	if g != nil {
		gdr = g.DR
	}
	var mid store.Batch
	for i, t := range batch {
		s := t.sale
		var saleErr, keyErr error
		var writable []*Part
		var need protocol.Mills
		tent := map[uint32]Slot{} // chains as this sale's earlier parts leave them
		for _, p := range t.parts {
			if p.Err != nil {
				saleErr = errors.Join(saleErr, p.Err)
				continue
			}
			c := chains[p.Serial]
			cur, ok := tent[p.Serial]
			if !ok {
				cur = c.cur
			}
			if c.broken || p.Base.AR != cur.AR || p.Base.DR != cur.DR {
				c.broken = true
				saleErr = errors.Join(saleErr, unavailable(p.Serial))
				continue
			}
			if p.AR != p.Base.AR+p.Item().Postage || p.DR != p.Base.DR+p.Funding-p.Item().Postage || p.Funding < 0 {
				return nil, fmt.Errorf("ledger: part for %s does not follow from mpsd %d's registers", p.Item().Label, p.Serial)
			}
			if refused[p.CertSerial] {
				// Signed before the workers stopped: written, as spoiled.
				keyErr = protocol.Errorf(protocol.CodeServiceUnavailable, "the signing key was withdrawn; try again later")
			}
			writable = append(writable, p)
			tent[p.Serial] = Slot{AR: p.AR, DR: p.DR}
			need += p.Funding
		}
		if need > 0 && gdr < need {
			// The funding cannot happen: from the first funded part of
			// each chain on, nothing can be written.
			saleErr = errors.Join(saleErr, protocol.Errorf(protocol.CodeFundsUnavailable, "the postage fund is short; try again shortly"))
			kept := writable[:0]
			for _, p := range writable {
				if p.Funding > 0 || chains[p.Serial].broken {
					chains[p.Serial].broken = true
					continue
				}
				kept = append(kept, p)
			}
			writable = kept
		}
		for _, p := range writable {
			gdr -= p.Funding
			chains[p.Serial].cur = Slot{AR: p.AR, DR: p.DR}
		}
		if saleErr == nil {
			saleErr = priors[i]
		}
		if saleErr == nil {
			// After priors: a request answered before gets that answer.
			saleErr = keyErr
		}
		if saleErr == nil && s.Account != 0 {
			saleErr = owned(s, owners)
		}
		if saleErr == nil {
			for _, p := range writable {
				if used[p.Item().Label.String()] {
					saleErr = protocol.Errorf(protocol.CodeLabelUsed, "label %s already carries an indicium", p.Item().Label)
				}
			}
		}
		if saleErr == nil && s.Payment != nil {
			mid.Exec(&paid[i], s.Payment.Query, s.Payment.Args...)
		}
		writables[i], saleErrs[i] = writable, saleErr
	}
	if err := tx.Run(ctx, &mid); err != nil {
		return nil, fmt.Errorf("ledger: record payments: %w", err)
	}

	// 3. Write the sales, their stamps (sold or spoiled), the registers and
	// the audit trail.
	var sales, indicia, remedies, spoiled, fundings [][]any
	sheets := map[protocol.SheetSerial]int{} // labels used, by sheet
	var audit []auditEntry
	for i, t := range batch {
		s := t.sale
		saleErr := saleErrs[i]
		if saleErr == nil && s.Payment != nil && paid[i] != 1 {
			saleErr = s.Payment.Stale
		}
		sold := saleErr == nil
		var res protocol.PurchaseResult
		if sold {
			res = protocol.PurchaseResult{RequestID: s.RequestID, Status: protocol.ResultOK, Approval: s.Approval}
			for _, it := range s.Items {
				if o := owners[it.Label.Sheet]; o != nil && o.unowned && s.Account != 0 {
					o.retake = s.Account // only for a sale made: a refused one leaves the sheet unclaimed
				}
			}
		}
		for _, p := range writables[i] {
			c := chains[p.Serial]
			it := p.Item()
			if p.Funding > 0 {
				g.DR, g.AR = g.DR-p.Funding, g.AR+p.Funding
				fundings = append(fundings, []any{p.Serial, p.Funding, micros(now), s.RequestID})
				audit = append(audit,
					auditEntry{PSD: GPSDSerial, Kind: auditFundOut, Amount: p.Funding, AR: g.AR, DR: g.DR, Ref: fmt.Sprintf("mpsd %d", p.Serial)},
					auditEntry{PSD: p.Serial, Kind: auditFundIn, Amount: p.Funding, AR: p.Base.AR, DR: p.Base.DR + p.Funding, Ref: "gpsd"})
			}
			ref := s.KioskID + "/" + s.RequestID + "/" + it.Label.String()
			row := []any{s.KioskID, s.RequestID, p.Serial, it.Label.String(), it.RateClass, it.Postage, p.AR, p.DR, p.CertSerial, p.Indicium}
			if sold {
				var reprintOf any
				if s.ReprintOf != nil {
					reprintOf = s.ReprintOf.String()
					remedies = append(remedies, []any{s.ReprintOf.String(), "reprint", s.KioskID, s.RequestID, it.Label.String(), it.Postage, micros(now)})
				}
				indicia = append(indicia, append(row, micros(now), reprintOf))
				sheets[it.Label.Sheet]++
				res.Indicia = append(res.Indicia, protocol.IssuedIndicium{MeterNumber: p.MeterNumber, RateClass: it.RateClass,
					AmountMills: it.Postage, LabelSerial: it.Label.String(), Matrix: p.Indicium})
			} else {
				spoiled = append(spoiled, append(row, reason(saleErr), micros(now)))
				ref = "spoiled " + ref
			}
			audit = append(audit, auditEntry{PSD: p.Serial, Kind: auditSale, Amount: it.Postage, AR: p.AR, DR: p.DR, Ref: ref})
			c.modified = true
			out.committed[p] = true
		}
		if !sold {
			out.errs[i] = saleErr
			if prior, ok := Prior(saleErr); ok {
				out.results[i], out.errs[i] = Answer{Bytes: prior}, nil
			}
			continue
		}
		b, err := json.Marshal(&res)
		if err != nil {
			return nil, err
		}
		out.results[i] = Answer{Bytes: b, Result: &res}
		sales = append(sales, []any{s.KioskID, s.RequestID, s.BodyHash, "ok", s.Total(), b, micros(now)})
	}
	// Table by table, in the order their foreign keys need.
	var writes store.Batch
	writes.Insert("sales", saleCols, sales)
	writes.Insert("indicia", indiciumCols, indicia)
	for _, sh := range slices.Sorted(maps.Keys(owners)) {
		if o := owners[sh]; o.retake != 0 {
			w := stock.Retake(uint32(sh), o.retake, now)
			writes.Exec(nil, w.Query, w.Args...)
		}
	}
	// In one order on every hub: two hubs' batches that share sheets queue
	// on them and never deadlock.
	for _, sh := range slices.Sorted(maps.Keys(sheets)) {
		w := stock.MarkUsed(uint32(sh), sheets[sh], now)
		writes.Exec(nil, w.Query, w.Args...)
	}
	writes.Insert("remedies", remedyCols, remedies)
	writes.Insert("spoiled", spoiledCols, spoiled)
	writes.Insert("fundings", fundingCols, fundings)
	heads := map[uint32]*auditHead{}
	for _, serial := range serials {
		heads[serial] = &chains[serial].p.head
	}
	if g != nil {
		heads[GPSDSerial] = &g.head
	}
	if err := chainAudit(&writes, now, audit, heads); err != nil {
		return nil, err
	}
	for _, serial := range serials {
		c := chains[serial]
		if !c.modified {
			continue
		}
		c.p.AR, c.p.DR = c.cur.AR, c.cur.DR
		if err := l.queueStorePSD(&writes, c.p); err != nil {
			return nil, err
		}
		out.states[serial] = &mpsdState{ar: c.p.AR, dr: c.p.DR, control: c.p.Control}
	}
	if g != nil && g.DR != gdr {
		return nil, fmt.Errorf("ledger: gpsd funding %d does not match the parts' %d", g.DR, gdr)
	}
	if g != nil && funded(out.committed) {
		if err := l.queueStorePSD(&writes, g); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx, &writes); err != nil {
		return nil, fmt.Errorf("ledger: record sales: %w", err)
	}
	return out, nil
}

// queueChecks queues, for PostgreSQL, the look for an earlier answer to
// each sale and for an indicium on each label, a few statements for the
// whole batch; the results land in priors and used.
func (l *Ledger) queueChecks(b *store.Batch, batch []*Ticket, priors []error, used map[string]bool) {
	index := map[[2]string]int{}
	var keys, labels []any
	for i, t := range batch {
		index[[2]string{t.sale.KioskID, t.sale.RequestID}] = i
		keys = append(keys, t.sale.KioskID, t.sale.RequestID)
		for _, p := range t.parts {
			if p.Err == nil {
				labels = append(labels, p.Item().Label.String())
			}
		}
	}
	prior := func(scan func(...any) error) error {
		var kiosk, request string
		var hash, result []byte
		if err := scan(&kiosk, &request, &hash, &result); err != nil {
			return err
		}
		i, ok := index[[2]string{kiosk, request}]
		switch {
		case !ok:
		case string(hash) != string(batch[i].sale.BodyHash):
			priors[i] = protocol.Errorf(protocol.CodeIdempotencyConflict, "request_id %s was used before with a different body", request)
		default:
			priors[i] = &replayed{result}
		}
		return nil
	}
	for _, chunk := range chunks(keys, 2) {
		b.Query(prior, `SELECT kiosk_id, request_id, body_hash, result FROM sales WHERE (kiosk_id, request_id) IN (`+
			strings.TrimSuffix(strings.Repeat("(?, ?), ", len(chunk)/2), ", ")+`)`, chunk...)
	}
	label := func(scan func(...any) error) error {
		var lb string
		err := scan(&lb)
		used[lb] = true
		return err
	}
	for _, chunk := range chunks(labels, 1) {
		b.Query(label, `SELECT label FROM indicia WHERE label IN (`+store.InList(len(chunk))+`) AND live = 1`, chunk...)
	}
}

// chunks splits args, per items of width each, into runs whose lengths in
// items are powers of two (at most 128): a few statements serve every
// batch size.
func chunks(args []any, width int) [][]any {
	var out [][]any
	for len(args) > 0 {
		n := 1
		for 2*n*width <= len(args) && 2*n <= 128 {
			n *= 2
		}
		out = append(out, args[:n*width])
		args = args[n*width:]
	}
	return out
}

// funded reports whether any committed part moved money from the GPSD.
func funded(committed map[*Part]bool) bool {
	for p, ok := range committed {
		if ok && p.Funding > 0 {
			return true
		}
	}
	return false
}

// sheetOwner is a web sheet as a batch's commit reads it
// (stock.WebOwnerQuery), and the customer it goes back to.
type sheetOwner struct {
	account     int64
	used, kiosk int
	unowned     bool  // read unclaimed and unused, and taken for a sale in this batch
	retake      int64 // the customer it goes back to: one whose sale was made
}

// owned refuses web sale s unless the sheets of its labels are its
// customer's, or unclaimed and unused: those it takes back for them.
func owned(s *Sale, owners map[protocol.SheetSerial]*sheetOwner) error {
	for _, it := range s.Items {
		o := owners[it.Label.Sheet]
		switch {
		case o.account == s.Account:
		case o.account == 0 && o.used == 0 && o.kiosk == 0:
			o.account, o.unowned = s.Account, true // a later sale in the batch sees it theirs
		default:
			return protocol.Errorf(protocol.CodeLabelNotAssigned, "sheet %s is not yours", it.Label.Sheet)
		}
	}
	return nil
}

// Item is the sale item the part signed.
func (p *Part) Item() Item { return p.Ticket.sale.Items[p.Index] }

// reason is the short cause recorded with a spoiled indicium.
func reason(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return string(pe.Code)
	}
	return "sale_failed"
}
