// Package gpio is the kiosk's front panel: the staff service button, the
// status LED and the label-door switch. Two backends feed the same Panel
// logic: GPIO pins through periph.io on a Raspberry Pi (OpenHost), and the
// testbench GPIO simulator over a unix socket (OpenSim). Both deliver raw
// line levels, so debouncing is the same code in both.
//
// The simulator protocol is text lines ending in "\n" over a stream unix
// socket. Simulator to kiosk, raw levels, each sent when it changes:
//
//	button down      the button line went low (pressed, or a bounce)
//	button up        the button line went high
//	door open        the door switch opened
//	door closed      the door switch closed
//
// On connect the simulator first sends "button up|down" and then
// "door open|closed", the current state; the door line doubles as the
// greeting. Kiosk to simulator:
//
//	led on
//	led off
//	led blink
//
// Unknown lines are ignored by both sides, so either may add lines later.
package gpio

import (
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Debounce is how long an input must hold a level before it counts.
const Debounce = 30 * time.Millisecond

// ErrClosed is a panel used after Close.
var ErrClosed = errors.New("gpio: panel closed")

// LEDMode is what the status LED shows.
type LEDMode string

// LED modes.
const (
	LEDOff   LEDMode = "off"
	LEDOn    LEDMode = "on"
	LEDBlink LEDMode = "blink"
)

// EventKind is what happened on the panel.
type EventKind int

// Events.
const (
	ButtonPress EventKind = iota + 1
	DoorOpened
	DoorClosed
)

func (k EventKind) String() string {
	switch k {
	case ButtonPress:
		return "button press"
	case DoorOpened:
		return "door open"
	case DoorClosed:
		return "door closed"
	}
	return "unknown"
}

// Event is one debounced change.
type Event struct {
	Kind EventKind
	At   time.Time
}

// led is the backend's LED output.
type led interface {
	setLED(LEDMode) error
}

// Panel is the front panel. It is safe for concurrent use.
type Panel struct {
	log    *slog.Logger
	events chan Event
	button *debouncer // true = pressed
	door   *debouncer // true = open
	led    led
	close  func() error

	mu     sync.Mutex
	closed bool
}

func newPanel(l led, log *slog.Logger) *Panel {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Panel{log: log, events: make(chan Event, 16), led: l}
	p.button = &debouncer{settled: func(pressed bool) {
		if pressed {
			p.emit(ButtonPress)
		}
	}}
	p.door = &debouncer{settled: func(open bool) {
		if open {
			p.emit(DoorOpened)
		} else {
			p.emit(DoorClosed)
		}
	}}
	return p
}

// Events delivers button presses and door changes. It is closed by Close.
// Events are dropped, with a warning, if nobody reads for 16 of them.
func (p *Panel) Events() <-chan Event { return p.events }

// DoorOpen reports the debounced door state.
func (p *Panel) DoorOpen() bool { return p.door.state() }

// SetLED sets the status LED.
func (p *Panel) SetLED(m LEDMode) error {
	switch m {
	case LEDOff, LEDOn, LEDBlink:
	default:
		return errors.New("gpio: set led: unknown mode " + string(m))
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return p.led.setLED(m)
}

// Close stops the backend and closes Events.
func (p *Panel) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.close() // returns once the backend feeds no more levels
	p.button.stop()
	p.door.stop()
	p.mu.Lock()
	close(p.events)
	p.mu.Unlock()
	return err
}

func (p *Panel) emit(k EventKind) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	select {
	case p.events <- Event{Kind: k, At: time.Now()}:
	default:
		p.log.Warn("gpio: event dropped, nobody reading", "event", k.String())
	}
}

// debouncer reports a level once it has held for Debounce. The first
// level seen sets the state without an event: it is how things were at
// start, not a change.
type debouncer struct {
	settled func(bool)

	mu      sync.Mutex
	known   bool
	stable  bool
	raw     bool
	timer   *time.Timer
	stopped bool
}

// set is a raw level from the backend.
func (d *debouncer) set(v bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return
	}
	if !d.known {
		d.known, d.stable, d.raw = true, v, v
		return
	}
	d.raw = v
	if d.timer != nil {
		d.timer.Stop()
	}
	d.timer = time.AfterFunc(Debounce, d.fire)
}

func (d *debouncer) fire() {
	d.mu.Lock()
	if d.stopped || d.raw == d.stable {
		d.mu.Unlock()
		return
	}
	d.stable = d.raw
	v := d.stable
	d.mu.Unlock()
	d.settled(v)
}

func (d *debouncer) state() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stable
}

func (d *debouncer) stop() {
	d.mu.Lock()
	d.stopped = true
	if d.timer != nil {
		d.timer.Stop()
	}
	d.mu.Unlock()
}
