package update_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/update"
)

// A second update offered while the first release is on trial (ops began
// another rollout) must not make the unproven release the fallback, nor
// overwrite its trial: Install refuses until that trial ends, and then
// falls back to the release that passed.
func TestInstallRefusedWhileAnotherReleaseIsOnTrial(t *testing.T) {
	s := &update.Store{Dir: t.TempDir()}
	staged := func(v string) {
		t.Helper()
		p := s.BinaryOf(v)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	staged("2.0.0")
	// The packaged binary ("") is the last release known good.
	if err := s.Install("cmd-A", "2.0.0", time.Hour); err != nil {
		t.Fatal(err)
	}
	err := s.Install("cmd-B", "3.0.0", time.Hour)
	if !errors.Is(err, update.ErrOnTrial) {
		t.Fatalf("install during 2.0.0's trial: %v, want ErrOnTrial", err)
	}
	if tr := s.Trial(); s.Current() != "2.0.0" || tr == nil || tr.CommandID != "cmd-A" || tr.Previous != "" {
		t.Fatalf("after the refused install: current %q, trial %+v; want 2.0.0 still on its own trial, falling back to the packaged binary", s.Current(), tr)
	}
	// 2.0.0 passes its health check: now it is the fallback.
	if err := s.MarkHealthy("2.0.0"); err != nil {
		t.Fatal(err)
	}
	// Staged only now: the kiosk stages nothing while a release is on
	// trial, and a health check deletes a release staged and not installed.
	staged("3.0.0")
	if err := s.Install("cmd-B", "3.0.0", time.Hour); err != nil {
		t.Fatalf("install once the trial ended: %v", err)
	}
	if tr := s.Trial(); s.Current() != "3.0.0" || tr == nil || tr.Previous != "2.0.0" {
		t.Fatalf("after the install: current %q, trial %+v; want 3.0.0 falling back to 2.0.0", s.Current(), tr)
	}
}
