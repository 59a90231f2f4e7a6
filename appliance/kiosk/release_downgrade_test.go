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

// A kiosk on a healthy 2.0.0 offered 1.0.0, signed years before (a
// replayed offer, or a compromised hub), answers update_failed and does
// not restart: the hub counts it, and nothing old is installed.
func TestUpdateRefusesAnOlderRelease(t *testing.T) {
	day := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	bins := map[string][]byte{}
	offer := func(id, version string, created time.Time) *protocol.Command {
		bin := []byte("frank kiosk " + version)
		bins["/r/"+version+"/"+runtime.GOARCH] = bin
		sum := sha256.Sum256(bin)
		m, _ := json.Marshal(protocol.ReleaseManifest{Version: version, Created: created,
			Artifacts: []protocol.Artifact{{Arch: runtime.GOARCH, Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
		return &protocol.Command{CommandID: id, KioskID: "k1", Action: protocol.ActionUpdate,
			Release: &protocol.ReleaseOffer{Manifest: m, Signature: ed25519.Sign(priv, m), Path: "/r/" + version, HealthS: 60}}
	}
	v2, old := offer("cmd-2", "2.0.0", day), offer("cmd-old", "1.0.0", day.AddDate(-3, 0, 0))
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

	k := boot("0.1.0") // the packaged binary, of unknown age: takes 2.0.0
	if res, then := k.onUpdate(ctx, v2); res != nil || then == nil {
		t.Fatalf("offer 2.0.0: %+v, restart %v; want installed and a restart", res, then != nil)
	}
	k.saleMu.Unlock() // held until the process ends
	if err := st.MarkHealthy("2.0.0"); err != nil {
		t.Fatal(err)
	}

	k = boot("2.0.0")
	res, then := k.onUpdate(ctx, old)
	if res == nil || res.Status != protocol.ResultRejected || res.Error == nil || res.Error.Code != protocol.CodeUpdateFailed || then != nil {
		t.Fatalf("offer 1.0.0 on 2.0.0: %+v, restart %v; want update_failed and no restart", res, then != nil)
	}
	if st.Current() != "2.0.0" || st.Trial() != nil {
		t.Fatalf("after the refusal: current %q, trial %+v", st.Current(), st.Trial())
	}
}
