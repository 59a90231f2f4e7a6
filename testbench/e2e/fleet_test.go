package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/browser"
	"github.com/frank-postage/frank/testbench/fleet"
	"github.com/frank-postage/frank/testbench/wait"
)

// The fleet twin's soak: 1,000 real kiosks on simulated devices against a
// real hub for two minutes, with every fault injected. At the end every
// paid sale is printed and confirmed or voided and refunded, the ledger
// checks clean, every fault raised its alert and nothing else did, and
// the process's heap stays flat, and so does the hub's share of it.
func TestFleetSoak(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The run's log, kept as an artefact: the twin's own, and the hub's
	// and the kiosks' warnings and errors, to explain a failed check.
	logPath := filepath.Join(browser.ArtifactsDir(t), "fleet-soak.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	warn := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	f, err := fleet.Start(ctx, fleet.Config{Kiosks: 1000, SaleEvery: time.Minute, Faults: true, Dir: t.TempDir(),
		Operator: "fleet-ops", Password: operatorPassword,
		Log: slog.New(slog.NewTextHandler(logf, nil)), HubLog: warn.With("part", "hub"), KioskLog: warn})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	since := time.Now()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	type heaps struct {
		all   uint64
		parts heapParts
	}
	earlyHeap := make(chan heaps, 1)
	time.AfterFunc(40*time.Second, func() { earlyHeap <- heaps{heap(), measureHeap()} })
	ran := make(chan error, 1)
	go func() { ran <- f.Run(ctx, 2*time.Minute) }()
	watchFleetLive(t, f)
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	late, lateParts := heap(), measureHeap()
	e := <-earlyHeap // the run took two minutes
	early, earlyParts := e.all, e.parts
	sctx, scancel := context.WithTimeout(ctx, 3*time.Minute)
	defer scancel()
	if err := f.Settle(sctx); err != nil {
		t.Fatal(err)
	}
	// The bad release's rollout halts within a round of the leading hub.
	var res *fleet.Result
	wait.Poll(time.Minute, func() error {
		if res, err = f.Check(ctx, since); err != nil {
			t.Fatal(err)
		}
		if !res.OK() {
			return fmt.Errorf("not yet") // the checks below say what is wrong
		}
		return nil
	})
	t.Logf("sales %d (printed %d, refused %d, failed %d, refunded %d); payments %d: %d captured, %d voided; alerts %v",
		f.Stats.Sales.Load(), f.Stats.Printed.Load(), f.Stats.Refused.Load(), f.Stats.Failed.Load(), f.Stats.Refunds.Load(),
		res.Payments, res.Captured, res.Voided, res.Alerts)
	t.Logf("heap in use: %d MiB 40 s in, %d MiB at the end", early>>20, late>>20)
	t.Logf("heap by where it was allocated, 40 s in: %v; at the end: %v", earlyParts, lateParts)
	if !res.LedgerOK {
		t.Errorf("ledger: %v", res.LedgerIssues)
	}
	for _, v := range res.Violations {
		t.Errorf("money: %s (the run's log: %s)", v, logPath)
	}
	for _, a := range res.Unexplained {
		t.Errorf("an alert no fault explains: %s", a)
	}
	for _, a := range res.Missing {
		t.Errorf("a fault raised no alert: %s", a)
	}
	if len(f.Faults()) < 8 {
		t.Errorf("%d faults injected, want all 8 kinds: %+v", len(f.Faults()), f.Faults())
	}
	if f.Stats.Printed.Load() < 500 {
		t.Errorf("only %d stamps printed in 2 minutes by 1,000 kiosks", f.Stats.Printed.Load())
	}
	if early > 0 && late > early*3/2 {
		t.Errorf("heap grew from %d to %d MiB", early>>20, late>>20)
	}
	// The hub's own share, though it runs in the twins' process.
	if h0, h1 := earlyParts[partHub], lateParts[partHub]; h0 == 0 || lateParts[partKiosks] == 0 {
		t.Errorf("the heap profile names no hub or no kiosk allocation: %v", lateParts)
	} else if h1 > h0*3/2 {
		t.Errorf("the hub's heap grew from %d to %d MiB", h0>>20, h1>>20)
	}
}

// watchFleetLive is ops watching the twin fleet in the console while it
// runs: the fleet table lists every twin, and their states and sales
// today change from the live stream, without the page reloading.
func watchFleetLive(t *testing.T, f *fleet.Fleet) {
	t.Helper()
	h := f.Hub()
	p := openPage(t, h.URL(), "/console/login", h.TLSFingerprint())
	p.consoleLogin("fleet-ops")
	rows := `String(document.querySelectorAll("table#fleet tr[data-id]").length)`
	p.wait("every twin in the fleet table", rows, func(v string) bool { return v == "1000" }, 30*time.Second)
	p.wait("the live stream", `(document.getElementById("live") || {}).textContent || ""`,
		func(v string) bool { return strings.TrimSpace(v) == "live" }, 30*time.Second)
	if _, err := p.eval(`window.__marker = 1; "set"`); err != nil {
		t.Fatal(err)
	}
	online := `String([...document.querySelectorAll('table#fleet td[data-field="state"]')].filter(td => td.textContent.trim() == "online").length)`
	sales := `String([...document.querySelectorAll('table#fleet td[data-field="sales_today"]')].reduce((n, td) => n + (parseInt(td.textContent, 10) || 0), 0))`
	before, _ := strconv.Atoi(p.wait("sales today", sales, func(string) bool { return true }, time.Second))
	p.wait("most twins online", online, func(v string) bool { n, _ := strconv.Atoi(v); return n >= 900 }, 90*time.Second)
	after := p.wait("sales today rising", sales, func(v string) bool { n, _ := strconv.Atoi(v); return n >= before+50 }, 90*time.Second)
	if v, err := p.eval(`String(window.__marker)`); err != nil || v != "1" {
		t.Fatalf("the fleet page reloaded (marker %q, %v)", v, err)
	}
	p.p.Shot("fleet-twin-console")
	t.Logf("the console showed the twins live: sales today %d, then %s, without a reload", before, after)
	p.do("leave the console", chromedp.Navigate("about:blank")) // its live stream costs the soak's cores
}

// `make run FLEET=20` is `testbench run --fleet 20`: a hub with 20 twins
// whose console lists them all to the ops login it prints, and which on
// Ctrl-C settles the twins and checks the books clean.
func TestMakeRunFleet(t *testing.T) {
	cmd, lines := startTestbench(t, "run", "--dir", t.TempDir(), "--hub-https", "127.0.0.1:0", "--fleet", "20")
	defer cmd.Process.Kill()
	next := func(what string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("testbench run --fleet exited before %s", what)
			}
			return l
		case <-time.After(2 * time.Minute):
			t.Fatalf("testbench run --fleet: no %s in 2 minutes", what)
		}
		return ""
	}
	var console, password, pin string
	for running := false; !running; {
		l := next("the console's address")
		if rest, ok := strings.CutPrefix(l, "Fleet twin: 20 kiosks. Console "); ok {
			console, rest, _ = strings.Cut(rest, " ")
			_, password, _ = strings.Cut(rest, "password ")
			password = strings.TrimSuffix(password, ")")
		}
		if rest, ok := strings.CutPrefix(l, "Hub TLS fingerprint: "); ok {
			pin, _, _ = strings.Cut(rest, " ")
		}
		running = strings.HasPrefix(l, "Running;")
	}
	if console == "" || password == "" || pin == "" {
		t.Fatalf("console %q, password %q, fingerprint %q", console, password, pin)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: protocol.PinnedTLS(pin)}}
	resp, err := c.PostForm(console+"login", url.Values{"login": {"ops"}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `<table id="fleet"`) {
		t.Fatalf("console login as ops: %s\n%s", resp.Status, page)
	}
	if n := strings.Count(string(page), `<tr data-id="twin-`); n != 20 {
		t.Fatalf("the console lists %d twins, want 20", n)
	}
	wait.Until(t, time.Minute, "the twins online in the console", func() error {
		resp, err := c.Get(console)
		if err != nil {
			return err
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if n := strings.Count(string(page), `data-field="state" class="online"`); n < 18 {
			return fmt.Errorf("%d of 20 online", n)
		}
		return nil
	})
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("testbench run --fleet after Ctrl-C: %v\n%s", err, strings.Join(rest, "\n"))
	}
	out := strings.Join(rest, "\n")
	if !strings.HasPrefix(out, "sales ") || !strings.Contains(out, `"ledger_ok": true`) {
		t.Fatalf("testbench run --fleet's closing report:\n%s", out)
	}
	t.Log(rest[0])
}
