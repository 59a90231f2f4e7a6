package gpiosim_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/gpio"
	"github.com/frank-postage/frank/testbench/gpiosim"
)

// waitFor polls cond until it holds or 2 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func expect(t *testing.T, p *gpio.Panel, want gpio.EventKind) {
	t.Helper()
	select {
	case ev := <-p.Events():
		if ev.Kind != want {
			t.Fatalf("event %v, want %v", ev.Kind, want)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("no %v event", want)
	}
}

func expectNone(t *testing.T, p *gpio.Panel) {
	t.Helper()
	select {
	case ev := <-p.Events():
		t.Fatalf("unexpected event %v", ev.Kind)
	case <-time.After(3 * gpio.Debounce):
	}
}

func TestPanelOverSocket(t *testing.T) {
	sim, err := gpiosim.Start(filepath.Join(t.TempDir(), "gpio.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	sim.SetDoor(true) // the kiosk learns the state at start, without an event
	p, err := gpio.OpenSim(sim.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !p.DoorOpen() {
		t.Fatal("initial door state not taken")
	}
	expectNone(t, p)

	t.Run("press", func(t *testing.T) {
		sim.Press()
		expect(t, p, gpio.ButtonPress)
		sim.Press()
		expect(t, p, gpio.ButtonPress)
		expectNone(t, p)
	})
	t.Run("bouncing press counts once", func(t *testing.T) {
		sim.Bounce()
		expect(t, p, gpio.ButtonPress)
		expectNone(t, p)
	})
	t.Run("door", func(t *testing.T) {
		sim.SetDoor(false)
		expect(t, p, gpio.DoorClosed)
		if p.DoorOpen() {
			t.Fatal("door still open")
		}
		sim.SetDoor(true)
		expect(t, p, gpio.DoorOpened)
		if !p.DoorOpen() {
			t.Fatal("door not open")
		}
	})
	t.Run("led", func(t *testing.T) {
		for _, m := range []gpio.LEDMode{gpio.LEDOn, gpio.LEDBlink, gpio.LEDOff} {
			if err := p.SetLED(m); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "led "+string(m), func() bool { return sim.LED() == string(m) })
		}
		if err := p.SetLED("disco"); err == nil {
			t.Fatal("unknown mode accepted")
		}
	})
	t.Run("close", func(t *testing.T) {
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-p.Events(); ok {
			t.Fatal("events not closed")
		}
		if err := p.SetLED(gpio.LEDOn); err == nil {
			t.Fatal("SetLED after Close succeeded")
		}
	})
}

func TestOpenSimNoServer(t *testing.T) {
	if _, err := gpio.OpenSim(filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("OpenSim without a simulator succeeded")
	}
}
