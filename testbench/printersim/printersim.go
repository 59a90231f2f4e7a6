// Package printersim emulates an ESC/POS thermal label printer on a
// pseudo-terminal. The kiosk opens the terminal as it would a real serial
// printer; the emulator parses the byte stream on its own (it shares no code
// with the kiosk's encoder), answers DLE EOT status queries, and writes each
// cut label as a PNG.
package printersim

import (
	"bufio"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/frank-postage/frank/testbench/ptylink"
	"golang.org/x/sys/unix"
)

// Fault is a state the emulator can be put in.
type Fault int

// Faults.
const (
	OK Fault = iota
	Jam
	PaperOut
	CoverOpen
	Silent // answers no status query
)

// Printer is a running emulator.
type Printer struct {
	line   *ptylink.Line
	outDir string
	log    *slog.Logger

	mu       sync.Mutex
	rows     [][]byte // raster rows of the label being printed, 1 bit per dot
	width    int      // dots
	labels   []string // PNGs written
	seq      int      // last label number; continues after files already in outDir
	waiters  []chan string
	done     chan struct{}
	fault    Fault
	failNext Fault // the next label is lost to this fault
	failSkip int   // labels that still come out before failNext strikes
	hold     *hold // the next cut waits for it

	receipt  bool      // ESC c 0 2 chose the receipt roll for this job
	text     textState // the receipt being printed
	receipts []string  // receipt PNGs written; each has a .txt beside it
	rseq     int
	rwaiters []chan string
}

// hold keeps a label in the printer until released.
type hold struct {
	held, release chan struct{}
}

// HoldNext makes the next cut wait in the printer, as a slow print does,
// until release is called; held is closed once it waits. A test kills
// something between a label printing and the kiosk hearing that it did.
func (p *Printer) HoldNext() (held <-chan struct{}, release func()) {
	h := &hold{held: make(chan struct{}), release: make(chan struct{})}
	p.mu.Lock()
	p.hold = h
	p.mu.Unlock()
	var once sync.Once
	return h.held, func() { once.Do(func() { close(h.release) }) }
}

// SetFault puts the printer in a state (OK clears it).
func (p *Printer) SetFault(f Fault) {
	p.mu.Lock()
	p.fault = f
	p.mu.Unlock()
}

// FailNext makes the next label go wrong with f: it never comes out, and
// the printer stays in f until SetFault(OK), as a jam does until staff
// clear it.
func (p *Printer) FailNext(f Fault) {
	p.mu.Lock()
	p.failNext = f
	p.mu.Unlock()
}

// FailAfter lets n more labels come out, then fails the next one with f:
// paper that runs out in the middle of a sale.
func (p *Printer) FailAfter(n int, f Fault) {
	p.mu.Lock()
	p.failNext, p.failSkip = f, n
	p.mu.Unlock()
}

// Start opens a pseudo-terminal, links its device to link (a stable name
// like a udev rule gives a real printer), and writes labels into outDir.
func Start(link, outDir string, log *slog.Logger) (*Printer, error) {
	line, err := ptylink.Open(link)
	if err != nil {
		return nil, fmt.Errorf("printersim: %w", err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		line.Close()
		return nil, fmt.Errorf("printersim: %w", err)
	}
	old, _ := filepath.Glob(filepath.Join(outDir, "label-*.png"))
	oldReceipts, _ := filepath.Glob(filepath.Join(outDir, "receipt-*.png"))
	p := &Printer{line: line, outDir: outDir, log: log, done: make(chan struct{}), seq: len(old), rseq: len(oldReceipts)}
	go p.run()
	return p, nil
}

// Path is the device the kiosk should open.
func (p *Printer) Path() string {
	return p.line.Path()
}

// Labels returns the PNG files written so far.
func (p *Printer) Labels() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.labels...)
}

// Next returns a channel that receives the path of the next label cut.
func (p *Printer) Next() <-chan string {
	ch := make(chan string, 1)
	p.mu.Lock()
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()
	return ch
}

// Close stops the emulator and removes the link.
func (p *Printer) Close() error {
	p.line.Close()
	<-p.done
	return nil
}

func (p *Printer) run() {
	defer close(p.done)
	r := bufio.NewReader(p.line.Master)
	for {
		err := p.command(r)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EIO) {
			return
		}
		p.log.Warn("printer emulator: bad input", "err", err)
	}
}

// command reads and executes one command.
func (p *Printer) command(r *bufio.Reader) error {
	b, err := r.ReadByte()
	if err != nil {
		return err
	}
	switch b {
	case 0x1B: // ESC
		c, err := r.ReadByte()
		if err != nil {
			return err
		}
		if c == '@' {
			p.reset()
			return nil
		}
		return p.escText(r, c)
	case 0x1D: // GS
		c, err := r.ReadByte()
		if err != nil {
			return err
		}
		switch c {
		case 'v':
			return p.raster(r)
		case '!':
			n, err := r.ReadByte()
			if err != nil {
				return err
			}
			p.mu.Lock()
			p.text.large = n != 0
			p.mu.Unlock()
			return nil
		case 'V':
			m, err := r.ReadByte()
			if err != nil {
				return err
			}
			if m == 65 || m == 66 { // function B carries a feed amount
				if _, err := r.ReadByte(); err != nil {
					return err
				}
			}
			return p.cut()
		}
		return fmt.Errorf("unsupported GS %#02x", c)
	case 0x10: // DLE
		c, err := r.ReadByte()
		if err != nil {
			return err
		}
		n, err := r.ReadByte()
		if err != nil {
			return err
		}
		if c != 0x04 || n < 1 || n > 4 {
			return fmt.Errorf("unsupported DLE %#02x %d", c, n)
		}
		p.mu.Lock()
		f := p.fault
		p.mu.Unlock()
		if f == Silent {
			return nil
		}
		_, err = p.line.Master.Write([]byte{statusByte(f, n)})
		return err
	}
	if b == 0 {
		return nil // NUL alone: ignored, as ESC/POS printers do
	}
	if b == '\n' || b >= 0x20 {
		p.mu.Lock()
		p.text.put(b)
		p.mu.Unlock()
		return nil
	}
	return fmt.Errorf("unsupported control byte %#02x", b)
}

// statusByte answers DLE EOT n as an Epson-compatible printer does: bits 1
// and 4 always set, then the fault bits of each status.
func statusByte(f Fault, n byte) byte {
	b := byte(0x12)
	switch n {
	case 1: // printer status: offline
		if f != OK {
			b |= 0x08
		}
	case 2: // offline cause
		switch f {
		case CoverOpen:
			b |= 0x04
		case PaperOut:
			b |= 0x20
		case Jam:
			b |= 0x40
		}
	case 3: // error cause: autocutter (jam)
		if f == Jam {
			b |= 0x08
		}
	case 4: // roll paper sensor: end
		if f == PaperOut {
			b |= 0x60
		}
	}
	return b
}

func (p *Printer) reset() {
	p.mu.Lock()
	p.rows, p.width = nil, 0
	p.receipt, p.text = false, textState{}
	p.mu.Unlock()
}

// raster reads GS v 0 m xL xH yL yH d1...dk.
func (p *Printer) raster(r *bufio.Reader) error {
	var h [6]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return err
	}
	if h[0] != '0' {
		return fmt.Errorf("GS v %#02x: want '0'", h[0])
	}
	if h[1] != 0 {
		return fmt.Errorf("GS v 0 mode %d: only normal size is emulated", h[1])
	}
	xBytes := int(h[2]) | int(h[3])<<8
	yDots := int(h[4]) | int(h[5])<<8
	if xBytes == 0 || yDots == 0 || xBytes > 256 || yDots > 4096 {
		return fmt.Errorf("GS v 0: %d x %d out of range", xBytes, yDots)
	}
	// Read before locking: a raster cut short must not hold up the test
	// driving the emulator.
	rows := make([][]byte, yDots)
	for i := range rows {
		rows[i] = make([]byte, xBytes)
		if _, err := io.ReadFull(r, rows[i]); err != nil {
			return err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rows = append(p.rows, rows...)
	p.width = max(p.width, xBytes*8)
	return nil
}

func (p *Printer) cut() error {
	p.mu.Lock()
	if h := p.hold; h != nil {
		p.hold = nil
		p.mu.Unlock()
		close(h.held)
		<-h.release
		p.mu.Lock()
	}
	rows, width := p.rows, p.width
	p.rows, p.width = nil, 0
	receipt, text := p.receipt, p.text
	p.receipt, p.text = false, textState{}
	if p.failNext != OK && p.failSkip > 0 {
		p.failSkip-- // this one still comes out
	} else if p.fault != OK || p.failNext != OK {
		// Nothing comes out of a printer in a fault.
		if p.failNext != OK {
			p.fault, p.failNext = p.failNext, OK
		}
		f := p.fault // SetFault may change it once unlocked
		p.mu.Unlock()
		p.log.Warn("printer emulator: label lost", "fault", f)
		return nil
	}
	if receipt {
		p.mu.Unlock()
		return p.cutReceipt(text)
	}
	if len(rows) > 0 {
		p.seq++
	}
	n := p.seq
	p.mu.Unlock()
	if len(rows) == 0 {
		return nil // a cut with nothing printed: blank feed
	}
	img := image.NewPaletted(image.Rect(0, 0, width, len(rows)), color.Palette{color.White, color.Black})
	for y, row := range rows {
		for x := range len(row) * 8 {
			if row[x/8]&(0x80>>(x%8)) != 0 {
				img.SetColorIndex(x, y, 1)
			}
		}
	}
	name := filepath.Join(p.outDir, fmt.Sprintf("label-%04d.png", n))
	if err := writePNG(name, img); err != nil {
		return err
	}
	p.log.Info("label printed", "png", name, "dots", fmt.Sprintf("%dx%d", width, len(rows)))
	p.mu.Lock()
	p.labels = append(p.labels, name)
	ws := p.waiters
	p.waiters = nil
	p.mu.Unlock()
	for _, w := range ws {
		w <- name
	}
	return nil
}

// writePNG writes what came out of the printer as a PNG file.
func writePNG(name string, img image.Image) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
