package gpio

import (
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/testbench/wait"
	"periph.io/x/conn/v3/gpio"
)

// fakePin stands in for periph's gpiotest.Pin, whose clockwork dependency
// is not in this module's go.sum.
type fakePin struct {
	mu    sync.Mutex
	level gpio.Level
	edges chan gpio.Level
}

func newFakePin(l gpio.Level) *fakePin { return &fakePin{level: l, edges: make(chan gpio.Level, 64)} }

func (p *fakePin) In(gpio.Pull, gpio.Edge) error { return nil }
func (p *fakePin) Read() gpio.Level {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.level
}
func (p *fakePin) WaitForEdge(d time.Duration) bool {
	select {
	case l := <-p.edges:
		p.Out(l)
		return true
	case <-time.After(d):
		return false
	}
}
func (p *fakePin) Out(l gpio.Level) error {
	p.mu.Lock()
	p.level = l
	p.mu.Unlock()
	return nil
}

func TestHostPanel(t *testing.T) {
	button, door, led := newFakePin(gpio.High), newFakePin(gpio.Low), newFakePin(gpio.Low)
	p, err := openPins(button, door, led, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.DoorOpen() {
		t.Fatal("door open at start")
	}
	next := func() EventKind {
		select {
		case ev := <-p.Events():
			return ev.Kind
		case <-time.After(time.Second):
			return 0
		}
	}
	// A press that bounces: one event.
	for _, l := range []gpio.Level{gpio.Low, gpio.High, gpio.Low, gpio.High, gpio.Low} {
		button.edges <- l
	}
	if k := next(); k != ButtonPress {
		t.Fatalf("got %v, want press", k)
	}
	for _, l := range []gpio.Level{gpio.High, gpio.Low, gpio.High} {
		button.edges <- l
	}
	door.edges <- gpio.High
	if k := next(); k != DoorOpened || !p.DoorOpen() {
		t.Fatalf("got %v, want door open", k)
	}
	// A glitch shorter than the debounce time is no change at all.
	door.edges <- gpio.Low
	door.edges <- gpio.High
	select {
	case ev := <-p.Events():
		t.Fatalf("unexpected %v", ev.Kind)
	case <-time.After(3 * Debounce):
	}

	if err := p.SetLED(LEDOn); err != nil || led.Read() != gpio.High {
		t.Fatalf("led on: %v %v", err, led.Read())
	}
	if err := p.SetLED(LEDBlink); err != nil {
		t.Fatal(err)
	}
	seen := map[gpio.Level]bool{}
	wait.For(t, 2*time.Second, "the led to blink", func() bool {
		seen[led.Read()] = true
		return len(seen) == 2
	})
	if err := p.SetLED(LEDOff); err != nil {
		t.Fatal(err)
	}
	wait.Never(t, 2*blinkPeriod, "the stopped blinker turned the led back on", func() bool { return led.Read() != gpio.Low })
}
