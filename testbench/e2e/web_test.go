package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/rates"
	"github.com/frank-postage/frank/hub/sheetpdf"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/browser"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/verify"
	"github.com/frank-postage/frank/testbench/wait"
)

// The hub's web pages, driven by headless Chromium against the real hub and
// kiosk binaries: the customer portal sells stamps for a label sheet as a
// PDF whose symbols read back and verify; the ops console follows a kiosk
// going and coming back live, acknowledges a fraud alert, and shows store
// staff their own stores only.

// operatorPassword is every test operator's password.
const operatorPassword = "correct-horse-battery"

// webSystem is a demo for a web test.
type webSystem struct {
	*demo.Demo
	t *testing.T
}

// startWeb starts a demo for a web test.
func startWeb(t *testing.T, sheets int) *webSystem {
	t.Helper()
	browser.Path(t) // fail at once, naming the package, rather than after the demo is up
	d, err := demo.Start(t.Context(), demo.Config{BinDir: binDir, Dir: t.TempDir(), Sheets: sheets, Output: output(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return &webSystem{Demo: d, t: t}
}

// hub runs a hub command against the demo's data.
func (w *webSystem) hub(env []string, args ...string) string {
	w.t.Helper()
	out, err := w.HubWithEnv(env, args...)
	if err != nil {
		w.t.Fatalf("hub %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// addOperator creates an operator with the CLI.
func (w *webSystem) addOperator(login, role, stores string) {
	w.t.Helper()
	args := []string{"operator", "add", login, "--role", role}
	if stores != "" {
		args = append(args, "--stores", stores)
	}
	out := w.hub([]string{"FRANK_OPERATOR_PASSWORD=" + operatorPassword}, args...)
	want := fmt.Sprintf("operator %s (%s) saved", login, role)
	if stores != "" {
		want = fmt.Sprintf("operator %s (%s of %s) saved", login, role, stores)
	}
	if !strings.Contains(out, want) {
		w.t.Fatalf("hub %s printed %q, want %q", strings.Join(args, " "), out, want)
	}
}

// needTool finds a command-line tool or fails naming its Debian package.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (make test does, as root)", name, pkg)
	}
	return p
}

// page is a browser tab on the hub.
type page struct {
	t    *testing.T
	p    *browser.Page
	base string
}

func openPage(t *testing.T, base, path, pin string) *page {
	t.Helper()
	p := browser.Open(t, base+path, 1280, 1024, browser.TrustKey(pin))
	t.Cleanup(func() {
		if t.Failed() {
			p.Shot("web-" + strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()))
		}
	})
	return &page{t: t, p: p, base: base}
}

// do runs browser actions, failing the test after 20 s.
func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	p.p.Do(what, steps...)
}

// eval evaluates JavaScript once; an error (the page is navigating, say)
// is returned, not fatal.
func (p *page) eval(js string) (string, error) {
	var v string
	var err error
	p.p.Do("eval", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		v, err = chromedp.Evaluate[string](js)(ctx, tg)
		return nil
	}))
	return v, err
}

// wait evaluates js until ok accepts its value.
func (p *page) wait(what, js string, ok func(string) bool, within time.Duration) string {
	p.t.Helper()
	var v string
	wait.Until(p.t, within, what, func() error {
		var err error
		if v, err = p.eval(js); err == nil && !ok(v) {
			err = fmt.Errorf("last %q", v)
		}
		return err
	})
	return v
}

// loadedPath is the page's path once its document is parsed, and "" while
// it loads: a new page's path shows as soon as its navigation commits,
// before its elements are there to read.
const loadedPath = `(document.readyState === "loading" ? "" : location.pathname)`

// waitPath waits until the page is at path (the query aside), parsed.
func (p *page) waitPath(path string) {
	p.t.Helper()
	p.wait("page "+path, loadedPath, func(v string) bool { return v == path }, 15*time.Second)
}

// text is the text of the first element matching a CSS selector, or "".
func (p *page) text(sel string) string {
	p.t.Helper()
	v, err := p.eval(fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ""`, sel))
	if err != nil {
		p.t.Fatalf("read %s: %v", sel, err)
	}
	return v
}

// open navigates to a path and returns the HTTP status of the document.
func (p *page) open(path string) int64 {
	p.t.Helper()
	var status int64
	p.do("open "+path, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		resp, err := chromedp.NavigateResponse(p.base+path)(ctx, tg)
		if err == nil && resp != nil {
			status = resp.Status
		}
		return err
	}))
	return status
}

// consoleLogin logs an operator in and waits for the fleet page.
func (p *page) consoleLogin(login string) {
	p.t.Helper()
	if got := p.open("/console/login"); got != http.StatusOK {
		p.t.Fatalf("/console/login: %d", got)
	}
	p.do("log in as "+login, chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS("#login"), login),
		chromedp.SendKeys(chromedp.CSS("#password"), operatorPassword),
		chromedp.Click(chromedp.CSS("#submit")))
	p.waitPath("/console/")
	p.wait("fleet table", `document.querySelector("table#fleet") ? "yes" : ""`, func(v string) bool { return v == "yes" }, 10*time.Second)
}

// consoleLogout logs out from any console page.
func (p *page) consoleLogout() {
	p.t.Helper()
	p.open("/console/")
	p.do("log out", chromedp.Click(chromedp.CSS("#logout")))
	p.waitPath("/console/login")
}

// fleetIDs lists the kiosks in the fleet table.
func (p *page) fleetIDs() string {
	p.t.Helper()
	v, err := p.eval(`[...document.querySelectorAll("table#fleet tr[data-id]")].map(r => r.dataset.id).sort().join(",")`)
	if err != nil {
		p.t.Fatal(err)
	}
	return v
}

// A customer registers, tops up by card, buys three First-Class stamps for
// a label sheet of the web store, and downloads them as a PDF: printed at
// 300 dpi, exactly the first three label cells hold a symbol, each reads
// with zxing-cpp, verifies against the hub's published keys, and names its
// label and the First-Class one-ounce price. The balance drops by that.
func TestPortalBuysSheetPDF(t *testing.T) {
	pdftoppm := needTool(t, "pdftoppm", "poppler-utils")
	needTool(t, verify.ZXingReader, "zxing-cpp-tools")
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	// The First-Class class and its one-ounce price, from the built-in table.
	book, err := rates.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	rt, err := book.Current(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var first protocol.RateClass
	for _, c := range rt.Classes {
		if c.Print == "FIRST-CLASS" {
			first = c
		}
	}
	if first.Class == "" {
		t.Fatalf("no FIRST-CLASS class in rate table %s", rt.Version)
	}
	price := first.FirstOunce

	w := startWeb(t, 1)
	sheet := strings.TrimSpace(w.hub(nil, "stock", "issue", "--store", "web", "--sheets", "1"))
	if _, err := protocol.ParseSheetSerial(sheet); err != nil {
		t.Fatalf("stock issue printed %q: %v", sheet, err)
	}
	keys, err := verify.FetchKeys(ctx, w.HubURL(), w.Client())
	if err != nil {
		t.Fatal(err)
	}

	p := openPage(t, w.HubURL(), "/portal/register", w.Fingerprint())
	const login, pw, zip = "pat-customer", "a long enough secret", "94544"
	p.do("register", chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS("#login"), login),
		chromedp.SendKeys(chromedp.CSS("#password"), pw),
		chromedp.SendKeys(chromedp.CSS("#password2"), pw),
		chromedp.SendKeys(chromedp.CSS("#zip"), zip),
		chromedp.Click(chromedp.CSS("#submit")))
	p.waitPath("/portal/fund")

	p.do("top up", chromedp.WaitVisible(chromedp.CSS("#amount")),
		chromedp.SendKeys(chromedp.CSS("#amount"), "20.00"),
		chromedp.SendKeys(chromedp.CSS("#card"), "4242 4242 4242 4242"),
		chromedp.SendKeys(chromedp.CSS("#exp"), "12/30"),
		chromedp.SendKeys(chromedp.CSS("#name"), "Pat Customer"),
		chromedp.Click(chromedp.CSS("#submit")))
	p.waitPath("/portal/")
	if got := p.text("#error"); got != "" {
		t.Fatalf("top-up refused: %s", got)
	}
	funded := protocol.Mills(20_000)
	if got := p.text("#balance"); !strings.Contains(got, funded.String()) {
		t.Fatalf("balance after the top-up reads %q, want %s", got, funded)
	}

	if got := p.open("/portal/"); got != http.StatusOK {
		t.Fatalf("/portal/: %d", got)
	}
	if v := p.text(fmt.Sprintf(`#class option[value=%q]`, first.Class)); v == "" {
		t.Fatalf("no option %s (First-Class) in #class", first.Class)
	}
	p.do("buy", chromedp.WaitVisible(chromedp.CSS("#buy")),
		chromedp.SetValue(chromedp.CSS("#class"), first.Class),
		chromedp.SetValue(chromedp.CSS("#weight"), "1"),
		chromedp.SendKeys(chromedp.CSS("#sheet"), sheet),
		chromedp.SetValue(chromedp.CSS("#count"), "3"),
		chromedp.Click(chromedp.CSS("#buy")))
	p.wait("the purchase page", loadedPath+` + " " + ((document.querySelector("#error") || {}).innerText || "")`,
		func(v string) bool {
			if strings.HasPrefix(v, "/portal/purchases/") {
				return true
			}
			if _, msg, _ := strings.Cut(v, " "); msg != "" {
				t.Fatalf("the purchase was refused: %s", msg)
			}
			return false
		}, 30*time.Second)

	var stamps []struct {
		Label   string `json:"label"`
		Class   string `json:"class"`
		Postage string `json:"postage"`
		State   string `json:"state"`
	}
	rows, err := p.eval(`JSON.stringify([...document.querySelectorAll("#stamps tr[data-label]")].map(r => ({
		label: r.dataset.label, class: r.cells[1].innerText.trim(), postage: r.cells[2].innerText.trim(), state: r.cells[3].innerText.trim()})))`)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(rows), &stamps); err != nil {
		t.Fatal(err)
	}
	if len(stamps) != 3 {
		t.Fatalf("the purchase page shows %d stamps, want 3: %s", len(stamps), rows)
	}
	for i, s := range stamps {
		if want := fmt.Sprintf("%s-%02d", sheet, i+1); s.Label != want || s.Class != first.Class || s.Postage != price.String() || s.State != "valid" {
			t.Errorf("stamp %d: %+v, want label %s, class %s, postage %s, valid", i+1, s, want, first.Class, price)
		}
	}

	// The session cookie is HttpOnly: the page itself fetches the PDF.
	var pdf struct {
		Status int    `json:"status"`
		Type   string `json:"type"`
		Body   string `json:"body"` // base64
	}
	p.do("download the PDF", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		v, err := chromedp.Evaluate[string](`(async () => {
			const a = document.querySelector("a#pdf");
			if (!a) return JSON.stringify({status: 0, type: "", body: ""});
			const r = await fetch(a.href);
			const b = new Uint8Array(await r.arrayBuffer());
			let s = "";
			for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
			return JSON.stringify({status: r.status, type: r.headers.get("Content-Type") || "", body: btoa(s)});
		})()`, chromedp.EvalAwaitPromise)(ctx, tg)
		if err != nil {
			return err
		}
		return json.Unmarshal([]byte(v), &pdf)
	}))
	if pdf.Status != http.StatusOK || pdf.Type != "application/pdf" {
		t.Fatalf("a#pdf: status %d, type %q", pdf.Status, pdf.Type)
	}
	body, err := base64.StdEncoding.DecodeString(pdf.Body)
	if err != nil || !bytes.HasPrefix(body, []byte("%PDF-")) {
		t.Fatalf("a#pdf is not a PDF (%d bytes, %v)", len(body), err)
	}
	dir := t.TempDir()
	pdfPath := filepath.Join(dir, "sheet.pdf")
	if err := os.WriteFile(pdfPath, body, 0o644); err != nil {
		t.Fatal(err)
	}
	const dpi = 300
	if out, err := exec.CommandContext(ctx, pdftoppm, "-r", fmt.Sprint(dpi), "-png", "-singlefile", pdfPath, filepath.Join(dir, "sheet")).CombinedOutput(); err != nil {
		t.Fatalf("pdftoppm: %v: %s", err, out)
	}
	f, err := os.Open(filepath.Join(dir, "sheet.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	sub, ok := img.(interface {
		SubImage(image.Rectangle) image.Image
	})
	if !ok {
		t.Fatalf("pdftoppm made a %T", img)
	}
	l := sheetpdf.Letter10
	if want := image.Rect(0, 0, px(l.PageWidth, dpi), px(l.PageHeight, dpi)); img.Bounds().Size() != want.Size() {
		t.Fatalf("page is %v pixels, want %v: not Letter at %d dpi", img.Bounds().Size(), want.Size(), dpi)
	}

	// Read every label cell of the sheet on its own.
	read := 0
	for pos := 1; pos <= protocol.LabelsPerSheet; pos++ {
		col, row := (pos-1)%l.Columns, (pos-1)/l.Columns
		x := l.Left + float64(col)*(l.LabelWidth+l.ColumnGap)
		y := l.Top + float64(row)*(l.LabelHeight+l.RowGap)
		cell := image.Rect(px(x, dpi), px(y, dpi), px(x+l.LabelWidth, dpi), px(y+l.LabelHeight, dpi)).Add(img.Bounds().Min)
		cellPath := filepath.Join(dir, fmt.Sprintf("cell-%02d.png", pos))
		cf, err := os.Create(cellPath)
		if err != nil {
			t.Fatal(err)
		}
		err = png.Encode(cf, sub.SubImage(cell))
		cf.Close()
		if err != nil {
			t.Fatal(err)
		}
		b, err := verify.ReadZXing(ctx, cellPath)
		if pos > 3 {
			if err == nil {
				t.Errorf("cell %d of a fresh sheet holds a symbol (%d bytes); only 1-3 were bought", pos, len(b))
			} else if !strings.Contains(err.Error(), "found no DataMatrix") {
				t.Errorf("cell %d: %v", pos, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("cell %d: %v", pos, err)
			continue
		}
		in, err := keys.Verify(b)
		if err != nil {
			t.Errorf("cell %d: %v", pos, err)
			continue
		}
		read++
		if want := fmt.Sprintf("%s-%02d", sheet, pos); in.Label.String() != want {
			t.Errorf("cell %d carries label %s, want %s", pos, in.Label, want)
		}
		if in.Postage != price {
			t.Errorf("cell %d carries postage %s, want %s (First-Class, 1 oz)", pos, in.Postage.Exact(), price.Exact())
		}
		if in.RateCategory != first.Class {
			t.Errorf("cell %d carries rate category %s, want %s", pos, in.RateCategory, first.Class)
		}
		if fmt.Sprintf("%05d", in.OriginZIP) != zip {
			t.Errorf("cell %d carries origin ZIP %05d, want the customer's %s", pos, in.OriginZIP, zip)
		}
	}
	if read != 3 {
		t.Fatalf("%d of the 3 stamps read back and verified", read)
	}

	// The balance paid for them.
	if got := p.open("/portal/"); got != http.StatusOK {
		t.Fatalf("/portal/: %d", got)
	}
	want := funded - 3*price
	if got := p.text("#balance"); !strings.Contains(got, want.String()) {
		t.Fatalf("balance after buying 3 stamps reads %q, want %s", got, want)
	}
}

// px converts millimetres to pixels at dpi.
func px(mm float64, dpi int) int { return int(mm*float64(dpi)/25.4 + 0.5) }

// Ops watch the fleet table while the kiosk dies (SIGKILL, so the broker
// delivers its last will) and comes back: the state cell turns offline,
// then online, from server-sent events, without the page reloading.
func TestConsoleSeesKioskGoAndReturn(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	w := startWeb(t, 1)
	w.addOperator("olive-ops", "ops", "")
	p := openPage(t, w.HubURL(), "/console/login", w.Fingerprint())
	p.consoleLogin("olive-ops")

	const kiosk = "demo-kiosk"
	state := fmt.Sprintf(`(document.querySelector('table#fleet tr[data-id=%q] td[data-field="state"]') || {}).textContent || ""`, kiosk)
	is := func(want string) func(string) bool {
		return func(v string) bool { return strings.TrimSpace(v) == want }
	}
	p.wait(kiosk+" online", state, is("online"), 30*time.Second)
	p.wait("the live stream", `(document.getElementById("live") || {}).textContent || ""`, is("live"), 10*time.Second)
	marker := `String(window.__marker)`
	if _, err := p.eval(`window.__marker = 1; "set"`); err != nil {
		t.Fatal(err)
	}

	if err := syscall.Kill(w.KioskPID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.KioskExited():
	case <-time.After(10 * time.Second):
		t.Fatal("the kiosk did not die")
	}
	p.wait(kiosk+" offline", state, is("offline"), 30*time.Second)
	if v, err := p.eval(marker); err != nil || v != "1" {
		t.Fatalf("the page reloaded while the kiosk went offline (marker %q, %v)", v, err)
	}

	if err := w.RestartKiosk(ctx); err != nil {
		t.Fatal(err)
	}
	p.wait(kiosk+" online again", state, is("online"), 30*time.Second)
	if v, err := p.eval(marker); err != nil || v != "1" {
		t.Fatalf("the page reloaded while the kiosk came back (marker %q, %v)", v, err)
	}
}

// A label sold at the kiosk is offered again: the hub refuses it and raises
// a fraud alert, which ops acknowledge in the console; it is then no longer
// open, for the CLI and for the operator API.
func TestConsoleFraudAlertAck(t *testing.T) {
	w := startWeb(t, 1)
	status, rc := sell(t, w.Demo, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")})
	if status != http.StatusOK || len(rc.Labels) != 1 || rc.Labels[0].Outcome != protocol.Printed {
		t.Fatalf("the first sale: %d %+v", status, rc)
	}
	used := rc.Labels[0].LabelSerial
	status, again := sell(t, w.Demo, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "labels": []string{used}, "payment": card("tok_approve")})
	if status == http.StatusOK || again.Error == nil || again.Error.Code != protocol.CodeLabelUsed {
		t.Fatalf("the reused label %s: %d %+v", used, status, again)
	}
	if again.RequestID != "" && again.RequestID == rc.RequestID {
		t.Fatalf("the second sale reused request id %s", rc.RequestID)
	}
	subject := "label/" + used
	openFraud := func() []alerts.Alert {
		t.Helper()
		var as []alerts.Alert
		if err := json.Unmarshal([]byte(w.hub(nil, "alerts", "list", "--open")), &as); err != nil {
			t.Fatal(err)
		}
		var out []alerts.Alert
		for _, a := range as {
			if a.Kind == alerts.Fraud && a.Subject == subject {
				out = append(out, a)
			}
		}
		return out
	}
	if got := openFraud(); len(got) != 1 {
		t.Fatalf("%d open fraud alerts for %s, want 1", len(got), subject)
	}

	const login = "oscar-ops"
	w.addOperator(login, "ops", "")
	token := strings.TrimSpace(w.hub(nil, "operator", "token", login, "--name", "e2e"))
	p := openPage(t, w.HubURL(), "/console/login", w.Fingerprint())
	p.consoleLogin(login)
	if got := p.open("/console/alerts"); got != http.StatusOK {
		t.Fatalf("/console/alerts: %d", got)
	}
	row := fmt.Sprintf(`tr[data-kind="fraud"][data-subject=%q]`, subject)
	p.do("acknowledge", chromedp.WaitVisible(chromedp.CSS(row+" button.ack")), chromedp.Click(chromedp.CSS(row+" button.ack")))
	p.wait("the acknowledgement", fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ""`, row),
		func(v string) bool { return strings.Contains(v, "acknowledged by "+login) }, 15*time.Second)
	if got := p.text("#flash"); !strings.Contains(got, "Alert acknowledged") {
		t.Errorf("flash after the acknowledgement: %q", got)
	}
	if n, err := p.eval(fmt.Sprintf(`String(document.querySelectorAll(%q).length)`, row+" button.ack")); err != nil || n != "0" {
		t.Errorf("the acknowledged row still offers %s buttons (%v)", n, err)
	}

	if got := openFraud(); len(got) != 0 {
		t.Fatalf("hub alerts list --open still lists %+v", got)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, w.HubURL()+"/api/v1/ops/alerts?open=1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := w.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/ops/alerts?open=1: %s %s", resp.Status, b)
	}
	var open []alerts.Alert
	if err := json.Unmarshal(b, &open); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	for _, a := range open {
		if a.Kind == alerts.Fraud && a.Subject == subject {
			t.Fatalf("the operator API still has the alert open: %+v", a)
		}
	}
}

// Store staff see their own stores only: the other store's staff see its
// kiosk and not the demo's, cannot open the demo kiosk's page, and may not
// see funds or alerts; the demo store's staff see the demo kiosk's page.
func TestStoreStaffSeesOnlyTheirStore(t *testing.T) {
	w := startWeb(t, 1)
	const demoKiosk, demoStore = "demo-kiosk", "demo-store"
	const otherKiosk, otherStore = "other-kiosk", "other-store"
	if out := w.hub(nil, "kiosk", "add", otherKiosk, "--store", otherStore); !strings.Contains(out, "provisioned") {
		t.Fatalf("kiosk add: %s", out)
	}
	w.addOperator("sam-demo", "staff", demoStore)
	w.addOperator("sue-other", "staff", otherStore)

	// One browser, so no subtests: it fails the test that opened it.
	p := openPage(t, w.HubURL(), "/console/login", w.Fingerprint())
	{
		p.consoleLogin("sue-other")
		if got := p.fleetIDs(); got != otherKiosk {
			t.Errorf("the fleet table lists %q, want only %s", got, otherKiosk)
		}
		if got := p.open("/console/kiosks/" + demoKiosk); got != http.StatusNotFound {
			t.Errorf("/console/kiosks/%s: %d, want 404", demoKiosk, got)
		}
		if body := p.text("body"); !strings.Contains(body, "no such kiosk") {
			t.Errorf("/console/kiosks/%s says %q", demoKiosk, body)
		}
		for _, path := range []string{"/console/funds", "/console/alerts"} {
			if got := p.open(path); got != http.StatusForbidden {
				t.Errorf("%s: %d, want 403", path, got)
			}
		}
		if got := p.open("/console/kiosks/" + otherKiosk); got != http.StatusOK {
			t.Errorf("/console/kiosks/%s: %d, want 200", otherKiosk, got)
		}
		p.consoleLogout()
	}
	{
		p.consoleLogin("sam-demo")
		if got := p.fleetIDs(); got != demoKiosk {
			t.Errorf("the fleet table lists %q, want only %s", got, demoKiosk)
		}
		if got := p.open("/console/kiosks/" + demoKiosk); got != http.StatusOK {
			t.Fatalf("/console/kiosks/%s: %d, want 200", demoKiosk, got)
		}
		if body := p.text("body"); !strings.Contains(body, "Recent telemetry") {
			t.Errorf("/console/kiosks/%s says %q", demoKiosk, body)
		}
		if got := p.open("/console/kiosks/" + otherKiosk); got != http.StatusNotFound {
			t.Errorf("/console/kiosks/%s: %d, want 404", otherKiosk, got)
		}
	}
}
