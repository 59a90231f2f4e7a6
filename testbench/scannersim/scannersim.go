// Package scannersim emulates a serial barcode scanner on a
// pseudo-terminal: each call to Scan is a code read, sent the way a
// scanner sends it, and Garble and Overlong inject the faults a real line
// produces.
package scannersim

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/frank-postage/frank/testbench/ptylink"
)

// Line endings a scanner can be configured for.
const (
	CR   = "\r"
	LF   = "\n"
	CRLF = "\r\n"
)

// Scanner is a running emulator.
type Scanner struct {
	line *ptylink.Line
	log  *slog.Logger
}

// Start opens a pseudo-terminal and links its device to link (a stable
// name like a udev rule gives a real scanner); an empty link means none.
func Start(link string, log *slog.Logger) (*Scanner, error) {
	line, err := ptylink.Open(link)
	if err != nil {
		return nil, fmt.Errorf("scannersim: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scanner{line: line, log: log}, nil
}

// Path is the device the kiosk should open.
func (s *Scanner) Path() string {
	return s.line.Path()
}

// Scan sends code ended by CR, most scanners' factory setting.
func (s *Scanner) Scan(code string) error { return s.ScanEnding(code, CR) }

// ScanEnding sends code ended by end (CR, LF or CRLF).
func (s *Scanner) ScanEnding(code, end string) error {
	s.log.Debug("scannersim: scan", "code", code)
	return s.write(code + end)
}

// Garble sends a line of noise, as a baud mismatch or loose cable does.
func (s *Scanner) Garble() error {
	return s.write("\x00\xff\x1b\x92\xa7~\x13" + CR)
}

// Overlong sends a line past the kiosk's 256-byte cap, as a scanner stuck
// in a test mode or reading a 2-D code dumps.
func (s *Scanner) Overlong() error {
	return s.write(strings.Repeat("0123456789", 40) + CR)
}

func (s *Scanner) write(b string) error {
	if _, err := s.line.Master.WriteString(b); err != nil {
		return fmt.Errorf("scannersim: write: %w", err)
	}
	return nil
}

// Close stops the emulator and removes the link.
func (s *Scanner) Close() error {
	s.line.Close()
	return nil
}
