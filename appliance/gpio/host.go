package gpio

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/host/v3"
)

// Pins names the panel's GPIO lines as gpioreg knows them.
type Pins struct {
	Button string // to ground when pressed; default GPIO17
	Door   string // switch to ground when the door is closed; default GPIO27
	LED    string // high lights it; default GPIO22
}

// inPin is what the panel needs of an input; periph's gpio.PinIn has it.
type inPin interface {
	In(pull gpio.Pull, edge gpio.Edge) error
	Read() gpio.Level
	WaitForEdge(timeout time.Duration) bool
}

// outPin is what the panel needs of an output; periph's gpio.PinOut has it.
type outPin interface {
	Out(l gpio.Level) error
}

// HostPin returns the pin of the Pi's GPIO header named name, as gpioreg
// knows it (GPIO5, ...).
func HostPin(name string) (gpio.PinIO, error) {
	if _, err := host.Init(); err != nil {
		return nil, fmt.Errorf("gpio: open host: %w", err)
	}
	p := gpioreg.ByName(name)
	if p == nil {
		return nil, fmt.Errorf("gpio: open host: no pin %s", name)
	}
	return p, nil
}

// OpenHost opens the panel on the Pi's GPIO header.
func OpenHost(names Pins) (*Panel, error) {
	pin := func(name, def string) (gpio.PinIO, error) {
		if name == "" {
			name = def
		}
		return HostPin(name)
	}
	b, err := pin(names.Button, "GPIO17")
	if err != nil {
		return nil, err
	}
	d, err := pin(names.Door, "GPIO27")
	if err != nil {
		return nil, err
	}
	l, err := pin(names.LED, "GPIO22")
	if err != nil {
		return nil, err
	}
	return openPins(b, d, l, slog.Default())
}

// pinLED drives the LED pin, blinking it from a goroutine as PWM is not
// on every pin.
type pinLED struct {
	pin outPin

	mu    sync.Mutex
	blink chan struct{} // closed to stop blinking
	done  chan struct{} // closed when the blinker has stopped
}

const blinkPeriod = 250 * time.Millisecond

func (l *pinLED) setLED(m LEDMode) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blink != nil {
		close(l.blink)
		<-l.done // or its last write could land after ours
		l.blink = nil
	}
	switch m {
	case LEDBlink:
		stop, done := make(chan struct{}), make(chan struct{})
		l.blink, l.done = stop, done
		go func() {
			defer close(done)
			t := time.NewTicker(blinkPeriod)
			defer t.Stop()
			on := true
			for {
				l.pin.Out(gpio.Level(on))
				select {
				case <-stop:
					return
				case <-t.C:
					on = !on
				}
			}
		}()
		return nil
	case LEDOn:
		return wrap("set led", l.pin.Out(gpio.High))
	}
	return wrap("set led", l.pin.Out(gpio.Low))
}

func wrap(op string, err error) error {
	if err != nil {
		return fmt.Errorf("gpio: %s: %w", op, err)
	}
	return nil
}

// openPins runs the panel on pins; tests pass fakes.
func openPins(button, door inPin, ledPin outPin, log *slog.Logger) (*Panel, error) {
	if err := button.In(gpio.PullUp, gpio.BothEdges); err != nil {
		return nil, fmt.Errorf("gpio: button: %w", err)
	}
	if err := door.In(gpio.PullUp, gpio.BothEdges); err != nil {
		return nil, fmt.Errorf("gpio: door: %w", err)
	}
	l := &pinLED{pin: ledPin}
	if err := l.setLED(LEDOff); err != nil {
		return nil, err
	}
	p := newPanel(l, log)
	p.button.set(button.Read() == gpio.Low)
	p.door.set(door.Read() == gpio.High)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	watch := func(pin inPin, d *debouncer, active gpio.Level) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// A bounded wait, so Close is noticed.
			if pin.WaitForEdge(100 * time.Millisecond) {
				d.set(pin.Read() == active)
			}
		}
	}
	wg.Add(2)
	go watch(button, p.button, gpio.Low)
	go watch(door, p.door, gpio.High)
	p.close = func() error {
		close(stop)
		wg.Wait()
		return l.setLED(LEDOff)
	}
	return p, nil
}
