package kiosk

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/frank-postage/frank/appliance/escpos"
	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/appliance/ui"
	"github.com/frank-postage/frank/protocol"
)

// shiftLog is the part of the journal a shift report reads.
type shiftLog interface {
	Since(ctx context.Context, from time.Time) ([]*journal.Sale, error)
	LoadedSince(ctx context.Context, from time.Time) (int, error)
	// Now is the time the journal records next, never before one it
	// recorded: a shift's end, so that no sale after it is dated before.
	Now() time.Time
}

// Shift is a staff shift's figures, read from the kiosk's own journal: the
// hub's ledger holds the same sales, and a test holds the two together.
type Shift struct {
	From        time.Time      `json:"from"`
	To          time.Time      `json:"to"`
	Sales       int            `json:"sales"` // sales answered ok, free reprints included, as the ledger counts them
	Stamps      int            `json:"stamps"`
	Postage     protocol.Mills `json:"postage_mills"`
	Card        protocol.Mills `json:"card_mills"`
	Account     protocol.Mills `json:"account_mills"`
	Refunds     int            `json:"refunds"` // labels refunded
	RefundMills protocol.Mills `json:"refund_mills"`
	// RefundsRefused are labels that did not print and whose refund the hub
	// refused (journal.Refused): staff settle them at the counter.
	RefundsRefused int          `json:"refunds_refused"`
	Voids          int          `json:"voids"` // labels signed but not printed
	LabelsLoaded   int          `json:"labels_loaded"`
	LabelsUsed     int          `json:"labels_used"`
	Faults         int          `json:"faults"`
	Classes        []ShiftClass `json:"classes"`
}

// ShiftClass is one rate class's stamps in a shift.
type ShiftClass struct {
	RateClass string         `json:"rate_class"`
	Name      string         `json:"name,omitempty"`
	Count     int            `json:"count"`
	Postage   protocol.Mills `json:"postage_mills"`
}

const shiftKey = "shift_start"

// shiftStart is when the shift began: when staff last ended one, else
// when the kiosk started.
func (k *Kiosk) shiftStart(ctx context.Context) time.Time {
	if k.journal != nil {
		if b, err := k.journal.Setting(ctx, shiftKey); err == nil && b != nil {
			if t, err := time.Parse(time.RFC3339Nano, string(b)); err == nil {
				return t
			}
		}
	}
	return k.now().Add(-k.uptime()) // the start on the kiosk's clock
}

// ShiftReport sums the shift from its start to now.
func (k *Kiosk) ShiftReport(ctx context.Context) (*Shift, error) {
	jl, ok := k.journal.(shiftLog)
	if !ok {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "this kiosk keeps no journal to report a shift from")
	}
	s := &Shift{From: k.shiftStart(ctx), To: jl.Now(), Classes: []ShiftClass{}}
	sales, err := jl.Since(ctx, s.From)
	if err != nil {
		return nil, fmt.Errorf("kiosk: shift: %w", err)
	}
	rt := k.Rates()
	for _, sale := range sales {
		// One begun since To is the next shift's, should staff end this.
		if sale.Result == nil || sale.Started.After(s.To) {
			continue
		}
		res, err := protocol.DecodePurchaseResult(sale.Result)
		if err != nil || res.Status != protocol.ResultOK {
			continue
		}
		var req protocol.PurchaseRequest
		if err := json.Unmarshal(sale.Request, &req); err != nil {
			return nil, fmt.Errorf("kiosk: shift: sale %s: %w", sale.RequestID, err)
		}
		s.Sales++
		amount := map[string]protocol.Mills{}
		var total protocol.Mills
		for _, in := range res.Indicia {
			s.Stamps++
			total += in.AmountMills
			amount[in.LabelSerial] = in.AmountMills
			i := slices.IndexFunc(s.Classes, func(c ShiftClass) bool { return c.RateClass == in.RateClass })
			if i < 0 {
				c := ShiftClass{RateClass: in.RateClass}
				if rt != nil {
					if rc, ok := rt.Class(in.RateClass); ok {
						c.Name = rc.Name
					}
				}
				s.Classes = append(s.Classes, c)
				i = len(s.Classes) - 1
			}
			s.Classes[i].Count++
			s.Classes[i].Postage += in.AmountMills
		}
		s.Postage += total
		switch req.Payment.Method {
		case protocol.PayCardToken:
			s.Card += total
		case protocol.PayAccount:
			s.Account += total
		}
		for _, l := range sale.Labels {
			s.LabelsUsed++
			if l.State != journal.Printed {
				s.Voids++
			}
			switch l.State {
			case journal.Refunded:
				s.Refunds++
				s.RefundMills += amount[l.Serial]
			case journal.Refused:
				s.RefundsRefused++
			}
		}
	}
	slices.SortFunc(s.Classes, func(a, b ShiftClass) int {
		if a.RateClass < b.RateClass {
			return -1
		}
		return 1
	})
	sheets, err := jl.LoadedSince(ctx, s.From)
	if err != nil {
		return nil, fmt.Errorf("kiosk: shift: %w", err)
	}
	s.LabelsLoaded = sheets * protocol.LabelsPerSheet
	for _, e := range k.Errors() {
		if !e.At.Before(s.From) {
			s.Faults++
		}
	}
	return s, nil
}

// PrintShift prints the shift report in lang; end also starts a new
// shift, once the report is out.
func (k *Kiosk) PrintShift(ctx context.Context, lang string, end bool) (*Shift, error) {
	// Between sales: a sale in hand as the report was read, answered
	// after it, began before the shift's end, and was in neither report.
	k.saleMu.Lock()
	defer k.saleMu.Unlock()
	s, err := k.ShiftReport(ctx)
	if err != nil {
		return nil, err
	}
	job, err := k.shiftText(s, lang).Bytes()
	if err != nil {
		return nil, fmt.Errorf("kiosk: shift report: %w", err)
	}
	if err := k.printTextLocked("shift report", job); err != nil {
		return nil, err
	}
	if end {
		if err := k.journal.SetSetting(context.WithoutCancel(ctx), shiftKey, []byte(s.To.Format(time.RFC3339Nano))); err != nil {
			return nil, fmt.Errorf("kiosk: end shift: %w", err)
		}
		k.log.Info("shift ended", "from", s.From, "to", s.To, "sales", s.Sales, "postage", s.Postage)
	}
	return s, nil
}

// shiftText lays out a shift report.
func (k *Kiosk) shiftText(s *Shift, lang string) *escpos.Text {
	tr := func(key string, args ...string) string { return ui.Text(lang, key, args...) }
	t := escpos.NewText()
	t.Center(true).Large(true).Bold(true).Line(tr("print.shift")).Large(false).Bold(false).Center(false).Line("")
	k.header(t, tr, s.To)
	t.Pair(tr("print.from"), s.From.Format("2006-01-02 15:04:05 MST"))
	t.Pair(tr("print.to"), s.To.Format("2006-01-02 15:04:05 MST")).Rule()
	t.Pair(tr("shift.sales"), fmt.Sprint(s.Sales))
	t.Pair(tr("shift.stamps"), fmt.Sprint(s.Stamps))
	for _, c := range s.Classes {
		name := c.RateClass
		if c.Name != "" {
			name = c.Name + " (" + c.RateClass + ")"
		}
		t.Pair("  "+name, fmt.Sprintf("%d  %s", c.Count, c.Postage))
	}
	t.Bold(true).Pair(tr("shift.postage"), s.Postage.String()).Bold(false)
	t.Pair(tr("shift.card"), s.Card.String())
	t.Pair(tr("shift.account"), s.Account.String())
	t.Pair(tr("shift.refunds"), fmt.Sprintf("%d  %s", s.Refunds, s.RefundMills))
	if s.RefundsRefused > 0 {
		t.Line("  " + tr("shift.refused", "n", fmt.Sprint(s.RefundsRefused)))
	}
	t.Pair(tr("shift.voids"), fmt.Sprint(s.Voids)).Rule()
	t.Pair(tr("shift.loaded"), fmt.Sprint(s.LabelsLoaded))
	t.Pair(tr("shift.used"), fmt.Sprint(s.LabelsUsed))
	t.Pair(tr("shift.faults"), fmt.Sprint(s.Faults))
	return t
}

// shiftRoutes serve the staff's shift report: GET shows it, POST print
// prints it, POST end prints it and starts a new shift.
func (k *Kiosk) shiftRoutes(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		s, err := k.ShiftReport(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s)
		return
	}
	lang, ok := decodeLanguage(w, r)
	if !ok {
		return
	}
	s, err := k.PrintShift(r.Context(), lang, r.URL.Path == "/api/v1/staff/shift/end")
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}
