package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/wait"
)

// `hub kiosk retire` on a running kiosk (the real binaries, mqtts with
// the kiosk's certificate): the kiosk is cut off within 5 s and refused
// when it tries again.
func TestRetiredKioskCutOff(t *testing.T) {
	d := startDemo(t, demo.Config{Sheets: 1})
	ready := func() bool {
		resp, err := http.Get(d.KioskURL() + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	if !ready() {
		t.Fatal("the kiosk is not ready before the retire")
	}
	start := time.Now()
	out, err := d.Hub("kiosk", "retire", "demo-kiosk", "--lost", "--why", "stolen from the store")
	if err != nil || !strings.Contains(out, "retired") {
		t.Fatalf("hub kiosk retire: %v %s", err, out)
	}
	wait.For(t, 5*time.Second, "the kiosk cut off", func() bool { return !ready() })
	t.Logf("cut off %v after hub kiosk retire", time.Since(start).Round(time.Millisecond))
	// The kiosk retries every 2 s; none of it gets through.
	wait.Never(t, 6*time.Second, "the retired kiosk is connected again", ready)
	// The hub, for its part, sells nothing more to it.
	if out, err := d.Hub("alerts", "list"); err != nil || strings.Contains(out, "unconfirmed") {
		t.Fatalf("alerts: %v %s", err, out)
	}
	ledgerOK(t, d)
}
