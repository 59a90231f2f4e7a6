package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/frank-postage/frank/appliance/update"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/browser"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/wait"
)

// buildKiosk builds the kiosk as a release: version, and broken on purpose
// (it never connects) if broken.
func buildKiosk(t *testing.T, out, version string, broken bool, env ...string) {
	t.Helper()
	ldflags := "-X main.version=" + version
	args := []string{"build", "-trimpath", "-o", out}
	if broken {
		ldflags += " -X main.brokenRelease=yes"
		args = append(args, "-tags", "crashtest")
	}
	cmd := exec.Command("go", append(args, "-ldflags", ldflags, "../../appliance/cmd/kiosk")...)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building kiosk %s: %v\n%s", version, err, b)
	}
}

// Signed releases rolled out to a running kiosk: the Pi's arm64 kiosk
// under qemu-aarch64-static, against the real hub. v2 is installed by a
// rollout and sells; a deliberately broken v3 fails its health check, the
// kiosk rolls back to v2 by itself, and the rollout halts at its threshold
// (the console shows it); a release whose binary was tampered with at the
// hub is refused before install.
func TestSignedUpdateRollout(t *testing.T) {
	browser.Path(t)
	qemu := qemuAarch64(t)
	arm := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64"}
	dir := t.TempDir()
	hubBin := filepath.Join(binDir, "hub")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(hubBin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("hub %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	keys := filepath.Join(dir, "keys")
	run("release", "keygen", "--out", keys)
	// The packaged kiosk (v1) and three releases, for the Pi.
	buildKiosk(t, filepath.Join(dir, "kiosk-1"), "1.0.0", false, arm...)
	buildKiosk(t, filepath.Join(dir, "kiosk-2"), "2.0.0", false, arm...)
	buildKiosk(t, filepath.Join(dir, "kiosk-3"), "3.0.0", true, arm...)
	buildKiosk(t, filepath.Join(dir, "kiosk-4"), "4.0.0", false, arm...)
	for _, v := range []string{"2", "3", "4"} {
		run("release", "sign", "--key", filepath.Join(keys, "release.key"), "--release", v+".0.0", "--out", filepath.Join(dir, "r"+v),
			"arm64="+filepath.Join(dir, "kiosk-"+v))
	}
	// bin/kiosk runs the arm64 kiosk under qemu, as TestEmulatedArm64Kiosk
	// does; the launcher runs releases under it too (no binfmt_misc here).
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	if err := os.Symlink(hubBin, filepath.Join(bin, "hub")); err != nil {
		t.Fatal(err)
	}
	wrapper := fmt.Sprintf("#!/bin/sh\nexec %s %s \"$@\"\n", qemu, filepath.Join(dir, "kiosk-1"))
	if err := os.WriteFile(filepath.Join(bin, "kiosk"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d, err := demo.Start(ctx, demo.Config{BinDir: bin, Dir: filepath.Join(dir, "state"), Sheets: 1, Output: output(t),
		KioskArgs: []string{"--release-key", filepath.Join(keys, "release.pub")}, KioskEnv: []string{update.ExecPrefixEnv + "=" + qemu}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	w := &webSystem{Demo: d, t: t}
	hub := func(args ...string) string {
		t.Helper()
		out, err := d.Hub(args...)
		if err != nil {
			t.Fatalf("hub %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	// A release signed with another key is refused at publishing.
	other := filepath.Join(dir, "other")
	run("release", "keygen", "--out", other)
	if out, err := d.Hub("release", "publish", filepath.Join(dir, "r2"), "--key", filepath.Join(other, "release.pub")); err == nil {
		t.Fatalf("a release that does not verify with the release key was published: %s", out)
	}
	for _, v := range []string{"2", "3", "4"} {
		hub("release", "publish", filepath.Join(dir, "r"+v), "--key", filepath.Join(keys, "release.pub"))
	}
	rollout := func(id string) string {
		t.Helper()
		for _, line := range strings.Split(hub("rollout", "list"), "\n") {
			if strings.HasPrefix(line, id+"\t") {
				return line
			}
		}
		return ""
	}
	sellOK := func(what string) {
		t.Helper()
		status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")})
		if status != http.StatusOK || len(rc.Labels) != 1 || rc.Labels[0].Outcome != protocol.Printed {
			t.Fatalf("a sale %s: %d %+v", what, status, rc)
		}
	}
	restartWhenExited := func(what string) {
		t.Helper()
		select {
		case <-d.KioskExited():
		case <-time.After(60 * time.Second):
			t.Fatalf("the kiosk did not restart for %s", what)
		}
		// systemd's part: start the packaged binary (the launcher) again.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := d.RestartKiosk(ctx, update.ExecPrefixEnv+"="+qemu); err != nil {
			t.Fatal(err)
		}
	}

	// v1 (the packaged binary) to v2, on its canary stage.
	hub("rollout", "start", "2.0.0", "--stage", "kiosks=demo-kiosk", "--max-failures", "20", "--health", "60s")
	restartWhenExited("2.0.0")
	wait.For(t, 90*time.Second, "v2 healthy in its rollout", func() bool { return strings.Contains(rollout("1"), "healthy 1 failed 0 pending 0") })
	hub("rollout", "widen", "1")
	wait.For(t, 30*time.Second, "the rollout of v2 done", func() bool { return strings.Contains(rollout("1"), "\tdone\t") })
	sellOK("on v2")

	// v3 never becomes healthy: the launcher rolls back to v2, and the
	// rollout halts at its threshold.
	hub("rollout", "start", "3.0.0", "--stage", "kiosks=demo-kiosk", "--max-failures", "20", "--health", "20s")
	restartWhenExited("3.0.0")
	wait.For(t, 90*time.Second, "the rollout of v3 halted", func() bool { return strings.Contains(rollout("2"), "\thalted\t") })
	if line := rollout("2"); !strings.Contains(line, "failed 1") {
		t.Fatalf("rollout of v3: %s", line)
	}
	sellOK("after the rollback to v2")
	if out := hub("alerts", "list", "--open"); !strings.Contains(out, "rollout_halted") {
		t.Fatalf("no rollout_halted alert:\n%s", out)
	}
	// The console shows the halt, and the kiosk back on v2.
	w.addOperator("rhea-ops", "ops", "")
	p := openPage(t, d.HubURL(), "/console/login", d.Fingerprint())
	p.consoleLogin("rhea-ops")
	if got := p.open("/console/rollouts"); got != http.StatusOK {
		t.Fatalf("/console/rollouts: %d", got)
	}
	if row := p.text(`#rollouts tr[data-id="2"]`); !strings.Contains(row, "halted") || !strings.Contains(row, "threshold 20%") {
		t.Fatalf("the console's row for the v3 rollout: %q", row)
	}
	p.wait("the fleet on v2", `(document.getElementById("versions") || {}).innerText || ""`,
		func(v string) bool { return strings.Contains(v, "2.0.0") && !strings.Contains(v, "3.0.0") }, 60*time.Second)

	// v4's binary is swapped at the hub after publishing: the kiosk
	// refuses it before installing anything, and stays on v2.
	db, err := sql.Open("sqlite", filepath.Join(d.Dir(), "hub", "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE release_files SET body = ? WHERE version = '4.0.0'`, []byte("#!/bin/sh\necho pwned\n")); err != nil {
		t.Fatal(err)
	}
	db.Close()
	hub("rollout", "start", "4.0.0", "--stage", "kiosks=demo-kiosk", "--max-failures", "50", "--health", "60s")
	wait.For(t, 60*time.Second, "v4 refused", func() bool { return strings.Contains(rollout("3"), "failed 1") })
	select {
	case <-d.KioskExited():
		t.Fatal("the kiosk restarted for a tampered release")
	default:
	}
	sellOK("after refusing v4")
	ledgerOK(t, d)
}
