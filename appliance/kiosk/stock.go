package kiosk

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/frank-postage/frank/protocol"
)

// LoadStock tells the hub staff loaded these sheets, and keeps their free
// labels for the sales to come.
func (k *Kiosk) LoadStock(ctx context.Context, sheets []string) (*protocol.StockResult, error) {
	req := &protocol.StockLoad{RequestID: newRequestID(), KioskID: k.cfg.ID, Sheets: sheets}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	raw, err := k.call(ctx, protocol.TopicStock, req.RequestID, req)
	if err != nil {
		return nil, err
	}
	res, err := protocol.DecodeStockResult(raw)
	if err != nil {
		return nil, err
	}
	if res.Status == protocol.ResultOK {
		k.stock.load(res.Sheets)
		k.ds.mu.Lock()
		k.ds.wrongStock = "" // staff loaded the stock again
		k.ds.mu.Unlock()
		if k.journal != nil {
			if err := k.journal.AddSheets(context.WithoutCancel(ctx), sheets); err != nil {
				k.log.Error("journal", "err", err)
			}
		}
		k.statusChanged()
	}
	return res, nil
}

// reloadStock asks the hub again for the sheets the journal says are
// loaded, one by one, forgetting those it refuses (used up, moved).
func (k *Kiosk) reloadStock(ctx context.Context) {
	sheets, err := k.journal.Sheets(ctx)
	if err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	k.reload(ctx, sheets)
	k.log.Info("stock reloaded after start", "labels_left", k.LabelsLeft())
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

func (k *Kiosk) reload(ctx context.Context, sheets []string) {
	for _, s := range sheets {
		res, err := k.LoadStock(ctx, []string{s})
		if err != nil {
			k.log.Warn("stock not reloaded", "sheet", s, "err", err)
			continue
		}
		if res.Status != protocol.ResultOK {
			k.log.Info("sheet no longer loaded", "sheet", s, "error", res.Error)
			k.stock.drop(s)
			if k.journal == nil {
				continue
			}
			if err := k.journal.DropSheet(ctx, s); err != nil {
				k.log.Error("journal", "err", err)
			}
		}
	}
}

// LabelsLeft counts the free labels of the loaded stock.
func (k *Kiosk) LabelsLeft() int { return k.stock.left() }

// labelStock is the loaded sheets and their free labels, in load order:
// labels go out in the order staff loaded them.
type labelStock struct {
	mu     sync.Mutex
	sheets []protocol.SheetState
}

// load records sheets as the hub gave them. A sheet loaded again (as after
// a restart, which can overlap a load by staff) keeps its place.
func (st *labelStock) load(sheets []protocol.SheetState) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, sh := range sheets {
		if i := slices.IndexFunc(st.sheets, func(s protocol.SheetState) bool { return s.Sheet == sh.Sheet }); i >= 0 {
			st.sheets[i] = sh
		} else {
			st.sheets = append(st.sheets, sh)
		}
	}
	st.sheets = slices.DeleteFunc(st.sheets, func(s protocol.SheetState) bool { return len(s.Free) == 0 })
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

// count is the number of sheets with labels left.
func (st *labelStock) count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.sheets)
}

// drop forgets a sheet the hub no longer counts as loaded here.
func (st *labelStock) drop(sheet string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sheets = slices.DeleteFunc(st.sheets, func(s protocol.SheetState) bool { return s.Sheet == sheet })
}

// next takes the next n free labels, in load order, passing over held
// ones (a sale whose fate is unknown may have used them).
func (st *labelStock) next(n int, held map[string]bool) ([]string, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []string
	for _, s := range st.sheets {
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
	for i := range st.sheets {
		if st.sheets[i].Sheet == l.Sheet.String() {
			st.sheets[i].Free = slices.DeleteFunc(st.sheets[i].Free, func(p int) bool { return p == int(l.Position) })
		}
	}
	st.sheets = slices.DeleteFunc(st.sheets, func(s protocol.SheetState) bool { return len(s.Free) == 0 })
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
