package fleet

import (
	"errors"
	"image"
	"net"
	"sync"
	"time"

	"github.com/frank-postage/frank/appliance/escpos"
	"github.com/frank-postage/frank/appliance/gpio"
	"github.com/frank-postage/frank/appliance/printer"
)

// twinPrinter is a thermal printer in memory: it prints in a realistic
// time, answers status queries, and takes faults: paper out, a jam at the
// cutter, and a power cut while a label is printing.
type twinPrinter struct {
	mu       sync.Mutex
	paperOut bool
	jam      bool
	cut      chan struct{} // closed: the power is off; a label printing never finishes
	printed  int
}

func newTwinPrinter() *twinPrinter { return &twinPrinter{} }

func (p *twinPrinter) Print(image.Image) error {
	time.Sleep(300 * time.Millisecond) // a 1-inch label at 100 mm/s, and the cut
	p.mu.Lock()
	st, cut := p.status(), p.cut
	p.mu.Unlock()
	if cut != nil {
		<-make(chan struct{}) // the power went mid-label: this kiosk never returns
	}
	if !st.OK() {
		return &printer.FaultError{Status: st}
	}
	p.mu.Lock()
	p.printed++
	p.mu.Unlock()
	return nil
}

func (p *twinPrinter) status() escpos.Status {
	return escpos.Status{PaperOut: p.paperOut, CutterError: p.jam}
}

// Status answers the kiosk's real-time status query.
func (p *twinPrinter) Status() (escpos.Status, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut != nil {
		return escpos.Status{}, errors.New("twin printer: no power")
	}
	return p.status(), nil
}

func (p *twinPrinter) set(paperOut, jam bool) {
	p.mu.Lock()
	p.paperOut, p.jam = paperOut, jam
	p.mu.Unlock()
}

// powerCut stops the printer for good: the kiosk using it is gone.
func (p *twinPrinter) powerCut() {
	p.mu.Lock()
	p.cut = make(chan struct{})
	p.mu.Unlock()
}

// twinPanel is the GPIO panel: the label door and its events.
type twinPanel struct {
	mu     sync.Mutex
	open   bool
	events chan gpio.Event
}

func newTwinPanel() *twinPanel { return &twinPanel{events: make(chan gpio.Event, 4)} }

func (p *twinPanel) Events() <-chan gpio.Event { return p.events }
func (p *twinPanel) SetLED(gpio.LEDMode) error { return nil }
func (p *twinPanel) DoorOpen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

func (p *twinPanel) setDoor(open bool) {
	p.mu.Lock()
	p.open = open
	p.mu.Unlock()
	kind := gpio.DoorClosed
	if open {
		kind = gpio.DoorOpened
	}
	select {
	case p.events <- gpio.Event{Kind: kind, At: time.Now()}:
	default:
	}
}

// link is a kiosk's network: it can be cut (a partition, or the power
// going), refusing new connections until it heals.
type link struct {
	mu    sync.Mutex
	conns []net.Conn
	down  bool
}

func (l *link) dial(network, addr string) (net.Conn, error) {
	l.mu.Lock()
	down := l.down
	l.mu.Unlock()
	if down {
		return nil, errors.New("twin: network down")
	}
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.conns = append(l.conns, c)
	l.mu.Unlock()
	return c, nil
}

// cut drops every connection and refuses new ones until heal.
func (l *link) cut() {
	l.mu.Lock()
	l.down = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (l *link) heal() {
	l.mu.Lock()
	l.down = false
	l.mu.Unlock()
}
