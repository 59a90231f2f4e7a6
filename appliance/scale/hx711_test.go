package scale_test

import (
	"context"
	"errors"
	"testing"

	"github.com/frank-postage/frank/appliance/scale"
	"github.com/frank-postage/frank/testbench/scalesim"
)

func TestHX711(t *testing.T) {
	ctx := context.Background()
	const offset, perKg = 84000, 42000 // counts at zero, counts per kilogram
	chip := scalesim.NewHX711(offset)
	h, err := scale.NewHX711(chip.Clock(), chip.Data(), scale.HX711Config{Samples: 5, CapacityMg: 20e6})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Read(ctx); !errors.Is(err, scale.ErrUncalibrated) {
		t.Fatalf("uncalibrated Read err = %v", err)
	}
	if err := h.Tare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Calibrate(ctx, 1e6); !errors.Is(err, scale.ErrUncalibrated) {
		t.Fatalf("Calibrate with no weight on: %v", err)
	}
	chip.SetRaw(offset + 2*perKg) // 2 kg test weight
	if err := h.Calibrate(ctx, 2e6); err != nil {
		t.Fatal(err)
	}
	chip.SetRaw(offset + perKg/2) // 500 g parcel
	r, err := h.Read(ctx)
	if err != nil || r.WeightMg != 500000 || !r.Stable {
		t.Fatalf("Read = %+v, %v; want 500 g stable", r, err)
	}

	t.Run("negative raw", func(t *testing.T) {
		chip.SetRaw(-100000) // two's complement below zero
		defer chip.SetRaw(offset + perKg/2)
		r, err := h.Read(ctx)
		if want := int64(-100000-offset) * 1e6 / perKg; err != nil || r.WeightMg != want {
			t.Fatalf("Read = %+v, %v; want %d", r, err, want)
		}
	})
	t.Run("rails and spikes rejected", func(t *testing.T) {
		chip.Glitch(0x7FFFFF, -0x800000, offset+perKg*9, 0x7FFFFF)
		r, err := h.Read(ctx)
		if err != nil || r.WeightMg != 500000 {
			t.Fatalf("Read = %+v, %v; want 500 g despite glitches", r, err)
		}
	})
	t.Run("noisy is not stable", func(t *testing.T) {
		chip.Glitch(offset+perKg/2+400, offset+perKg/2-400, offset+perKg/2+300)
		r, err := h.Read(ctx)
		if err != nil || r.Stable {
			t.Fatalf("Read = %+v, %v; want unstable", r, err)
		}
	})
	t.Run("stuck at rail", func(t *testing.T) {
		chip.SetRaw(0x7FFFFF)
		defer chip.SetRaw(offset + perKg/2)
		if _, err := h.Read(ctx); !errors.Is(err, scale.ErrProtocol) {
			t.Fatalf("err = %v; want ErrProtocol", err)
		}
	})
	t.Run("over capacity", func(t *testing.T) {
		chip.SetRaw(offset + 21*perKg)
		defer chip.SetRaw(offset + perKg/2)
		r, err := h.Read(ctx)
		if !errors.Is(err, scale.ErrOverCapacity) || !r.OverCapacity {
			t.Fatalf("Read = %+v, %v; want over capacity", r, err)
		}
	})
	t.Run("calibration survives", func(t *testing.T) {
		c := h.Calibration()
		h2, err := scale.NewHX711(chip.Clock(), chip.Data(), scale.HX711Config{})
		if err != nil {
			t.Fatal(err)
		}
		h2.SetCalibration(c)
		r, err := h2.Read(ctx)
		if err != nil || r.WeightMg != 500000 {
			t.Fatalf("Read = %+v, %v", r, err)
		}
	})
	t.Logf("clock held high too long %d times", chip.PowerDowns())
}
