package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/frank-postage/frank/appliance/ui"
	"github.com/frank-postage/frank/testbench/browser"
	"github.com/frank-postage/frank/testbench/wait"
)

// fakeKiosk is the kiosk's JSON API as the app sees it, with state a test
// can change between steps.
type fakeKiosk struct {
	mu         sync.Mutex
	weightMG   int64
	stable     bool
	state      string
	inService  bool
	reasons    []string
	message    string // ops' word while they hold the kiosk
	language   string // ops' default screen language
	labelsLeft int
	sales      int
	nextSale   string // "ok", "jam" (last label fails) or an error code
	saleMsg    string // the error's message; default "Declined by issuer"
	saleDelay  time.Duration
	progress   map[string]any // /api/v1/sales/progress
	serial     int
	token      string
	loaded     []string
	calls      []string
	receipts   []string // the language of each receipt printed; "shift:" + it for shift reports
}

func newFakeKiosk() *fakeKiosk {
	f := &fakeKiosk{}
	f.reset()
	return f
}

func (f *fakeKiosk) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.weightMG, f.stable, f.state = 0, true, "ok"
	f.inService, f.reasons = true, []string{}
	f.labelsLeft, f.sales = 30, 0
	f.nextSale, f.saleDelay, f.saleMsg = "ok", 0, "Declined by issuer"
	f.progress = map[string]any{"step": "idle"}
	f.token, f.loaded, f.calls, f.serial, f.receipts = "", nil, nil, 0, nil
}

func (f *fakeKiosk) set(fn func(f *fakeKiosk)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeKiosk) called(call string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if c == call {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func (f *fakeKiosk) nextSerial() string {
	f.serial++
	return fmt.Sprintf("1966-F8CF-%02d", f.serial)
}

func (f *fakeKiosk) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	f.mu.Unlock()

	if strings.HasPrefix(r.URL.Path, "/api/v1/staff/") && r.URL.Path != "/api/v1/staff/login" {
		f.mu.Lock()
		ok := f.token != "" && r.Header.Get("Authorization") == "Bearer "+f.token
		f.mu.Unlock()
		if !ok {
			apiError(w, http.StatusUnauthorized, "unauthorized", "staff login needed")
			return
		}
	}
	var body struct {
		RateClass string   `json:"rate_class"`
		WeightMG  int64    `json:"weight_mg"`
		Quantity  int      `json:"quantity"`
		Label     string   `json:"label"`
		PIN       string   `json:"pin"`
		Sheets    []string `json:"sheets"`
		InService *bool    `json:"in_service"`
		Language  string   `json:"language"`
	}
	if r.Method == http.MethodPost && r.ContentLength > 0 {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			apiError(w, http.StatusBadRequest, "malformed_message", err.Error())
			return
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	switch p := r.URL.Path; {
	case p == "/api/v1/status":
		writeJSON(w, 200, map[string]any{"in_service": f.inService, "ready": f.inService, "reasons": f.reasons,
			"labels_left": f.labelsLeft, "paper": "ok", "printer": "ok", "scale": "ok", "last_error": "", "sales": f.sales, "message": f.message, "language": f.language})
	case p == "/api/v1/weight":
		writeJSON(w, 200, map[string]any{"weight_mg": f.weightMG, "stable": f.stable, "state": f.state})
	case p == "/api/v1/prices":
		first := map[string]any{"rate_class": "1100", "name": "First-Class Mail letter", "price_mills": 780}
		if mg, _ := strconv.ParseInt(r.URL.Query().Get("weight_mg"), 10, 64); mg > 99223 { // 3.5 oz
			first = map[string]any{"rate_class": "1100", "name": "First-Class Mail letter",
				"error": map[string]string{"code": "overweight", "message": "over 3.5 oz"}}
		}
		writeJSON(w, 200, []any{first,
			map[string]any{"rate_class": "1300", "name": "Priority Mail flat rate envelope", "price_mills": 10450}})
	case p == "/api/v1/sales/progress":
		writeJSON(w, 200, f.progress)
	case p == "/api/v1/sales" && r.Method == http.MethodPost:
		// Half the time the customer pays on the terminal, then each
		// label prints in its share of the rest.
		steps := []map[string]any{{"step": "paying"}}
		for i := range body.Quantity {
			steps = append(steps, map[string]any{"step": "printing", "label": i + 1, "of": body.Quantity})
		}
		for i, st := range steps {
			f.progress = st
			share := f.saleDelay / 2
			if i > 0 {
				share = f.saleDelay / 2 / time.Duration(body.Quantity)
			}
			f.mu.Unlock()
			time.Sleep(share) // pace: the fake hub takes its time over each step
			f.mu.Lock()
		}
		f.progress = map[string]any{"step": "idle"}
		if f.nextSale != "ok" && f.nextSale != "jam" {
			writeJSON(w, 422, map[string]any{"request_id": "req-1", "status": "rejected",
				"error": map[string]string{"code": f.nextSale, "message": f.saleMsg}})
			return
		}
		var labels []map[string]any
		total := 0
		for i := 0; i < body.Quantity; i++ {
			l := map[string]any{"label_serial": f.nextSerial(), "meter_number": "M-1", "amount_mills": 780, "outcome": "printed"}
			if f.nextSale == "jam" && i == body.Quantity-1 {
				l["outcome"], l["reason"] = "failed", "jam"
			} else {
				total += 780
			}
			labels = append(labels, l)
		}
		f.sales++
		writeJSON(w, 200, map[string]any{"request_id": "req-1", "status": "ok", "total_mills": total + 780*countFailed(labels), "labels": labels})
	case p == "/api/v1/sales/req-1/reprint":
		writeJSON(w, 200, map[string]any{"request_id": "req-1-r", "status": "ok", "total_mills": 0,
			"labels": []any{map[string]any{"label_serial": f.nextSerial(), "amount_mills": 780, "outcome": "printed"}}})
	case p == "/api/v1/sales/req-1/refund":
		writeJSON(w, 200, map[string]any{"request_id": "req-1", "status": "ok", "amount_mills": 780})
	case p == "/api/v1/sales/req-1/receipt":
		f.receipts = append(f.receipts, body.Language)
		writeJSON(w, 200, map[string]any{"ok": true})
	case p == "/api/v1/staff/shift", p == "/api/v1/staff/shift/print", p == "/api/v1/staff/shift/end":
		if r.Method == http.MethodPost {
			f.receipts = append(f.receipts, "shift:"+body.Language)
		}
		writeJSON(w, 200, map[string]any{"from": "2026-12-05T08:00:00Z", "to": "2026-12-05T16:00:00Z", "sales": 3, "stamps": 4,
			"postage_mills": 3120, "card_mills": 3120, "account_mills": 0, "refunds": 1, "refund_mills": 780, "voids": 1,
			"labels_loaded": 10, "labels_used": 5, "faults": 1,
			"classes": []any{map[string]any{"rate_class": "1100", "name": "Letter", "count": 4, "postage_mills": 3120}}})
	case p == "/api/v1/staff/login":
		if body.PIN != "1234" {
			apiError(w, http.StatusUnauthorized, "unauthorized", "wrong PIN")
			return
		}
		f.token = "tok-1"
		writeJSON(w, 200, map[string]string{"token": f.token})
	case p == "/api/v1/staff/counters":
		writeJSON(w, 200, map[string]any{"sales": f.sales, "labels_left": f.labelsLeft, "paper": "ok", "printer": "ok", "scale": "ok",
			"errors": []any{map[string]string{"at": "2026-11-29T07:00:00Z", "error": "jam"}}})
	case p == "/api/v1/staff/stock":
		f.loaded = append(f.loaded, body.Sheets...)
		f.labelsLeft += 10 * len(body.Sheets)
		writeJSON(w, 200, map[string]any{"status": "ok", "labels_left": f.labelsLeft})
	case p == "/api/v1/staff/service":
		if body.InService != nil {
			f.inService = *body.InService
		}
		writeJSON(w, 200, map[string]any{"status": "ok"})
	case p == "/api/v1/staff/zero", p == "/api/v1/staff/calibrate":
		writeJSON(w, 200, map[string]any{"status": "ok"})
	case p == "/api/v1/staff/logout":
		f.token = ""
		writeJSON(w, 200, map[string]any{"status": "ok"})
	default:
		apiError(w, http.StatusNotFound, "invalid_request", "no such endpoint "+p)
	}
}

// The fake charges for a failed label too, as the kiosk does until a remedy.
func countFailed(labels []map[string]any) int {
	n := 0
	for _, l := range labels {
		if l["outcome"] == "failed" {
			n++
		}
	}
	return n
}

type harness struct {
	t    *testing.T
	url  string
	fake *fakeKiosk
	shot string
	ctx  context.Context
}

func sel(test string) chromedp.CSS { return chromedp.CSS(`[data-test="` + test + `"]`) }

// run runs actions with a deadline, so a missing element fails the test in
// seconds instead of hanging it.
func (h *harness) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		h.t.Fatalf("%s: %v", what, err)
	}
}

// eval runs JavaScript in the page and returns its value.
func eval[T any](h *harness, what, js string) T {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		h.t.Fatalf("%s: %v", what, err)
	}
	return v
}

func (h *harness) tap(test string) {
	h.t.Helper()
	h.run("tap "+test, chromedp.WaitEnabled(sel(test)), chromedp.Click(sel(test)))
}

func (h *harness) waitScreen(name string) {
	h.t.Helper()
	h.run("wait for screen "+name, chromedp.WaitVisible(sel("screen-"+name)))
}

// waitText polls until the element's text contains want.
func (h *harness) waitText(test, want string) {
	h.t.Helper()
	js := fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, string(sel(test)))
	wait.Until(h.t, 10*time.Second, fmt.Sprintf("%s to show %q", test, want), func() error {
		got, err := chromedp.Run(h.ctx, chromedp.Evaluate[string](js))
		if err == nil && !strings.Contains(got, want) {
			err = fmt.Errorf("it shows %q", got)
		}
		return err
	})
}

// screenshot saves the viewport and checks the layout rules that hold on
// every screen: no scrolling, and every visible button at least 48 px.
func (h *harness) screenshot(name string) {
	h.t.Helper()
	problems := eval[[]string](h, "check layout", `(() => {
		const out = [];
		const d = document.documentElement;
		if (d.scrollHeight > innerHeight || d.scrollWidth > innerWidth) out.push("page scrolls: " + d.scrollWidth + "x" + d.scrollHeight);
		for (const s of document.querySelectorAll("section.screen:not([hidden])")) {
			if (s.scrollHeight > s.clientHeight + 1) out.push(s.id + " overflows: " + s.scrollHeight + " > " + s.clientHeight);
		}
		for (const b of document.querySelectorAll("button")) {
			const r = b.getBoundingClientRect();
			if (r.width === 0 && r.height === 0) continue;
			if (r.width < 48 || r.height < 48) out.push("small button " + (b.dataset.test || b.id) + ": " + r.width + "x" + r.height);
			if (r.bottom > innerHeight || r.right > innerWidth) out.push("off-screen button " + (b.dataset.test || b.id));
		}
		return out;
	})()`)
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		h.t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(problems) > 0 {
		h.t.Errorf("%s layout: %s", name, strings.Join(problems, "; "))
	}
	if err := os.WriteFile(filepath.Join(h.shot, name+".png"), png, 0o644); err != nil {
		h.t.Errorf("save screenshot: %v", err)
	}
}

func TestKioskUI(t *testing.T) {
	fake := newFakeKiosk()
	app, err := ui.New(ui.Config{StatusEvery: 200 * time.Millisecond, WeightEvery: 100 * time.Millisecond, ProgressEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", fake)
	// A subtest may hold the Spanish catalogue back; esAsked says the page
	// asked for it, so the English one (fetched first) is in.
	var esGate atomic.Pointer[chan struct{}]
	esAsked := make(chan struct{}, 1)
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g := esGate.Load(); g != nil && r.URL.Path == "/ui/i18n/es.json" {
			select {
			case esAsked <- struct{}{}:
			default:
			}
			<-*g
		}
		app.ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(mux) // listens on 127.0.0.1, as the kiosk does
	defer srv.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser.Path(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.WindowSize(800, 480),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	shots := browser.ArtifactsDir(t)

	// Each subtest gets a fresh tab in the one browser.
	start := func(t *testing.T, w, hgt int64, query string) *harness {
		fake.reset()
		ctx, cancel := chromedp.NewContext(browserCtx)
		t.Cleanup(cancel)
		// The first Do opens the tab and ties it to ctx, so it has no timeout.
		if err := chromedp.Do(ctx); err != nil {
			t.Fatalf("open tab: %v", err)
		}
		h := &harness{t: t, url: srv.URL, fake: fake, shot: shots, ctx: ctx}
		h.run("open page", chromedp.EmulateViewport(w, hgt), chromedp.Navigate(srv.URL+"/"+query))
		h.waitScreen("weigh")
		return h
	}
	weighAndChoose := func(h *harness, mg int64) {
		h.fake.set(func(f *fakeKiosk) { f.weightMG, f.stable = mg, true })
		h.tap("continue")
		h.waitScreen("services")
	}

	sale := func(t *testing.T, w, hgt int64, prefix string) {
		h := start(t, w, hgt, "")
		h.fake.set(func(f *fakeKiosk) { f.weightMG, f.stable = 20000, false })
		h.waitText("weight-state", "In motion")
		h.waitText("weight", "0.7 oz")
		if !eval[bool](h, "continue state", `document.querySelector('[data-test="continue"]').disabled`) {
			t.Error("Continue is enabled while the scale is in motion")
		}
		h.screenshot(prefix + "01-weigh-motion")
		h.fake.set(func(f *fakeKiosk) { f.stable = true; f.saleDelay = 1200 * time.Millisecond })
		h.waitText("weight-state", "Ready")
		h.screenshot(prefix + "02-weigh-stable")
		h.tap("continue")
		h.waitScreen("services")
		h.tap("service-1100")
		h.tap("qty-plus")
		h.waitText("qty", "2")
		h.waitText("total", "$1.56")
		h.screenshot(prefix + "03-services")
		h.tap("pay")
		h.waitScreen("paying")
		h.waitText("pay-step", "Pay on the card terminal")
		h.screenshot(prefix + "04-pay-on-terminal")
		h.waitText("pay-step", "Printing stamp 2 of 2")
		h.screenshot(prefix + "05-printing")
		h.waitScreen("receipt")
		h.waitText("outcome-1966-F8CF-01", "printed")
		h.waitText("outcome-1966-F8CF-02", "printed")
		h.waitText("receipt-total", "$1.56")
		h.screenshot(prefix + "06-receipt")
		h.tap("done")
		h.waitScreen("weigh")
	}

	t.Run("sale at 800x480", func(t *testing.T) { sale(t, 800, 480, "") })
	t.Run("sale at 1280x800", func(t *testing.T) { sale(t, 1280, 800, "1280-") })

	t.Run("jam then free reprint", func(t *testing.T) {
		h := start(t, 800, 480, "")
		h.fake.set(func(f *fakeKiosk) { f.nextSale = "jam" })
		weighAndChoose(h, 20000)
		h.tap("service-1100")
		h.tap("qty-plus")
		h.tap("pay")
		h.waitScreen("receipt")
		h.waitText("outcome-1966-F8CF-01", "printed")
		h.waitText("outcome-1966-F8CF-02", "failed (jam)")
		h.screenshot("07-receipt-jam")
		h.tap("reprint-1966-F8CF-02")
		h.waitText("remedy-1966-F8CF-02", "reprinted as 1966-F8CF-03 printed")
		h.waitText("remedy-result", "Reprinted free")
		if !h.fake.called("POST /api/v1/sales/req-1/reprint") {
			t.Error("reprint endpoint not called")
		}
		h.screenshot("08-receipt-reprinted")
	})

	t.Run("declined card", func(t *testing.T) {
		h := start(t, 800, 480, "")
		h.fake.set(func(f *fakeKiosk) { f.nextSale = "payment_declined" })
		weighAndChoose(h, 20000)
		h.tap("service-1100")
		h.tap("pay")
		h.waitScreen("error")
		h.waitText("error-title", "Card declined")
		h.waitText("error-message", "No money was taken")
		h.screenshot("09-error-declined")
		h.tap("error-back")
		h.waitScreen("services")
	})

	t.Run("the weight changed before paying", func(t *testing.T) {
		h := start(t, 800, 480, "")
		h.fake.set(func(f *fakeKiosk) {
			f.nextSale, f.saleMsg = "invalid_request", "weight_mg: the scale now reads 51029 mg, which costs $1.07, not the 20000 mg shown; weigh again"
		})
		weighAndChoose(h, 20000)
		h.tap("service-1100")
		h.tap("pay")
		h.waitScreen("error")
		h.waitText("error-title", "Please weigh again")
		h.waitText("error-message", "No money was taken")
		h.screenshot("09b-error-weigh-again")
		h.tap("error-back")
		h.waitScreen("weigh")
	})

	t.Run("overweight service greyed out", func(t *testing.T) {
		h := start(t, 800, 480, "")
		weighAndChoose(h, 150000)
		if !eval[bool](h, "1100 disabled", `document.querySelector('[data-test="service-1100"]').disabled`) {
			t.Error("overweight service is selectable")
		}
		h.waitText("service-1100", "too heavy")
		h.waitText("service-1300", "$10.45")
		h.screenshot("10-services-overweight")
	})

	t.Run("out of service and back", func(t *testing.T) {
		h := start(t, 800, 480, "")
		h.fake.set(func(f *fakeKiosk) { f.inService, f.reasons = false, []string{"paper_out"} })
		h.waitScreen("oos")
		h.waitText("oos-reasons", "out of paper")
		h.screenshot("11-out-of-service")
		h.fake.set(func(f *fakeKiosk) { f.reasons = []string{"hub_offline", "certificate_expired"} })
		h.waitText("oos-reasons", "certificate expired")
		h.fake.set(func(f *fakeKiosk) { f.reasons, f.message = []string{"locked"}, "Call 555-0100" })
		h.waitText("oos-reasons", "locked")
		h.waitText("oos-message", "Call 555-0100")
		h.fake.set(func(f *fakeKiosk) { f.inService, f.reasons, f.message = true, []string{}, "" })
		h.waitScreen("weigh")
	})

	t.Run("idle timeout returns to start", func(t *testing.T) {
		h := start(t, 800, 480, "?idle=1")
		weighAndChoose(h, 20000)
		h.tap("service-1100")
		began := time.Now()
		h.waitScreen("weigh")
		if d := time.Since(began); d < 700*time.Millisecond {
			t.Errorf("went back to start after %v, want about 1 s", d)
		}
	})

	t.Run("staff login, stock, logout", func(t *testing.T) {
		h := start(t, 800, 480, "")
		h.tap("staff-open")
		h.waitScreen("pin")
		for _, d := range "1234" {
			h.tap("pin-" + string(d))
		}
		h.waitText("pin-display", "••••")
		h.screenshot("12-staff-pin")
		h.tap("pin-ok")
		h.waitScreen("staff")
		h.waitText("c-labels", "30")
		h.waitText("staff-errors", "jam")
		h.run("scan a sheet", chromedp.SendKeys(sel("stock-input"), "1966-f8cf\r"))
		h.waitText("staff-message", "Loaded sheet 1966-F8CF")
		h.waitText("c-labels", "40")
		h.fake.set(func(f *fakeKiosk) {
			if len(f.loaded) != 1 || f.loaded[0] != "1966-F8CF" {
				t.Errorf("loaded sheets %q, want [1966-F8CF]", f.loaded)
			}
		})
		h.screenshot("13-staff")
		h.tap("staff-logout")
		h.waitScreen("weigh")
		if !h.fake.called("POST /api/v1/staff/logout") {
			t.Error("logout endpoint not called")
		}
	})

	// keyTo presses Tab until the element has the focus, then Enter: all a
	// kiosk with a tactile keypad can do.
	keyTo := func(h *harness, test string) {
		h.t.Helper()
		for range 40 {
			if eval[string](h, "focus", `(document.activeElement && document.activeElement.dataset.test) || ""`) == test {
				h.run("press Enter on "+test, chromedp.KeyEvent(kb.Enter))
				return
			}
			h.run("press Tab", chromedp.KeyEvent(kb.Tab))
		}
		h.t.Fatalf("Tab never reached %s", test)
	}

	// A customer who asks for Spanish before its catalogue is in: the page
	// stays English and its button still offers Spanish (it said "English"
	// then, from the English catalogue, while English showed), and the
	// page turns Spanish once the catalogue comes.
	t.Run("the language chosen before its catalogue is in", func(t *testing.T) {
		gate := make(chan struct{})
		esGate.Store(&gate)
		defer func() {
			esGate.Store(nil)
			select {
			case <-gate:
			default:
				close(gate)
			}
		}()
		h := start(t, 800, 480, "")
		select {
		case <-esAsked:
		case <-time.After(10 * time.Second):
			t.Fatal("the page never asked for the Spanish catalogue")
		}
		// The click and the reading in one task of the page: what the
		// click's handler left.
		if got := eval[string](h, "tap lang", `(() => { document.getElementById("lang").click();
			return document.documentElement.lang + " " + document.getElementById("lang").textContent; })()`); got != "en Español" {
			t.Errorf("after the tap, before the catalogue: page language and button %q, want \"en Español\"", got)
		}
		close(gate)
		h.waitText("lang", "English")
		if got := eval[string](h, "lang", `document.documentElement.lang`); got != "es" {
			t.Errorf("page language %q once the catalogue is in, want es", got)
		}
		h.waitText("screen-weigh", "Ponga su carta en la báscula")
	})

	t.Run("a sale in Spanish with the keypad only", func(t *testing.T) {
		h := start(t, 800, 480, "")
		keyTo(h, "lang")
		h.waitText("lang", "English")
		if got := eval[string](h, "lang", `document.documentElement.lang`); got != "es" {
			t.Errorf("page language %q, want es", got)
		}
		h.waitText("screen-weigh", "Ponga su carta en la báscula")
		h.fake.set(func(f *fakeKiosk) { f.weightMG, f.stable = 20000, true })
		h.waitText("weight-state", "Lista")
		keyTo(h, "continue")
		h.waitScreen("services")
		h.waitText("services-weight", "para 0.7 oz")
		keyTo(h, "service-1100")
		keyTo(h, "qty-plus")
		h.waitText("qty", "2")
		keyTo(h, "pay")
		h.waitScreen("receipt")
		h.waitText("outcome-1966-F8CF-02", "impreso")
		keyTo(h, "print-receipt")
		h.waitText("remedy-result", "Su recibo está impreso")
		h.fake.set(func(f *fakeKiosk) {
			if len(f.receipts) != 1 || f.receipts[0] != "es" {
				t.Errorf("receipts printed %q, want one in es", f.receipts)
			}
		})
		h.screenshot("14-es-receipt")
		keyTo(h, "done")
		h.waitScreen("weigh")
		h.waitText("lang", "Español") // the next customer starts in the store's language
	})

	t.Run("the store's language comes from central config", func(t *testing.T) {
		h := start(t, 800, 480, "")
		h.fake.set(func(f *fakeKiosk) { f.language = "es" })
		h.waitText("screen-weigh", "Ponga su carta")
		h.tap("lang")
		h.waitText("screen-weigh", "Put your letter")
		h.fake.set(func(f *fakeKiosk) { f.language = "" })
	})

	t.Run("high contrast, large text", func(t *testing.T) {
		h := start(t, 800, 480, "")
		h.tap("contrast")
		h.waitText("contrast", "Normal view")
		if !eval[bool](h, "contrast mode", `document.body.classList.contains("hc") && document.querySelector('[data-test="contrast"]').getAttribute("aria-pressed") === "true"`) {
			t.Fatal("high contrast not on")
		}
		if px := eval[string](h, "font size", `getComputedStyle(document.body).fontSize`); px != "26px" {
			t.Errorf("text is %s in high contrast, want 26px", px)
		}
		h.screenshot("15-high-contrast-weigh")
		weighAndChoose(h, 20000)
		h.tap("service-1100")
		h.screenshot("16-high-contrast-services")
		h.tap("services-back")
		h.waitScreen("weigh")
		if eval[bool](h, "contrast mode", `document.body.classList.contains("hc")`) {
			t.Error("high contrast stayed on for the next customer")
		}
	})

	// A customer who long-presses or right-clicks gets no context menu
	// (Inspect, Save as, Print), drags nothing away and selects no text; a
	// keyboard's Ctrl+P, Ctrl+S, Ctrl+O, Ctrl+U go nowhere; the staff's
	// input still takes a paste.
	t.Run("no context menu, drag, selection or shortcuts", func(t *testing.T) {
		h := start(t, 800, 480, "")
		// A listener on window runs after the page's (on document) and
		// sees whether they took the default away.
		eval[bool](h, "watch events", `(() => {
			window.seen = [];
			for (const type of ["contextmenu", "keydown"]) {
				window.addEventListener(type, (ev) => { window.seen.push(type + (ev.key ? " " + ev.key : "") + " " + ev.defaultPrevented); });
			}
			return true;
		})()`)
		at := eval[[]float64](h, "title box", `(() => { const r = document.getElementById("weigh-title").getBoundingClientRect(); return [r.left + r.width / 4, r.top + r.height / 2]; })()`)
		h.run("right-click the title", chromedp.MouseClickXY(at[0], at[1], chromedp.ButtonRight))
		for _, k := range []string{"p", "s", "o", "u"} {
			h.run("press Ctrl+"+k, chromedp.KeyEvent(k, chromedp.KeyModifiers(chromedp.ModifierCtrl)))
		}
		want := []string{"contextmenu true", "keydown p true", "keydown s true", "keydown o true", "keydown u true"}
		var got []string
		wait.Until(t, 10*time.Second, "the page to see the right click and keys", func() error {
			got = eval[[]string](h, "events seen", `window.seen.filter((s) => !s.startsWith("keydown Control"))`)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				return fmt.Errorf("seen %q", got)
			}
			return nil
		})
		// What a long press, a drag or a selection fires: each cancelled
		// (dispatchEvent is false), but in an input.
		cancelled := eval[map[string]bool](h, "synthetic events", `(() => {
			const fire = (node, ev) => !node.dispatchEvent(ev);
			const title = document.getElementById("weigh-title"), button = document.getElementById("continue");
			const input = document.getElementById("stock-input");
			return {
				longPress: fire(title, new PointerEvent("contextmenu", { bubbles: true, cancelable: true, pointerType: "touch" })),
				drag: fire(button, new DragEvent("dragstart", { bubbles: true, cancelable: true })),
				selectText: fire(title, new Event("selectstart", { bubbles: true, cancelable: true })),
				selectInput: fire(input, new Event("selectstart", { bubbles: true, cancelable: true })),
				pasteInput: fire(input, new KeyboardEvent("keydown", { key: "v", ctrlKey: true, bubbles: true, cancelable: true })),
			};
		})()`)
		for what, want := range map[string]bool{"longPress": true, "drag": true, "selectText": true, "selectInput": false, "pasteInput": false} {
			if cancelled[what] != want {
				t.Errorf("%s cancelled: %v, want %v", what, cancelled[what], want)
			}
		}
	})

	t.Run("staff shift report", func(t *testing.T) {
		h := start(t, 800, 480, "")
		h.tap("staff-open")
		h.waitScreen("pin")
		h.run("type the PIN on a keypad", chromedp.KeyEvent("1234"))
		h.waitText("pin-display", "••••")
		h.tap("pin-ok")
		h.waitScreen("staff")
		h.tap("shift-open")
		h.waitScreen("shift")
		h.waitText("shift-sales", "3")
		h.waitText("shift-postage", "$3.12")
		h.waitText("shift-class-1100", "4 · $3.12")
		h.screenshot("17-shift-report")
		h.tap("shift-print")
		h.waitText("shift-message", "Shift report printed")
		h.tap("shift-end")
		h.waitText("shift-message", "Shift ended")
		h.fake.set(func(f *fakeKiosk) {
			if strings.Join(f.receipts, ",") != "shift:en,shift:en" {
				t.Errorf("printed %q, want two shift reports in en", f.receipts)
			}
		})
		h.tap("shift-back")
		h.waitScreen("staff")
	})

	// axe-core finds no serious or critical WCAG 2.2 AA violation on any
	// screen, in either language, normal or in high contrast.
	t.Run("accessibility of every screen", func(t *testing.T) {
		browser.NeedAxe(t)
		for _, mode := range []struct {
			name, lang string
			hc         bool
		}{{"en", "en", false}, {"es-hc", "es", true}} {
			h := start(t, 800, 480, "")
			p := browser.Attach(t, h.ctx, shots)
			if mode.lang == "es" {
				h.tap("lang")
				h.waitText("lang", "English")
			}
			if mode.hc {
				h.tap("contrast")
			}
			check := func(screen string) {
				t.Helper()
				h.waitScreen(screen)
				p.Accessible("axe-kiosk-" + mode.name + "-" + screen)
			}
			check("weigh")
			h.fake.set(func(f *fakeKiosk) { f.weightMG, f.stable, f.nextSale, f.saleDelay = 20000, true, "jam", 3*time.Second })
			h.tap("continue")
			h.tap("service-1100")
			h.tap("qty-plus")
			check("services")
			h.tap("pay")
			check("paying")
			check("receipt") // with a failed label's remedy buttons
			h.tap("done")
			h.fake.set(func(f *fakeKiosk) { f.nextSale, f.saleDelay = "payment_declined", 0 })
			h.tap("continue")
			h.tap("service-1100")
			h.tap("pay")
			check("error")
			h.tap("error-restart")
			h.fake.set(func(f *fakeKiosk) {
				f.inService, f.reasons, f.message = false, []string{"paper_out", "locked"}, "Call 555-0100"
			})
			check("oos")
			h.fake.set(func(f *fakeKiosk) { f.inService, f.reasons, f.message = true, []string{}, "" })
			h.waitScreen("weigh")
			h.tap("staff-open")
			check("pin")
			h.run("type the PIN", chromedp.KeyEvent("1234"))
			h.tap("pin-ok")
			check("staff")
			h.tap("shift-open")
			h.waitText("shift-sales", "3")
			check("shift")
		}
	})
}
