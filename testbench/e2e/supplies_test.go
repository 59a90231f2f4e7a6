package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/testbench/browser"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/printersim"
	"github.com/frank-postage/frank/testbench/wait"
)

// A kiosk's supplies, end to end: the simulated printer runs out of paper,
// the kiosk says so in its heartbeat, the hub opens paper_out and the
// store's staff see a refill prompt in the console; paper is loaded and the
// alert clears. Selling below two sheets' worth of labels opens labels_low,
// and loading a sheet clears it.
func TestRefillAlerts(t *testing.T) {
	browser.Path(t)
	d := startDemo(t, demo.Config{Sheets: 2, HubArgs: []string{"--heartbeat", "1"}})
	w := &webSystem{Demo: d, t: t}
	w.addOperator("stan-demo", "staff", "demo-store")
	open := func(kind string) bool {
		var as []alerts.Alert
		if err := json.Unmarshal([]byte(w.hub(nil, "alerts", "list", "--open")), &as); err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.Kind == kind && a.Subject == "kiosk/demo-kiosk" {
				return true
			}
		}
		return false
	}
	// Twenty labels loaded: nothing to refill (the heartbeat before the
	// stock was loaded may have opened labels_low; it clears).
	wait.For(t, 30*time.Second, "no refill alerts", func() bool { return !open(alerts.LabelsLow) && !open(alerts.PaperOut) })

	d.Printer().SetFault(printersim.PaperOut)
	wait.For(t, 30*time.Second, "paper_out open", func() bool { return open(alerts.PaperOut) })
	p := openPage(t, d.HubURL(), "/console/login", d.Fingerprint())
	p.consoleLogin("stan-demo")
	if got := p.text("#refill"); !strings.Contains(got, "Load paper") || !strings.Contains(got, "demo-kiosk") {
		t.Fatalf("staff console refill prompt: %q", got)
	}
	d.Printer().SetFault(printersim.OK)
	wait.For(t, 30*time.Second, "paper_out cleared", func() bool { return !open(alerts.PaperOut) })
	p.open("/console/")
	if got := p.text("#refill"); got != "" {
		t.Fatalf("refill prompt after paper was loaded: %q", got)
	}

	if st, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")}); st != http.StatusOK || rc.Status != "ok" {
		t.Fatalf("sale: %d %+v", st, rc)
	}
	wait.For(t, 30*time.Second, "labels_low open at 19 labels", func() bool { return open(alerts.LabelsLow) })
	p.open("/console/")
	if got := p.text("#refill"); !strings.Contains(got, "Load label sheets") {
		t.Fatalf("staff console refill prompt: %q", got)
	}
	sheet := strings.TrimSpace(w.hub(nil, "stock", "issue", "--store", "demo-store", "--sheets", "1"))
	if st, body, err := d.LoadStock(t.Context(), []string{sheet}); err != nil || st != http.StatusOK {
		t.Fatalf("loading a sheet: %d %s %v", st, body, err)
	}
	wait.For(t, 30*time.Second, "labels_low cleared", func() bool { return !open(alerts.LabelsLow) })
}
