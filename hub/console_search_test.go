package hub_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/views"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// searchEnv is a hub with sales on both stores' kiosks and the web, a
// counter refund, a label that failed to print, and an alert on kiosk-1.
type searchEnv struct {
	*env
	tokens map[string]string // operator -> API token
	now    time.Time
}

func newSearchEnv(t *testing.T) *searchEnv {
	t.Helper()
	e := &searchEnv{env: newEnv(t), tokens: map[string]string{}, now: time.Time{}}
	e.now = e.clock.Now()
	ctx := context.Background()
	k1, k2 := e.kiosk("kiosk-1"), e.kiosk("kiosk-2")
	two := func(r *protocol.PurchaseRequest) {
		it := r.Items[0]
		it.LabelSerial = "1966-F8CF-03"
		r.Items = append(r.Items, it)
	}
	for _, s := range []struct {
		k          *kioskClient
		id, kiosk  string
		label      string
		mutate     func(*protocol.PurchaseRequest)
		stampsWant int
	}{
		{k1, "srch-1", "kiosk-1", "1966-F8CF-01", nil, 1},
		{k1, "srch-2", "kiosk-1", "1966-F8CF-02", two, 2},
		{k1, "srch-3", "kiosk-1", "1966-F8CF-04", nil, 1},
		{k2, "srch-b1", "kiosk-2", "2222-0001-01", nil, 1},
	} {
		res := decode(t, s.k.ask(purchase(s.id, s.kiosk, s.label, s.mutate)))
		if res.Status != protocol.ResultOK || len(res.Indicia) != s.stampsWant {
			t.Fatalf("sale %s: %+v", s.id, res.Error)
		}
	}
	// A label of srch-3 fails to print: its indicium is voided.
	rep, _ := json.Marshal(protocol.PrintReport{RequestID: "srch-3", KioskID: "kiosk-1",
		Labels: []protocol.LabelOutcome{{LabelSerial: "1966-F8CF-04", Outcome: protocol.PrintFailed, Reason: "jam"}}})
	k1.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicPrint), 1, false, rep)
	db := e.openDB()
	wait.For(t, 10*time.Second, "the jammed label voided", func() bool {
		var st string
		db.QueryRow(`SELECT state FROM indicia WHERE label = '1966-F8CF-04'`).Scan(&st)
		return st == "voided"
	})
	// A web customer's sale.
	sheet := e.webSheet()
	carol := e.customer("carol@example.com", "10.00")
	if st, loc, page := carol.buy(sheet, 1); st != http.StatusSeeOther {
		t.Fatalf("web buy: %d %s %s", st, loc, page)
	}
	// Staff of store-a refund srch-1's stamp at the counter.
	sue := e.operator("sue", "staff", "store-a")
	form := url.Values{"label": {"1966-F8CF-01"}, "reason": {"wrong class"}, "handed_in": {"yes"}}
	if st, _, page := sue.post("/console/stock", "/console/refunds", form); st != http.StatusOK || !strings.Contains(page, "Refunded $0.78") {
		t.Fatalf("counter refund: %d %s", st, page)
	}
	e.h.Alerts().Raise(ctx, alerts.PrinterFault, "kiosk/kiosk-1", "printer jammed")
	e.h.Alerts().Raise(ctx, alerts.PrinterFault, "kiosk/kiosk-2", "printer jammed")
	for _, op := range []struct{ login, role, store string }{{"olga", "ops", ""}, {"sam", "staff", "store-b"}} {
		var stores []string
		if op.store != "" {
			stores = []string{op.store}
		}
		if _, err := e.h.Operators().Add(ctx, op.login, "operator password 1", op.role, stores); err != nil {
			t.Fatal(err)
		}
	}
	for _, login := range []string{"olga", "sam", "sue"} {
		tok, err := e.h.Operators().NewToken(ctx, login, "search test", operators.ReadOnly, operators.DefaultTokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[login] = tok
	}
	return e
}

// api calls the operator API as login and returns the status and body.
func (e *searchEnv) api(login, path string) (int, string) {
	e.t.Helper()
	st, _, body := e.browser().do("GET", path, nil, "Authorization", "Bearer "+e.tokens[login])
	return st, body
}

// search finds sales through the operator API as login.
func (e *searchEnv) search(login, kind, q string) []views.Sale {
	e.t.Helper()
	st, body := e.api(login, "/api/v1/ops/search?"+url.Values{"q": {q}, "kind": {kind}}.Encode())
	if st != http.StatusOK {
		e.t.Fatalf("search %s %q as %s: %d %s", kind, q, login, st, body)
	}
	var out []views.Sale
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		e.t.Fatalf("search: %v: %s", err, body)
	}
	return out
}

func requestIDs(sales []views.Sale) string {
	var ids []string
	for _, s := range sales {
		ids = append(ids, s.RequestID)
	}
	return strings.Join(ids, ",")
}

// Every kind of search finds the sale, by itself and from the one box;
// the sale shows its kiosk, store, stamps, payment and remedies; staff see
// their own stores' sales only.
func TestConsoleSearchFindsSale(t *testing.T) {
	t.Parallel()
	e := newSearchEnv(t)
	db := e.openDB()
	var approval, last4 string
	var mpsd uint32
	if err := db.QueryRow(`SELECT gateway_ref, last4 FROM payments WHERE kiosk_id = 'kiosk-1' AND request_id = 'srch-2'`).Scan(&approval, &last4); err != nil || approval == "" || last4 == "" {
		t.Fatalf("srch-2's payment: %q %q %v", approval, last4, err)
	}
	if err := db.QueryRow(`SELECT mpsd FROM indicia WHERE label = '1966-F8CF-02'`).Scan(&mpsd); err != nil {
		t.Fatal(err)
	}
	meter := protocol.MeterNumber("FR", "2N", mpsd)
	var webKiosk string
	if err := db.QueryRow(`SELECT kiosk_id FROM sales WHERE kiosk_id LIKE 'web-%'`).Scan(&webKiosk); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ kind, q, want string }{
		{views.ByLabel, "1966-F8CF-03", "srch-2"},
		{views.ByAuto, "1966-f8cf-03", "srch-2"},
		{views.ByRequest, "srch-2", "srch-2"},
		{views.ByAuto, "srch-2", "srch-2"},
		{views.ByCard, last4 + " " + approval, "srch-2"},
		{views.ByAuto, approval + " / " + last4, "srch-2"},
	} {
		got := e.search("olga", c.kind, c.q)
		if requestIDs(got) != c.want {
			t.Errorf("search %s %q found %q, want %s", c.kind, c.q, requestIDs(got), c.want)
		}
	}
	for _, kind := range []string{views.ByMeter, views.ByAuto} {
		if got := requestIDs(e.search("olga", kind, meter)); !strings.Contains(got, "srch-2") {
			t.Errorf("search %s %s found %q, want srch-2 among them", kind, meter, got)
		}
	}
	for _, kind := range []string{views.ByLogin, views.ByAuto} {
		got := e.search("olga", kind, "carol@example.com")
		if len(got) != 1 || got[0].KioskID != webKiosk || got[0].Customer != "carol@example.com" || got[0].Store != "web" {
			t.Errorf("search %s carol@example.com found %+v, want her web sale", kind, got)
		}
	}
	// A wrong card reference finds nothing: both parts must match.
	if got := e.search("olga", views.ByCard, "0000 "+approval); len(got) != 0 {
		t.Errorf("another card's last four with srch-2's approval found %s", requestIDs(got))
	}

	s := e.search("olga", views.ByLabel, "1966-F8CF-02")[0]
	if s.KioskID != "kiosk-1" || s.Store != "store-a" || s.Total != 1560 || len(s.Stamps) != 2 || s.Stamps[0].Meter != meter || s.Stamps[0].RateClass != "1100" ||
		s.Payment == nil || s.Payment.Method != "card" || s.Payment.Approval != approval || s.Payment.Last4 != last4 || s.Payment.Brand == "" {
		t.Errorf("srch-2 as found: %+v", s)
	}
	r := e.search("olga", views.ByRequest, "srch-1")[0]
	if len(r.Remedies) != 1 || r.Remedies[0].Kind != "refund" || r.Remedies[0].By != "sue" || r.Remedies[0].Amount != 780 || len(r.Refunds) != 1 || r.Refunds[0].Amount != 780 {
		t.Errorf("srch-1's refund: remedies %+v, refunds %+v", r.Remedies, r.Refunds)
	}

	// Staff: their own store's sales only, in the API and on the page.
	if got := e.search("sam", views.ByLabel, "1966-F8CF-02"); len(got) != 0 {
		t.Errorf("store-b's staff found store-a's sale %s", requestIDs(got))
	}
	if got := e.search("sam", views.ByCard, last4+" "+approval); len(got) != 0 {
		t.Errorf("store-b's staff found store-a's sale by card: %s", requestIDs(got))
	}
	if got := requestIDs(e.search("sam", views.ByLabel, "2222-0001-01")); got != "srch-b1" {
		t.Errorf("store-b's staff searching their own label found %q", got)
	}
	if got := requestIDs(e.search("sue", views.ByAuto, "srch-b1")); got != "" {
		t.Errorf("store-a's staff found store-b's sale %q", got)
	}
	if got := e.search("sue", views.ByLogin, "carol@example.com"); len(got) != 0 {
		t.Errorf("store staff found a web customer's sale: %+v", got)
	}
	sam := e.browser()
	if st, loc, page := sam.do("POST", "/console/login", url.Values{"login": {"sam"}, "password": {"operator password 1"}}); st != http.StatusSeeOther {
		t.Fatalf("console login: %d %s %s", st, loc, page)
	}
	if st, _, page := sam.do("GET", "/console/search?q=1966-F8CF-02", nil); st != http.StatusOK || strings.Contains(page, "srch-2") || !strings.Contains(page, "0 sales found") {
		t.Errorf("store-b's staff searching store-a's label on the page: %d\n%s", st, page)
	}
	if st, _, page := sam.do("GET", "/console/search?q=2222-0001-01", nil); st != http.StatusOK || !strings.Contains(page, `data-request="srch-b1"`) {
		t.Errorf("store-b's staff searching their own label on the page: %d\n%s", st, page)
	}
	if st, _, _ := sam.do("GET", "/console/search?q=FR2N1&kind=meter", nil); st != http.StatusUnprocessableEntity {
		t.Errorf("a malformed meter number: %d, want 422", st)
	}
	if st, body := e.api("olga", "/api/v1/ops/search?q=x&kind=label"); st != http.StatusBadRequest || !strings.Contains(body, "invalid_request") {
		t.Errorf("a label search for x: %d %s", st, body)
	}
}

// readCSV fetches an export through the operator API as login.
func (e *searchEnv) readCSV(login, path string) [][]string {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.h.URL()+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens[login])
	resp, err := e.browser().c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("%s as %s: %s", path, login, resp.Status)
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment; filename=") || !strings.HasSuffix(cd, ".csv") {
		e.t.Errorf("%s: Content-Disposition %q", path, cd)
	}
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil || len(rows) == 0 {
		e.t.Fatalf("%s: %d rows, %v", path, len(rows), err)
	}
	return rows
}

// column sums a column of a CSV with a header, and lists another.
func column(t *testing.T, rows [][]string, name string) (sum int64, values []string) {
	t.Helper()
	i := -1
	for j, h := range rows[0] {
		if h == name {
			i = j
		}
	}
	if i < 0 {
		t.Fatalf("no column %s in %v", name, rows[0])
	}
	for _, r := range rows[1:] {
		values = append(values, r[i])
		n, _ := strconv.ParseInt(r[i], 10, 64)
		sum += n
	}
	return sum, values
}

// Each export parses; a day's sales add up to the ledger's total for the
// day; staff get their own stores and are refused another's.
func TestConsoleExportsMatchLedger(t *testing.T) {
	t.Parallel()
	e := newSearchEnv(t)
	db := e.openDB()
	ctx := context.Background()
	day := e.now.Local().Format(time.DateOnly)
	start, _ := time.ParseInLocation(time.DateOnly, day, time.Local)
	end := start.AddDate(0, 0, 1)
	var ledgerTotal, ledgerStamps, storeATotal int64
	db.QueryRow(db.Rebind(`SELECT COALESCE(SUM(total), 0) FROM sales WHERE status = 'ok' AND created_at >= ? AND created_at < ?`), start.UnixMicro(), end.UnixMicro()).Scan(&ledgerTotal)
	db.QueryRow(db.Rebind(`SELECT COUNT(*) FROM indicia i JOIN sales s ON s.kiosk_id = i.kiosk_id AND s.request_id = i.request_id
		WHERE s.status = 'ok' AND s.created_at >= ? AND s.created_at < ?`), start.UnixMicro(), end.UnixMicro()).Scan(&ledgerStamps)
	db.QueryRow(`SELECT COALESCE(SUM(s.total), 0) FROM sales s JOIN kiosks k ON k.kiosk_id = s.kiosk_id WHERE k.store = 'store-a' AND s.status = 'ok'`).Scan(&storeATotal)
	if ledgerTotal != 5*780+780 || ledgerStamps != 6 {
		t.Fatalf("the ledger has %d mills in %d stamps today; the test sold 6 First-Class stamps", ledgerTotal, ledgerStamps)
	}
	q := "?" + url.Values{"from": {day}, "to": {day}}.Encode()
	sales := e.readCSV("olga", "/api/v1/ops/exports/sales.csv"+q)
	if sum, _ := column(t, sales, "postage_mills"); sum != ledgerTotal || int64(len(sales)-1) != ledgerStamps {
		t.Errorf("the day's sales export: %d mills in %d rows, the ledger %d mills in %d stamps", sum, len(sales)-1, ledgerTotal, ledgerStamps)
	}
	if _, approvals := column(t, sales, "approval"); !strings.HasPrefix(strings.Join(approvals, ","), "auth_") {
		t.Errorf("approval codes in the export: %v", approvals)
	}
	yesterday := start.AddDate(0, 0, -1).Format(time.DateOnly)
	if rows := e.readCSV("olga", "/api/v1/ops/exports/sales.csv?from="+yesterday+"&to="+yesterday); len(rows) != 1 {
		t.Errorf("yesterday's sales export has %d rows, want only the header", len(rows))
	}
	// Staff: their stores, whether they name it or not; another store is 403.
	for _, path := range []string{"/api/v1/ops/exports/sales.csv" + q, "/api/v1/ops/exports/sales.csv" + q + "&store=store-a"} {
		rows := e.readCSV("sue", path)
		sum, stores := column(t, rows, "store")
		if sum != 0 || strings.Trim(strings.Join(stores, ","), "store-a,") != "" {
			t.Errorf("%s as store-a's staff: stores %v", path, stores)
		}
		if got, _ := column(t, rows, "postage_mills"); got != storeATotal {
			t.Errorf("%s as store-a's staff: %d mills, store-a sold %d", path, got, storeATotal)
		}
	}
	for _, what := range views.Exports {
		for _, extra := range []string{"&store=store-b", "&kiosk=kiosk-2"} {
			st, body := e.api("sue", "/api/v1/ops/exports/"+what+".csv"+q+extra)
			if st != http.StatusForbidden || !strings.Contains(body, `"forbidden"`) {
				t.Errorf("%s%s as store-a's staff: %d %s", what, extra, st, body)
			}
		}
	}
	if st, body := e.api("olga", "/api/v1/ops/exports/sales.csv?from=yesterday"); st != http.StatusBadRequest {
		t.Errorf("from=yesterday: %d %s", st, body)
	}

	refunds := e.readCSV("olga", "/api/v1/ops/exports/refunds.csv"+q)
	if sum, labels := column(t, refunds, "amount_mills"); sum != 780 || strings.Join(labels, "") != "780" {
		t.Errorf("refunds export: %v", refunds)
	}
	if _, reqs := column(t, refunds, "sale_request_id"); strings.Join(reqs, ",") != "srch-1" {
		t.Errorf("the refund's sale: %v", reqs)
	}
	stock := e.readCSV("sue", "/api/v1/ops/exports/stock.csv"+q)
	if _, sheets := column(t, stock, "sheet"); strings.Join(sheets, ",") != "1966-F8CF,1966-F8D0" {
		t.Errorf("store-a's sheets: %v", sheets)
	}
	if used, _ := column(t, stock, "labels_used"); used != 4 {
		t.Errorf("store-a's labels used: %d, want 4", used)
	}

	// A postal report of the day, as the authority got it, once it ended.
	e.clock.Set(end)
	rep, err := e.h.Ledger().BuildReport(ctx, start, end)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.Ledger().SubmitReport(ctx, rep, e.h.Postal()); err != nil {
		t.Fatal(err)
	}
	all := e.readCSV("olga", "/api/v1/ops/exports/reports.csv"+q)
	if sum, _ := column(t, all, "postage_mills"); sum != rep.Totals.Postage || len(all)-1 != rep.Totals.Indicia {
		t.Errorf("reports export: %d mills in %d rows, the report %d in %d", sum, len(all)-1, rep.Totals.Postage, rep.Totals.Indicia)
	}
	mine := e.readCSV("sam", "/api/v1/ops/exports/reports.csv"+q)
	if _, kiosks := column(t, mine, "kiosk"); strings.Join(kiosks, ",") != "kiosk-2" {
		t.Errorf("store-b's staff's reports export: kiosks %v", kiosks)
	}

	// The console's own download, with a session.
	sue := e.browser()
	sue.do("POST", "/console/login", url.Values{"login": {"sue"}, "password": {"operator password 1"}})
	if st, _, body := sue.do("GET", "/console/exports/sales.csv"+q, nil); st != http.StatusOK || !strings.HasPrefix(body, strings.Join(views.ExportHeader["sales"], ",")) {
		t.Errorf("/console/exports/sales.csv: %d %s", st, body)
	}
	if st, _, page := sue.do("GET", "/console/exports", nil); st != http.StatusOK || !strings.Contains(page, `formaction="/console/exports/refunds.csv"`) {
		t.Errorf("/console/exports: %d", st)
	}
}

// The shift report's figures are what the ledger's tables say, in JSON,
// on the page and as CSV.
func TestConsoleShiftMatchesLedger(t *testing.T) {
	t.Parallel()
	e := newSearchEnv(t)
	db := e.openDB()
	from, to := e.now.Add(-time.Hour), e.now.Add(time.Hour)
	win := []any{from.UnixMicro(), to.UnixMicro()}
	q := "?" + url.Values{"store": {"store-a"}, "from": {from.Format(time.RFC3339Nano)}, "to": {to.Format(time.RFC3339Nano)}}.Encode()
	st, body := e.api("olga", "/api/v1/ops/shift"+q)
	if st != http.StatusOK {
		t.Fatalf("shift: %d %s", st, body)
	}
	var sh views.Shift
	if err := json.Unmarshal([]byte(body), &sh); err != nil {
		t.Fatal(err)
	}

	// The ledger, read here on its own.
	var want views.Shift
	one := func(dst any, q string, args ...any) {
		t.Helper()
		if err := db.QueryRow(db.Rebind(q), args...).Scan(dst); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	storeA := `JOIN kiosks k ON k.kiosk_id = s.kiosk_id AND k.store = 'store-a' WHERE s.status = 'ok' AND s.created_at >= ? AND s.created_at < ?`
	one(&want.Sales, `SELECT COUNT(*) FROM sales s `+storeA, win...)
	one(&want.Postage, `SELECT SUM(s.total) FROM sales s `+storeA, win...)
	one(&want.StampCount, `SELECT COUNT(*) FROM indicia i JOIN sales s ON s.kiosk_id = i.kiosk_id AND s.request_id = i.request_id `+storeA, win...)
	one(&want.Card, `SELECT SUM(p.amount) FROM payments p JOIN sales s ON s.kiosk_id = p.kiosk_id AND s.request_id = p.request_id `+storeA+` AND p.method = 'card'`, win...)
	one(&want.Refunded, `SELECT SUM(r.amount) FROM remedies r JOIN kiosks k ON k.kiosk_id = r.kiosk_id WHERE k.store = 'store-a' AND r.kind = 'refund'`)
	one(&want.Refunds, `SELECT COUNT(*) FROM remedies r JOIN kiosks k ON k.kiosk_id = r.kiosk_id WHERE k.store = 'store-a' AND r.kind = 'refund'`)
	one(&want.Voids, `SELECT COUNT(*) FROM indicia i JOIN sales s ON s.kiosk_id = i.kiosk_id AND s.request_id = i.request_id `+storeA+` AND i.void_reason = 'jam'`, win...)
	one(&want.LabelsLoaded, `SELECT 10 * COUNT(*) FROM sheets WHERE store = 'store-a' AND kiosk_id IS NOT NULL`)
	one(&want.Faults, `SELECT COUNT(*) FROM alerts WHERE subject = 'kiosk/kiosk-1'`)
	// And what the test did: four sales of five First-Class stamps, one
	// refunded at the counter, one jammed; two sheets loaded.
	if want.Sales != 3 || want.StampCount != 4 || want.Postage != 4*780 || want.Card != 4*780 || want.Refunds != 1 || want.Refunded != 780 ||
		want.Voids != 1 || want.LabelsLoaded != 20 || want.Faults != 1 {
		t.Fatalf("the ledger says %+v", want)
	}
	if sh.Store != "store-a" || sh.Sales != want.Sales || sh.StampCount != want.StampCount || sh.Postage != want.Postage || sh.Card != want.Card || sh.Account != 0 ||
		sh.Refunds != want.Refunds || sh.Refunded != want.Refunded || sh.Voids != want.Voids || sh.LabelsLoaded != want.LabelsLoaded ||
		sh.LabelsUsed != want.StampCount || sh.Faults != want.Faults || len(sh.Stamps) != 1 || sh.Stamps[0] != (views.ClassTotal{RateClass: "1100", Count: 4, Postage: 4 * 780}) ||
		len(sh.FaultList) != 1 || sh.FaultList[0].Kiosk != "kiosk-1" {
		t.Errorf("shift %+v\nledger %+v", sh, want)
	}
	// One kiosk of the store, and a window before the sales.
	if _, body := e.api("olga", "/api/v1/ops/shift"+q+"&kiosk=kiosk-1"); !strings.Contains(body, `"sales":3,`) {
		t.Errorf("kiosk-1's shift: %s", body)
	}
	before := "?" + url.Values{"store": {"store-a"}, "from": {from.Add(-time.Hour).Format(time.RFC3339Nano)}, "to": {from.Format(time.RFC3339Nano)}}.Encode()
	if _, body := e.api("olga", "/api/v1/ops/shift"+before); !strings.Contains(body, `"sales":0,`) || !strings.Contains(body, `"labels_loaded":0,`) {
		t.Errorf("the hour before: %s", body)
	}
	// Staff: their store's shift, and not another's.
	if st, body := e.api("sue", "/api/v1/ops/shift"+q); st != http.StatusOK || !strings.Contains(body, fmt.Sprintf(`"postage_mills":%d,`, want.Postage)) {
		t.Errorf("store-a's staff: %d %s", st, body)
	}
	if st, body := e.api("sam", "/api/v1/ops/shift"+q); st != http.StatusForbidden || !strings.Contains(body, `"forbidden"`) {
		t.Errorf("store-b's staff asking store-a's shift: %d %s", st, body)
	}

	// The page and its CSV.
	sue := e.browser()
	sue.do("POST", "/console/login", url.Values{"login": {"sue"}, "password": {"operator password 1"}})
	st, _, page := sue.do("GET", "/console/shift"+q, nil)
	if st != http.StatusOK || !strings.Contains(page, `<tr data-figure="sales"><td>Sales</td><td class="num">3</td>`) || !strings.Contains(page, `data-mills="3120"`) {
		t.Errorf("/console/shift: %d\n%s", st, page)
	}
	st, _, body = sue.do("GET", "/console/shift.csv"+q, nil)
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if st != http.StatusOK || err != nil {
		t.Fatalf("/console/shift.csv: %d %v %s", st, err, body)
	}
	figures := map[string][]string{}
	for _, r := range rows {
		figures[r[0]+"/"+r[1]] = r
	}
	if figures["postage/"][3] != "3120" || figures["stamps/1100"][2] != "4" || figures["refunds/"][3] != "780" || figures["voids/"][2] != "1" {
		t.Errorf("shift csv: %v", rows)
	}
}
