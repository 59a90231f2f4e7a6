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
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/update"
	"github.com/frank-postage/frank/protocol"
)

// signer signs releases with one release key, each with the Created the
// test gives, and serves their binaries at /r/VERSION/amd64.
type signer struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
	srv  *httptest.Server
}

func newSigner(t *testing.T) *signer {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sg := &signer{pub: pub, priv: priv}
	sg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/r/"), "/amd64")
		http.ServeContent(w, r, "bin", time.Time{}, bytes.NewReader(binOf(v)))
	}))
	t.Cleanup(sg.srv.Close)
	return sg
}

func binOf(version string) []byte { return []byte("frank kiosk " + version) }

func (sg *signer) offer(version string, created time.Time) *protocol.ReleaseOffer {
	bin := binOf(version)
	sum := sha256.Sum256(bin)
	m, _ := json.Marshal(protocol.ReleaseManifest{Version: version, Created: created,
		Artifacts: []protocol.Artifact{{Arch: "amd64", Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
	return &protocol.ReleaseOffer{Manifest: m, Signature: ed25519.Sign(sg.priv, m), Path: "/r/" + version, HealthS: 60}
}

// install stages and installs an offer, as the kiosk does.
func (sg *signer) install(s *update.Store, cmd string, offer *protocol.ReleaseOffer) error {
	m, err := s.Stage(context.Background(), sg.srv.Client(), sg.srv.URL, offer, "amd64")
	if err != nil {
		return err
	}
	return s.Install(cmd, m.Version, time.Hour)
}

// A kiosk never takes a release signed before the one it runs, or one it
// ran healthy: a replayed offer, or a compromised hub, could otherwise
// put back an old, vulnerable release. The refusal is update_failed and
// downloads nothing; it holds across a restart (a new Store) and after a
// failed trial's rollback. A rollback ops want, the old build signed
// again, is taken.
func TestDowngradeRefused(t *testing.T) {
	day := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	sg := newSigner(t)
	dir := t.TempDir()
	s := &update.Store{Dir: dir, Key: sg.pub}
	code := func(err error) protocol.Code { return protocol.AsError(err).Code }

	if err := sg.install(s, "cmd-2", sg.offer("2.0.0", day)); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkHealthy("2.0.0"); err != nil {
		t.Fatal(err)
	}
	old := sg.offer("1.0.0", day.AddDate(-3, 0, 0))
	err := sg.install(s, "cmd-old", old)
	if code(err) != protocol.CodeUpdateFailed || !strings.Contains(err.Error(), "downgrade") {
		t.Fatalf("kiosk on 2.0.0 offered 1.0.0 signed 3 years before: %v; want update_failed, a downgrade", err)
	}
	if _, err := os.Stat(s.BinaryOf("1.0.0")); !errors.Is(err, os.ErrNotExist) || s.Current() != "2.0.0" {
		t.Fatalf("after the refusal: 1.0.0 staged (%v), current %q", err, s.Current())
	}

	// 3.0.0 fails its trial: the launcher's rollback to 2.0.0 is local and
	// goes through, and 3.0.0, never healthy, raises nothing.
	if err := sg.install(s, "cmd-3", sg.offer("3.0.0", day.Add(48*time.Hour))); err != nil {
		t.Fatal(err)
	}
	tr := s.Trial()
	tr.Attempts = 3 // three starts crashed
	b, _ := json.Marshal(tr)
	os.WriteFile(filepath.Join(dir, "trial.json"), b, 0o644)
	if next, err := s.Start(slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil || next != nil || s.Current() != "2.0.0" || s.LastOutcome().Status != update.RolledBack {
		t.Fatalf("rollback of 3.0.0: %+v %v, current %q, outcome %+v", next, err, s.Current(), s.LastOutcome())
	}

	// Restarted: what it ran healthy is on disk.
	s = &update.Store{Dir: dir, Key: sg.pub}
	if f := s.Floor(); f.Version != "2.0.0" || !f.Created.Equal(day) {
		t.Fatalf("floor after the restart: %+v; want 2.0.0's", f)
	}
	if err := sg.install(s, "cmd-old-2", old); code(err) != protocol.CodeUpdateFailed {
		t.Fatalf("1.0.0 offered again after the restart: %v; want update_failed", err)
	}
	if err := sg.install(s, "cmd-2.1", sg.offer("2.1.0", day.Add(24*time.Hour))); err != nil {
		t.Fatalf("2.1.0, older than the rolled-back 3.0.0 but newer than 2.0.0: %v", err)
	}
	if err := s.MarkHealthy("2.1.0"); err != nil {
		t.Fatal(err)
	}
	// 2.1.0 is proven: 2.0.0 is now a downgrade too, though it once ran.
	if err := sg.install(s, "cmd-2-again", sg.offer("2.0.0", day)); code(err) != protocol.CodeUpdateFailed {
		t.Fatalf("2.0.0 after 2.1.0 ran healthy: %v; want update_failed", err)
	}
	// The deliberate rollback: 1.0.0's build, signed again today.
	if err := sg.install(s, "cmd-rollback", sg.offer("1.0.0", day.AddDate(0, 0, 3))); err != nil || s.Current() != "1.0.0" {
		t.Fatalf("1.0.0 signed again as a new release: %v, current %q", err, s.Current())
	}
}

// A power cut after the healthy outcome is recorded, before the floor
// is raised: the launcher's next start raises it, or a release the hub
// was told is healthy would not guard against older ones.
func TestFloorRaisedAfterCutInHealthCheck(t *testing.T) {
	day := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	sg := newSigner(t)
	s := &update.Store{Dir: t.TempDir(), Key: sg.pub}
	if err := sg.install(s, "cmd-2", sg.offer("2.0.0", day)); err != nil {
		t.Fatal(err)
	}
	if err := s.HealthySteps("2.0.0")[0](); err != nil { // the outcome, then the cut
		t.Fatal(err)
	}
	proven := filepath.Join(s.Dir, "proven.json")
	if _, err := os.Stat(proven); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("set-up: proven.json before the launcher starts: %v", err)
	}
	if _, err := s.Start(slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	var p update.Signed
	if b, err := os.ReadFile(proven); err != nil || json.Unmarshal(b, &p) != nil || p.Version != "2.0.0" || !p.Created.Equal(day) {
		t.Fatalf("proven.json after the start: %+v %v; want 2.0.0's", p, err)
	}
}

// The packaged binary's release, when the image knows when it was
// signed, is the floor before any release has run here; unknown, the
// first release offered is taken.
func TestPackagedReleaseIsTheFirstFloor(t *testing.T) {
	day := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	sg := newSigner(t)
	s := &update.Store{Dir: t.TempDir(), Key: sg.pub, Packaged: day}
	if err := sg.install(s, "cmd-0", sg.offer("0.9.0", day.Add(-time.Hour))); protocol.AsError(err).Code != protocol.CodeUpdateFailed {
		t.Fatalf("a release older than the image's: %v; want update_failed", err)
	}
	if err := sg.install(s, "cmd-2", sg.offer("2.0.0", day.Add(time.Hour))); err != nil {
		t.Fatalf("a release newer than the image's: %v", err)
	}
	s = &update.Store{Dir: t.TempDir(), Key: sg.pub}
	if err := sg.install(s, "cmd-0", sg.offer("0.9.0", day.AddDate(-5, 0, 0))); err != nil {
		t.Fatalf("no record and an image of unknown age: %v; want taken", err)
	}
}
