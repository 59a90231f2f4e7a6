// Package scanner reads barcodes from a serial barcode scanner and
// classifies them. Scanners end each code with CR, LF or CRLF depending on
// how they were configured at the factory, so all three are accepted; an
// empty line is never a scan.
package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// MaxLine is the longest code accepted, in bytes. No code the kiosk cares
// about comes near it; anything longer is line noise or a wrong scanner mode.
const MaxLine = 256

// ErrTooLong is a line longer than MaxLine; it was discarded up to its end.
var ErrTooLong = errors.New("scanner: line too long")

// ErrGarbled is a line holding bytes a scanner does not send for a code
// (control or non-ASCII bytes), as after a baud mismatch or a loose cable.
var ErrGarbled = errors.New("scanner: garbled line")

// ErrRead is a read from the port that failed; Scans ends after it.
var ErrRead = errors.New("scanner: read")

// Scan is one line from the scanner: a code, or the error that line caused.
// A scan with an error is not fatal; the stream goes on.
type Scan struct {
	Code string
	Err  error
}

// Scanner reads lines from one serial scanner.
type Scanner struct {
	r io.Reader
}

// New returns a scanner reading r.
func New(r io.Reader) *Scanner { return &Scanner{r: r} }

// Scans reads until ctx ends or the reader fails, then closes the channel.
// A reader failure arrives as a last Scan with Err set. A read blocked on a
// quiet port returns only when the port is closed, so the caller should
// close it after cancelling ctx. Call Scans once per Scanner.
func (s *Scanner) Scans(ctx context.Context) <-chan Scan {
	ch := make(chan Scan)
	go func() {
		defer close(ch)
		send := func(sc Scan) bool {
			select {
			case ch <- sc:
				return true
			case <-ctx.Done():
				return false
			}
		}
		var sp Splitter
		buf := make([]byte, 512)
		for {
			n, err := s.r.Read(buf)
			for _, b := range buf[:n] {
				if code, ok, err := sp.Feed(b); ok && !send(Scan{Code: code, Err: err}) {
					return
				}
			}
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				send(Scan{Err: fmt.Errorf("%w: %w", ErrRead, err)})
				return
			}
		}
	}()
	return ch
}

// Line is a port that may go away and come back (serialport.Line).
type Line interface {
	io.Reader
	WaitUp(ctx context.Context) error
}

// Follow is Scans on a line that may go away and come back: after a read
// fails it reads afresh once the line is back, so a code cut short by an
// unplugged cable is not glued to the next one. The failure itself is not
// passed on (the line reports it). The channel closes when ctx ends or
// the line is closed; close the line after cancelling ctx.
func Follow(ctx context.Context, l Line) <-chan Scan {
	out := make(chan Scan)
	go func() {
		defer close(out)
		for {
			for s := range New(l).Scans(ctx) {
				if errors.Is(s.Err, ErrRead) {
					continue // the last one
				}
				select {
				case out <- s:
				case <-ctx.Done():
				}
			}
			if l.WaitUp(ctx) != nil {
				return
			}
		}
	}()
	return out
}

// Splitter cuts a byte stream into scans. The zero value is ready to use.
type Splitter struct {
	line    []byte
	tooLong bool
	garbled bool
}

// Feed adds one byte. When b ends a non-empty line, ok is true and either
// code or err is set. CRLF needs no state: the LF ends an empty line.
func (s *Splitter) Feed(b byte) (code string, ok bool, err error) {
	if b == '\r' || b == '\n' {
		line, tooLong, garbled := s.line, s.tooLong, s.garbled
		s.line, s.tooLong, s.garbled = s.line[:0], false, false
		switch {
		case tooLong:
			return "", true, ErrTooLong
		case garbled:
			return "", true, ErrGarbled
		}
		code = strings.TrimSpace(string(line))
		if code == "" {
			return "", false, nil
		}
		return code, true, nil
	}
	if s.tooLong {
		return "", false, nil
	}
	if len(s.line) == MaxLine {
		s.tooLong = true
		s.line = s.line[:0]
		return "", false, nil
	}
	if b < 0x20 && b != '\t' || b > 0x7e {
		s.garbled = true
	}
	s.line = append(s.line, b)
	return "", false, nil
}

// Kind is what a code is.
type Kind int

// Kinds of code.
const (
	Unknown Kind = iota
	LabelSerial
	StaffBadge
)

func (k Kind) String() string {
	switch k {
	case LabelSerial:
		return "label"
	case StaffBadge:
		return "staff"
	}
	return "unknown"
}

var (
	labelRE = regexp.MustCompile(`^[0-9A-F]{4}-[0-9A-F]{4}$`)
	badgeRE = regexp.MustCompile(`^STAFF-[0-9A-Z]{4,16}$`)
)

// Classify says what a code is and returns it normalized to upper case, as
// label serials are printed in either case. An unknown code comes back as is.
func Classify(code string) (Kind, string) {
	// ASCII only: strings.ToUpper would turn a look-alike such as 'ſ' into 'S'.
	up := []byte(code)
	for i, c := range up {
		if 'a' <= c && c <= 'z' {
			up[i] = c - 'a' + 'A'
		}
	}
	switch {
	case labelRE.Match(up):
		return LabelSerial, string(up)
	case badgeRE.Match(up):
		return StaffBadge, string(up)
	}
	return Unknown, code
}
