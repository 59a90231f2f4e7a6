package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/browser"
	"github.com/frank-postage/frank/testbench/wait"
)

// Accessibility of the hub's web pages, WCAG 2.2 AA as axe-core checks it:
// every portal page and every console page, logged out and logged in (a
// customer; an ops operator; store staff), in the states that show more
// than the bare page (a flash, an error, the short-balance remedy, a pay
// code, a password reset link, issued sheets, an alert acknowledged, a
// kiosk's diagnostics, a store's staff, search results, shift figures), at
// a desktop's width and a phone's. Pages are found by crawling each section's links from its start
// page, so a page someone adds to a nav, or links from a page, is checked
// without touching this test; the explicit lists below catch a page that
// went missing from the links. Zero serious or critical violations.

// TestAxeWebPages checks every portal and console page with axe-core.
func TestAxeWebPages(t *testing.T) {
	browser.NeedAxe(t) // at once, naming the fix, rather than after the demo is up
	w := startWeb(t, 1)

	// A sale at the kiosk, and its label offered again: sales for the
	// kiosk's page and the activity charts, and a fraud alert.
	status, rc := sell(t, w.Demo, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")})
	if status != http.StatusOK || len(rc.Labels) != 1 || rc.Labels[0].Outcome != protocol.Printed {
		t.Fatalf("the kiosk sale: %d %+v", status, rc)
	}
	if status, again := sell(t, w.Demo, map[string]any{"rate_class": "1100", "weight_mg": 20_000,
		"labels": []string{rc.Labels[0].LabelSerial}, "payment": card("tok_approve")}); status == http.StatusOK {
		t.Fatalf("the reused label %s was sold again: %+v", rc.Labels[0].LabelSerial, again)
	}
	sheet := strings.TrimSpace(w.hub(nil, "stock", "issue", "--store", "web", "--sheets", "1"))
	if _, err := protocol.ParseSheetSerial(sheet); err != nil {
		t.Fatalf("stock issue printed %q: %v", sheet, err)
	}
	w.addOperator("ada-ops", "ops", "")
	w.addOperator("sid-staff", "staff", "demo-store")

	p := openPage(t, w.HubURL(), "/portal/login", w.Fingerprint())
	click := func(sel string) {
		t.Helper()
		p.do("click "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
	}
	fill := func(sel, text string) {
		t.Helper()
		p.do("fill "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.SetValue(chromedp.CSS(sel), text))
	}
	shows := func(sel string) {
		t.Helper()
		p.wait(sel, fmt.Sprintf(`document.querySelector(%q) ? "yes" : ""`, sel), func(v string) bool { return v == "yes" }, 20*time.Second)
	}
	// crawl checks a section's pages at the desktop size the page opened
	// with, then at a phone's, where wide tables scroll.
	crawl := func(section, prefix, start string, want []string) {
		t.Helper()
		p.axeCrawl(section, prefix, start, want)
		p.do("phone size", chromedp.EmulateViewport(390, 844))
		p.axeCrawl(section+"-phone", prefix, start, want)
		p.do("desktop size", chromedp.EmulateViewport(1280, 1024))
	}
	pathPrefix := func(prefix string) {
		t.Helper()
		p.wait("a page under "+prefix, loadedPath, func(v string) bool { return strings.HasPrefix(v, prefix) }, 30*time.Second)
	}

	// The portal, logged out; then a wrong password.
	crawl("portal-out", "/portal/", "/portal/login", []string{"/portal/login", "/portal/register", "/portal/forgot"})
	p.open("/portal/login")
	fill("#login", "nobody")
	fill("#password", "not the password")
	click("#submit")
	shows("#error")
	p.p.Accessible("axe-portal-login-error")

	// A customer registers, tops up a dollar, and orders more than it pays for.
	p.open("/portal/register")
	fill("#login", "axel-customer")
	fill("#password", "a long enough secret")
	fill("#password2", "a long enough secret")
	fill("#zip", "94544")
	click("#submit")
	p.waitPath("/portal/fund")
	shows("#flash")
	p.p.Accessible("axe-portal-fund-welcome")
	topUp := func(amount string) {
		t.Helper()
		if amount != "" {
			fill("#amount", amount)
		}
		fill("#card", "4242 4242 4242 4242")
		fill("#exp", "12/30")
		fill("#name", "Axel Customer")
		click("#submit")
	}
	topUp("1.00")
	p.waitPath("/portal/")
	shows("#flash")
	p.p.Accessible("axe-portal-home-flash")
	order := func() {
		t.Helper()
		fill("#sheet", sheet)
		fill("#count", "3")
		click("#buy")
		shows("#remedy")
	}
	order()
	p.p.Accessible("axe-portal-home-remedy")
	if v, _ := p.eval(`document.querySelector("#buy-fits") ? "yes" : ""`); v == "yes" {
		click("#buy-fits")
		pathPrefix("/portal/purchases/")
		p.p.Accessible("axe-portal-purchase-bought")
		p.open("/portal/")
		order()
	}
	click("#topup-keep")
	shows("#kept-order")
	p.p.Accessible("axe-portal-fund-order")
	topUp("")
	pathPrefix("/portal/purchases/")
	shows("#stamps button")
	click("#stamps button")
	p.wait("the refund's flash", `(document.querySelector("#flash") || {}).innerText || ""`,
		func(v string) bool { return strings.Contains(v, "Refunded") }, 20*time.Second)
	p.p.Accessible("axe-portal-purchase-refunded")
	p.open("/portal/paycode")
	click("#make")
	shows("#code")
	p.p.Accessible("axe-portal-paycode-made")
	p.open("/portal/password")
	fill("#current-password", "not the password")
	fill("#new-password", "another long secret")
	fill("#new-password2", "another long secret")
	click("#submit")
	shows("#error")
	p.p.Accessible("axe-portal-password-error")
	crawl("portal", "/portal/", "/portal/", []string{"/portal/", "/portal/fund", "/portal/purchases", "/portal/purchases/*",
		"/portal/paycode", "/portal/password"})
	p.open("/portal/")
	click("#logout")
	p.waitPath("/portal/login")

	// A forgotten password: the reset link (shown, in the demo), its page,
	// and a link that is no good.
	p.open("/portal/forgot")
	fill("#login", "axel-customer")
	click("#submit")
	shows("#reset-link")
	p.p.Accessible("axe-portal-forgot-asked")
	click("#reset-link")
	p.waitPath("/portal/reset")
	shows("#new-password")
	p.p.Accessible("axe-portal-reset")
	p.open("/portal/reset?token=no-such-token")
	p.p.Accessible("axe-portal-reset-bad-link")

	// The console, logged out; then a wrong password.
	crawl("console-out", "/console/", "/console/login", []string{"/console/login"})
	p.open("/console/login")
	fill("#login", "nobody")
	fill("#password", "not the password")
	click("#submit")
	shows("#error")
	p.p.Accessible("axe-console-login-error")

	// Ops: diagnostics collected (the retire form open), sheets issued, the alert acknowledged, staff added.
	p.consoleLogin("ada-ops")
	p.open("/console/kiosks/demo-kiosk")
	click("#command-diagnostics")
	shows("#flash")
	wait.Until(t, 30*time.Second, "the kiosk's diagnostics on its page", func() error {
		p.open("/console/kiosks/demo-kiosk")
		if v, err := p.eval(`document.querySelector("#diagnostics-log") ? "yes" : ""`); err != nil || v != "yes" {
			return fmt.Errorf("not yet (%v)", err)
		}
		return nil
	})
	if _, err := p.eval(`document.querySelectorAll("details").forEach(d => d.open = true); "open"`); err != nil {
		t.Fatal(err)
	}
	p.p.Accessible("axe-console-kiosk-diagnostics")
	p.open("/console/stock")
	fill("#store", "web")
	fill("#sheets", "1")
	click("#issue")
	shows("#issued")
	p.p.Accessible("axe-console-stock-issued")
	p.open("/console/alerts")
	click("button.ack")
	shows("#flash")
	p.p.Accessible("axe-console-alerts-acked")
	p.open("/console/stores/demo-store")
	fill("#staff-name", "Robin")
	fill("#staff-pin", "135790")
	click("#add-staff")
	shows("#staff-list tr[data-name]")
	p.p.Accessible("axe-console-store-staff")
	p.open("/console/search?q=" + rc.Labels[0].LabelSerial)
	shows("section.sale")
	p.p.Accessible("axe-console-search-found")
	p.open("/console/search?q=0000-0000-01")
	shows("#found")
	p.p.Accessible("axe-console-search-none")
	p.open("/console/shift?store=demo-store")
	shows("#shift-figures")
	p.p.Accessible("axe-console-shift-figures")
	crawl("console", "/console/", "/console/", []string{"/console/", "/console/kiosks/*", "/console/stock", "/console/search",
		"/console/shift", "/console/exports", "/console/funds", "/console/alerts", "/console/activity", "/console/rollouts",
		"/console/settings", "/console/stores/*"})
	p.consoleLogout()

	// Store staff.
	p.consoleLogin("sid-staff")
	crawl("console-staff", "/console/", "/console/", []string{"/console/", "/console/kiosks/*", "/console/stock",
		"/console/search", "/console/shift", "/console/exports"})
}

// axeCrawlMax bounds one crawl, in case links multiply (say, a query per row).
const axeCrawlMax = 60

// axeLink is a link on a page.
type axeLink struct {
	Path string `json:"path"` // path and query
	Row  bool   `json:"row"`  // in a table or list: one of many alike
}

// axeKey is what makes two links the same page for the crawl: the path
// without its query, and for a link in a table or list (a row's kiosk,
// purchase or store) the path with its last segment as *, so one row of
// each kind is checked rather than every row.
func axeKey(l axeLink) string {
	p, _, _ := strings.Cut(l.Path, "?")
	if l.Row {
		return path.Dir(p) + "/*"
	}
	return p
}

// axeName is an artefact name for a page of a section.
func axeName(section, prefix, p string) string {
	p = strings.Trim(strings.NewReplacer("/", "-", "?", "-", "&", "-", "=", "-").Replace(strings.TrimPrefix(p, prefix)), "-")
	if p == "" {
		p = "root"
	}
	return "axe-" + section + "-" + p
}

// axeCrawl checks the pages of one section (paths under prefix) reachable
// by links from start, and fails the test for each serious or critical
// violation, for a linked page that does not load, and for each page of
// want (keys, as axeKey makes them) that it did not reach.
func (p *page) axeCrawl(section, prefix, start string, want []string) {
	p.t.Helper()
	seen := map[string]bool{}    // keys queued once
	checked := map[string]bool{} // keys of the pages checked
	queue := []axeLink{{Path: start}}
	var paths []string
	for len(queue) > 0 && len(paths) < axeCrawlMax {
		l := queue[0]
		queue = queue[1:]
		key := axeKey(l)
		if seen[key] {
			continue
		}
		seen[key] = true
		// Only HTML is a page: a PDF or a CSV export is a download.
		ct, err := p.awaitEval(fmt.Sprintf(`(async () => { const c = new AbortController();
			const r = await fetch(%q, {signal: c.signal}); const t = r.status + " " + (r.headers.get("Content-Type") || "");
			c.abort(); return t; })()`, l.Path))
		if err != nil {
			p.t.Errorf("%s: %s: %v", section, l.Path, err)
			continue
		}
		if !strings.Contains(ct, "text/html") {
			p.t.Logf("%s: %s is %s, not a page", section, l.Path, ct)
			continue
		}
		if got := p.open(l.Path); got != http.StatusOK {
			p.t.Errorf("%s: %s, linked, answers %d", section, l.Path, got)
			continue
		}
		at, err := p.eval(`location.pathname`)
		if err != nil {
			p.t.Fatalf("%s: %s: %v", section, l.Path, err)
		}
		if asked, _, _ := strings.Cut(l.Path, "?"); at != asked { // redirected: the page is where it went
			p.t.Logf("%s: %s went to %s", section, l.Path, at)
			if checked[at] {
				continue
			}
		} else {
			checked[key] = true
		}
		seen[at], checked[at] = true, true
		p.p.Accessible(axeName(section, prefix, l.Path))
		paths = append(paths, l.Path)
		v, err := p.eval(`JSON.stringify([...document.querySelectorAll("a[href]")].filter(a => a.origin === location.origin)
			.map(a => ({path: a.pathname + a.search, row: !!(a.closest("main") && a.closest("table, ul, ol"))})))`)
		if err != nil {
			p.t.Fatalf("%s: links of %s: %v", section, l.Path, err)
		}
		var links []axeLink
		if err := json.Unmarshal([]byte(v), &links); err != nil {
			p.t.Fatalf("%s: links of %s: %v", section, l.Path, err)
		}
		for _, n := range links {
			if strings.HasPrefix(n.Path, prefix) && !seen[axeKey(n)] {
				queue = append(queue, n)
			}
		}
	}
	if slices.ContainsFunc(queue, func(l axeLink) bool { return !seen[axeKey(l)] }) {
		p.t.Errorf("%s: stopped after %d pages with links left: raise axeCrawlMax or narrow axeKey", section, axeCrawlMax)
	}
	p.t.Logf("%s: checked %d pages: %s", section, len(paths), strings.Join(paths, " "))
	for _, k := range want {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(checked)), func(s string) bool {
			return s == k || strings.HasSuffix(k, "/*") && strings.HasPrefix(s, strings.TrimSuffix(k, "*")) && len(s) > len(k)-1
		}) {
			p.t.Errorf("%s: page %s not reached by any link from %s, or not a page", section, k, start)
		}
	}
}

// awaitEval evaluates an async expression and waits for its promise.
func (p *page) awaitEval(js string) (string, error) {
	var v string
	var err error
	p.p.Do("eval", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		v, err = chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise)(ctx, tg)
		return nil
	}))
	return v, err
}
