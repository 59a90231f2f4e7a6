package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hubCmd runs a command against the hub state in dir and returns its exit
// code, standard output and standard error.
func hubCmd(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = outW, errW
	var stdout, stderr bytes.Buffer
	done := make(chan struct{}, 2)
	go func() { io.Copy(&stdout, outR); done <- struct{}{} }()
	go func() { io.Copy(&stderr, errR); done <- struct{}{} }()
	code := run(append(args, "--data", dir))
	outW.Close()
	errW.Close()
	<-done
	<-done
	os.Stdout, os.Stderr = oldOut, oldErr
	return code, stdout.String(), stderr.String()
}

// Central settings and rollouts from the command line: set and show a
// kiosk's and a store's settings (a bad value refused), and widen and
// abort a rollout.
func TestSettingsAndRolloutCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hub")
	ok := func(args ...string) string {
		t.Helper()
		code, out, errOut := hubCmd(t, dir, args...)
		if code != 0 {
			t.Fatalf("hub %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	refused := func(want string, args ...string) {
		t.Helper()
		code, _, errOut := hubCmd(t, dir, args...)
		if code == 0 || !strings.Contains(errOut, want) {
			t.Fatalf("hub %s: exit %d, want a refusal naming %q\n%s", strings.Join(args, " "), code, want, errOut)
		}
	}

	ok("settings", "set", "--kiosk", "kiosk-1", "idle_timeout_s=45", "language=es")
	ok("settings", "set", "--store", "store-a", "remedy_window_s=600")
	if out := ok("settings", "show", "--kiosk", "kiosk-1"); !strings.Contains(out, `kiosk/kiosk-1: {"idle_timeout_s":45,"language":"es"}`) {
		t.Fatalf("settings show --kiosk: %q", out)
	}
	if out := ok("settings", "show", "--store", "store-a"); !strings.Contains(out, `store/store-a: {"remedy_window_s":600}`) {
		t.Fatalf("settings show --store: %q", out)
	}
	refused("idle_timeout_s", "settings", "set", "--store", "store-a", "idle_timeout_s=5")
	refused("want a whole number", "settings", "set", "idle_timeout_s=soon")

	keys, rel := filepath.Join(t.TempDir(), "keys"), filepath.Join(t.TempDir(), "r2")
	bin := filepath.Join(t.TempDir(), "kiosk")
	if err := os.WriteFile(bin, []byte("kiosk 2.0.0"), 0o755); err != nil {
		t.Fatal(err)
	}
	ok("release", "keygen", "--out", keys)
	ok("release", "sign", "--key", filepath.Join(keys, "release.key"), "--release", "2.0.0", "--out", rel, "arm64="+bin)
	ok("release", "publish", rel, "--key", filepath.Join(keys, "release.pub"))
	ok("rollout", "start", "2.0.0", "--stage", "kiosks=kiosk-1", "--health", "30s")
	if out := ok("rollout", "widen", "1"); !strings.Contains(out, "rollout 1: widen") {
		t.Fatalf("rollout widen: %q", out)
	}
	refused("whole fleet", "rollout", "widen", "1")
	if out := ok("rollout", "abort", "1"); !strings.Contains(out, "rollout 1: abort") {
		t.Fatalf("rollout abort: %q", out)
	}
	if out := ok("rollout", "list"); !strings.Contains(out, "1\t2.0.0\taborted\tstage 2/2") || !strings.Contains(out, "aborted by cli:") {
		t.Fatalf("rollout list after the abort: %q", out)
	}
	refused("not running", "rollout", "abort", "1")
	refused("not running", "rollout", "widen", "1")
}
