package update_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/update"
	"github.com/frank-postage/frank/protocol"
)

// release signs a manifest for one amd64 binary and serves the binary,
// cutting the first download short so that the second must resume.
func release(t *testing.T, version string, bin []byte) (ed25519.PublicKey, *protocol.ReleaseOffer, *httptest.Server, *atomic.Int32) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sum := sha256.Sum256(bin)
	m, _ := json.Marshal(protocol.ReleaseManifest{Version: version, Created: time.Now().UTC(),
		Artifacts: []protocol.Artifact{{Arch: "amd64", Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gets.Add(1) == 1 { // the first attempt dies halfway
			w.Header().Set("Content-Length", strconv.Itoa(len(bin)))
			w.Write(bin[:len(bin)/2])
			if hj, ok := w.(http.Hijacker); ok {
				c, _, _ := hj.Hijack()
				c.Close()
			}
			return
		}
		http.ServeContent(w, r, "bin", time.Time{}, bytes.NewReader(bin))
	}))
	t.Cleanup(srv.Close)
	return pub, &protocol.ReleaseOffer{Manifest: m, Signature: ed25519.Sign(priv, m), Path: "/r/" + version, HealthS: 60}, srv, &gets
}

func TestStageResumesAndVerifies(t *testing.T) {
	ctx := context.Background()
	bin := bytes.Repeat([]byte("frank kiosk v2 "), 10_000)
	pub, offer, srv, gets := release(t, "2.0.0", bin)
	s := &update.Store{Dir: t.TempDir(), Key: pub}
	if _, err := s.Stage(ctx, srv.Client(), srv.URL, offer, "amd64"); err == nil {
		t.Fatal("a download cut short was accepted")
	}
	part, err := os.Stat(s.BinaryOf("2.0.0") + ".part")
	if err != nil || part.Size() == 0 || part.Size() >= int64(len(bin)) {
		t.Fatalf("partial download: %v %v", part, err)
	}
	m, err := s.Stage(ctx, srv.Client(), srv.URL, offer, "amd64")
	if err != nil || m.Version != "2.0.0" {
		t.Fatalf("resumed download: %+v %v", m, err)
	}
	if got, _ := os.ReadFile(s.BinaryOf("2.0.0")); !bytes.Equal(got, bin) || gets.Load() != 2 {
		t.Fatalf("binary of %d bytes after %d requests", len(got), gets.Load())
	}
	// Staged again: nothing downloaded.
	if _, err := s.Stage(ctx, srv.Client(), srv.URL, offer, "amd64"); err != nil || gets.Load() != 2 {
		t.Fatalf("restaged: %v, %d requests", err, gets.Load())
	}
}

func TestTamperedReleasesRefused(t *testing.T) {
	ctx := context.Background()
	bin := []byte("frank kiosk v3")
	pub, offer, srv, _ := release(t, "3.0.0", bin)
	s := &update.Store{Dir: t.TempDir(), Key: pub}
	code := func(err error) protocol.Code { return protocol.AsError(err).Code }

	other, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := (&update.Store{Dir: s.Dir, Key: other}).Stage(ctx, srv.Client(), srv.URL, offer, "amd64"); code(err) != protocol.CodeUpdateFailed {
		t.Fatalf("a release signed with another key: %v", err)
	}
	bad := *offer
	bad.Manifest = bytes.Replace(offer.Manifest, []byte("3.0.0"), []byte("3.0.1"), 1)
	if _, err := s.Stage(ctx, srv.Client(), srv.URL, &bad, "amd64"); code(err) != protocol.CodeUpdateFailed {
		t.Fatalf("a manifest changed after signing: %v", err)
	}
	if _, err := s.Stage(ctx, srv.Client(), srv.URL, offer, "arm64"); code(err) != protocol.CodeUpdateFailed {
		t.Fatalf("an architecture the release lacks: %v", err)
	}
	// The server swaps the binary: the hash check refuses it, and nothing
	// is left to install.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "rm -rf / #####") }))
	defer evil.Close()
	if _, err := s.Stage(ctx, evil.Client(), evil.URL, offer, "amd64"); code(err) != protocol.CodeUpdateFailed {
		t.Fatalf("a swapped binary: %v", err)
	}
	if _, err := os.Stat(s.BinaryOf("3.0.0")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the swapped binary is in place: %v", err)
	}
	if _, err := (&update.Store{Dir: s.Dir}).Stage(ctx, srv.Client(), srv.URL, offer, "amd64"); code(err) != protocol.CodeUpdateFailed {
		t.Fatalf("a kiosk without a release key: %v", err)
	}
}

// A release on trial that keeps failing to start is rolled back by the
// launcher at its fourth start; one recorded before trials had a running
// time (Health), past its wall deadline, at once. The packaged binary runs
// again (Launch returns).
func TestLauncherRollsBack(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name   string
		health time.Duration
		starts int
		why    string
	}{
		{"crash loop", time.Hour, 3, "stopped 3 times"},
		{"deadline", 0, 0, "by its deadline"}, // the power was off past it
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := []byte("#!/bin/sh\nexit 1\n")
			pub, offer, srv, _ := release(t, "2.0.0", bin)
			s := &update.Store{Dir: t.TempDir(), Key: pub}
			s.Stage(ctx, srv.Client(), srv.URL, offer, "amd64")
			if _, err := s.Stage(ctx, srv.Client(), srv.URL, offer, "amd64"); err != nil {
				t.Fatal(err)
			}
			if err := s.Install("cmd-1", "2.0.0", tc.health); err != nil {
				t.Fatal(err)
			}
			if tc.health == 0 { // as an earlier release recorded it
				tr := s.Trial()
				tr.Deadline = time.Now().Add(-time.Second)
				b, _ := json.Marshal(tr)
				os.WriteFile(filepath.Join(s.Dir, "trial.json"), b, 0o644)
			}
			if s.Current() != "2.0.0" || s.Trial() == nil {
				t.Fatalf("installed: current %q, trial %+v", s.Current(), s.Trial())
			}
			// The starts systemd made, each of which crashed: the attempts
			// are counted as the launcher would before supervising.
			for range tc.starts {
				tr := s.Trial()
				tr.Attempts++
				b, _ := json.Marshal(tr)
				os.WriteFile(filepath.Join(s.Dir, "trial.json"), b, 0o644)
			}
			if err := s.Launch(log); err != nil {
				t.Fatal(err)
			}
			o := s.LastOutcome()
			if s.Current() != "" || s.Trial() != nil || o == nil || o.Status != update.RolledBack || o.CommandID != "cmd-1" || !strings.Contains(o.Why, tc.why) {
				t.Fatalf("after the launch: current %q, trial %+v, outcome %+v", s.Current(), s.Trial(), o)
			}
		})
	}
}

// A healthy release ends its trial and records the outcome.
func TestMarkHealthy(t *testing.T) {
	ctx := context.Background()
	pub, offer, srv, _ := release(t, "2.0.0", []byte("v2"))
	s := &update.Store{Dir: t.TempDir(), Key: pub}
	s.Stage(ctx, srv.Client(), srv.URL, offer, "amd64")
	if _, err := s.Stage(ctx, srv.Client(), srv.URL, offer, "amd64"); err != nil {
		t.Fatal(err)
	}
	if err := s.Install("cmd-2", "2.0.0", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkHealthy("1.0.0"); err != nil || s.Trial() == nil {
		t.Fatalf("another version's health ended the trial: %v", err)
	}
	if err := s.MarkHealthy("2.0.0"); err != nil || s.Trial() != nil {
		t.Fatalf("healthy: %v, trial %+v", err, s.Trial())
	}
	if o := s.LastOutcome(); o == nil || o.Status != update.Healthy || o.CommandID != "cmd-2" || s.Current() != "2.0.0" {
		t.Fatalf("outcome %+v, current %q", o, s.Current())
	}
}
