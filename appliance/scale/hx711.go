package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/frank-postage/frank/appliance/identity"
)

// HX711 rails: the chip clips to these, and a misread frame (a clock edge
// lost to the scheduler) often reads as all ones or all zeros.
const (
	hx711Max = 0x7FFFFF
	hx711Min = -0x800000
	// The chip powers down if the clock stays high this long.
	hx711MaxHigh = 60 * time.Microsecond
)

// HX711Config tunes the load-cell reader. Zero values take the defaults.
type HX711Config struct {
	Samples      int           // median window k; default 5
	MaxDeviation int32         // counts a sample may stray from the median; default 5000
	StableCounts int32         // spread of kept samples that still counts as stable; default 500
	CapacityMg   int64         // above this, ErrOverCapacity; 0 means no limit
	ReadyTimeout time.Duration // wait for a conversion, then again after a reset; default 500 ms (the chip does 10/s)
}

// Calibration maps raw counts to milligrams: mg = (raw-Offset)*Mg/Counts.
// Save it to survive a reboot.
type Calibration struct {
	Offset int64 `json:"offset"` // raw counts at zero (Tare)
	Counts int64 `json:"counts"` // raw counts above Offset for the test weight
	Mg     int64 `json:"mg"`     // the test weight
}

// HX711 reads a load cell through an HX711 amplifier by bit-banging its
// clock and data pins. Go cannot promise the clock timing, so each frame is
// checked: a clock held high too long, a value at the rails, or one far
// from the window's median is thrown away.
type HX711 struct {
	mu   sync.Mutex
	clk  gpio.PinOut
	data gpio.PinIn
	cfg  HX711Config
	cal  Calibration
	keep string // where the calibration is saved ("": nowhere)
}

// NewHX711 returns a reader on the PD_SCK (clk) and DOUT (data) pins.
func NewHX711(clk gpio.PinOut, data gpio.PinIn, cfg HX711Config) (*HX711, error) {
	if cfg.Samples <= 0 {
		cfg.Samples = 5
	}
	if cfg.MaxDeviation <= 0 {
		cfg.MaxDeviation = 5000
	}
	if cfg.StableCounts <= 0 {
		cfg.StableCounts = 500
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 500 * time.Millisecond
	}
	h := &HX711{clk: clk, data: data, cfg: cfg}
	// A chip left partway into a frame (by a reader stopped mid-frame)
	// would be read misaligned; a reset starts it at a frame boundary.
	if err := h.reset(); err != nil {
		return nil, fmt.Errorf("scale: hx711: %w", err)
	}
	if err := data.In(gpio.PullNoChange, gpio.NoEdge); err != nil {
		return nil, fmt.Errorf("scale: hx711: data: %w", err)
	}
	return h, nil
}

// Calibration returns the current calibration.
func (h *HX711) Calibration() Calibration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cal
}

// SetCalibration restores a saved calibration.
func (h *HX711) SetCalibration(c Calibration) {
	h.mu.Lock()
	h.cal = c
	h.mu.Unlock()
}

// KeepCalibration loads the calibration saved at path, if there is one,
// and saves it there after every Tare and Calibrate: after a reboot the
// kiosk weighs as staff left it, not uncalibrated.
func (h *HX711) KeepCalibration(path string) error {
	b, err := os.ReadFile(path)
	var c Calibration
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("scale: hx711: calibration: %w", err)
	default:
		if err := json.Unmarshal(b, &c); err != nil {
			return fmt.Errorf("scale: hx711: calibration %s: %w", path, err)
		}
		if err := c.check(); err != nil {
			return fmt.Errorf("scale: hx711: calibration %s: %w", path, err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.cal = c
	}
	h.keep = path
	return nil
}

// maxCalibrationMg bounds the test weight (about 275 t): the difference of
// two readings of the chip is under 2^24 counts, so (raw-Offset)*Mg stays
// well inside int64 and Read's weights cannot wrap around.
const maxCalibrationMg = 1 << 38

// check reports whether c is one Tare and Calibrate could have made: an
// offset the chip can read, and either no calibration yet (no counts, no
// weight) or at least 100 counts, within the chip's range, for a positive
// test weight up to maxCalibrationMg. A damaged file that fails it would
// weigh every load as nothing, as a negative weight or as a wrapped-around
// int64.
func (c Calibration) check() error {
	switch {
	case c.Offset < hx711Min || c.Offset > hx711Max:
		return fmt.Errorf("offset %d: outside the chip's 24-bit range", c.Offset)
	case c.Counts == 0 && c.Mg == 0:
		return nil // tared, not calibrated yet
	case c.Counts > -100 && c.Counts < 100 || c.Counts < hx711Min-hx711Max || c.Counts > hx711Max-hx711Min:
		return fmt.Errorf("counts %d: want 100 to %d either way: %w", c.Counts, hx711Max-hx711Min, ErrUncalibrated)
	case c.Mg <= 0 || c.Mg > maxCalibrationMg:
		return fmt.Errorf("mg %d: want a test weight of 1 to %d mg: %w", c.Mg, int64(maxCalibrationMg), ErrUncalibrated)
	}
	return nil
}

// saveLocked writes the calibration where KeepCalibration said, whole or
// not at all, and durably: written beside it, synced, renamed over it and
// its directory synced. h.mu is held.
func (h *HX711) saveLocked() error {
	if h.keep == "" {
		return nil
	}
	b, _ := json.Marshal(h.cal)
	if err := identity.WriteFile(h.keep, b, 0o644); err != nil {
		return fmt.Errorf("scale: hx711: save calibration: %w", err)
	}
	return nil
}

// Tare takes the present load as zero.
func (h *HX711) Tare(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, _, err := h.sample(ctx)
	if err != nil {
		return fmt.Errorf("scale: hx711: tare: %w", err)
	}
	h.cal.Offset = v
	return h.saveLocked()
}

// Zero is Tare, so that HX711 has the serial drivers' methods.
func (h *HX711) Zero(ctx context.Context) error { return h.Tare(ctx) }

// Calibrate sets the scale from a known test weight on the platter, after
// Tare with it empty.
func (h *HX711) Calibrate(ctx context.Context, knownMg int64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, _, err := h.sample(ctx)
	if err != nil {
		return fmt.Errorf("scale: hx711: calibrate: %w", err)
	}
	counts := v - h.cal.Offset
	// A handful of counts is noise: the test weight is missing or the
	// cell is wired wrong.
	if knownMg <= 0 || knownMg > maxCalibrationMg || counts > -100 && counts < 100 {
		return fmt.Errorf("scale: hx711: calibrate: %d counts for %d mg: %w", counts, knownMg, ErrUncalibrated)
	}
	h.cal.Counts, h.cal.Mg = counts, knownMg
	return h.saveLocked()
}

// Read gives one filtered reading in milligrams.
func (h *HX711) Read(ctx context.Context) (Reading, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cal.Counts == 0 {
		return Reading{}, fmt.Errorf("scale: hx711: read: %w", ErrUncalibrated)
	}
	v, stable, err := h.sample(ctx)
	if err != nil {
		return Reading{}, fmt.Errorf("scale: hx711: read: %w", err)
	}
	mg := mulDivRound(v-h.cal.Offset, h.cal.Mg, h.cal.Counts)
	r := Reading{WeightMg: mg, Stable: stable, AtZero: mg == 0}
	if h.cfg.CapacityMg > 0 && mg > h.cfg.CapacityMg {
		r.OverCapacity = true
		return r, fmt.Errorf("scale: hx711: read: %w", ErrOverCapacity)
	}
	return r, nil
}

// mulDivRound is a*b/c rounded half away from zero, without overflow for
// load-cell sizes (24-bit counts, gram-to-tonne test weights).
func mulDivRound(a, b, c int64) int64 {
	n := a * b
	if (n < 0) != (c < 0) {
		return (n - c/2) / c
	}
	return (n + c/2) / c
}

// sample takes k good frames and returns the mean of those near their
// median, and whether they agree closely enough to call the load stable.
func (h *HX711) sample(ctx context.Context) (int64, bool, error) {
	k := h.cfg.Samples
	var got []int32
	rejected := 0
	for len(got) < k {
		v, err := h.frame(ctx)
		if err != nil {
			return 0, false, err
		}
		if v == hx711Max || v == hx711Min || v == badFrame {
			rejected++
			if rejected > 2*k {
				return 0, false, fmt.Errorf("%d bad frames in a row: %w", rejected, ErrProtocol)
			}
			continue
		}
		got = append(got, v)
	}
	sorted := slices.Clone(got)
	slices.Sort(sorted)
	med := sorted[len(sorted)/2]
	var sum int64
	var kept []int32
	for _, v := range got {
		if d := int64(v) - int64(med); d <= int64(h.cfg.MaxDeviation) && d >= -int64(h.cfg.MaxDeviation) {
			kept = append(kept, v)
			sum += int64(v)
		}
	}
	// The median itself is always kept, so kept is never empty; fewer
	// than half agreeing means the load is moving or the line is noisy.
	if len(kept) <= k/2 {
		return int64(med), false, nil
	}
	mean := sum / int64(len(kept))
	stable := slices.Max(kept)-slices.Min(kept) <= h.cfg.StableCounts
	return mean, stable, nil
}

// badFrame marks a frame whose clock timing went wrong; it lies outside
// the 24-bit range so it cannot be a reading.
const badFrame = int32(-1 << 30)

// frame waits for a conversion and clocks it out: 24 bits MSB first, then a
// 25th pulse that selects channel A at gain 128 for the next one.
func (h *HX711) frame(ctx context.Context) (int32, error) {
	if err := h.waitReady(ctx); err != nil {
		return 0, err
	}
	var v uint32
	late := false
	var last gpio.Level // DOUT during the 25th pulse
	for i := range 25 {
		start := time.Now()
		if err := h.clk.Out(gpio.High); err != nil {
			return 0, fmt.Errorf("clock: %w", err)
		}
		bit := h.data.Read()
		if err := h.clk.Out(gpio.Low); err != nil {
			return 0, fmt.Errorf("clock: %w", err)
		}
		if time.Since(start) >= hx711MaxHigh {
			late = true // the chip may have powered down mid-frame
		}
		if i < 24 {
			v <<= 1
			if bit == gpio.High {
				v |= 1
			}
		} else {
			last = bit
		}
	}
	if late {
		// Had the chip powered down and woken before the frame's last
		// pulses, they would have left it partway into the next frame,
		// misaligning every frame after; a reset makes sure it starts over.
		if err := h.reset(); err != nil {
			return 0, err
		}
		return badFrame, nil
	}
	if last != gpio.High {
		// The 25th pulse ends the frame and the chip drives DOUT high
		// until its next conversion. Low here is a data line stuck or
		// floating low (a loose wire), whose frames of zeros would read
		// as a steady, believable weight.
		return 0, fmt.Errorf("DOUT low after the 25th clock pulse (data line stuck low?): %w", ErrSilent)
	}
	return int32(v<<8) >> 8, nil // sign-extend 24 bits
}

// waitReady waits for DOUT low. A chip stuck partway into a frame (noise
// on PD_SCK, another reader) may hold DOUT high for good, so after
// ReadyTimeout the chip is reset and given one more ReadyTimeout.
func (h *HX711) waitReady(ctx context.Context) error {
	ready, err := h.waitLow(ctx)
	if err != nil || ready {
		return err
	}
	if err := h.reset(); err != nil {
		return err
	}
	ready, err = h.waitLow(ctx)
	if err != nil || ready {
		return err
	}
	return ErrSilent
}

// waitLow reports whether DOUT goes low within ReadyTimeout.
func (h *HX711) waitLow(ctx context.Context) (bool, error) {
	deadline := time.Now().Add(h.cfg.ReadyTimeout)
	for h.data.Read() != gpio.Low {
		if err := ctxErr(ctx); err != nil {
			return false, err
		}
		if time.Now().After(deadline) {
			// One last look: a stall since the last may have hidden it.
			return h.data.Read() == gpio.Low, nil
		}
		time.Sleep(time.Millisecond)
	}
	return true, nil
}

// reset powers the chip down and up again through PD_SCK; it wakes with
// DOUT high until its first conversion (channel A, gain 128) is ready.
func (h *HX711) reset() error {
	if err := h.clk.Out(gpio.High); err != nil {
		return fmt.Errorf("clock: %w", err)
	}
	time.Sleep(2 * hx711MaxHigh)
	if err := h.clk.Out(gpio.Low); err != nil {
		return fmt.Errorf("clock: %w", err)
	}
	return nil
}
