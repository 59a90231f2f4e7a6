// Package printer drives a thermal label printer over ESC/POS. It checks
// the printer's real-time status before and after every label, so a jam,
// paper-out or open cover is caught before a stamp is called printed.
package printer

import (
	"errors"
	"fmt"
	"image"
	"io"
	"sync"
	"time"

	"github.com/frank-postage/frank/appliance/escpos"
)

// Port is a serial line to the printer.
type Port interface {
	io.ReadWriter
	SetReadTimeout(d time.Duration) error
	ResetInputBuffer() error
}

// ErrSilent means the printer did not answer a status query.
var ErrSilent = errors.New("printer: no answer to status query")

// FaultError is a printer that cannot print, with the reason in
// escpos.Status.Fault form (jam, paper_out, cover_open, ...).
type FaultError struct {
	Status escpos.Status
}

func (e *FaultError) Error() string { return "printer: " + e.Status.Fault() }

// Fault is the reason code: jam, paper_out, cover_open, printer_error, offline.
func (e *FaultError) Fault() string { return e.Status.Fault() }

// Printer is one printer on a port. It is safe for concurrent use, though a
// kiosk prints one label at a time.
type Printer struct {
	mu      sync.Mutex
	port    Port
	timeout time.Duration
	// stale: the printer may be inside a command cut short (a kiosk that
	// died mid-label, a failed write), so it is resynced before the next.
	stale bool
}

// New returns a printer on port, which has seen nothing from this kiosk
// but what it sends from now on. timeout bounds each status reply; zero
// means 500 ms.
func New(port Port, timeout time.Duration) *Printer {
	if timeout == 0 {
		timeout = 500 * time.Millisecond
	}
	return &Printer{port: port, timeout: timeout}
}

// Open is New for a printer that stayed powered while the kiosk started:
// the kiosk before may have died mid-label, leaving it waiting for the
// rest of an image, so the first use resyncs it (escpos.Resync).
func Open(port Port, timeout time.Duration) *Printer {
	p := New(port, timeout)
	p.stale = true
	return p
}

// resync sends escpos.Resync, then a cut if a label is known to be half
// printed: it is spoiled (the kiosk records that label failed) and comes
// off by itself rather than ahead of the next stamp. A printer only
// maybe stale (Open) gets no cut, so a normal start feeds no paper.
func (p *Printer) resync(cut bool) error {
	job := escpos.Resync()
	if cut {
		job = append(job, escpos.Cut()...)
	}
	if _, err := p.port.Write(job); err != nil {
		p.stale = true
		return fmt.Errorf("printer: resync: %w", err)
	}
	p.stale = false
	return nil
}

// fresh resyncs a stale printer before it is used.
func (p *Printer) fresh() error {
	if !p.stale {
		return nil
	}
	return p.resync(false)
}

// Status asks DLE EOT 1-4.
func (p *Printer) Status() (escpos.Status, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.fresh(); err != nil {
		return escpos.Status{}, err
	}
	return p.status()
}

func (p *Printer) status() (escpos.Status, error) {
	if err := p.port.ResetInputBuffer(); err != nil {
		return escpos.Status{}, fmt.Errorf("printer: status: %w", err)
	}
	if err := p.port.SetReadTimeout(p.timeout); err != nil {
		return escpos.Status{}, fmt.Errorf("printer: status: %w", err)
	}
	var reply [4]byte
	for i := range reply {
		if _, err := p.port.Write(escpos.StatusQuery(byte(i + 1))); err != nil {
			p.stale = true // maybe half a query sent
			return escpos.Status{}, fmt.Errorf("printer: status: %w", err)
		}
		n, err := p.port.Read(reply[i : i+1])
		if err != nil {
			return escpos.Status{}, fmt.Errorf("printer: status: %w", err)
		}
		if n == 0 {
			return escpos.Status{}, ErrSilent
		}
	}
	s, err := escpos.ParseStatus(reply[0], reply[1], reply[2], reply[3])
	if err != nil {
		return escpos.Status{}, fmt.Errorf("printer: status: %w", err)
	}
	return s, nil
}

// Print prints one label and cuts it. It returns a *FaultError if the
// printer reports a fault before or after; a fault after means the label
// must be treated as spoiled.
func (p *Printer) Print(label image.Image) error {
	raster, err := escpos.Raster(label)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.fresh(); err != nil {
		return err
	}
	if err := p.ready(); err != nil {
		return err
	}
	job := append(escpos.Init(), raster...)
	job = append(job, escpos.Cut()...)
	if _, err := p.port.Write(job); err != nil {
		if rerr := p.resync(true); rerr != nil {
			return fmt.Errorf("printer: print: %w (and %w)", err, rerr)
		}
		return fmt.Errorf("printer: print: %w", err)
	}
	return p.ready()
}

// PrintReceipt sends a text job (escpos.Text's bytes, which select the
// receipt roll and end in a cut) with the same status checks as a label.
func (p *Printer) PrintReceipt(job []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.fresh(); err != nil {
		return err
	}
	if err := p.ready(); err != nil {
		return err
	}
	if _, err := p.port.Write(job); err != nil {
		// No cut: ESC @ has put the label roll back, and a receipt
		// half printed spoils no stamp.
		if rerr := p.resync(false); rerr != nil {
			return fmt.Errorf("printer: receipt: %w (and %w)", err, rerr)
		}
		return fmt.Errorf("printer: receipt: %w", err)
	}
	return p.ready()
}

func (p *Printer) ready() error {
	s, err := p.status()
	if err != nil {
		return err
	}
	if !s.OK() {
		return &FaultError{Status: s}
	}
	return nil
}
