package serialport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// ErrGone is a line whose port failed (the USB adapter unplugged, reset or
// re-enumerated) and is not open again yet.
var ErrGone = errors.New("serialport: device gone")

// ErrClosed is a line its owner closed.
var ErrClosed = errors.New("serialport: line closed")

// Backoff between attempts to open a line that went away: a replugged
// adapter is back within a second or two, and one left out costs an open
// attempt every few seconds.
const (
	MinBackoff = 250 * time.Millisecond
	MaxBackoff = 5 * time.Second
)

// Port is what a Line needs of an open port; go.bug.st/serial's Port has it.
type Port interface {
	io.ReadWriteCloser
	SetReadTimeout(d time.Duration) error
	ResetInputBuffer() error
}

// LineOptions are a Line's seams; zero values take the defaults noted.
type LineOptions struct {
	// Open opens the device anew; default Open of the line's Config.
	Open func() (Port, error)
	// After paces the attempts to open it again; default time.After
	// (tests move it).
	After func(time.Duration) <-chan time.Time
	Log   *slog.Logger
}

// Line is a serial port kept by its path. When the port fails it is
// closed and opened again by the same path, with a backoff, until the
// device is back: a scale or scanner unplugged and replugged works again
// without restarting the kiosk. While it is gone every call fails with
// ErrGone at once, so a caller polling the device reads it offline.
type Line struct {
	name  string
	open  func() (Port, error)
	after func(time.Duration) <-chan time.Time
	log   *slog.Logger

	mu      sync.Mutex
	port    Port // nil while gone
	timeout time.Duration
	timed   bool          // SetReadTimeout was called: a new port gets it too
	err     error         // why the line went away
	changed chan struct{} // closed and replaced when the port goes or comes
	closed  chan struct{}
}

// OpenLine opens c as a Line. A device missing at start is an error, as
// with Open: the kiosk says so rather than start without it.
func OpenLine(c Config, o LineOptions) (*Line, error) {
	if o.Open == nil {
		o.Open = func() (Port, error) { return Open(c) }
	}
	if o.After == nil {
		o.After = time.After
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	p, err := o.Open()
	if err != nil {
		return nil, err
	}
	return &Line{name: c.Path, open: o.Open, after: o.After, log: o.Log.With("port", c.Path),
		port: p, changed: make(chan struct{}), closed: make(chan struct{})}, nil
}

// Up reports whether the port is open.
func (l *Line) Up() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.port != nil
}

// Changed is closed when the port next goes away or comes back.
func (l *Line) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// WaitUp waits until the port is open.
func (l *Line) WaitUp(ctx context.Context) error {
	for {
		l.mu.Lock()
		up, changed := l.port != nil, l.changed
		l.mu.Unlock()
		select {
		case <-l.closed:
			return ErrClosed
		default:
		}
		if up {
			return nil
		}
		select {
		case <-changed:
		case <-l.closed:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// current is the open port, or why there is none.
func (l *Line) current() (Port, error) {
	select {
	case <-l.closed:
		return nil, ErrClosed
	default:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.port == nil {
		return nil, fmt.Errorf("serialport: %s: %w (%w)", l.name, ErrGone, l.err)
	}
	return l.port, nil
}

// check takes p for gone after a failure other than a timeout: go.bug.st
// reports an unplugged port as PortClosed, EIO or ENXIO, and a timeout as
// 0, nil.
func (l *Line) check(p Port, err error) error {
	if err == nil || os.IsTimeout(err) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN) {
		return err
	}
	select {
	case <-l.closed:
		return ErrClosed // our own Close ended the call
	default:
	}
	l.mu.Lock()
	if l.port != p { // another call saw it first
		l.mu.Unlock()
		return err
	}
	l.port, l.err = nil, err
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	p.Close()
	l.log.Warn("serial device gone; opening it again when it is back", "err", err)
	go l.reopen()
	return err
}

// reopen opens the path again, backing off, until it opens or the line
// is closed.
func (l *Line) reopen() {
	wait := MinBackoff
	for tries := 1; ; tries++ {
		select {
		case <-l.closed:
			return
		default:
		}
		select {
		case <-l.closed:
			return
		case <-l.after(wait):
		}
		p, err := l.open()
		l.mu.Lock()
		timeout, timed := l.timeout, l.timed
		l.mu.Unlock()
		if err == nil && timed {
			if err = p.SetReadTimeout(timeout); err != nil {
				p.Close()
			}
		}
		if err != nil {
			l.log.Debug("serial device still gone", "attempts", tries, "err", err)
			wait = min(wait*2, MaxBackoff)
			continue
		}
		l.mu.Lock()
		select {
		case <-l.closed:
			l.mu.Unlock()
			p.Close()
			return
		default:
		}
		l.port, l.err = p, nil
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
		l.log.Info("serial device back", "attempts", tries)
		return
	}
}

// Read reads the port; while the device is gone it fails with ErrGone.
func (l *Line) Read(b []byte) (int, error) {
	p, err := l.current()
	if err != nil {
		return 0, err
	}
	n, err := p.Read(b)
	return n, l.check(p, err)
}

// Write writes the port; while the device is gone it fails with ErrGone.
func (l *Line) Write(b []byte) (int, error) {
	p, err := l.current()
	if err != nil {
		return 0, err
	}
	n, err := p.Write(b)
	return n, l.check(p, err)
}

// SetReadTimeout bounds each Read, on this port and on the ones opened
// after it.
func (l *Line) SetReadTimeout(d time.Duration) error {
	l.mu.Lock()
	l.timeout, l.timed = d, true
	l.mu.Unlock()
	p, err := l.current()
	if err != nil {
		return err
	}
	return l.check(p, p.SetReadTimeout(d))
}

// ResetInputBuffer drops unread input.
func (l *Line) ResetInputBuffer() error {
	p, err := l.current()
	if err != nil {
		return err
	}
	return l.check(p, p.ResetInputBuffer())
}

// Close closes the port and stops opening it again. A Read blocked on it
// returns.
func (l *Line) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.closed:
		return nil
	default:
	}
	close(l.closed)
	if l.port == nil {
		return nil
	}
	err := l.port.Close()
	l.port = nil
	return err
}
