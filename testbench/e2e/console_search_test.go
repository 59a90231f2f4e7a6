package e2e

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/frank-postage/frank/protocol"
)

// Ops find a sale sold at the demo kiosk by its label serial in the
// console, download the day's sales as CSV with the browser's session, and
// open the store's shift report: the CSV's postage and the shift's figures
// are what the hub's ledger holds for the day.
func TestConsoleSearch(t *testing.T) {
	w := startWeb(t, 1)
	const kiosk, store = "demo-kiosk", "demo-store"
	var sold []receipt
	for _, order := range []map[string]any{
		{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")},
		{"rate_class": "1100", "weight_mg": 20_000, "quantity": 2, "payment": card("tok_approve")},
	} {
		status, rc := sell(t, w.Demo, order)
		if status != http.StatusOK || len(rc.Labels) == 0 || rc.Labels[0].Outcome != protocol.Printed {
			t.Fatalf("sale %v: %d %+v", order, status, rc)
		}
		sold = append(sold, rc)
	}
	label := sold[1].Labels[1].LabelSerial

	// The ledger's own figures for the day of the sales.
	db := sqlOpen(t, filepath.Join(w.Dir(), "hub", "hub.db"))
	var at int64
	if err := db.QueryRow(`SELECT created_at FROM sales WHERE kiosk_id = ? AND request_id = ?`, kiosk, sold[1].RequestID).Scan(&at); err != nil {
		t.Fatalf("the sale in the ledger: %v", err)
	}
	day := time.UnixMicro(at).Local().Format(time.DateOnly)
	start, _ := time.ParseInLocation(time.DateOnly, day, time.Local)
	end := start.AddDate(0, 0, 1)
	day0, day1 := start.UnixMicro(), end.UnixMicro()
	one := func(dst any, q string, args ...any) {
		t.Helper()
		if err := db.QueryRow(q, args...).Scan(dst); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The whole day, for the export; the store's kiosks, for its shift.
	var dayPostage int64
	var dayStamps int
	one(&dayPostage, `SELECT COALESCE(SUM(total), 0) FROM sales WHERE status = 'ok' AND created_at >= ? AND created_at < ?`, day0, day1)
	one(&dayStamps, `SELECT COUNT(*) FROM indicia i JOIN sales s ON s.kiosk_id = i.kiosk_id AND s.request_id = i.request_id
		WHERE s.status = 'ok' AND s.created_at >= ? AND s.created_at < ?`, day0, day1)
	ofStore := ` JOIN kiosks k ON k.kiosk_id = s.kiosk_id AND k.store = '` + store + `' WHERE s.status = 'ok' AND s.created_at >= ? AND s.created_at < ?`
	var sales, stamps int
	var postage, cardTotal int64
	one(&sales, `SELECT COUNT(*) FROM sales s`+ofStore, day0, day1)
	one(&postage, `SELECT COALESCE(SUM(s.total), 0) FROM sales s`+ofStore, day0, day1)
	one(&stamps, `SELECT COUNT(*) FROM indicia i JOIN sales s ON s.kiosk_id = i.kiosk_id AND s.request_id = i.request_id`+ofStore, day0, day1)
	one(&cardTotal, `SELECT COALESCE(SUM(p.amount), 0) FROM payments p JOIN sales s ON s.kiosk_id = p.kiosk_id AND s.request_id = p.request_id`+ofStore+
		` AND p.method = 'card' AND p.state IN ('authorized', 'captured')`, day0, day1)
	if sales < 2 || stamps < 3 || postage < int64(sold[0].Total+sold[1].Total) || dayPostage < postage {
		t.Fatalf("the ledger has %d sales, %d stamps, %d mills today at %s (%d mills in all); the test sold 2 sales of 3 stamps", sales, stamps, postage, store, dayPostage)
	}

	w.addOperator("olive-ops", "ops", "")
	p := openPage(t, w.HubURL(), "/console/login", w.Fingerprint())
	p.consoleLogin("olive-ops")

	// Search by the label serial, typed into the box as printed.
	if got := p.open("/console/search"); got != http.StatusOK {
		t.Fatalf("/console/search: %d", got)
	}
	p.do("search for "+label, chromedp.WaitVisible(chromedp.CSS("#q")), chromedp.SendKeys(chromedp.CSS("#q"), label), chromedp.Click(chromedp.CSS("#search")))
	sale := fmt.Sprintf(`section.sale[data-request=%q]`, sold[1].RequestID)
	text := p.wait("the sale found", fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ""`, sale),
		func(v string) bool { return v != "" }, 15*time.Second)
	for _, want := range []string{kiosk, store, label, sold[1].Labels[0].LabelSerial, "1100", "card", "approval auth_"} {
		if !strings.Contains(text, want) {
			t.Errorf("the sale found by %s does not say %q:\n%s", label, want, text)
		}
	}
	if n := p.text("#found"); !strings.HasPrefix(n, "1 sale found") {
		t.Errorf("search by %s: %q", label, n)
	}

	// The day's sales as CSV, fetched by the page with its session.
	csvURL := "/console/exports/sales.csv?" + url.Values{"from": {day}, "to": {day}}.Encode()
	got := p.wait("the day's sales CSV", fmt.Sprintf(`(() => { const x = new XMLHttpRequest(); x.open("GET", %q, false); x.send();
		return x.status + " " + x.getResponseHeader("Content-Disposition") + "\n" + x.responseText })()`, csvURL),
		func(v string) bool { return strings.HasPrefix(v, "200 ") }, 15*time.Second)
	head, body, _ := strings.Cut(got, "\n")
	if !strings.Contains(head, "attachment") || !strings.Contains(head, ".csv") {
		t.Errorf("the CSV's Content-Disposition: %q", head)
	}
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("the sales CSV: %v\n%s", err, body)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	var csvPostage int64
	labels := map[string]bool{}
	for _, r := range rows[1:] {
		n, err := strconv.ParseInt(r[col["postage_mills"]], 10, 64)
		if err != nil {
			t.Fatalf("postage_mills %q: %v", r[col["postage_mills"]], err)
		}
		csvPostage += n
		labels[r[col["label"]]] = true
	}
	if csvPostage != dayPostage || len(rows)-1 != dayStamps || !labels[label] {
		t.Errorf("the day's CSV: %d mills in %d rows (label %s there: %v); the ledger: %d mills in %d stamps", csvPostage, len(rows)-1, label, labels[label], dayPostage, dayStamps)
	}

	// The store's shift report for the day.
	shift := "/console/shift?" + url.Values{"store": {store}, "from": {start.Format(time.RFC3339)}, "to": {end.Format(time.RFC3339)}}.Encode()
	if got := p.open(shift); got != http.StatusOK {
		t.Fatalf("%s: %d", shift, got)
	}
	figure := func(name, what string) string {
		t.Helper()
		sel := fmt.Sprintf(`#shift-figures tr[data-figure=%q] td:nth-child(%s)`, name, what)
		v, err := p.eval(fmt.Sprintf(`(() => { const c = document.querySelector(%q); return c ? (c.dataset.mills || c.textContent).trim() : "" })()`, sel))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		name, col string
		want      int64
	}{
		{"sales", "2", int64(sales)},
		{"postage", "2", int64(stamps)},
		{"postage", "3", postage},
		{"card", "3", cardTotal},
		{"labels_used", "2", int64(stamps)},
	} {
		if got := figure(c.name, c.col); got != strconv.FormatInt(c.want, 10) {
			t.Errorf("shift %s (column %s): %q, the ledger %d", c.name, c.col, got, c.want)
		}
	}
	if href, err := p.eval(`(document.getElementById("shift-csv") || {}).href || ""`); err != nil || !strings.Contains(href, "/console/shift.csv?") {
		t.Errorf("the shift's CSV link: %q %v", href, err)
	}
}
