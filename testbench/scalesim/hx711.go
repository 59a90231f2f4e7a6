package scalesim

import (
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// HX711 is a fake HX711 load-cell amplifier. Its clock and data pins are
// periph gpio.PinIO values to hand to the driver. Like the chip, it pulls
// data low when a conversion is ready, shifts one bit out MSB first on each
// rising clock edge, ends the frame on the 25th pulse (channel A, gain
// 128), and powers down, losing the conversion, if the clock stays high
// longer than 60 µs.
type HX711 struct {
	mu        sync.Mutex
	raw       int32   // what the load cell gives now
	glitches  []int32 // next conversions, used before raw
	ready     bool
	sample    int32
	pulses    int
	risen     time.Time
	data      gpio.Level
	powerDown int
}

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
// as a bad clock edge or a spike on the bridge would.
func (h *HX711) Glitch(vs ...int32) {
	h.mu.Lock()
	h.glitches = append(h.glitches, vs...)
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
	h.sample = h.raw
	if len(h.glitches) > 0 {
		h.sample, h.glitches = h.glitches[0], h.glitches[1:]
	}
	h.ready, h.pulses, h.data = true, 0, gpio.Low
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
	if l == gpio.High {
		h.risen = time.Now()
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
	if !h.risen.IsZero() && time.Since(h.risen) > 60*time.Microsecond {
		h.powerDown++
		h.convert() // on power-up the chip starts over
		h.risen = time.Time{}
		return nil
	}
	h.risen = time.Time{}
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
	return d.h.data
}
