package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/testbench/browser"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/printersim"
	"github.com/frank-postage/frank/testbench/verify"
	"github.com/frank-postage/frank/testbench/wait"
)

// Headless Chromium at 800x480 drives the real kiosk's touchscreen on its
// simulated devices: a sale whose label reads back and verifies, a jam
// reprinted free, paper out refunded, and staff loading a sheet.
func TestTouchscreen(t *testing.T) {
	ctx := context.Background()
	d, err := demo.Start(ctx, demo.Config{BinDir: binDir, Dir: t.TempDir(), Sheets: 2, Output: output(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	keys, err := verify.FetchKeys(ctx, d.HubURL(), d.Client())
	if err != nil {
		t.Fatal(err)
	}
	p := browser.Open(t, d.KioskURL()+"/", 800, 480)
	buy := func(shot string, quantity int) {
		t.Helper()
		p.Screen("weigh", 20*time.Second)
		p.Text("weight-state", "Ready", 20*time.Second)
		if shot != "" {
			p.Shot(shot + "-weigh")
		}
		p.Tap("continue")
		p.Screen("services", 10*time.Second)
		p.Tap("service-1100")
		for range quantity - 1 {
			p.Tap("qty-plus")
		}
		if shot != "" {
			p.Shot(shot + "-services")
		}
		p.Tap("pay")
		p.Screen("receipt", 90*time.Second)
		if shot != "" {
			p.Shot(shot + "-receipt")
		}
	}
	// failedSerial finds the label the receipt offers a remedy for.
	failedSerial := func() string {
		t.Helper()
		serial := strings.TrimPrefix(p.Eval(
			`(document.querySelector('[data-test^="reprint-"]') || {dataset: {test: ""}}).dataset.test`), "reprint-")
		if serial == "" {
			t.Fatal("the receipt offers no remedy")
		}
		return serial
	}

	t.Run("a sale prints a stamp that verifies", func(t *testing.T) {
		before := len(d.Printer().Labels())
		buy("tb-01", 1)
		p.Text("receipt-labels", "printed", 5*time.Second)
		p.Text("receipt-total", "$0.78", 5*time.Second)
		labels := d.Printer().Labels()
		if len(labels) != before+1 {
			t.Fatalf("%d labels came out", len(labels)-before)
		}
		if _, err := keys.Verify(readBoth(t, labels[len(labels)-1])); err != nil {
			t.Fatal(err)
		}
		p.Tap("done")
	})
	t.Run("jam, then a free reprint", func(t *testing.T) {
		d.Printer().FailNext(printersim.Jam)
		captured := d.Cards().Totals().Captured
		buy("tb-02-jam", 1)
		p.Text("receipt-labels", "jam", 5*time.Second)
		serial := failedSerial()
		d.Printer().SetFault(printersim.OK) // staff clear the jam
		p.Tap("reprint-" + serial)
		p.Text("remedy-"+serial, "reprinted", 60*time.Second)
		p.Shot("tb-02-jam-reprinted")
		wait.Until(t, 10*time.Second, "one capture, which follows the answer", func() error {
			if got := d.Cards().Totals().Captured - captured; got != 780 {
				return fmt.Errorf("charged %d for one stamp and its reprint", got)
			}
			return nil
		})
		labels := d.Printer().Labels()
		if _, err := keys.Verify(readBoth(t, labels[len(labels)-1])); err != nil {
			t.Fatal(err)
		}
		p.Tap("done")
	})
	t.Run("paper out mid-sale, then a refund", func(t *testing.T) {
		d.Printer().FailAfter(1, printersim.PaperOut) // the first of two stamps prints
		before := d.Cards().Totals()
		buy("tb-03-paper", 2)
		p.Text("receipt-labels", "printed", 5*time.Second)
		p.Text("receipt-labels", "paper", 5*time.Second)
		serial := failedSerial()
		// The screen learns paper is out from the kiosk's status.
		wait.For(t, 10*time.Second, "the screen to know the kiosk is out of service", func() bool {
			return p.Eval(`document.getElementById("service-toggle").textContent`) == "Put back in service"
		})
		p.Shot("tb-03-paper-receipt")
		p.Tap("refund-" + serial)
		p.Text("remedy-"+serial, "refund", 60*time.Second)
		p.Shot("tb-03-paper-refunded")
		p.Tap("done")
		p.Screen("oos", 10*time.Second) // no sale without paper
		p.Text("oos-reasons", "paper", 5*time.Second)
		p.Shot("tb-03-paper-out-of-service")
		d.Printer().SetFault(printersim.OK) // staff load paper
		p.Screen("weigh", 20*time.Second)
		wait.Until(t, 10*time.Second, "the captures, which follow the answers", func() error {
			if after := d.Cards().Totals(); after.Captured-before.Captured != 1560 || after.Refunded-before.Refunded != 780 {
				return fmt.Errorf("captured %d, refunded %d", after.Captured-before.Captured, after.Refunded-before.Refunded)
			}
			return nil
		})
	})
	t.Run("staff load a sheet", func(t *testing.T) {
		out, err := d.Hub("stock", "issue", "--store", "demo-store", "--sheets", "1")
		if err != nil {
			t.Fatal(err)
		}
		sheet := strings.TrimSpace(out)
		p.Screen("weigh", 10*time.Second)
		p.Tap("staff-open")
		p.Screen("pin", 10*time.Second)
		for _, c := range demo.StaffPIN {
			p.Tap(fmt.Sprintf("pin-%c", c))
		}
		p.Tap("pin-ok")
		p.Screen("staff", 10*time.Second)
		var n int
		wait.Until(t, 10*time.Second, "a label count on the staff screen", func() error {
			_, err := fmt.Sscan(p.Text("c-labels", "", time.Second), &n)
			return err
		})
		p.Type("stock-input", sheet)
		p.Text("c-labels", fmt.Sprint(n+10), 20*time.Second)
		p.Shot("tb-04-staff")
		p.Tap("staff-logout")
		p.Screen("weigh", 10*time.Second)
	})
}
