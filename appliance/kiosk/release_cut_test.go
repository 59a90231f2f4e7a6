package kiosk

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/appliance/update"
	"github.com/frank-postage/frank/protocol"
)

// resultLink is a hub that keeps the command results the kiosk sends.
type resultLink struct {
	mu      sync.Mutex
	results []protocol.CommandResult
}

func (l *resultLink) Open(func(string, []byte)) {}
func (l *resultLink) Up() bool                  { return true }
func (l *resultLink) Close()                    {}
func (l *resultLink) Send(suffix string, payload []byte, _ time.Duration) bool {
	if suffix == protocol.TopicCommandResult {
		r, err := protocol.DecodeCommandResult(payload)
		if err != nil {
			panic(err)
		}
		l.mu.Lock()
		l.results = append(l.results, *r)
		l.mu.Unlock()
	}
	return true
}

// last is the hub's last word on command id: what it believes happened.
func (l *resultLink) last(id string) *protocol.CommandResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.results) - 1; i >= 0; i-- {
		if l.results[i].CommandID == id {
			return &l.results[i]
		}
	}
	return nil
}

// A power cut may stop the health check's MarkHealthy after any of its
// steps, with the hub sending the update command again meanwhile (every
// 15 s until answered) and the power off past the trial's wall deadline.
// After the cut the kiosk ends on the healthy release with the hub told
// ok, or, cut before the check passed, runs the release on trial again,
// its health time anew (the time off is no running time), until the
// launcher rolls it back with the hub told so: the answer the kiosk keeps
// as sent always matches what runs.
func TestHealthCheckCutTellsTheHubWhatRuns(t *testing.T) {
	bin := []byte("frank kiosk 9.0.0")
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sum := sha256.Sum256(bin)
	m, _ := json.Marshal(protocol.ReleaseManifest{Version: "9.0.0", Created: time.Now().UTC(),
		Artifacts: []protocol.Artifact{{Arch: runtime.GOARCH, Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(bin) }))
	defer srv.Close()
	c := &protocol.Command{CommandID: "cmd-upd-h", KioskID: "k1", Action: protocol.ActionUpdate, IssuedBy: "ops-ann", IssuedAt: time.Now().UTC(),
		Release: &protocol.ReleaseOffer{Manifest: m, Signature: ed25519.Sign(priv, m), Path: "/r/9.0.0", HealthS: 60}}
	cmd, _ := json.Marshal(c)
	if _, err := protocol.DecodeCommand(cmd); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()

	steps := -1
	for cut := 0; steps < 0 || cut <= steps; cut++ {
		st := &update.Store{Dir: t.TempDir(), Key: pub}
		j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"))
		if err != nil {
			t.Fatal(err)
		}
		hub := &resultLink{}
		boot := func(firmware string) *Kiosk { // the launcher runs firmware
			t.Helper()
			k, err := New(Config{ID: "k1", OriginZIP: "94544", Firmware: firmware, Updates: st, Downloads: srv.Client(), HubURL: srv.URL,
				Restart: func() {}}, nil, log)
			if err != nil {
				t.Fatal(err)
			}
			k.UseJournal(j)
			k.link = hub
			return k
		}

		k := boot("1.0.0")
		if res, then := k.onUpdate(ctx, c); res != nil || then == nil {
			t.Fatalf("offer: %+v, restart %v; want installed and a restart", res, then != nil)
		}
		k.saleMu.Unlock() // held until the process ends

		// 9.0.0 runs on trial; the hub, unanswered, sends the command again.
		k = boot("9.0.0")
		k.onCommand(cmd)
		hs := st.HealthySteps("9.0.0")
		steps = len(hs)
		// The health check passes just before the deadline; the power
		// comes back after it.
		tr := st.Trial()
		tr.Deadline = time.Now().Add(-time.Second)
		b, _ := json.Marshal(tr)
		if err := os.WriteFile(filepath.Join(st.Dir, "trial.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, step := range hs[:cut] {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		if cut == steps { // not cut: the health check goes on to tell the hub
			k.tellOutcome(ctx)
		}

		// --- power cut; the launcher starts, then the release it runs ---
		if cut == 0 {
			// Not healthy yet: another start on trial, its time anew; then
			// it keeps failing to start, and the launcher rolls it back.
			tr, err := st.Start(log)
			if err != nil || tr == nil || st.Current() != "9.0.0" {
				t.Fatalf("cut before the health check: launcher: trial %+v, %v, current %q; want 9.0.0 on trial again", tr, err, st.Current())
			}
			tr.Attempts = 3
			b, _ := json.Marshal(tr)
			if err := os.WriteFile(filepath.Join(st.Dir, "trial.json"), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if tr, err := st.Start(log); err != nil || tr != nil {
			t.Fatalf("cut after %d of %d steps: launcher: trial %+v, %v", cut, steps, tr, err)
		}
		runs := st.Current()
		if runs == "" {
			runs = "1.0.0"
		}
		boot(runs).tellOutcome(ctx)

		got := hub.last(c.CommandID)
		switch {
		case got == nil:
			t.Errorf("cut after %d of %d steps: %s runs, and the hub was never told how the update ended", cut, steps, runs)
		case runs == "9.0.0" && (got.Status != protocol.ResultOK || got.Firmware != "9.0.0"):
			t.Errorf("cut after %d of %d steps: 9.0.0 runs healthy, and the hub was told %s from %s (%v)", cut, steps, got.Status, got.Firmware, got.Error)
		case runs == "1.0.0" && (got.Status != protocol.ResultRejected || got.Error == nil || got.Error.Code != protocol.CodeUpdateFailed):
			t.Errorf("cut after %d of %d steps: rolled back to 1.0.0, and the hub was told %s from %s", cut, steps, got.Status, got.Firmware)
		}
		if cut > 0 && runs != "9.0.0" {
			t.Errorf("cut after %d of %d steps: the healthy outcome was recorded, yet %s runs", cut, steps, runs)
		}
		j.Close()
	}
}
