package bench

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// A short run with each signer `make bench` measures still sells: the
// bench keeps up with what the hub demands of a kiosk (credentials, loaded
// stock, payment) and of an HSM (keys and device CA made by ops).
func TestRunSells(t *testing.T) {
	for _, signer := range []string{"soft", "softhsm"} {
		t.Run(signer, func(t *testing.T) {
			r, err := Run(context.Background(), Config{Signer: signer, Workers: 1, Kiosks: 2, InFlight: 4,
				Warmup: 300 * time.Millisecond, Duration: time.Second, Dir: t.TempDir()}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if r.Sales == 0 || r.Rejected != 0 {
				t.Fatalf("%d sales, %d rejected", r.Sales, r.Rejected)
			}
			t.Logf("%.0f sales/s beside %.0f raw signatures/s", r.SalesPerSec, r.RawSigsPerSec)
		})
	}
}

// A small fleet connects over mqtts to a restarted hub with the device
// CA's certificates; the bench times it beside the bare handshakes.
func TestConnectFleet(t *testing.T) {
	f, err := Connect(context.Background(), t.TempDir(), 20, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if f.Kiosks != 20 || f.Took <= 0 || f.Handshakes <= 0 || f.Max < f.P50 {
		t.Fatalf("figures %+v", f)
	}
	t.Logf("20 kiosks in %v beside %v of bare handshakes", f.Took, f.Handshakes)
}
