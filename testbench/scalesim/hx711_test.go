package scalesim_test

import (
	"testing"
	"time"

	"github.com/frank-postage/frank/testbench/scalesim"
	"github.com/frank-postage/frank/testbench/wait"
	"periph.io/x/conn/v3/gpio"
)

// waitReady waits for DOUT low.
func waitReady(t *testing.T, chip *scalesim.HX711) {
	t.Helper()
	wait.For(t, time.Second, "a conversion ready", func() bool { return chip.Data().Read() == gpio.Low })
}

// pulse clocks n bits out and returns the last.
func pulse(chip *scalesim.HX711, n int, hold time.Duration) gpio.Level {
	var bit gpio.Level
	for range n {
		chip.Clock().Out(gpio.High)
		bit = chip.Data().Read()
		time.Sleep(hold) // pace: the clock pulse's width
		chip.Clock().Out(gpio.Low)
	}
	return bit
}

// readFrame reads one whole frame as a driver does. The test itself may be
// preempted with the clock high; then it resets the chip and reads again.
func readFrame(t *testing.T, chip *scalesim.HX711) int32 {
	t.Helper()
	for range 20 {
		waitReady(t, chip)
		downs := chip.PowerDowns()
		var v uint32
		for i := range 25 {
			chip.Clock().Out(gpio.High)
			bit := chip.Data().Read()
			chip.Clock().Out(gpio.Low)
			if i < 24 {
				v <<= 1
				if bit == gpio.High {
					v |= 1
				}
			}
		}
		if chip.PowerDowns() == downs {
			return int32(v<<8) >> 8
		}
		pulse(chip, 1, 200*time.Microsecond)
	}
	t.Fatal("every frame cut short")
	return 0
}

func TestHX711PowerDown(t *testing.T) {
	chip := scalesim.NewHX711(-5)
	if v := readFrame(t, chip); v != -5 {
		t.Fatalf("frame = %d; want -5", v)
	}
	chip.SetRaw(0x123456)
	readFrame(t, chip) // converted before SetRaw

	// Power down 5 bits in: the chip resets and, until it is awake again,
	// holds DOUT high and ignores the rest of the frame.
	waitReady(t, chip)
	downs := chip.PowerDowns()
	pulse(chip, 5, 0)
	down := time.Now()
	pulse(chip, 1, 200*time.Microsecond)
	if chip.PowerDowns() == downs {
		t.Fatal("clock held high 200 µs; no power down")
	}
	if bit := pulse(chip, 19, 0); bit != gpio.High && time.Since(down) < scalesim.HX711WakeUp {
		t.Error("DOUT low while waking up")
	}
	waitReady(t, chip)
	if d := time.Since(down); d < scalesim.HX711WakeUp {
		t.Errorf("ready %v after reset; want at least %v", d, scalesim.HX711WakeUp)
	}
	if v := readFrame(t, chip); v != 0x123456 {
		t.Errorf("frame after reset = %#x; want 0x123456", v)
	}

	// A glitched conversion lost to a power down is read whole later.
	waitReady(t, chip)
	chip.Glitch(-7)
	pulse(chip, 1, 200*time.Microsecond) // drop the conversion made before Glitch
	waitReady(t, chip)
	pulse(chip, 3, 0)
	pulse(chip, 1, 200*time.Microsecond)
	if v := readFrame(t, chip); v != -7 {
		t.Errorf("frame after glitch lost = %d; want -7", v)
	}
	if v := readFrame(t, chip); v != 0x123456 {
		t.Errorf("frame after glitch = %#x; want 0x123456", v)
	}
}
