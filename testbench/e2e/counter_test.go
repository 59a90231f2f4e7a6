package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/browser"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/wait"
)

// kioskID is the demo's kiosk.
const kioskID = "demo-kiosk"

// The people at the counter, on the real binaries: a customer buys two
// stamps entirely in Spanish and takes a printed receipt, which is read
// back from the printer emulator and shows the card's last four digits and
// nothing more of it; high contrast is switched on; and staff's shift
// report agrees with the hub's ledger.
func TestCounterSpanishSaleReceiptAndShift(t *testing.T) {
	browser.NeedAxe(t)
	w := startWeb(t, 2)
	d := w.Demo
	p := browser.Open(t, d.KioskURL()+"/", 800, 480)
	p.Screen("weigh", 20*time.Second)

	// Entirely in Spanish, from the first screen.
	p.Tap("lang")
	p.Text("lang", "English", 5*time.Second)
	p.Text("screen-weigh", "Ponga su carta en la báscula", 5*time.Second)
	p.Text("weight-state", "Lista", 20*time.Second)
	p.Shot("counter-es-1-weigh")
	p.Accessible("counter-axe-es-weigh")
	p.Tap("continue")
	p.Screen("services", 10*time.Second)
	p.Text("screen-services", "Elija un servicio", 5*time.Second)
	p.Tap("service-1100")
	p.Tap("qty-plus")
	p.Text("total", "$1.56", 5*time.Second)
	p.Shot("counter-es-2-services")
	p.Accessible("counter-axe-es-services")
	p.Tap("pay")
	p.Screen("receipt", 90*time.Second)
	p.Text("screen-receipt", "Sus sellos", 5*time.Second)
	p.Text("receipt-labels", "impreso", 5*time.Second)
	p.Text("receipt-total", "$1.56", 5*time.Second)
	p.Shot("counter-es-3-receipt")
	p.Accessible("counter-axe-es-receipt")
	if got := p.Eval(`document.documentElement.lang`); got != "es" {
		t.Errorf("page language %q during the Spanish sale", got)
	}

	// The printed receipt, in Spanish.
	next := d.Printer().NextReceipt()
	p.Tap("print-receipt")
	p.Text("remedy-result", "Su recibo está impreso", 30*time.Second)
	var png string
	select {
	case png = <-next:
	case <-time.After(10 * time.Second):
		t.Fatal("no receipt came out of the printer")
	}
	raw, err := os.ReadFile(strings.TrimSuffix(png, ".png") + ".txt")
	if err != nil {
		t.Fatal(err)
	}
	receipt := string(raw)
	keep(t, png, "counter-es-receipt-printed")
	t.Logf("receipt %s:\n%s", png, receipt)
	flat := strings.Join(strings.Fields(receipt), " ")
	for _, want := range []string{"RECIBO", "Tienda demo-store", "Quiosco " + kioskID, "Fecha " + time.Now().Format("2006-01-02"),
		"TOTAL $1.56", "Tarjeta visa terminada en 4242", "Código de aprobación auth_", "se reimprime gratis", "Gracias"} {
		if !strings.Contains(flat, want) {
			t.Errorf("the receipt lacks %q", want)
		}
	}
	// Nothing of the card but its last four: no run of five of its digits.
	const pan = "4242424242424242"
	for i := 0; i+5 <= len(pan); i++ {
		if strings.Contains(receipt, pan[i:i+5]) {
			t.Errorf("the receipt shows %q of the card number", pan[i:i+5])
		}
	}
	if regexp.MustCompile(`\d{5,}`).MatchString(strings.ReplaceAll(receipt, "auth_", "")) {
		// Meter numbers carry letters; a bare run of digits could be a card.
		for _, m := range regexp.MustCompile(`\d{5,}`).FindAllString(receipt, -1) {
			if strings.Contains(pan, m) {
				t.Errorf("the receipt carries a run of card digits %q", m)
			}
		}
	}

	// Each stamp on it is the ledger's: label, postage, meter, approval.
	db := sqlOpen(t, d.Dir()+"/hub/hub.db")
	sale := regexp.MustCompile(`Venta +([A-Z0-9]{26})`).FindStringSubmatch(receipt)
	if sale == nil {
		t.Fatalf("no sale id on the receipt")
	}
	rows, err := db.Query(`SELECT label, postage FROM indicia WHERE kiosk_id = ? AND request_id = ? ORDER BY label`, kioskID, sale[1])
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var label string
		var postage protocol.Mills
		if err := rows.Scan(&label, &postage); err != nil {
			t.Fatal(err)
		}
		n++
		if !strings.Contains(flat, "Sello "+label) || postage != 780 {
			t.Errorf("the ledger's stamp %s (%s) is not on the receipt", label, postage)
		}
	}
	rows.Close()
	if n != 2 || strings.Count(flat, "Medidor ") != 2 {
		t.Errorf("%d stamps in the ledger, %d meters on the receipt; want 2 and 2", n, strings.Count(flat, "Medidor "))
	}
	var approval string
	if err := db.QueryRow(`SELECT gateway_ref FROM payments WHERE kiosk_id = ? AND request_id = ?`, kioskID, sale[1]).Scan(&approval); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(flat, "Código de aprobación "+approval) {
		t.Errorf("the receipt's approval code is not the payment's %s", approval)
	}
	// The printed image itself, read by an independent OCR engine.
	seen := ocr(t, png)
	t.Logf("OCR of %s:\n%s", png, seen)
	ocrFlat := strings.Join(strings.Fields(seen), " ")
	for _, want := range []string{"RECIBO", "TOTAL $1.56", "Tarjeta visa terminada en 4242", "Código de aprobación " + approval} {
		if !strings.Contains(ocrFlat, want) {
			t.Errorf("OCR of the printed receipt lacks %q", want)
		}
	}
	for i := 0; i+5 <= len(pan); i++ {
		if strings.Contains(seen, pan[i:i+5]) {
			t.Errorf("the printed receipt shows %q of the card number", pan[i:i+5])
		}
	}
	p.Tap("done")
	p.Screen("weigh", 10*time.Second)
	p.Text("lang", "Español", 5*time.Second) // the next customer starts in the store's language

	// High contrast, large text.
	p.Tap("contrast")
	p.Text("contrast", "Normal view", 5*time.Second)
	if p.Eval(`String(document.body.classList.contains("hc"))`) != "true" {
		t.Error("high contrast is not on")
	}
	p.Shot("counter-high-contrast")
	p.Accessible("counter-axe-high-contrast")
	p.Tap("contrast")

	// Staff: the shift report on screen and on paper, against the ledger.
	p.Tap("staff-open")
	p.Screen("pin", 10*time.Second)
	for _, c := range demo.StaffPIN {
		p.Tap(fmt.Sprintf("pin-%c", c))
	}
	p.Tap("pin-ok")
	p.Screen("staff", 10*time.Second)
	p.Tap("shift-open")
	p.Screen("shift", 10*time.Second)
	p.Text("shift-sales", "1", 5*time.Second)
	p.Text("shift-postage", "$1.56", 5*time.Second)
	p.Shot("counter-shift")
	p.Accessible("counter-axe-shift")
	token := staffToken(t, d)
	var shift struct {
		From    time.Time      `json:"from"`
		To      time.Time      `json:"to"`
		Sales   int            `json:"sales"`
		Stamps  int            `json:"stamps"`
		Postage protocol.Mills `json:"postage_mills"`
		Card    protocol.Mills `json:"card_mills"`
		Used    int            `json:"labels_used"`
		Classes []struct {
			RateClass string         `json:"rate_class"`
			Count     int            `json:"count"`
			Postage   protocol.Mills `json:"postage_mills"`
		} `json:"classes"`
	}
	kioskGet(t, d, "/api/v1/staff/shift", token, &shift)
	ledger := ledgerShift(t, db, shift.From, shift.To)
	got := fmt.Sprintf("sales %d stamps %d postage %s card %s", shift.Sales, shift.Stamps, shift.Postage, shift.Card)
	if got != ledger {
		t.Errorf("the kiosk's shift says %q, the ledger %q", got, ledger)
	}
	// The console's shift report for the kiosk, over the same window, is
	// the ledger's too.
	w.addOperator("olive-ops", "ops", "")
	token = strings.TrimSpace(w.hub(nil, "operator", "token", "olive-ops", "--name", "e2e"))
	var ops struct {
		Sales      int            `json:"sales"`
		StampCount int            `json:"stamp_count"`
		Postage    protocol.Mills `json:"postage_mills"`
		Card       protocol.Mills `json:"card_mills"`
		Used       int            `json:"labels_used"`
	}
	q := url.Values{"store": {"demo-store"}, "kiosk": {kioskID}, "from": {shift.From.Format(time.RFC3339Nano)}, "to": {shift.To.Add(time.Microsecond).Format(time.RFC3339Nano)}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, d.HubURL()+"/api/v1/ops/shift?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := d.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(res.Body).Decode(&ops); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/ops/shift: %s %v", res.Status, err)
	}
	res.Body.Close()
	if ops.Sales != shift.Sales || ops.StampCount != shift.Stamps || ops.Postage != shift.Postage || ops.Card != shift.Card || ops.Used != shift.Used {
		t.Errorf("the console's shift %+v, the kiosk's %+v", ops, shift)
	}
	if shift.Sales != 1 || shift.Used != 2 || len(shift.Classes) != 1 || shift.Classes[0].Count != 2 || shift.Classes[0].Postage != 1560 {
		t.Errorf("shift %+v", shift)
	}
	next = d.Printer().NextReceipt()
	p.Tap("shift-print")
	p.Text("shift-message", "Shift report printed", 30*time.Second)
	select {
	case png = <-next:
	case <-time.After(10 * time.Second):
		t.Fatal("no shift report came out of the printer")
	}
	raw, err = os.ReadFile(strings.TrimSuffix(png, ".png") + ".txt")
	if err != nil {
		t.Fatal(err)
	}
	keep(t, png, "counter-shift-report-printed")
	flat = strings.Join(strings.Fields(string(raw)), " ")
	for _, want := range []string{"SHIFT REPORT", "Sales 1", "Stamps 2", "Postage $1.56", "Card $1.56", "Labels used 2"} {
		if !strings.Contains(flat, want) {
			t.Errorf("the printed shift report lacks %q:\n%s", want, raw)
		}
	}
}

// keep copies a printed receipt (its image and its text) to the test
// artefacts as name.png and name.txt.
func keep(t *testing.T, png, name string) {
	t.Helper()
	dir := browser.ArtifactsDir(t)
	for _, ext := range []string{".png", ".txt"} {
		b, err := os.ReadFile(strings.TrimSuffix(png, ".png") + ext)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+ext), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// ocr reads a printed image with tesseract (Debian tesseract-ocr, with its
// English and Spanish data), which shares nothing with our printer code.
func ocr(t *testing.T, png string) string {
	t.Helper()
	if _, err := exec.LookPath("tesseract"); err != nil {
		t.Fatal("tesseract not found: install the Debian packages tesseract-ocr, tesseract-ocr-eng and tesseract-ocr-spa (make test does, as root)")
	}
	out, err := exec.Command("tesseract", png, "-", "-l", "spa+eng").Output()
	if err != nil {
		t.Fatalf("tesseract %s: %v", png, err)
	}
	return string(out)
}

// ledgerShift sums the demo kiosk's sales in the hub's ledger between
// from and to, as the kiosk's shift report words them.
func ledgerShift(t *testing.T, db *sql.DB, from, to time.Time) string {
	t.Helper()
	var sales, stamps int
	var postage, card protocol.Mills
	q := `SELECT COUNT(*), COALESCE(SUM(total), 0) FROM sales WHERE kiosk_id = ? AND status = 'ok' AND created_at >= ? AND created_at <= ?`
	if err := db.QueryRow(q, kioskID, from.UnixMicro(), to.UnixMicro()).Scan(&sales, &postage); err != nil {
		t.Fatal(err)
	}
	q = `SELECT COUNT(*) FROM indicia WHERE kiosk_id = ? AND created_at >= ? AND created_at <= ?`
	if err := db.QueryRow(q, kioskID, from.UnixMicro(), to.UnixMicro()).Scan(&stamps); err != nil {
		t.Fatal(err)
	}
	q = `SELECT COALESCE(SUM(p.amount), 0) FROM payments p JOIN sales s ON s.kiosk_id = p.kiosk_id AND s.request_id = p.request_id
		WHERE p.kiosk_id = ? AND p.method = 'card' AND s.status = 'ok' AND s.created_at >= ? AND s.created_at <= ?`
	if err := db.QueryRow(q, kioskID, from.UnixMicro(), to.UnixMicro()).Scan(&card); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("sales %d stamps %d postage %s card %s", sales, stamps, postage, card)
}

// staffToken logs in to the kiosk's staff API with the demo's PIN.
func staffToken(t *testing.T, d *demo.Demo) string {
	t.Helper()
	status, body, err := d.Post(context.Background(), d.KioskURL()+"/api/v1/staff/login", map[string]string{"pin": demo.StaffPIN})
	if err != nil || status != http.StatusOK {
		t.Fatalf("staff login: %d %s %v", status, body, err)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// kioskGet reads a staff API of the kiosk into v.
func kioskGet(t *testing.T, d *demo.Demo, path, token string, v any) {
	t.Helper()
	wait.Until(t, 10*time.Second, "GET "+path, func() error {
		req, err := http.NewRequest(http.MethodGet, d.KioskURL()+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return json.NewDecoder(res.Body).Decode(v)
	})
}
