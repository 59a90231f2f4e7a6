// Package serialport opens a serial device with configured line settings,
// through go.bug.st/serial (periph.io's serial support never sets the baud
// rate). Device paths should be udev stable names such as /dev/frank-printer.
package serialport

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"

	"go.bug.st/serial"
)

// Config is a serial line. Zero values mean 115200 8N1.
type Config struct {
	Path     string `json:"path"`
	Baud     int    `json:"baud,omitempty"`
	DataBits int    `json:"data_bits,omitempty"`
	Parity   string `json:"parity,omitempty"`    // none, even, odd
	StopBits string `json:"stop_bits,omitempty"` // 1, 1.5, 2
}

// Mode converts the config to go.bug.st/serial's form.
func (c Config) Mode() (*serial.Mode, error) {
	m := &serial.Mode{BaudRate: c.Baud, DataBits: c.DataBits}
	if m.BaudRate == 0 {
		m.BaudRate = 115200
	}
	if m.DataBits == 0 {
		m.DataBits = 8
	}
	if m.DataBits < 5 || m.DataBits > 8 {
		return nil, fmt.Errorf("serialport: %s: data bits %d", c.Path, c.DataBits)
	}
	switch strings.ToLower(c.Parity) {
	case "", "none", "n":
		m.Parity = serial.NoParity
	case "even", "e":
		m.Parity = serial.EvenParity
	case "odd", "o":
		m.Parity = serial.OddParity
	default:
		return nil, fmt.Errorf("serialport: %s: parity %q", c.Path, c.Parity)
	}
	switch c.StopBits {
	case "", "1":
		m.StopBits = serial.OneStopBit
	case "1.5":
		m.StopBits = serial.OnePointFiveStopBits
	case "2":
		m.StopBits = serial.TwoStopBits
	default:
		return nil, fmt.Errorf("serialport: %s: stop bits %q", c.Path, c.StopBits)
	}
	return m, nil
}

// String is the line as a technician writes it: "/dev/frank-scale 9600 7E1".
func (c Config) String() string {
	m, err := c.Mode()
	if err != nil {
		return c.Path + " (" + err.Error() + ")"
	}
	parity := map[serial.Parity]string{serial.NoParity: "N", serial.EvenParity: "E", serial.OddParity: "O"}[m.Parity]
	stop := map[serial.StopBits]string{serial.OneStopBit: "1", serial.OnePointFiveStopBits: "1.5", serial.TwoStopBits: "2"}[m.StopBits]
	return fmt.Sprintf("%s %d %d%s%s", c.Path, m.BaudRate, m.DataBits, parity, stop)
}

// Open opens the port. Its Write writes everything or fails.
func Open(c Config) (serial.Port, error) {
	m, err := c.Mode()
	if err != nil {
		return nil, err
	}
	p, err := serial.Open(c.Path, m)
	if err != nil {
		return nil, fmt.Errorf("serialport: open %s: %w", c.Path, err)
	}
	return fullPort{p}, nil
}

// fullPort mends go.bug.st/serial's Write, a single write(2): a signal
// (the Go runtime preempts with SIGURG) can cut it short or fail it with
// EINTR, and a printer handed half a raster waits for the rest forever.
type fullPort struct{ serial.Port }

func (p fullPort) Write(b []byte) (int, error) {
	return writeAll(p.Port, b)
}

// writeAll is io.Writer's contract, kept by a writer that does not keep it.
func writeAll(w io.Writer, b []byte) (int, error) {
	done, stalls := 0, 0
	for done < len(b) {
		n, err := w.Write(b[done:])
		done += max(n, 0)
		switch {
		case errors.Is(err, syscall.EINTR), errors.Is(err, syscall.EAGAIN):
		case err != nil:
			return done, fmt.Errorf("serialport: write: %w", err)
		}
		if n > 0 {
			stalls = 0
		} else if stalls++; stalls > 100 {
			return done, fmt.Errorf("serialport: write: %w", io.ErrShortWrite)
		}
	}
	return done, nil
}
