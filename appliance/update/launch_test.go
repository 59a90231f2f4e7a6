package update_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/update"
	"github.com/frank-postage/frank/protocol"
)

// script is release version's binary: it says which release ran, or for
// hungVersion hangs without a health check.
func script(version string) []byte {
	if version == hungVersion {
		return []byte("#!/bin/sh\nexec sleep 60\n")
	}
	return []byte("#!/bin/sh\necho ran " + version + "\n")
}

// hungVersion is a release that hangs at its start.
const hungVersion = "2.0.9"

// scriptOffer signs a release of script(version) with priv.
func scriptOffer(priv ed25519.PrivateKey, version string, created time.Time) *protocol.ReleaseOffer {
	bin := script(version)
	sum := sha256.Sum256(bin)
	m, _ := json.Marshal(protocol.ReleaseManifest{Version: version, Created: created,
		Artifacts: []protocol.Artifact{{Arch: "amd64", Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
	return &protocol.ReleaseOffer{Manifest: m, Signature: ed25519.Sign(priv, m), Path: "/r/" + version}
}

// TestLaunchHelper is the launcher, in a process of its own (Launch
// replaces its process with the release): it prints what ran.
func TestLaunchHelper(t *testing.T) {
	dir := os.Getenv("FRANK_TEST_LAUNCH_DIR")
	if dir == "" {
		return // a child process of TestLauncherRunsOnlyVerifiedReleases only
	}
	s := &update.Store{Dir: dir}
	if k := os.Getenv("FRANK_TEST_LAUNCH_KEY"); k != "" {
		s.Key, _ = hex.DecodeString(k)
	}
	s.Packaged, _ = time.Parse(time.RFC3339, os.Getenv("FRANK_TEST_LAUNCH_PACKAGED"))
	if err := s.Launch(slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		fmt.Println("launch:", err)
		os.Exit(1)
	}
	fmt.Println("ran the packaged binary")
	os.Exit(0)
}

// The service can write the releases directory, so the launcher runs a
// release only if its binary is the one its manifest, signed with the
// release key, names. A release that is not falls back as a failed
// release does: to the previous release if it verifies, else to the
// packaged binary. Without a release key only the packaged binary runs.
func TestLauncherRunsOnlyVerifiedReleases(t *testing.T) {
	day := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(script(strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/r/"), "/amd64")))
	}))
	defer srv.Close()
	// installed puts versions in, each healthy, except the last if trial.
	installed := func(t *testing.T, trial bool, versions ...string) *update.Store {
		t.Helper()
		s := &update.Store{Dir: t.TempDir(), Key: pub}
		for i, v := range versions {
			if _, err := s.Stage(context.Background(), srv.Client(), srv.URL, scriptOffer(priv, v, day.Add(time.Duration(i)*time.Hour)), "amd64"); err != nil {
				t.Fatal(err)
			}
			if err := s.Install("cmd-"+v, v, time.Hour); err != nil {
				t.Fatal(err)
			}
			if trial && i == len(versions)-1 {
				break
			}
			if err := s.MarkHealthy(v); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	launch := func(t *testing.T, s *update.Store) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLaunchHelper$")
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, "FRANK_") {
				cmd.Env = append(cmd.Env, e)
			}
		}
		cmd.Env = append(cmd.Env, "FRANK_TEST_LAUNCH_DIR="+s.Dir, "FRANK_TEST_LAUNCH_KEY="+hex.EncodeToString(s.Key))
		if !s.Packaged.IsZero() {
			cmd.Env = append(cmd.Env, "FRANK_TEST_LAUNCH_PACKAGED="+s.Packaged.Format(time.RFC3339))
		}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("launcher: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	tamper := func(t *testing.T, s *update.Store, version string) {
		t.Helper()
		if err := os.WriteFile(s.BinaryOf(version), []byte("#!/bin/sh\necho ran planted code\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("verified", func(t *testing.T) {
		s := installed(t, false, "1.0.0", "2.0.0")
		if got := launch(t, s); got != "ran 2.0.0" {
			t.Fatalf("launched %q; want 2.0.0", got)
		}
	})
	t.Run("current binary replaced", func(t *testing.T) {
		s := installed(t, false, "1.0.0", "2.0.0")
		tamper(t, s, "2.0.0")
		if got := launch(t, s); got != "ran 1.0.0" || s.Current() != "1.0.0" {
			t.Fatalf("launched %q, current %q; want the previous release, 1.0.0", got, s.Current())
		}
	})
	t.Run("release planted with its own manifest", func(t *testing.T) {
		s := installed(t, false, "1.0.0")
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		o := scriptOffer(other, "9.0.0", day.AddDate(1, 0, 0))
		b, _ := json.Marshal(map[string]any{"version": "9.0.0", "created": day.AddDate(1, 0, 0), "arch": "amd64", "manifest": o.Manifest, "signature": o.Signature})
		if err := os.MkdirAll(filepath.Dir(s.BinaryOf("9.0.0")), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(s.Dir, "versions", "9.0.0", "release.json"), b, 0o644)
		os.WriteFile(s.BinaryOf("9.0.0"), script("9.0.0"), 0o755)
		os.Remove(filepath.Join(s.Dir, "current"))
		if err := os.Symlink("versions/9.0.0", filepath.Join(s.Dir, "current")); err != nil {
			t.Fatal(err)
		}
		if got := launch(t, s); got != "ran the packaged binary" || s.Current() != "" {
			t.Fatalf("launched %q, current %q; want the packaged binary", got, s.Current())
		}
	})
	t.Run("no release key", func(t *testing.T) {
		s := installed(t, false, "1.0.0", "2.0.0")
		s.Key = nil
		if got := launch(t, s); got != "ran the packaged binary" {
			t.Fatalf("launched %q; want the packaged binary", got)
		}
	})
	// Whoever can write the directory can point current at an old signed
	// release, and lower proven.json; not the packaged binary's date.
	t.Run("release older than the packaged build", func(t *testing.T) {
		s := installed(t, false, "1.0.0", "2.0.0")
		s.Packaged = day.Add(2 * time.Hour)
		if got := launch(t, s); got != "ran the packaged binary" || s.Current() != "" {
			t.Fatalf("launched %q, current %q; want the packaged binary", got, s.Current())
		}
	})
	// A trial's time to pass its health check runs on the launcher's
	// monotonic clock, from its start: the wall clock a Pi starts on is a
	// saved one, and NTP steps it when it first syncs.
	retrial := func(t *testing.T, s *update.Store, health time.Duration, deadline time.Time) {
		t.Helper()
		tr := s.Trial()
		tr.Health, tr.Deadline = health, deadline
		b, _ := json.Marshal(tr)
		if err := os.WriteFile(filepath.Join(s.Dir, "trial.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("trial whose wall deadline the clock stepped past", func(t *testing.T) {
		s := installed(t, true, "1.0.0", "2.0.0")
		retrial(t, s, time.Hour, time.Now().Add(-time.Hour)) // installed on a clock 2 h behind
		if got := launch(t, s); got != "ran 2.0.0" || s.Current() != "2.0.0" || s.Trial() == nil {
			t.Fatalf("launched %q, current %q, trial %+v; want 2.0.0 run on trial, not rolled back unrun", got, s.Current(), s.Trial())
		}
	})
	t.Run("hung trial whose wall deadline is far off", func(t *testing.T) {
		s := installed(t, true, "1.0.0", hungVersion)
		retrial(t, s, time.Second, time.Now().Add(24*time.Hour)) // installed on a clock a day ahead
		got := launch(t, s)
		if o := s.LastOutcome(); got != "ran 1.0.0" || s.Current() != "1.0.0" || o == nil || o.Status != update.RolledBack {
			t.Fatalf("launched %q, current %q, outcome %+v; want %s rolled back to 1.0.0 after its second", got, s.Current(), o, hungVersion)
		}
	})
	t.Run("binary on trial replaced", func(t *testing.T) {
		s := installed(t, true, "1.0.0", "2.0.0")
		tamper(t, s, "2.0.0")
		got := launch(t, s)
		if o := s.LastOutcome(); got != "ran 1.0.0" || s.Current() != "1.0.0" || s.Trial() != nil || o == nil || o.Status != update.RolledBack || o.CommandID != "cmd-2.0.0" {
			t.Fatalf("launched %q, current %q, trial %+v, outcome %+v; want 2.0.0 rolled back to 1.0.0", got, s.Current(), s.Trial(), o)
		}
	})
}
