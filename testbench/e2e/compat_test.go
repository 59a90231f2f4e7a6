package e2e

import (
	"bytes"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/testbench/demo"
)

// previousKiosk is the commit the kiosk of the release before this one was
// built from. Kiosks are updated after their hub, over days, so this hub
// must serve that kiosk (protocol README, Compatibility).
const previousKiosk = "c0effe48118e194bb53bad34816f238aa9db2652"

// The previous release's kiosk, built from this repository's history, sells
// and prints a stamp through today's hub, and the ledger checks clean. The
// config this hub sends carries fields that kiosk does not know (settings,
// since schema v27), so it also shows a kiosk accepting them.
func TestPreviousKioskOnThisHub(t *testing.T) {
	src := t.TempDir()
	var archive, stderr bytes.Buffer
	git := exec.Command("git", "-C", "../..", "archive", previousKiosk)
	git.Stdout, git.Stderr = &archive, &stderr
	if err := git.Run(); err != nil {
		t.Fatalf("git archive %s (the previous kiosk's source; CI needs the repository's history): %v\n%s", previousKiosk, err, &stderr)
	}
	tar := exec.Command("tar", "-x", "-C", src)
	tar.Stdin = &archive
	if out, err := tar.CombinedOutput(); err != nil {
		t.Fatalf("unpack the previous kiosk: %v\n%s", err, out)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(binDir, "kiosk-previous"), "./appliance/cmd/kiosk")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the previous kiosk: %v\n%s", err, out)
	}

	d := startDemo(t, demo.Config{Sheets: 1, KioskBinary: "kiosk-previous"})
	next := d.Printer().Next()
	if status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")}); status != http.StatusOK || len(rc.Labels) != 1 {
		t.Fatalf("sale on the previous kiosk: %d %+v", status, rc)
	}
	select {
	case png := <-next:
		if len(readBoth(t, png)) == 0 {
			t.Fatal("the label's indicium did not read")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the previous kiosk printed no label")
	}
	ledgerOK(t, d)
}
