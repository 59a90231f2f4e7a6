package kiosk

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/frank-postage/frank/appliance/escpos"
	"github.com/frank-postage/frank/appliance/ui"
	"github.com/frank-postage/frank/protocol"
)

// receiptPrinter prints text on the receipt roll, with the status checks
// a label gets; appliance/printer.
type receiptPrinter interface {
	PrintReceipt(job []byte) error
}

// PrintReceipt prints the customer's receipt for a sale of this kiosk in
// lang (a touchscreen language; the stamps' own text is never translated).
func (k *Kiosk) PrintReceipt(ctx context.Context, requestID, lang string) error {
	k.mu.Lock()
	rec := k.done[requestID]
	k.mu.Unlock()
	if rec == nil {
		return protocol.Errorf(protocol.CodeNotFound, "this kiosk has no recent sale %s", requestID)
	}
	job, err := k.receipt(requestID, rec, lang).Bytes()
	if err != nil {
		return fmt.Errorf("kiosk: receipt %s: %w", requestID, err)
	}
	return k.printText("receipt", job)
}

// printText prints a text job between sales: there is one printer.
func (k *Kiosk) printText(what string, job []byte) error {
	k.saleMu.Lock()
	defer k.saleMu.Unlock()
	return k.printTextLocked(what, job)
}

// printTextLocked is printText with saleMu held.
func (k *Kiosk) printTextLocked(what string, job []byte) error {
	rp, ok := k.printer.(receiptPrinter)
	if !ok {
		return protocol.Errorf(protocol.CodeServiceUnavailable, "this kiosk's printer prints no %s", what)
	}
	err := rp.PrintReceipt(job)
	k.refreshPrinter()
	if err != nil {
		k.log.Error(what+" not printed", "err", err)
		return protocol.Errorf(protocol.CodeServiceUnavailable, "the %s was not printed: %s", what, failReason(err))
	}
	k.log.Info(what + " printed")
	return nil
}

// receipt lays out a sale's receipt.
func (k *Kiosk) receipt(requestID string, rec *saleRecord, lang string) *escpos.Text {
	tr := func(key string, args ...string) string { return ui.Text(lang, key, args...) }
	t := escpos.NewText()
	t.Center(true).Large(true).Bold(true).Line(tr("print.receipt")).Large(false).Bold(false).Center(false).Line("")
	k.header(t, tr, rec.at)
	t.Pair(tr("print.sale"), requestID).Rule()
	rt := k.Rates()
	var total protocol.Mills
	for i, it := range rec.items {
		total += it.AmountMills
		name := it.RateClass
		if rt != nil {
			if c, ok := rt.Class(it.RateClass); ok {
				name = c.Name + " (" + c.Class + ")"
			}
		}
		t.Line(tr("print.stamp", "label", it.LabelSerial))
		t.Pair("  "+name, it.AmountMills.String())
		if i < len(rec.labels) {
			l := rec.labels[i]
			if l.MeterNumber != "" {
				t.Pair("  "+tr("print.meter"), l.MeterNumber)
			}
			if l.Outcome != protocol.Printed {
				t.Line("  " + tr("print.not_printed"))
			}
		}
	}
	t.Rule().Bold(true).Pair(tr("print.total"), total.String()).Bold(false)
	switch rec.payment.Method {
	case protocol.PayCardToken:
		t.Line(tr("print.card", "brand", rec.payment.Brand, "last4", rec.payment.Last4))
		if rec.approval != "" {
			t.Pair(tr("print.approval"), rec.approval)
		}
	case protocol.PayAccount:
		t.Line(tr("print.paid_account"))
	}
	t.Rule()
	minutes := fmt.Sprint(int(k.remedyWindow().Round(time.Minute) / time.Minute))
	t.Wrap(tr("print.rules", "minutes", minutes)).Wrap(tr("print.rules_printed")).Line("")
	return t.Center(true).Line(tr("print.thanks"))
}

// header prints the store, the kiosk and the time.
func (k *Kiosk) header(t *escpos.Text, tr func(string, ...string) string, at time.Time) {
	k.mu.Lock()
	var store, name string
	if k.config != nil {
		store, name = k.config.Store, k.config.StoreName
	}
	k.mu.Unlock()
	switch {
	case name != "" && name != store:
		t.Pair(tr("print.store"), name+" ("+store+")")
	case store != "":
		t.Pair(tr("print.store"), store)
	}
	t.Pair("", "ZIP "+string(k.cfg.OriginZIP))
	t.Pair(tr("print.kiosk"), k.cfg.ID)
	t.Pair(tr("print.date"), at.Format("2006-01-02 15:04 MST"))
}

// receiptRoute serves POST /api/v1/sales/{id}/receipt {"language": "es"}.
func (k *Kiosk) receiptRoute(w http.ResponseWriter, r *http.Request) {
	lang, ok := decodeLanguage(w, r)
	if !ok {
		return
	}
	if err := k.PrintReceipt(r.Context(), chi.URLParam(r, "id"), lang); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// decodeLanguage reads a print request's body, {"language": "es"}, and
// checks the language; empty is the default. A bad one is answered.
func decodeLanguage(w http.ResponseWriter, r *http.Request) (string, bool) {
	var body struct {
		Language string `json:"language"`
	}
	if !decodeBody(w, r, &body) {
		return "", false
	}
	switch l := body.Language; {
	case l == "":
		return ui.DefaultLanguage, true
	case slices.Contains(ui.Languages(), l):
		return l, true
	}
	writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "language: want one of %s", strings.Join(ui.Languages(), ", ")))
	return "", false
}
