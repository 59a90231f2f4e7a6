package kiosk_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/text/encoding/charmap"

	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/appliance/ui"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/wait"
)

// printedText reads a text job as a printer would show it: commands
// dropped, code page 858 decoded.
func printedText(t *testing.T, job []byte) string {
	t.Helper()
	var out []byte
	for i := 0; i < len(job); i++ {
		switch job[i] {
		case 0x1B: // ESC @ | ESC c 0 n | ESC t n | ESC E n | ESC a n | ESC d n
			switch job[i+1] {
			case '@':
				i++
			case 'c':
				i += 3
			default:
				i += 2
			}
		case 0x1D: // GS ! n | GS V m n
			if job[i+1] == 'V' {
				i += 3
			} else {
				i += 2
			}
		default:
			out = append(out, job[i])
		}
	}
	s, err := charmap.CodePage858.NewDecoder().String(string(out))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func cardSale(t *testing.T, k *kiosk.Kiosk) *kiosk.Receipt {
	t.Helper()
	o := order("1966-F8CF-01")
	o.Payment.Brand, o.Payment.Last4 = "visa", "4242"
	rc, err := k.Sell(context.Background(), o)
	if err != nil || rc.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v, %v", rc, err)
	}
	return rc
}

// A receipt names the store, the kiosk, the time, each stamp, the total,
// the card's brand and last four, the approval code and the rules, in the
// customer's language.
func TestReceiptPrinted(t *testing.T) {
	fh := &fakeHub{answer: func(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
		res := vectorAnswer(req)
		res.Approval = "auth_000042"
		return res
	}}
	k, p := setup(t, fh)
	fh.link.push(protocol.TopicConfig, protocol.KioskConfig{KioskID: "k1", HeartbeatS: 30, Rates: prototest.Rates, Store: "store12", StoreName: "Main Street"})
	rc := cardSale(t, k)
	// The config arrives on its own goroutine; the receipt waits for the store.
	wait.Until(t, 5*time.Second, "the store to reach the receipt", func() error {
		if err := k.PrintReceipt(context.Background(), rc.RequestID, "en"); err != nil {
			return err
		}
		if got := printedText(t, p.receipts[len(p.receipts)-1]); !strings.Contains(got, "Main Street (store12)") {
			return fmt.Errorf("no store on %q", got)
		}
		return nil
	})
	en := printedText(t, p.receipts[len(p.receipts)-1])
	for _, want := range []string{"RECEIPT", "Store", "ZIP 94544", "Kiosk", "k1", "Date", "Sale", rc.RequestID,
		"Stamp 1966-F8CF-01", "$0.78", "Meter", "FR2N50000061", "TOTAL", "Card visa ending 4242", "Approval code", "auth_000042",
		"reprinted free", "within 5 minutes", "Thank you"} {
		if !strings.Contains(strings.Join(strings.Fields(en), " "), want) {
			t.Errorf("English receipt lacks %q:\n%s", want, en)
		}
	}
	if err := k.PrintReceipt(context.Background(), rc.RequestID, "es"); err != nil {
		t.Fatal(err)
	}
	es := printedText(t, p.receipts[len(p.receipts)-1])
	for _, want := range []string{"RECIBO", "Tienda", "Quiosco", "Sello 1966-F8CF-01", "Medidor", "Tarjeta visa terminada en 4242",
		"Código de aprobación", "auth_000042", "se reimprime gratis", "Gracias"} {
		if !strings.Contains(strings.Join(strings.Fields(es), " "), want) {
			t.Errorf("Spanish receipt lacks %q:\n%s", want, es)
		}
	}
	if p.count() != 1 {
		t.Errorf("%d labels printed, want 1: a receipt uses no label", p.count())
	}
	for _, line := range strings.Split(en, "\n") {
		if n := len([]rune(line)); n > 42 {
			t.Errorf("line wider than the paper (%d columns): %q", n, line)
		}
	}

	// Through the touchscreen's API: a bad language and an unknown sale
	// get their codes.
	api := httptest.NewServer(k.Handler())
	defer api.Close()
	for _, c := range []struct {
		path, body string
		status     int
	}{
		{"/api/v1/sales/" + rc.RequestID + "/receipt", `{"language":"es"}`, http.StatusOK},
		{"/api/v1/sales/" + rc.RequestID + "/receipt", `{"language":"fr"}`, http.StatusBadRequest},
		{"/api/v1/sales/NOSUCHSALE/receipt", `{"language":"en"}`, http.StatusNotFound},
	} {
		res, err := http.Post(api.URL+c.path, "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != c.status {
			t.Errorf("POST %s %s: %d, want %d", c.path, c.body, res.StatusCode, c.status)
		}
	}
}

// The shift report sums the journal from the shift's start; ending the
// shift prints it and starts the next from zero.
func TestShiftReport(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer, journal: openJournal(t)}
	k, p := setup(t, fh)
	if _, err := k.LoadStock(context.Background(), []string{"1966-F8CF"}); err != nil {
		t.Fatal(err)
	}
	cardSale(t, k)
	s, err := k.ShiftReport(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Sales != 1 || s.Stamps != 1 || s.Postage != 780 || s.Card != 780 || s.Account != 0 || s.LabelsLoaded != 10 ||
		s.LabelsUsed != 1 || s.Voids != 0 || len(s.Classes) != 1 || s.Classes[0].RateClass != "1100" || s.Classes[0].Postage != 780 {
		t.Fatalf("shift %+v", s)
	}
	ended, err := k.PrintShift(context.Background(), "en", true)
	if err != nil {
		t.Fatal(err)
	}
	text := printedText(t, p.receipts[len(p.receipts)-1])
	for _, want := range []string{"SHIFT REPORT", "Sales", "Postage", "$0.78", "Labels loaded", "10", "Labels used"} {
		if !strings.Contains(text, want) {
			t.Errorf("shift report lacks %q:\n%s", want, text)
		}
	}
	next, err := k.ShiftReport(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if next.Sales != 0 || next.Postage != 0 || next.LabelsLoaded != 0 || !next.From.Equal(ended.To) {
		t.Errorf("the next shift %+v, want it empty from %v", next, ended.To)
	}
}

// A language is added by its catalogue (appliance/ui/web/static/i18n) and
// its code in protocol.Languages, which ops' settings accept: the two
// lists agree.
func TestScreenLanguagesAreTheHubs(t *testing.T) {
	if got, want := ui.Languages(), protocol.Languages; !slices.Equal(got, want) {
		t.Fatalf("catalogues for %q, the hub's settings accept %q", got, want)
	}
}
