package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/paytermsim"
	"github.com/frank-postage/frank/testbench/scalesim"
	"github.com/frank-postage/frank/testbench/wait"
)

// The kiosk binary on its simulated devices (NCI scale, card terminal,
// scanner and GPIO panel on pseudo-terminals and a socket), through its
// local API as the touchscreen uses it.
func TestKioskDevices(t *testing.T) {
	ctx := context.Background()
	d, err := demo.Start(ctx, demo.Config{BinDir: binDir, Dir: t.TempDir(), Sheets: 1, Output: output(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(d.KioskURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %s", path, b)
		}
	}
	type weight struct {
		WeightMg int64  `json:"weight_mg"`
		Stable   bool   `json:"stable"`
		State    string `json:"state"`
	}
	waitWeight := func(want func(weight) bool) weight {
		t.Helper()
		var w weight
		wait.Until(t, 10*time.Second, "the weight", func() error {
			if get("/api/v1/weight", &w); !want(w) {
				return fmt.Errorf("stuck at %+v", w)
			}
			return nil
		})
		return w
	}
	type status struct {
		InService  bool     `json:"in_service"`
		Reasons    []string `json:"reasons"`
		LabelsLeft int      `json:"labels_left"`
	}
	waitStatus := func(want func(status) bool) status {
		t.Helper()
		var s status
		wait.Until(t, 10*time.Second, "the status", func() error {
			if get("/api/v1/status", &s); !want(s) {
				return fmt.Errorf("stuck at %+v", s)
			}
			return nil
		})
		return s
	}
	terminalSale := map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": map[string]string{"method": "terminal"}}

	t.Run("the scale's stable weight", func(t *testing.T) {
		// 20 g on a scale that reads to 0.1 oz (2,835 mg) shows 0.7 oz.
		if w := waitWeight(func(w weight) bool { return w.Stable }); w.WeightMg != 19_845 || w.State != "ok" {
			t.Fatalf("%+v", w)
		}
		d.Scale().SetFault(scalesim.OverCapacity)
		waitWeight(func(w weight) bool { return w.State == "over_capacity" && !w.Stable })
		d.Scale().SetFault(scalesim.OK)
		waitWeight(func(w weight) bool { return w.Stable })
	})
	t.Run("paid on the card terminal", func(t *testing.T) {
		before := d.Cards().Totals()
		status, rc := sell(t, d, terminalSale)
		if status != http.StatusOK || len(rc.Labels) != 1 || rc.Labels[0].Outcome != protocol.Printed {
			t.Fatalf("%d %+v", status, rc)
		}
		reqs := d.Terminal().Requests()
		if len(reqs) == 0 || reqs[len(reqs)-1].AmountMills != 780 {
			t.Fatalf("terminal saw %+v", reqs)
		}
		wait.For(t, 10*time.Second, "the capture, which follows the answer", func() bool { return d.Cards().Totals().Captured-before.Captured == 780 })
	})
	t.Run("the scale prices the sale, not the screen", func(t *testing.T) {
		before, printed := d.Cards().Totals(), len(d.Printer().Labels())
		defer d.Scale().SetWeight(20_000)
		// The screen showed 0.7 oz; a 1.8 oz letter lies on the scale now.
		d.Scale().SetWeight(50_000)
		status, rc := sell(t, d, terminalSale)
		if status == http.StatusOK || rc.Error == nil || rc.Error.Code != protocol.CodeInvalidRequest || !strings.Contains(rc.Error.Message, "the scale now reads 51029 mg") {
			t.Fatalf("sold at the screen's weight: %d %+v", status, rc)
		}
		if d.Cards().Totals() != before || len(d.Printer().Labels()) != printed {
			t.Fatal("a refused sale moved money or printed")
		}
		// Without a weight from the screen the scale's own reading prices it.
		status, rc = sell(t, d, map[string]any{"rate_class": "1100", "payment": map[string]string{"method": "terminal"}})
		if status != http.StatusOK || rc.Total != 1_070 {
			t.Fatalf("2 oz from the scale: %d %+v", status, rc)
		}
		// An empty scale sells nothing, and the card is never asked.
		d.Scale().SetWeight(0)
		asked := len(d.Terminal().Requests())
		if status, rc := sell(t, d, map[string]any{"rate_class": "1100", "payment": map[string]string{"method": "terminal"}}); status == http.StatusOK || rc.Error == nil || rc.Error.Code != protocol.CodeInvalidRequest {
			t.Fatalf("sold from an empty scale: %d %+v", status, rc)
		}
		if n := len(d.Terminal().Requests()); n != asked {
			t.Fatalf("the terminal was asked %d times for a sale refused on sight", n-asked)
		}
		d.Scale().SetWeight(20_000)
		// A scale that never settles sells nothing.
		d.Scale().SetSettle(time.Minute)
		d.Scale().SetMotion(true)
		defer d.Scale().SetSettle(500 * time.Millisecond)
		defer d.Scale().SetMotion(false)
		if status, rc := sell(t, d, terminalSale); status == http.StatusOK || rc.Error == nil || rc.Error.Code != protocol.CodeServiceUnavailable {
			t.Fatalf("sold on a moving scale: %d %+v", status, rc)
		}
	})
	t.Run("declined on the terminal", func(t *testing.T) {
		before, printed := d.Cards().Totals(), len(d.Printer().Labels())
		d.Terminal().SetNext(paytermsim.Decline)
		status, rc := sell(t, d, terminalSale)
		if status == http.StatusOK || rc.Error == nil || rc.Error.Code != protocol.CodePaymentDeclined {
			t.Fatalf("%d %+v", status, rc)
		}
		if d.Cards().Totals() != before || len(d.Printer().Labels()) != printed {
			t.Fatal("a declined card moved money or printed")
		}
	})
	t.Run("door open stops sales", func(t *testing.T) {
		d.GPIO().SetDoor(true)
		waitStatus(func(s status) bool { return !s.InService && slices.Contains(s.Reasons, "door_open") })
		if status, rc := sell(t, d, terminalSale); status == http.StatusOK || rc.Error == nil || rc.Error.Code != protocol.CodeServiceUnavailable {
			t.Fatalf("sold with the door open: %d %+v", status, rc)
		}
		d.GPIO().SetDoor(false)
		waitStatus(func(s status) bool { return s.InService })
	})
	t.Run("staff load a sheet by scanning it", func(t *testing.T) {
		out, err := d.Hub("stock", "issue", "--store", "demo-store", "--sheets", "1")
		if err != nil {
			t.Fatal(err)
		}
		sheet := strings.TrimSpace(out)
		var st status
		get("/api/v1/status", &st)
		// Outside staff mode a scanned sheet is ignored.
		d.Scanner().Scan(sheet)
		wait.Never(t, 300*time.Millisecond, "a sheet loaded outside staff mode", func() bool {
			var s status
			get("/api/v1/status", &s)
			return s.LabelsLeft != st.LabelsLeft
		})
		code, body, err := d.Post(ctx, d.KioskURL()+"/api/v1/staff/login", map[string]string{"pin": "0000"})
		if err != nil || code != http.StatusUnauthorized {
			t.Fatalf("wrong PIN: %d %s %v", code, body, err)
		}
		code, body, err = d.Post(ctx, d.KioskURL()+"/api/v1/staff/login", map[string]string{"pin": demo.StaffPIN})
		if err != nil || code != http.StatusOK || !strings.Contains(string(body), "token") {
			t.Fatalf("staff login: %d %s %v", code, body, err)
		}
		d.Scanner().Scan(strings.ToLower(sheet))
		waitStatus(func(s status) bool { return s.LabelsLeft == st.LabelsLeft+10 })
	})
}
