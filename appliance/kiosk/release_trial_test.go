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
	"runtime"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/update"
	"github.com/frank-postage/frank/protocol"
)

// An update command for another release while this one is on trial gets
// no answer yet (the hub sends it again) rather than an install over an
// unproven release or a refusal that fails the new rollout; once the
// trial has ended, the resend installs it.
func TestUpdateWaitsForAnotherReleasesTrial(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	bins := map[string][]byte{}
	offer := func(id, version string) *protocol.Command {
		bin := []byte("frank kiosk " + version)
		bins["/r/"+version+"/"+runtime.GOARCH] = bin
		sum := sha256.Sum256(bin)
		m, _ := json.Marshal(protocol.ReleaseManifest{Version: version, Created: time.Now().UTC(),
			Artifacts: []protocol.Artifact{{Arch: runtime.GOARCH, Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
		return &protocol.Command{CommandID: id, KioskID: "k1", Action: protocol.ActionUpdate,
			Release: &protocol.ReleaseOffer{Manifest: m, Signature: ed25519.Sign(priv, m), Path: "/r/" + version, HealthS: 60}}
	}
	a, b := offer("cmd-A", "2.0.0"), offer("cmd-B", "3.0.0")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(bins[r.URL.Path]) }))
	defer srv.Close()
	st := &update.Store{Dir: t.TempDir(), Key: pub}
	boot := func(firmware string) *Kiosk {
		t.Helper()
		k, err := New(Config{ID: "k1", OriginZIP: "94544", Firmware: firmware, Updates: st, Downloads: srv.Client(), HubURL: srv.URL,
			Restart: func() {}}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ctx := context.Background()

	k := boot("1.0.0")
	if res, then := k.onUpdate(ctx, a); res != nil || then == nil {
		t.Fatalf("offer A: %+v, restart %v; want installed and a restart", res, then != nil)
	}
	k.saleMu.Unlock() // held until the process ends

	k = boot("2.0.0") // on trial
	if res, then := k.onUpdate(ctx, b); res != nil || then != nil {
		t.Fatalf("offer B during 2.0.0's trial: %+v, restart %v; want no answer yet", res, then != nil)
	}
	if tr := st.Trial(); st.Current() != "2.0.0" || tr == nil || tr.CommandID != "cmd-A" || tr.Previous != "" {
		t.Fatalf("after offer B: current %q, trial %+v; want 2.0.0 on its own trial", st.Current(), tr)
	}
	if err := st.MarkHealthy("2.0.0"); err != nil {
		t.Fatal(err)
	}
	if res, then := k.onUpdate(ctx, b); res != nil || then == nil {
		t.Fatalf("offer B after the trial: %+v, restart %v; want installed and a restart", res, then != nil)
	}
	k.saleMu.Unlock()
	if tr := st.Trial(); st.Current() != "3.0.0" || tr == nil || tr.Previous != "2.0.0" {
		t.Fatalf("after offer B: current %q, trial %+v; want 3.0.0 falling back to 2.0.0", st.Current(), tr)
	}
}
