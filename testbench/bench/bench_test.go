package bench

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// A short run with the soft signer still sells: the bench keeps up with
// what the hub demands of a kiosk (credentials, loaded stock, payment).
func TestRunSells(t *testing.T) {
	r, err := Run(context.Background(), Config{Signer: "soft", Workers: 1, Kiosks: 2, InFlight: 4,
		Warmup: 300 * time.Millisecond, Duration: time.Second, Dir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if r.Sales == 0 || r.Rejected != 0 {
		t.Fatalf("%d sales, %d rejected", r.Sales, r.Rejected)
	}
	t.Logf("%.0f sales/s beside %.0f raw signatures/s", r.SalesPerSec, r.RawSigsPerSec)
}
