package hub_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/frank-postage/frank/hub"
)

// A hub on the soft key store says at start that it is for development:
// its keys sit in files beside their master key, not in an HSM.
func TestSoftKeyStoreWarnsAtStart(t *testing.T) {
	e := newEnvWith(t, nil)
	var mu sync.Mutex
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, nil))
	cfg := e.cfg
	cfg.DataDir = t.TempDir()
	if cfg.DB != "" {
		cfg.DB = "" // a store of its own: SQLite in DataDir
	}
	h, err := hub.Open(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "for development only") || !strings.Contains(buf.String(), "--hsm pkcs11") {
		t.Fatalf("no warning about the soft key store in:\n%s", buf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
