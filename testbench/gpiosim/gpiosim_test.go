package gpiosim_test

import (
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/gpio"
	"github.com/frank-postage/frank/testbench/gpiosim"
	"github.com/frank-postage/frank/testbench/wait"
)

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
			wait.For(t, 2*time.Second, "led "+string(m), func() bool { return sim.LED() == string(m) })
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

// closeWithin fails the test if sim.Close takes longer than d.
func closeWithin(t *testing.T, sim *gpiosim.Sim, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { sim.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatal("Close hung")
	}
}

// A kiosk that stops reading is hung up on, instead of blocking the
// emulator and its Close.
func TestStuckClient(t *testing.T) {
	sim, err := gpiosim.Start(filepath.Join(t.TempDir(), "gpio.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", sim.Path())
	if err != nil {
		sim.Close()
		t.Fatal(err)
	}
	defer c.Close()
	filled := make(chan struct{})
	go func() {
		defer close(filled)
		// Enough lines to fill the socket buffer many times over.
		for i := range 200_000 {
			sim.SetDoor(i%2 == 0)
		}
	}()
	select {
	case <-filled:
	case <-time.After(10 * time.Second):
		t.Fatal("SetDoor blocked on a kiosk that does not read")
	}
	closeWithin(t, sim, 2*time.Second)
}

// Connections arriving while Close runs must not keep it waiting.
func TestCloseWhileConnecting(t *testing.T) {
	for range 20 {
		sim, err := gpiosim.Start(filepath.Join(t.TempDir(), "gpio.sock"), nil)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		dialed := make(chan struct{})
		var n atomic.Int32
		go func() {
			defer close(dialed)
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for len(conns) < 500 {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.Dial("unix", sim.Path())
				if err != nil {
					return // the listener is gone
				}
				conns = append(conns, c) // held open, as a kiosk would
				n.Add(1)
			}
		}()
		wait.For(t, 5*time.Second, "a connection dialled", func() bool { return n.Load() > 0 })
		closeWithin(t, sim, 2*time.Second)
		close(stop)
		<-dialed
	}
}
