package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
)

// A kiosk configured for an HX711 load cell opens it on the GPIO pins its
// config names, and says which pin it could not find.
func TestHX711NeedsItsPins(t *testing.T) {
	c := devicesConfig{ScaleProtocol: "hx711", HX711: hx711Config{Clock: "NO_SUCH_PIN", Calibration: t.TempDir() + "/cal.json"}}
	_, _, closers, err := openDevices(context.Background(), c, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "hx711 clock") || !strings.Contains(err.Error(), "NO_SUCH_PIN") {
		t.Fatalf("hx711 on a pin that does not exist: %v", err)
	}
	if len(closers) != 0 {
		t.Errorf("%d devices left open after the failure", len(closers))
	}
	c.ScaleProtocol = "hx712"
	if _, _, _, err := openDevices(context.Background(), c, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("an unknown scale protocol opened")
	}
}
