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
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/update"
	"github.com/frank-postage/frank/protocol"
)

// A power cut inside Install, after the trial is recorded and before the
// release becomes current, restarts the old firmware. The hub's resend of
// the command then installs the release again: the launcher passes over a
// trial that is not current, so waiting on it would never answer. While
// the trial is current, a resend still waits for the launcher.
func TestUpdateInstalledAgainAfterCutMidInstall(t *testing.T) {
	bin := []byte("frank kiosk 9.0.0")
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sum := sha256.Sum256(bin)
	m, _ := json.Marshal(protocol.ReleaseManifest{Version: "9.0.0", Created: time.Now().UTC(),
		Artifacts: []protocol.Artifact{{Arch: runtime.GOARCH, Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(bin) }))
	defer srv.Close()
	st := &update.Store{Dir: t.TempDir(), Key: pub}
	c := &protocol.Command{CommandID: "cmd-upd-1", KioskID: "k1", Action: protocol.ActionUpdate,
		Release: &protocol.ReleaseOffer{Manifest: m, Signature: ed25519.Sign(priv, m), Path: "/r/9.0.0", HealthS: 60}}
	boot := func() *Kiosk { // the old firmware starts
		t.Helper()
		k, err := New(Config{ID: "k1", OriginZIP: "94544", Firmware: "1.0.0", Updates: st, Downloads: srv.Client(), HubURL: srv.URL,
			Restart: func() {}}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ctx := context.Background()

	k := boot()
	if res, then := k.onUpdate(ctx, c); res != nil || then == nil {
		t.Fatalf("offer: %+v, restart %v; want installed and a restart", res, then != nil)
	}
	k.saleMu.Unlock() // held until the process ends
	if res, then := k.onUpdate(ctx, c); res != nil || then != nil {
		t.Fatalf("resend with the release current on trial: %+v, restart %v; want no answer (the launcher's)", res, then != nil)
	}

	// The cut: the trial is recorded, the current link not yet moved.
	if err := os.Remove(filepath.Join(st.Dir, "current")); err != nil {
		t.Fatal(err)
	}
	if st.Current() != "" || st.Trial() == nil {
		t.Fatalf("set-up: current %q, trial %+v", st.Current(), st.Trial())
	}
	k = boot()
	res, then := k.onUpdate(ctx, c)
	if res != nil || then == nil {
		t.Fatalf("resend after the cut: %+v, restart %v; want installed again and a restart", res, then != nil)
	}
	k.saleMu.Unlock()
	if tr := st.Trial(); st.Current() != "9.0.0" || tr == nil || tr.Version != "9.0.0" || tr.CommandID != c.CommandID || tr.Previous != "" {
		t.Fatalf("after installing again: current %q, trial %+v", st.Current(), tr)
	}
}
