package hub_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"github.com/frank-postage/frank/hub/store"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/protocol"
)

// browser is an HTTP client with its own cookies, like one browser.
type browser struct {
	t    testing.TB
	base string
	c    *http.Client
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if strings.HasPrefix(e.h.URL(), "https://") {
		c.Transport = &http.Transport{TLSClientConfig: protocol.PinnedTLS(e.h.TLSFingerprint())}
	}
	return &browser{t: e.t, base: e.h.URL(), c: c}
}

// do sends a request and returns the status, Location and body.
func (b *browser) do(method, path string, form url.Values, hdr ...string) (int, string, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	loc := resp.Header.Get("Location")
	// A redirect's message travels in a cookie (session.Flash); it is
	// given here as a query, for the tests to read with the Location.
	for _, c := range resp.Cookies() {
		if msg, err := base64.RawURLEncoding.DecodeString(c.Value); (c.Name == "flash" || c.Name == "__Host-flash") && c.Value != "" && err == nil {
			loc += "?flash=" + url.QueryEscape(string(msg))
		}
	}
	return resp.StatusCode, loc, string(out)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
var requestField = regexp.MustCompile(`name="request_id" value="([^"]+)"`)
var revisionField = regexp.MustCompile(`name="revision" value="([^"]*)"`)

// field reads a hidden field from the page at path.
func (b *browser) field(path string, re *regexp.Regexp) string {
	b.t.Helper()
	_, _, page := b.do("GET", path, nil)
	m := re.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("no %s on %s:\n%s", re, path, page)
	}
	return m[1]
}

// post sends a form with the session's CSRF token read from page, and
// the revision it shows, if any and form has none: as a browser sends the
// form's hidden fields.
func (b *browser) post(page, path string, form url.Values) (int, string, string) {
	b.t.Helper()
	_, _, p := b.do("GET", page, nil)
	m := csrfField.FindStringSubmatch(p)
	if m == nil {
		b.t.Fatalf("no %s on %s:\n%s", csrfField, page, p)
	}
	form.Set("csrf", m[1])
	if m := revisionField.FindStringSubmatch(p); m != nil && !form.Has("revision") {
		form.Set("revision", m[1])
	}
	return b.do("POST", path, form)
}

// customer registers a portal customer and tops the account up.
func (e *env) customer(login string, dollars string) *browser {
	e.t.Helper()
	b := e.browser()
	st, loc, page := b.do("POST", "/portal/register", url.Values{"login": {login}, "password": {"correct horse battery"},
		"password2": {"correct horse battery"}, "zip": {"02134"}})
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/portal/fund") {
		e.t.Fatalf("register %s: %d %s %s", login, st, loc, page)
	}
	if dollars != "" {
		form := url.Values{"amount": {dollars}, "card": {"4242 4242 4242 4242"}, "exp": {"12/39"}, "name": {"A Customer"},
			"request_id": {b.field("/portal/fund", requestField)}}
		if st, loc, page := b.post("/portal/fund", "/portal/fund", form); st != http.StatusSeeOther || !strings.HasPrefix(loc, "/portal/?flash=Added") {
			e.t.Fatalf("fund: %d %s %s", st, loc, page)
		}
	}
	return b
}

// buy buys count First-Class stamps of 1 oz on sheet; it returns the
// purchase's path.
func (b *browser) buy(sheet string, count int) (int, string, string) {
	b.t.Helper()
	form := url.Values{"class": {"1100"}, "weight_oz": {"1"}, "sheet": {sheet}, "count": {fmt.Sprint(count)},
		"request_id": {b.field("/portal/", requestField)}}
	return b.post("/portal/", "/portal/buy", form)
}

// webSheet issues one sheet to the web store.
func (e *env) webSheet() string {
	e.t.Helper()
	ctx := context.Background()
	if err := e.h.Stock().AddStore(ctx, "web", "Web customers"); err != nil {
		e.t.Fatal(err)
	}
	s, err := e.h.Stock().Issue(ctx, "web", 1)
	if err != nil {
		e.t.Fatal(err)
	}
	return s[0].String()
}

func (e *env) operator(login, role string, stores ...string) *browser {
	e.t.Helper()
	if _, err := e.h.Operators().Add(context.Background(), login, "operator password 1", role, stores); err != nil {
		e.t.Fatal(err)
	}
	b := e.browser()
	if st, loc, page := b.do("POST", "/console/login", url.Values{"login": {login}, "password": {"operator password 1"}}); st != http.StatusSeeOther || loc != "/console/" {
		e.t.Fatalf("console login: %d %s %s", st, loc, page)
	}
	return b
}

func TestPortalBuyRefundAndHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sheet := e.webSheet()
	alice := e.customer("alice", "20.00")
	st, loc, page := alice.buy(sheet, 3)
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/portal/purchases/") {
		t.Fatalf("buy: %d %s %s", st, loc, page)
	}
	purchase := strings.SplitN(loc, "?", 2)[0]
	_, _, page = alice.do("GET", purchase, nil)
	for p := 1; p <= 3; p++ {
		if !strings.Contains(page, fmt.Sprintf(`data-label="%s-%02d"`, sheet, p)) {
			t.Fatalf("stamp %d missing from %s", p, page)
		}
	}
	if !strings.Contains(page, "alice · $17.66") { // 20.00 − 3 × 0.78
		t.Fatalf("balance not shown as $17.66:\n%s", page)
	}
	st, _, pdf := alice.do("GET", purchase+"/sheet.pdf", nil)
	if st != http.StatusOK || !strings.HasPrefix(pdf, "%PDF-") {
		t.Fatalf("pdf: %d %.40q", st, pdf)
	}

	// The sheet is alice's now: bob cannot print on it.
	bob := e.customer("bob", "5.00")
	if st, _, page := bob.buy(sheet, 1); st != http.StatusUnprocessableEntity || !strings.Contains(page, "label_not_assigned") {
		t.Fatalf("bob on alice's sheet: %d %s", st, page)
	}
	if st, _, page := alice.buy(sheet, 8); st != http.StatusUnprocessableEntity || !strings.Contains(page, "7 free labels") {
		t.Fatalf("more stamps than labels: %d %s", st, page)
	}

	// Refund one unused stamp, once.
	label2 := sheet + "-02"
	st, loc, _ = alice.post(purchase, purchase+"/refund", url.Values{"label": {label2}})
	if st != http.StatusSeeOther || !strings.Contains(loc, "Refunded") {
		t.Fatalf("refund: %d %s", st, loc)
	}
	if _, _, page = alice.do("GET", purchase, nil); !strings.Contains(page, "alice · $18.44") {
		t.Fatalf("balance after refund not $18.44:\n%s", page)
	}
	st, loc, _ = alice.post(purchase, purchase+"/refund", url.Values{"label": {label2}})
	if st != http.StatusSeeOther || !strings.Contains(loc, "remedy_not_allowed") {
		t.Fatalf("second refund: %d %s", st, loc)
	}
	// After the window, no refund. The session has expired by then too.
	e.clock.Set(time.Now().Add(29 * 24 * time.Hour))
	if st, loc, _ := alice.do("GET", purchase, nil); st != http.StatusSeeOther || !strings.HasPrefix(loc, "/portal/login?next=") {
		t.Fatalf("session after 29 days: %d %s", st, loc)
	}
	alice.do("POST", "/portal/login", url.Values{"login": {"alice"}, "password": {"correct horse battery"}})
	st, loc, _ = alice.post(purchase, purchase+"/refund", url.Values{"label": {sheet + "-03"}})
	if st != http.StatusSeeOther || !strings.Contains(loc, "refund+window") {
		t.Fatalf("refund after the window: %d %s", st, loc)
	}
	e.clock.Set(time.Now())
	e.check()
	// The refunded stamp is left off the PDF.
	if _, _, pdf2 := alice.do("GET", purchase+"/sheet.pdf", nil); len(pdf2) >= len(pdf) {
		t.Fatalf("pdf after refund is not smaller: %d >= %d", len(pdf2), len(pdf))
	}
}

func TestWebSecurity(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	anon := e.browser()
	t.Run("console and API need a login", func(t *testing.T) {
		for _, p := range []string{"/console/", "/console/funds", "/console/alerts", "/console/kiosks/kiosk-1", "/console/stock", "/console/activity", "/console/events"} {
			if st, loc, _ := anon.do("GET", p, nil); st != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/login") {
				t.Errorf("GET %s without login: %d %s", p, st, loc)
			}
		}
		if st, _, _ := anon.do("POST", "/console/alerts/1/ack", url.Values{}); st != http.StatusUnauthorized {
			t.Errorf("POST ack without login: %d", st)
		}
		for _, tok := range []string{"", "Bearer nonsense", "Basic b3BzOm9wcw=="} {
			for _, p := range []string{"/api/v1/ops/fleet", "/api/v1/ops/funds", "/api/v1/ops/alerts"} {
				if st, _, body := anon.do("GET", p, nil, "Authorization", tok); st != http.StatusUnauthorized || !strings.Contains(body, `"unauthorized"`) {
					t.Errorf("GET %s with %q: %d %s", p, tok, st, body)
				}
			}
		}
		if st, loc, _ := anon.do("GET", "/portal/purchases", nil); st != http.StatusSeeOther || !strings.HasPrefix(loc, "/portal/login") {
			t.Errorf("portal without login: %d %s", st, loc)
		}
	})

	ops := e.operator("olivia", "ops")
	t.Run("forms need their CSRF token and our origin", func(t *testing.T) {
		e.h.Alerts().Raise(context.Background(), "fraud", "label/test", "a test alert")
		open, _ := e.h.Alerts().List(context.Background(), true)
		if len(open) != 1 {
			t.Fatalf("open alerts: %v", open)
		}
		ack := fmt.Sprintf("/console/alerts/%d/ack", open[0].ID)
		if st, _, _ := ops.do("POST", ack, url.Values{}); st != http.StatusForbidden {
			t.Errorf("ack without a CSRF token: %d", st)
		}
		if st, _, _ := ops.do("POST", ack, url.Values{"csrf": {"forged"}}); st != http.StatusForbidden {
			t.Errorf("ack with a wrong CSRF token: %d", st)
		}
		tok := ops.field("/console/alerts", csrfField)
		if st, _, _ := ops.do("POST", ack, url.Values{"csrf": {tok}}, "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"); st != http.StatusForbidden {
			t.Errorf("cross-site ack with the token: %d", st)
		}
		if open, _ := e.h.Alerts().List(context.Background(), true); len(open) != 1 {
			t.Fatalf("alert acked by a refused post: %v", open)
		}
		if st, loc, _ := ops.do("POST", ack, url.Values{"csrf": {tok}}); st != http.StatusSeeOther || !strings.Contains(loc, "acknowledged") {
			t.Errorf("ack with the token: %d %s", st, loc)
		}
		alice := e.customer("alice", "")
		if st, _, _ := alice.do("POST", "/portal/buy", url.Values{"sheet": {"1966-F8CF"}}); st != http.StatusForbidden {
			t.Errorf("portal post without a CSRF token: %d", st)
		}
	})

	t.Run("a customer cannot read another's purchases", func(t *testing.T) {
		sheet := e.webSheet()
		carol := e.customer("carol", "10.00")
		_, loc, _ := carol.buy(sheet, 1)
		purchase := strings.SplitN(loc, "?", 2)[0]
		if st, _, _ := carol.do("GET", purchase, nil); st != http.StatusOK {
			t.Fatalf("own purchase: %d", st)
		}
		dave := e.customer("dave", "")
		for _, p := range []string{purchase, purchase + "/sheet.pdf"} {
			if st, _, _ := dave.do("GET", p, nil); st != http.StatusNotFound {
				t.Errorf("dave GET %s: %d", p, st)
			}
		}
		if _, _, page := dave.do("GET", "/portal/purchases", nil); strings.Contains(page, strings.TrimPrefix(purchase, "/portal/purchases/")) {
			t.Errorf("dave's history lists carol's purchase")
		}
		rid := strings.TrimPrefix(purchase, "/portal/purchases/")
		if st, loc, _ := dave.post("/portal/", purchase+"/refund", url.Values{"label": {sheet + "-01"}}); st != http.StatusSeeOther || !strings.Contains(loc, "remedy_not_allowed") {
			t.Errorf("dave refunds carol's stamp %s: %d %s", rid, st, loc)
		}
	})

	t.Run("store staff see their stores only", func(t *testing.T) {
		staff := e.operator("sam", "staff", "store-b")
		st, _, page := staff.do("GET", "/console/", nil)
		if st != http.StatusOK || !strings.Contains(page, `data-id="kiosk-2"`) || strings.Contains(page, `data-id="kiosk-1"`) {
			t.Errorf("staff fleet: %d %s", st, page)
		}
		if st, _, _ := staff.do("GET", "/console/kiosks/kiosk-1", nil); st != http.StatusNotFound {
			t.Errorf("staff opens another store's kiosk: %d", st)
		}
		if st, _, _ := staff.do("GET", "/console/kiosks/kiosk-2", nil); st != http.StatusOK {
			t.Errorf("staff opens own kiosk: %d", st)
		}
		for _, p := range []string{"/console/funds", "/console/alerts", "/console/activity"} {
			if st, _, _ := staff.do("GET", p, nil); st != http.StatusForbidden {
				t.Errorf("staff GET %s: %d", p, st)
			}
		}
		if st, _, page := staff.post("/console/stock", "/console/stock/issue", url.Values{"store": {"store-a"}, "sheets": {"1"}}); st != http.StatusUnprocessableEntity {
			t.Errorf("staff issues sheets to another store: %d %s", st, page)
		}
		tok, err := e.h.Operators().NewToken(context.Background(), "sam", "test", operators.ReadOnly, operators.DefaultTokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		if st, _, body := anon.do("GET", "/api/v1/ops/fleet", nil, "Authorization", "Bearer "+tok); st != http.StatusOK || strings.Contains(body, "kiosk-1") || !strings.Contains(body, "kiosk-2") {
			t.Errorf("staff API fleet: %d %s", st, body)
		}
		// The operator API answers in the one error shape, with protocol's
		// status for each code.
		apiRefused := func(path string, want protocol.Code) {
			t.Helper()
			st, _, body := anon.do("GET", path, nil, "Authorization", "Bearer "+tok)
			pe := protocol.DecodeHTTPError([]byte(body))
			if pe == nil || pe.Code != want || st != want.HTTPStatus() || !strings.HasPrefix(body, `{"error":{"code":`) {
				t.Errorf("staff API %s: %d %s, want %d %s", path, st, body, want.HTTPStatus(), want)
				return
			}
			met.Store(pe.Code, true)
		}
		apiRefused("/api/v1/ops/fleet/kiosk-1", protocol.CodeNotFound)
		apiRefused("/api/v1/ops/funds", protocol.CodeForbidden)
		if n, err := e.h.Operators().RevokeTokens(context.Background(), "sam"); err != nil || n != 1 {
			t.Fatalf("revoke: %d %v", n, err)
		}
		if st, _, _ := anon.do("GET", "/api/v1/ops/fleet", nil, "Authorization", "Bearer "+tok); st != http.StatusUnauthorized {
			t.Errorf("revoked token: %d", st)
		}
	})

	t.Run("logins are rate limited", func(t *testing.T) {
		// No proxy is trusted here, so a forged X-Forwarded-For changes nothing.
		b := e.browser()
		for i := range 5 {
			if st, _, _ := b.do("POST", "/console/login", url.Values{"login": {"olivia"}, "password": {"guess " + fmt.Sprint(i)}},
				"X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i)); st != http.StatusUnauthorized {
				t.Fatalf("wrong password %d: %d", i, st)
			}
		}
		if st, _, _ := b.do("POST", "/console/login", url.Values{"login": {"olivia"}, "password": {"operator password 1"}}); st != http.StatusTooManyRequests {
			t.Errorf("sixth try, right password: %d, want 429", st)
		}
	})

	t.Run("cookies", func(t *testing.T) {
		c := e.loginCookies("/portal/login", "carol", "correct horse battery")
		if len(c) == 0 || !c[len(c)-1].HttpOnly || c[len(c)-1].SameSite != http.SameSiteStrictMode || len(c[len(c)-1].Value) < 26 {
			t.Errorf("session cookie: %+v", c)
		}
	})
}

// loginCookies logs in at path and returns the cookies set, as sent.
func (e *env) loginCookies(path, login, password string) []*http.Cookie {
	e.t.Helper()
	req, _ := http.NewRequest("POST", "http://"+e.h.HTTPAddr+path, strings.NewReader(url.Values{"login": {login}, "password": {password}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Cookies()
}

func TestSecureCookies(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.SecureCookies = true })
	e.operator("olivia", "ops") // logs in: the jar keeps a Secure cookie only for https, so check the header instead
	c := e.loginCookies("/console/login", "olivia", "operator password 1")
	if len(c) == 0 || !c[len(c)-1].Secure || !strings.HasPrefix(c[len(c)-1].Name, "__Host-") || c[len(c)-1].Path != "/" {
		t.Fatalf("cookie behind TLS: %+v", c)
	}
}

// TestMetricsMatchLedger puts a load of kiosk and web sales, replays and
// refusals through the hub, then reads /metrics with the Prometheus text
// parser: the sales and stamps counters must equal what the ledger holds.
func TestMetricsMatchLedger(t *testing.T) {
	t.Parallel()
	// The burst below is 300 messages at once from one kiosk, past the
	// broker's budget and window and the hub's share of purchases for a
	// real one.
	e := newEnvWith(t, func(c *hub.Config) { c.KioskMsgRate, c.KioskPurchases, c.KioskInflight = -1, -1, -1 })
	k := e.kiosk("kiosk-1")
	const n = 18 // sheets 1966-F8CF and 1966-F8D0 hold 20 labels
	k2 := e.kiosk("kiosk-2")
	for i := range n {
		lbl := fmt.Sprintf("1966-F8CF-%02d", i+1)
		if i >= 10 {
			lbl = fmt.Sprintf("1966-F8D0-%02d", i-9)
		}
		raw := k.ask(purchase(fmt.Sprintf("load-%d", i), "kiosk-1", lbl, nil))
		if decode(t, raw).Status != protocol.ResultOK {
			t.Fatalf("sale %d: %s", i, raw)
		}
		if i%3 == 0 { // a resend: answered again, not sold again
			k.ask(purchase(fmt.Sprintf("load-%d", i), "kiosk-1", lbl, nil))
		}
		if i%4 == 0 { // a reused label: refused
			k.ask(purchase(fmt.Sprintf("reuse-%d", i), "kiosk-1", lbl, nil))
		}
	}
	k2.ask(purchase("k2-1", "kiosk-2", "2222-0001-01", nil))
	// Then a burst: 300 sales in flight at once on 30 more sheets.
	var burst []string
	for i := range 30 {
		burst = append(burst, fmt.Sprintf("3000-%04X", i))
	}
	e.loadStock("store-a", "kiosk-1", burst...)
	const burstN = 300
	for i := range burstN {
		k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicPurchase), 1, false,
			purchase(fmt.Sprintf("burst-%d", i), "kiosk-1", fmt.Sprintf("%s-%02d", burst[i/10], i%10+1), nil))
	}
	for i := range burstN {
		select {
		case raw := <-k.results:
			if decode(t, raw).Status != protocol.ResultOK {
				t.Fatalf("burst answer %d: %s", i, raw)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("burst: %d of %d answered", i, burstN)
		}
	}
	sheet := e.webSheet()
	web := e.customer("wendy", "10.00")
	if st, loc, page := web.buy(sheet, 4); st != http.StatusSeeOther {
		t.Fatalf("web buy: %d %s %s", st, loc, page)
	}

	for _, path := range []string{"/metrics", "/api/v1/psdm"} {
		if st, _, _ := e.browser().do("GET", path, nil); st != http.StatusUnauthorized {
			t.Fatalf("%s without a token: %d", path, st)
		}
	}
	if _, err := e.h.Operators().Add(context.Background(), "prometheus", "operator password 1", "ops", nil); err != nil {
		t.Fatal(err)
	}
	tok, err := e.h.Operators().NewToken(context.Background(), "prometheus", "scrape", operators.ReadOnly, operators.DefaultTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	if st, _, psdm := e.browser().do("GET", "/api/v1/psdm", nil, "Authorization", "Bearer "+tok); st != http.StatusOK || !strings.Contains(psdm, "mpsd") || !strings.Contains(psdm, "load_pct") {
		t.Fatalf("/api/v1/psdm with an ops token: %d %s", st, psdm)
	}
	st, _, body := e.browser().do("GET", "/metrics", nil, "Authorization", "Bearer "+tok)
	if st != http.StatusOK {
		t.Fatalf("/metrics: %d", st)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	sum := func(name string, match map[string]string) float64 {
		f, ok := families[name]
		if !ok {
			t.Fatalf("%s missing", name)
		}
		var v float64
	next:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := match[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				v += m.GetCounter().GetValue()
			case m.Gauge != nil:
				v += m.GetGauge().GetValue()
			case m.Histogram != nil:
				v += float64(m.GetHistogram().GetSampleCount())
			}
		}
		return v
	}
	db := e.openDB()
	var sales, stamps, postage int64
	db.QueryRow(`SELECT COUNT(*) FROM sales WHERE status = 'ok'`).Scan(&sales)
	db.QueryRow(`SELECT COUNT(*), SUM(postage) FROM indicia WHERE rate_class = '1100'`).Scan(&stamps, &postage)
	if got := sum("frank_sales_total", nil); got != float64(sales) || sales != n+burstN+2 {
		t.Errorf("frank_sales_total = %v, ledger has %d ok sales (want %d)", got, sales, n+burstN+2)
	}
	if got := sum("frank_stamps_total", map[string]string{"class": "1100"}); got != float64(stamps) {
		t.Errorf("frank_stamps_total{class=1100} = %v, ledger has %d", got, stamps)
	}
	if got := sum("frank_postage_mills_total", map[string]string{"class": "1100"}); got != float64(postage) {
		t.Errorf("frank_postage_mills_total{class=1100} = %v, ledger has %d", got, postage)
	}
	if got := sum("frank_rejections_total", map[string]string{"code": "label_used"}); got != 5 {
		t.Errorf("label_used rejections = %v, want 5", got)
	}
	// Every answer is timed: sales, resends and refusals over MQTT, and the web sale.
	if got := sum("frank_purchase_duration_seconds", map[string]string{"channel": "kiosk"}); got != n+6+5+1+burstN {
		t.Errorf("kiosk answers timed = %v, want %d", got, n+6+5+1+burstN)
	}
	if got := sum("frank_purchase_duration_seconds", map[string]string{"channel": "web"}); got != 1 {
		t.Errorf("web answers timed = %v, want 1", got)
	}
	// Each sale passed through the timed stages, and each kiosk answer was
	// published once.
	for _, st := range []string{"claim", "authorize", "commit"} {
		if got := sum("frank_purchase_stage_seconds", map[string]string{"stage": st}); got < float64(sales) {
			t.Errorf("stage %s timed %v times, for %d sales", st, got, sales)
		}
	}
	// On SQLite each card sale's precheck is read as its attempt stage.
	// On PostgreSQL the claim's read does that, and a kiosk's card is held
	// with no attempt recorded first: only the other sales (the web's, and
	// those paid before) have an attempt stage.
	attempts := sum("frank_purchase_stage_seconds", map[string]string{"stage": "attempt"})
	if strings.HasPrefix(e.cfg.DB, "postgres") {
		if attempts >= float64(sales)/2 {
			t.Errorf("stage attempt timed %v times for %d sales: kiosks' cards were not held first", attempts, sales)
		}
	} else if attempts < float64(sales) {
		t.Errorf("stage attempt timed %v times, for %d sales", attempts, sales)
	}
	if got := sum("frank_purchase_stage_seconds", map[string]string{"stage": "answer"}); got != n+6+5+1+burstN {
		t.Errorf("answers published timed = %v, want %d", got, n+6+5+1+burstN)
	}
	if got := sum("frank_alerts_open", map[string]string{"kind": "fraud"}); got != 5 {
		t.Errorf("open fraud alerts = %v, want 5", got)
	}
	if got := sum("frank_gpsd_funds_mills", nil); got <= 0 {
		t.Errorf("GPSD funds = %v", got)
	}
	if got := sum("frank_kiosks", map[string]string{"state": "online"}); got != 0 {
		// Bare MQTT clients send no status: the hub has not seen them online.
		t.Logf("kiosks online: %v", got)
	}
	e.check()
}

// The GPSD under the funds_low threshold raises an alert at the next tick,
// and ops see it on the alerts page.
func TestFundsLowAlert(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.FundsLow = 200_000_000 }) // $200,000; a purchase is $100,000
	k := e.kiosk("kiosk-1")
	if res := decode(t, k.ask(purchase("fl-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res)
	}
	e.h.Tick(context.Background())
	ops := e.operator("olivia", "ops")
	if _, _, page := ops.do("GET", "/console/alerts", nil); !strings.Contains(page, `data-kind="funds_low" data-subject="gpsd"`) {
		t.Fatalf("no funds_low alert on the alerts page:\n%s", page)
	}
	if _, _, page := ops.do("GET", "/console/funds", nil); !strings.Contains(page, "OK</strong>") || !strings.Contains(page, "50000001") {
		t.Fatalf("funds page without a passing ledger check or the MPSD:\n%s", page)
	}
}

// A kiosk trades its one-time code for its credentials once; a wrong,
// used or expired code is unauthorized, and guessing is slowed down.
func TestEnrollment(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.KioskBroker = "tcp://hub.example:1883" })
	ctx := context.Background()
	pw, err := e.h.Fleet().Add(ctx, "kiosk-9", "store-a")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.h.Fleet().SetStoreZIP(ctx, "store-a", "02134"); err != nil {
		t.Fatal(err)
	}
	code, err := e.h.Fleet().NewEnrollment(ctx, "kiosk-9", pw, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string) (int, []byte) {
		resp, err := http.Post("http://"+e.h.HTTPAddr+protocol.EnrollPath, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	refused := func(st int, b []byte, wantStatus int, want protocol.Code) {
		t.Helper()
		pe := protocol.DecodeHTTPError(b)
		if pe == nil {
			pe = &protocol.Error{}
		}
		if st != wantStatus || pe.Code != want || !strings.HasPrefix(string(b), `{"error":{"code":`) {
			t.Fatalf("got %d %s, want %d %s", st, b, wantStatus, want)
		}
		met.Store(pe.Code, true)
	}
	// Typed in lower case with spaces: still the code.
	typed := strings.ToLower(strings.ReplaceAll(code, "-", " "))
	st, b := post(`{"code": "` + typed + `"}`)
	if st != http.StatusOK {
		t.Fatalf("enroll: %d %s", st, b)
	}
	res, err := protocol.DecodeEnrollResult(b)
	if err != nil || res.KioskID != "kiosk-9" || res.Store != "store-a" || res.Password != pw || res.Broker != "tcp://hub.example:1883" || res.OriginZIP != "02134" {
		t.Fatalf("enrolled %+v %v", res, err)
	}
	if _, err := e.connect("kiosk-9", res.Password); err != nil {
		t.Fatalf("the enrolled password does not open the broker: %v", err)
	}
	st, b = post(`{"code": "` + code + `"}`)
	refused(st, b, http.StatusUnauthorized, protocol.CodeUnauthorized) // used
	st, b = post(`{"code": 7}`)
	refused(st, b, http.StatusBadRequest, protocol.CodeMalformed)
	st, b = post(`{"code": "short"}`)
	refused(st, b, http.StatusBadRequest, protocol.CodeInvalidRequest)

	expired, err := e.h.Fleet().NewEnrollment(ctx, "kiosk-9", pw, -time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st, b = post(`{"code": "` + expired + `"}`)
	refused(st, b, http.StatusUnauthorized, protocol.CodeUnauthorized)
	for range 3 {
		post(`{"code": "AAAAA-AAAAA-AAAAA-AAAAA"}`)
	}
	fresh, _ := e.h.Fleet().NewEnrollment(ctx, "kiosk-9", pw, time.Hour)
	st, b = post(`{"code": "` + fresh + `"}`)
	refused(st, b, http.StatusTooManyRequests, protocol.CodeUnauthorized) // five wrong codes from here: even a right one waits
	var stored int
	db := e.openDB()
	defer db.Close()
	q := `SELECT COUNT(*) FROM enrollments WHERE instr(CAST(sealed AS TEXT), ?) > 0`
	if db.Dialect == store.Postgres {
		q = `SELECT COUNT(*) FROM enrollments WHERE strpos(encode(sealed, 'escape'), $1) > 0`
	}
	db.QueryRow(q, pw).Scan(&stored)
	if stored != 0 {
		t.Fatal("the password is stored in the clear")
	}
}

// Behind a reverse proxy the hub trusts, one client's wrong passwords lock
// that client out, not everyone else behind the same proxy.
func TestLoginLimitsBehindProxy(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.TrustedProxies = []string{"127.0.0.1", "::1"} })
	e.operator("olivia", "ops")
	e.operator("oscar", "ops")
	mallory := e.browser()
	for i := range 5 {
		if st, _, _ := mallory.do("POST", "/console/login", url.Values{"login": {"olivia"}, "password": {"guess " + fmt.Sprint(i)}},
			"X-Forwarded-For", "203.0.113.66"); st != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d", i, st)
		}
	}
	if st, _, _ := mallory.do("POST", "/console/login", url.Values{"login": {"olivia"}, "password": {"operator password 1"}},
		"X-Forwarded-For", "203.0.113.66"); st != http.StatusTooManyRequests {
		t.Fatalf("mallory's sixth try: %d, want 429", st)
	}
	for _, who := range []struct{ login, from string }{{"olivia", "198.51.100.1"}, {"oscar", "198.51.100.2"}} {
		st, loc, _ := e.browser().do("POST", "/console/login", url.Values{"login": {who.login}, "password": {"operator password 1"}},
			"X-Forwarded-For", who.from)
		if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/") {
			t.Errorf("%s from %s, behind the same proxy: %d %s", who.login, who.from, st, loc)
		}
	}
	// The portal, on its own limits, is untouched by the console's.
	e.customer("pat", "")
	if st, _, _ := e.browser().do("POST", "/portal/login", url.Values{"login": {"pat"}, "password": {"correct horse battery"}},
		"X-Forwarded-For", "203.0.113.66"); st != http.StatusSeeOther {
		t.Fatalf("portal login from mallory's address: %d", st)
	}
}
