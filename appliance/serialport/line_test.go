package serialport

import (
	"context"
	"errors"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"
)

// memPort is an in-memory port: Read takes what the device sent, and
// unplug fails it as a vanished tty does.
type memPort struct {
	in      chan []byte
	gone    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	timeout time.Duration
}

func newMemPort() *memPort { return &memPort{in: make(chan []byte, 8), gone: make(chan struct{})} }

func (p *memPort) unplug() { p.once.Do(func() { close(p.gone) }) }

func (p *memPort) Read(b []byte) (int, error) {
	select {
	case m := <-p.in:
		return copy(b, m), nil
	case <-p.gone:
		return 0, syscall.EIO
	}
}

func (p *memPort) Write(b []byte) (int, error) {
	select {
	case <-p.gone:
		return 0, syscall.EIO
	default:
		return len(b), nil
	}
}

func (p *memPort) SetReadTimeout(d time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.timeout = d
	return nil
}

func (p *memPort) ResetInputBuffer() error { return nil }
func (p *memPort) Close() error            { p.unplug(); return nil }

// device is the far end: present or not, and the port it last opened.
type device struct {
	mu      sync.Mutex
	present bool
	ports   []*memPort
}

func (d *device) open() (Port, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.present {
		return nil, syscall.ENOENT
	}
	p := newMemPort()
	d.ports = append(d.ports, p)
	return p, nil
}

func (d *device) set(present bool) {
	d.mu.Lock()
	d.present = present
	d.mu.Unlock()
}

func (d *device) last() *memPort {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ports[len(d.ports)-1]
}

// clock hands out the backoff's timers, which the test fires.
type clock struct{ waits chan wakeup }

type wakeup struct {
	d time.Duration
	c chan time.Time
}

func (c *clock) after(d time.Duration) <-chan time.Time {
	w := wakeup{d, make(chan time.Time, 1)}
	c.waits <- w
	return w.c
}

// next waits for the line to start a backoff, and says how long it is.
func (c *clock) next(t *testing.T) wakeup {
	t.Helper()
	select {
	case w := <-c.waits:
		return w
	case <-time.After(10 * time.Second):
		t.Fatal("the line never waited to open the device again")
		return wakeup{}
	}
}

// A device unplugged makes its line fail fast with ErrGone while it is
// away; the line opens the same path again, backing off, and once the
// device is back reads flow with the read timeout the caller had set.
func TestLineReopensAfterUnplug(t *testing.T) {
	dev := &device{present: true}
	clk := &clock{waits: make(chan wakeup)}
	l, err := OpenLine(Config{Path: "/dev/frank-scale"}, LineOptions{Open: dev.open, After: clk.after})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.SetReadTimeout(time.Second); err != nil {
		t.Fatal(err)
	}
	first := dev.last()
	first.in <- []byte("ok")
	buf := make([]byte, 8)
	if n, err := l.Read(buf); err != nil || string(buf[:n]) != "ok" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	changed := l.Changed()
	dev.set(false)
	first.unplug()
	if _, err := l.Read(buf); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read on the unplugged port: %v", err)
	}
	<-changed
	if l.Up() {
		t.Fatal("up with the device gone")
	}
	if _, err := l.Write([]byte("W\r")); !errors.Is(err, ErrGone) {
		t.Fatalf("write while gone: %v; want ErrGone", err)
	}
	// Each failed attempt waits longer, up to MaxBackoff.
	var waits []time.Duration
	var w wakeup
	for i := range 7 {
		if i > 0 {
			w.c <- time.Time{} // the device is still away
		}
		w = clk.next(t)
		waits = append(waits, w.d)
	}
	want := []time.Duration{MinBackoff, 2 * MinBackoff, 4 * MinBackoff, 8 * MinBackoff, 16 * MinBackoff, MaxBackoff, MaxBackoff}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("backoff %v; want %v", waits, want)
		}
	}
	if l.Up() {
		t.Fatal("up before the device came back")
	}

	changed = l.Changed()
	dev.set(true)
	w.c <- time.Time{}
	<-changed
	if err := l.WaitUp(context.Background()); err != nil || !l.Up() {
		t.Fatalf("WaitUp: %v, up %v", err, l.Up())
	}
	second := dev.last()
	if second == first {
		t.Fatal("the line did not open the device again")
	}
	second.mu.Lock()
	timeout := second.timeout
	second.mu.Unlock()
	if timeout != time.Second {
		t.Errorf("reopened port's read timeout %v; want the 1s set before", timeout)
	}
	second.in <- []byte("back")
	if n, err := l.Read(buf); err != nil || string(buf[:n]) != "back" {
		t.Fatalf("read after the device came back: %q, %v", buf[:n], err)
	}
}

// Closing a line ends a blocked Read and the attempts to open it again.
func TestLineCloseStopsReopening(t *testing.T) {
	dev := &device{present: true}
	clk := &clock{waits: make(chan wakeup, 1)}
	l, err := OpenLine(Config{Path: "/dev/frank-scanner"}, LineOptions{Open: dev.open, After: clk.after})
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := l.Read(make([]byte, 8))
		read <- err
	}()
	dev.set(false)
	dev.last().unplug()
	if err := <-read; !errors.Is(err, syscall.EIO) {
		t.Fatalf("read on the unplugged port: %v", err)
	}
	w := clk.next(t)
	l.Close()
	w.c <- time.Time{}
	if err := l.WaitUp(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitUp on a closed line: %v", err)
	}
	if _, err := l.Read(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("read on a closed line: %v", err)
	}
	if _, err := OpenLine(Config{Path: "/dev/none"}, LineOptions{Open: func() (Port, error) { return nil, io.ErrUnexpectedEOF }}); err == nil {
		t.Fatal("a line whose device is missing at start opened")
	}
}
