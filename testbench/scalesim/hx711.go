package scalesim

import (
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// HX711 is a fake HX711 load-cell amplifier. Its clock and data pins are
// periph gpio.PinIO values to hand to the driver. Like the chip, it pulls
// data low when a conversion is ready, shifts one bit out MSB first on each
// rising clock edge, and ends the frame on the 25th pulse (channel A, gain
// 128). A clock held high longer than 60 µs powers it down, losing the
// conversion; when the clock goes low again it resets and powers up, and
// data stays high, clock pulses ignored, until its first conversion is
// ready HX711WakeUp later. Its other conversions are instant.
type HX711 struct {
	mu        sync.Mutex
	raw       int32   // what the load cell gives now
	glitches  []int32 // next conversions, used before raw
	ready     bool
	sample    int32
	glitched  bool // sample came from glitches
	pulses    int
	risen     time.Time
	wakeAt    time.Time // powering up until then; zero when awake
	data      gpio.Level
	powerDown int
}

// HX711WakeUp is how long the fake takes from reset to its first
// conversion. The chip takes 50 ms (80 SPS) to 400 ms (10 SPS); the fake is
// quicker so that tests stay fast, yet slow enough that the rest of a frame
// cut short by a power-down falls on a chip that is not ready, as it would.
const HX711WakeUp = 10 * time.Millisecond

// hx711PowerDown is how long a high clock takes to power the chip down.
const hx711PowerDown = 60 * time.Microsecond

// NewHX711 returns a chip with a conversion ready, reading raw.
func NewHX711(raw int32) *HX711 {
	h := &HX711{raw: raw}
	h.convert()
	return h
}

// SetRaw sets the load cell's output in counts (24-bit signed).
func (h *HX711) SetRaw(v int32) {
	h.mu.Lock()
	h.raw = v
	h.mu.Unlock()
}

// Glitch makes the next conversions read vs instead of the load cell,
// as a bad clock edge or a spike on the bridge would. One lost to a power
// down is used again by the next conversion.
func (h *HX711) Glitch(vs ...int32) {
	h.mu.Lock()
	h.glitches = append(h.glitches, vs...)
	h.mu.Unlock()
}

// ClearGlitches drops the glitches no conversion has used yet.
func (h *HX711) ClearGlitches() {
	h.mu.Lock()
	h.glitches = nil
	h.mu.Unlock()
}

// PowerDowns counts the times the clock stayed high too long.
func (h *HX711) PowerDowns() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.powerDown
}

// Clock is the PD_SCK pin.
func (h *HX711) Clock() gpio.PinIO { return clockPin{PinIO: gpio.INVALID, h: h} }

// Data is the DOUT pin.
func (h *HX711) Data() gpio.PinIO { return dataPin{PinIO: gpio.INVALID, h: h} }

// convert starts a new conversion; the fake's is instant.
func (h *HX711) convert() {
	h.sample, h.glitched = h.raw, false
	if len(h.glitches) > 0 {
		h.sample, h.glitches, h.glitched = h.glitches[0], h.glitches[1:], true
	}
	h.ready, h.pulses, h.data = true, 0, gpio.Low
}

// wake ends power-up once its time has come.
func (h *HX711) wake(now time.Time) {
	if !h.wakeAt.IsZero() && !now.Before(h.wakeAt) {
		h.wakeAt = time.Time{}
		h.convert()
	}
}

type clockPin struct {
	gpio.PinIO // INVALID: fails every call the fake does not model
	h          *HX711
}

func (c clockPin) String() string { return "HX711_SCK" }
func (c clockPin) Name() string   { return "HX711_SCK" }

func (c clockPin) Out(l gpio.Level) error {
	h := c.h
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if l == gpio.High {
		h.wake(now)
		h.risen = now
		if !h.ready {
			return nil
		}
		h.pulses++
		if h.pulses <= 24 {
			h.data = gpio.Level(uint32(h.sample)>>(24-h.pulses)&1 == 1)
		} else {
			h.data = gpio.High // frame over: not ready until the next conversion
		}
		return nil
	}
	long := !h.risen.IsZero() && now.Sub(h.risen) > hx711PowerDown
	h.risen = time.Time{}
	if long {
		// Powered down, now reset: the conversion is lost and the chip
		// starts over. A driver throws away a frame cut short this way, so a
		// glitch in it goes back to be read whole.
		h.powerDown++
		if h.ready && h.glitched {
			h.glitches = append([]int32{h.sample}, h.glitches...)
		}
		h.ready, h.glitched, h.pulses, h.data = false, false, 0, gpio.High
		h.wakeAt = now.Add(HX711WakeUp)
		return nil
	}
	if h.pulses >= 25 {
		h.convert()
	}
	return nil
}

type dataPin struct {
	gpio.PinIO
	h *HX711
}

func (d dataPin) String() string                { return "HX711_DOUT" }
func (d dataPin) Name() string                  { return "HX711_DOUT" }
func (d dataPin) In(gpio.Pull, gpio.Edge) error { return nil }
func (d dataPin) Read() gpio.Level {
	d.h.mu.Lock()
	defer d.h.mu.Unlock()
	d.h.wake(time.Now())
	return d.h.data
}
