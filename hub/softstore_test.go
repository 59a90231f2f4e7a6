package hub_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/frank-postage/frank/hub"
)

// A hub on the soft key store says at start that it is for development:
// its keys sit in files beside their master key, not in an HSM.
func TestSoftKeyStoreWarnsAtStart(t *testing.T) {
	e := newEnvWith(t, nil)
	l := &hubLog{}
	log := slog.New(slog.NewTextHandler(l, nil))
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
	if len(l.lines("level=WARN", "for development only", "--hsm pkcs11")) == 0 {
		t.Fatalf("no warning about the soft key store in:\n%s", strings.Join(l.lines(), "\n"))
	}
}
