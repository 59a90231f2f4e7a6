package kiosk

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// LoadStock tells the hub staff loaded these sheets, and keeps their free
// labels for the sales to come. The journal records the sheets first: a
// power cut once the hub has loaded them must not leave them loaded at the
// hub and unknown here (the kiosk asks the hub at start only about the
// sheets its journal holds). A sheet the hub refuses is forgotten again;
// one it does not answer for stays, and is asked about at the next start.
func (k *Kiosk) LoadStock(ctx context.Context, sheets []string) (*protocol.StockResult, error) {
	req := &protocol.StockLoad{RequestID: newRequestID(), KioskID: k.cfg.ID, Sheets: sheets}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	// Two loads of a new sheet at once would both count it theirs to
	// forget: one refused for a passing reason would drop from the
	// journal a sheet the other loaded.
	k.loadMu.Lock()
	defer k.loadMu.Unlock()
	added, err := k.journalSheets(context.WithoutCancel(ctx), sheets)
	if err != nil {
		k.log.Error("journal: sheets not recorded; not loaded", "sheets", sheets, "err", err)
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "the kiosk cannot record the stock; scan it again")
	}
	// A sale may take labels of these sheets while the hub answers: its
	// answer, from before, would count them free again.
	spent := k.stock.watch()
	defer k.stock.unwatch(spent)
	raw, err := k.call(ctx, protocol.TopicStock, req.RequestID, req)
	if err != nil {
		return nil, err
	}
	res, err := protocol.DecodeStockResult(raw)
	if err != nil {
		return nil, err
	}
	if res.Status != protocol.ResultOK {
		// The hub loads all of a request's sheets or none.
		for _, s := range added {
			if err := k.journal.UndoLoad(context.WithoutCancel(ctx), s); err != nil {
				k.log.Error("journal", "err", err)
			}
		}
		return res, nil
	}
	k.stock.loadExcept(res.Sheets, spent)
	k.ds.mu.Lock()
	k.ds.wrongStock = "" // staff loaded the stock again
	k.ds.mu.Unlock()
	k.statusChanged()
	return res, nil
}

// journalSheets records sheets in the journal, if there is one, and
// returns those it did not hold before.
func (k *Kiosk) journalSheets(ctx context.Context, sheets []string) ([]string, error) {
	if k.journal == nil {
		return nil, nil
	}
	kept, err := k.journal.Sheets(ctx)
	if err != nil {
		return nil, err
	}
	var added []string
	for _, s := range sheets {
		if !slices.Contains(kept, s) && !slices.Contains(added, s) {
			added = append(added, s)
		}
	}
	return added, k.journal.AddSheets(ctx, sheets)
}

// reloadStock asks the hub again for the sheets the journal says are
// loaded, one by one, in load order (recoverSales calls it at start, saleMu
// held). It forgets those the hub refuses for good (forgets); a sheet it
// cannot answer for now (no answer, a refusal to retry such as its store
// failing, a locked kiosk) stays in the journal and in its place in the
// stock, its labels unknown, and is asked about again (retryStock) until
// the hub answers: till then no label after it goes out, and the kiosk
// says checking_stock.
// It reports whether the hub answered for every sheet: until then the
// stock stays unknown (stockUnknown), and heartbeats say so.
func (k *Kiosk) reloadStock(ctx context.Context) bool {
	sheets, err := k.journal.Sheets(ctx)
	if err != nil {
		k.log.Error("journal", "err", err)
		return true
	}
	k.stock.await(sheets)
	k.reload(ctx, sheets)
	if waiting := k.stock.waiting(); len(waiting) > 0 {
		k.log.Warn("stock not all reloaded after start: asked again until the hub answers", "waiting", waiting, "labels_left", k.LabelsLeft())
		go k.retryStock()
		return false
	}
	k.log.Info("stock reloaded after start", "labels_left", k.LabelsLeft())
	return true
}

// retryStock asks the hub again, every ResendEvery at first and then less
// often, about the sheets it has not answered for since the start, and
// says the stock known once it has answered for all.
func (k *Kiosk) retryStock() {
	period := k.cfg.ResendEvery
	t := time.NewTimer(period)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
		}
		if k.link.Up() {
			k.reload(context.Background(), k.stock.waiting())
		}
		if len(k.stock.waiting()) == 0 {
			k.stockUnknown.Store(false)
			k.statusChanged()
			k.log.Info("stock reloaded after start", "labels_left", k.LabelsLeft())
			return
		}
		period = min(2*period, max(k.cfg.ResendEvery, 30*time.Second))
		t.Reset(period)
	}
}

// resyncStock asks the hub again about every sheet loaded (ops' command):
// the hub's word on each sheet's free labels replaces the kiosk's.
func (k *Kiosk) resyncStock(ctx context.Context) {
	sheets := k.stock.serials()
	if k.journal != nil {
		kept, err := k.journal.Sheets(ctx)
		if err != nil {
			k.log.Error("journal", "err", err)
		}
		for _, s := range kept {
			if sh, err := protocol.ParseSheetSerial(s); err == nil && !slices.Contains(sheets, sh.String()) {
				sheets = append(sheets, sh.String())
			}
		}
	}
	k.reload(ctx, sheets)
	k.log.Info("stock resynced with the hub", "sheets", len(sheets), "labels_left", k.LabelsLeft())
}

// reload asks the hub about each sheet. A sheet it refuses for good is
// forgotten; any other refusal, or no answer, leaves the sheet as it was.
// Once the hub has not answered (in Deadline), the sheets after are not
// asked either.
func (k *Kiosk) reload(ctx context.Context, sheets []string) {
	for i, s := range sheets {
		res, err := k.LoadStock(ctx, []string{s})
		switch {
		case err != nil && protocol.AsError(err).Code == protocol.CodeServiceUnavailable:
			k.log.Warn("stock not reloaded: no answer from the hub; the sheets are kept", "sheets", sheets[i:], "err", err)
			return
		case err != nil:
			k.log.Warn("stock not reloaded; the sheet is kept", "sheet", s, "err", err)
		case res.Status == protocol.ResultOK:
		case forgets(res.Error):
			k.log.Info("sheet no longer loaded", "sheet", s, "error", res.Error)
			k.stock.drop(s)
			if k.journal == nil {
				continue
			}
			if err := k.journal.DropSheet(ctx, s); err != nil {
				k.log.Error("journal", "err", err)
			}
		default:
			k.log.Warn("stock not reloaded: the hub cannot answer for the sheet now; it is kept", "sheet", s, "error", res.Error)
		}
	}
}

// forgets reports whether the hub's refusal to load a sheet into the kiosk
// says the kiosk does not hold it: never issued, another store's, used up
// (or voided), or moved to another kiosk or a customer. Any other refusal
// (the hub's store failing, a locked kiosk: ops unlock it with its stock)
// leaves the sheet where it is.
func forgets(e *protocol.Error) bool {
	if e == nil {
		return false
	}
	switch e.Code {
	case protocol.CodeLabelUnknown, protocol.CodeLabelNotAssigned, protocol.CodeLabelUsed, protocol.CodeLabelAssignedElsewhere:
		return true
	}
	return false
}

// LabelsLeft counts the free labels of the loaded stock.
func (k *Kiosk) LabelsLeft() int { return k.stock.left() }

// labelStock is the loaded sheets and their free labels, in load order:
// labels go out in the order staff loaded them.
type labelStock struct {
	mu     sync.Mutex
	sheets []protocol.SheetState
	// unknown are the sheets the journal holds that the hub has not yet
	// answered for since the start, by serial, each to its spelling in
	// the journal: they keep their place in sheets, with no free labels,
	// until it does.
	unknown map[string]string
	// watching collect the labels consumed while stock loads wait for
	// the hub's answers.
	watching []*spentLabels
}

// spentLabels are the labels consumed while a stock load waits for the
// hub's answer, by sheet, their positions.
type spentLabels struct{ by map[string][]int }

// gone lists the positions of sheet spent; none for a nil s.
func (s *spentLabels) gone(sheet string) []int {
	if s == nil {
		return nil
	}
	return s.by[sheet]
}

// watch starts collecting the labels consumed from now until unwatch.
func (st *labelStock) watch() *spentLabels {
	st.mu.Lock()
	defer st.mu.Unlock()
	w := &spentLabels{by: map[string][]int{}}
	st.watching = append(st.watching, w)
	return w
}

func (st *labelStock) unwatch(w *spentLabels) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.watching = slices.DeleteFunc(st.watching, func(o *spentLabels) bool { return o == w })
}

// load records sheets as the hub gave them. A sheet loaded again (as after
// a restart, which can overlap a load by staff) keeps its place.
func (st *labelStock) load(sheets []protocol.SheetState) { st.loadExcept(sheets, nil) }

// loadExcept is load, but for the labels spent since the hub was asked
// (watch): its answer may predate their sale, and a label sold must never
// be offered again.
func (st *labelStock) loadExcept(sheets []protocol.SheetState, spent *spentLabels) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, sh := range sheets {
		if gone := spent.gone(sh.Sheet); len(gone) > 0 {
			sh.Free = slices.DeleteFunc(slices.Clone(sh.Free), func(p int) bool { return slices.Contains(gone, p) })
		}
		if i := slices.IndexFunc(st.sheets, func(s protocol.SheetState) bool { return s.Sheet == sh.Sheet }); i >= 0 {
			st.sheets[i] = sh
		} else {
			st.sheets = append(st.sheets, sh)
		}
		delete(st.unknown, sh.Sheet)
	}
	st.prune()
}

// prune forgets the sheets without free labels, but for those unknown.
// st.mu is held.
func (st *labelStock) prune() {
	st.sheets = slices.DeleteFunc(st.sheets, func(s protocol.SheetState) bool {
		_, unknown := st.unknown[s.Sheet]
		return len(s.Free) == 0 && !unknown
	})
}

// await puts the journal's sheets that are not in the stock at its end,
// in their order, their labels unknown until load or drop.
func (st *labelStock) await(serials []string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, s := range serials {
		sh, err := protocol.ParseSheetSerial(s)
		if err != nil || slices.ContainsFunc(st.sheets, func(h protocol.SheetState) bool { return h.Sheet == sh.String() }) {
			continue
		}
		if st.unknown == nil {
			st.unknown = map[string]string{}
		}
		st.unknown[sh.String()] = s
		st.sheets = append(st.sheets, protocol.SheetState{Sheet: sh.String(), Free: []int{}})
	}
}

// waiting lists the sheets whose labels are unknown, in load order, as
// the journal spells them.
func (st *labelStock) waiting() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []string
	for _, s := range st.sheets {
		if j, ok := st.unknown[s.Sheet]; ok {
			out = append(out, j)
		}
	}
	return out
}

func (st *labelStock) left() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, s := range st.sheets {
		n += len(s.Free)
	}
	return n
}

// serials lists the loaded sheets.
func (st *labelStock) serials() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []string
	for _, s := range st.sheets {
		out = append(out, s.Sheet)
	}
	return out
}

// count is the number of sheets with labels left, or not known yet.
func (st *labelStock) count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.sheets)
}

// drop forgets a sheet the hub no longer counts as loaded here.
func (st *labelStock) drop(sheet string) {
	if sh, err := protocol.ParseSheetSerial(sheet); err == nil {
		sheet = sh.String() // as the journal spells it, maybe
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sheets = slices.DeleteFunc(st.sheets, func(s protocol.SheetState) bool { return s.Sheet == sheet })
	delete(st.unknown, sheet)
}

// next takes the next n free labels, in load order, passing over held
// ones (a sale whose fate is unknown may have used them). It takes none
// past a sheet whose labels are unknown: they lie behind its own.
func (st *labelStock) next(n int, held map[string]bool) ([]string, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []string
	for _, s := range st.sheets {
		if _, unknown := st.unknown[s.Sheet]; unknown && len(out) < n {
			return nil, protocol.Errorf(protocol.CodeServiceUnavailable,
				"the hub has not yet answered for sheet %s, loaded before the labels left: no sale until it does", s.Sheet)
		}
		for _, p := range s.Free {
			if len(out) == n {
				return out, nil
			}
			if l := fmt.Sprintf("%s-%02d", s.Sheet, p); !held[l] {
				out = append(out, l)
			}
		}
	}
	if len(out) < n {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "out of labels: %d left, %d wanted; staff must load stock", len(out), n)
	}
	return out, nil
}

// consume removes a label from the free stock.
func (st *labelStock) consume(label string) {
	l, err := protocol.ParseLabelSerial(label)
	if err != nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, w := range st.watching {
		w.by[l.Sheet.String()] = append(w.by[l.Sheet.String()], int(l.Position))
	}
	for i := range st.sheets {
		if st.sheets[i].Sheet == l.Sheet.String() {
			st.sheets[i].Free = slices.DeleteFunc(st.sheets[i].Free, func(p int) bool { return p == int(l.Position) })
		}
	}
	st.prune()
}

// wrongStock stops sales until staff load stock again: the labels in the
// printer are not the ones the kiosk thinks they are.
func (k *Kiosk) wrongStock(why string) {
	k.ds.mu.Lock()
	k.ds.wrongStock = why
	k.ds.mu.Unlock()
	k.log.Error("the label under the print head is not the one to print: sales stop until staff reload the stock", "why", why)
	k.statusChanged()
}
