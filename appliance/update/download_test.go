package update_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/update"
	"github.com/frank-postage/frank/protocol"
)

// A partial download longer than the release (left by an earlier
// attempt, or a 206 with more than the rest) is started over at the next
// attempt: a retryable error, not update_failed, which a rollout counts
// as the kiosk failing the release.
func TestOverlongDownloadRetried(t *testing.T) {
	bin := bytes.Repeat([]byte("frank kiosk v2 "), 1000)
	sum := sha256.Sum256(bin)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	m, _ := json.Marshal(protocol.ReleaseManifest{Version: "2.0.0", Created: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC),
		Artifacts: []protocol.Artifact{{Arch: "amd64", Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
	offer := &protocol.ReleaseOffer{Manifest: m, Signature: ed25519.Sign(priv, m), Path: "/r/2.0.0"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" { // the rest, and then some
			w.Header().Set("Content-Range", "bytes 0-"+strconv.Itoa(len(bin)-1)+"/"+strconv.Itoa(len(bin)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(bin)
			return
		}
		w.Write(bin)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name string
		part []byte
	}{
		{"206 longer than the rest", bin[:len(bin)/2]},
		{"part longer than the release", append(bytes.Clone(bin), "junk"...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &update.Store{Dir: t.TempDir(), Key: pub}
			part := s.BinaryOf("2.0.0") + ".part"
			os.MkdirAll(filepath.Dir(part), 0o755)
			if err := os.WriteFile(part, tc.part, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := s.Stage(context.Background(), srv.Client(), srv.URL, offer, "amd64")
			if err == nil || protocol.AsError(err).Code == protocol.CodeUpdateFailed {
				t.Fatalf("first attempt: %v; want an error to retry, not update_failed", err)
			}
			if _, err := s.Stage(context.Background(), srv.Client(), srv.URL, offer, "amd64"); err != nil {
				t.Fatalf("second attempt: %v", err)
			}
			if got, _ := os.ReadFile(s.BinaryOf("2.0.0")); !bytes.Equal(got, bin) {
				t.Fatalf("binary of %d bytes, want %d", len(got), len(bin))
			}
		})
	}
}
