package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/verify"
)

// TestEmulatedArm64Kiosk runs the kiosk built for the Raspberry Pi
// (linux/arm64, no cgo) under qemu-aarch64-static against a hub running
// natively, with the testbench's peripherals: it enrolls with its one-time
// code, sells a stamp, and the printed label verifies.
func TestEmulatedArm64Kiosk(t *testing.T) {
	qemu := qemuAarch64(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	arm := filepath.Join(dir, "kiosk-arm64")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=emulated", "-o", arm, "../../appliance/cmd/kiosk")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the arm64 kiosk: %v\n%s", err, out)
	}
	if out, err := exec.Command(qemu, arm, "--version").Output(); err != nil || strings.TrimSpace(string(out)) != "kiosk emulated" {
		t.Fatalf("the arm64 kiosk under qemu: %q %v", out, err)
	}
	// The demo runs bin/hub natively and bin/kiosk, which is the arm64
	// binary under qemu; exec keeps the demo's signals going to it.
	if err := os.Symlink(filepath.Join(binDir, "hub"), filepath.Join(bin, "hub")); err != nil {
		t.Fatal(err)
	}
	wrapper := fmt.Sprintf("#!/bin/sh\nexec %s %s \"$@\"\n", qemu, arm)
	if err := os.WriteFile(filepath.Join(bin, "kiosk"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	d, err := demo.Start(ctx, demo.Config{BinDir: bin, Dir: filepath.Join(dir, "state"), KioskID: "pi-kiosk", ZIP: "02134", Sheets: 1, Output: output(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	t.Logf("emulated kiosk enrolled and ready in %v", time.Since(start).Round(time.Millisecond))
	// The emulated `kiosk enroll` kept the credentials for the kiosk's user only.
	if fi, err := os.Stat(filepath.Join(dir, "state", "kiosk", "enrollment.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("enrollment file: %v %v, want mode 0600", fi, err)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", d.KioskPID()))
	if err != nil || !strings.Contains(exe, "qemu-aarch64") {
		t.Fatalf("the kiosk process runs %q (%v), not qemu", exe, err)
	}
	next := d.Printer().Next()
	order := map[string]any{"rate_class": "1100", "weight_mg": 20_000,
		"payment": protocol.Payment{Method: protocol.PayCardToken, Token: "tok_approve"}}
	sold := time.Now()
	if status, body, err := d.Sell(ctx, order); err != nil || status != http.StatusOK {
		t.Fatalf("sale: %d %s %v", status, body, err)
	}
	var png string
	select {
	case png = <-next:
	case <-time.After(60 * time.Second):
		t.Fatal("no label printed")
	}
	t.Logf("sale to printed label under emulation: %v", time.Since(sold).Round(time.Millisecond))
	keys, err := verify.FetchKeys(ctx, d.HubURL(), d.Client())
	if err != nil {
		t.Fatal(err)
	}
	in, err := keys.Verify(readBoth(t, png))
	if err != nil {
		t.Fatal(err)
	}
	if in.Postage != 780 || in.OriginZIP != 2134 || in.Label.String() != d.Sheets()[0]+"-01" || in.Date != protocol.DateOf(time.Now()) {
		t.Fatalf("label from the emulated kiosk: %+v", in)
	}
}

// qemuAarch64 finds qemu-aarch64-static, installing it as root as make
// test would.
func qemuAarch64(t *testing.T) string {
	t.Helper()
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil && os.Geteuid() == 0 {
		install := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-user-static")
		install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := install.CombinedOutput(); err != nil {
			t.Logf("apt-get install qemu-user-static: %v\n%s", err, out)
		}
		qemu, err = exec.LookPath("qemu-aarch64-static")
	}
	if err != nil {
		t.Fatal("qemu-aarch64-static not found: install the Debian package qemu-user-static (make test does, as root)")
	}
	return qemu
}
