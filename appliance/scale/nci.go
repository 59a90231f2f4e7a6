package scale

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"
)

// NCI status bits. Byte 1 and byte 2 always come; bit 6 of byte 2 or later
// announces one more byte. Bits 4 and 5 are always set and bit 7 is parity,
// so a byte without 0x30 is line noise.
const (
	nciMotion   = 1 << 0 // byte 1
	nciAtZero   = 1 << 1
	nciRAM      = 1 << 2
	nciEEPROM   = 1 << 3
	nciUnder    = 1 << 0 // byte 2
	nciOver     = 1 << 1
	nciROM      = 1 << 2
	nciBadCal   = 1 << 3
	nciFixed    = 0x30
	nciMoreNext = 1 << 6
)

// NCI is a scale speaking the NCI protocol (Weigh-Tronix 7600/7800 and the
// many shipping scales that copy it). It is safe for concurrent use.
type NCI struct {
	mu      sync.Mutex
	port    Port
	timeout time.Duration
}

// NewNCI returns a driver on port. timeout bounds each reply; zero means
// 500 ms.
func NewNCI(port Port, timeout time.Duration) *NCI {
	if timeout == 0 {
		timeout = 500 * time.Millisecond
	}
	return &NCI{port: port, timeout: timeout}
}

// Read asks for the weight (W). The reading may be in motion; over and
// under capacity come back as ErrOverCapacity and ErrUnderCapacity with the
// flag set in the Reading.
func (s *NCI) Read(ctx context.Context) (Reading, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	reply, err := exchange(ctx, s.port, s.timeout, []byte("W\r"), "\r\x03")
	if err != nil {
		return Reading{}, fmt.Errorf("scale: nci: read: %w", err)
	}
	r, err := parseNCIWeight(reply)
	if err != nil {
		return r, fmt.Errorf("scale: nci: read: %w", err)
	}
	return r, nil
}

// Zero zeroes the scale (Z). A scale in motion refuses, and says so in
// its status: ErrMotion.
func (s *NCI) Zero(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	reply, err := exchange(ctx, s.port, s.timeout, []byte("Z\r"), "\r\x03")
	if err != nil {
		return fmt.Errorf("scale: nci: zero: %w", err)
	}
	r, err := parseNCIStatusReply(reply)
	switch {
	case err != nil:
	case r.OverCapacity:
		err = ErrOverCapacity
	case r.UnderCapacity:
		err = ErrUnderCapacity
	case !r.Stable:
		err = ErrMotion
	}
	if err != nil {
		return fmt.Errorf("scale: nci: zero: %w", err)
	}
	return nil
}

// Status asks for the status bytes alone (S); WeightMg is not set.
func (s *NCI) Status(ctx context.Context) (Reading, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	reply, err := exchange(ctx, s.port, s.timeout, []byte("S\r"), "\r\x03")
	if err != nil {
		return Reading{}, fmt.Errorf("scale: nci: status: %w", err)
	}
	r, err := parseNCIStatusReply(reply)
	if err != nil {
		return r, fmt.Errorf("scale: nci: status: %w", err)
	}
	return r, nil
}

// frame strips LF ... CR ETX and rejects the "?" of an unknown command.
func nciFrame(reply []byte) ([]byte, error) {
	if len(reply) < 3 || reply[0] != '\n' || !bytes.HasSuffix(reply, []byte("\r\x03")) {
		return nil, fmt.Errorf("reply %q: bad framing: %w", reply, ErrProtocol)
	}
	body := reply[1 : len(reply)-2]
	if string(body) == "?" {
		return nil, fmt.Errorf("command not recognized: %w", ErrProtocol)
	}
	return body, nil
}

// parseNCIStatusReply parses LF HH CR ETX.
func parseNCIStatusReply(reply []byte) (Reading, error) {
	body, err := nciFrame(reply)
	if err != nil {
		return Reading{}, err
	}
	return parseNCIStatus(body)
}

// parseNCIWeight parses LF xxxx.xxUU CR LF HH CR ETX. The status decides:
// past capacity the weight field is a row of ^ or - and is not read.
func parseNCIWeight(reply []byte) (Reading, error) {
	body, err := nciFrame(reply)
	if err != nil {
		return Reading{}, err
	}
	w, st, ok := bytes.Cut(body, []byte("\r\n"))
	if !ok {
		return Reading{}, fmt.Errorf("reply %q: no status: %w", reply, ErrProtocol)
	}
	r, err := parseNCIStatus(st)
	if err != nil {
		return r, err
	}
	if r.OverCapacity || r.UnderCapacity {
		if r.OverCapacity {
			return r, ErrOverCapacity
		}
		return r, ErrUnderCapacity
	}
	w = bytes.TrimSpace(w)
	i := len(w)
	for i > 0 && w[i-1] >= 'a' && w[i-1] <= 'z' {
		i--
	}
	r.WeightMg, err = parseDecimal(string(w[:i]), string(w[i:]))
	if err != nil {
		return Reading{}, err
	}
	return r, nil
}

// parseNCIStatus decodes the status bytes. Hardware faults are errors;
// motion and capacity are flags for the caller to judge.
func parseNCIStatus(st []byte) (Reading, error) {
	if len(st) < 2 {
		return Reading{}, fmt.Errorf("status %q: short: %w", st, ErrProtocol)
	}
	for i, b := range st {
		if b&nciFixed != nciFixed {
			return Reading{}, fmt.Errorf("status %q: byte %d: %w", st, i+1, ErrProtocol)
		}
		more := i > 0 && b&nciMoreNext != 0
		if more != (i < len(st)-1) && i > 0 {
			return Reading{}, fmt.Errorf("status %q: byte count: %w", st, ErrProtocol)
		}
	}
	b1, b2 := st[0], st[1]
	r := Reading{
		Stable:        b1&nciMotion == 0,
		AtZero:        b1&nciAtZero != 0,
		UnderCapacity: b2&nciUnder != 0,
		OverCapacity:  b2&nciOver != 0,
	}
	switch {
	case b1&nciRAM != 0:
		return r, fmt.Errorf("RAM error: %w", ErrHardware)
	case b1&nciEEPROM != 0:
		return r, fmt.Errorf("EEPROM error: %w", ErrHardware)
	case b2&nciROM != 0:
		return r, fmt.Errorf("ROM error: %w", ErrHardware)
	case b2&nciBadCal != 0:
		return r, fmt.Errorf("faulty calibration: %w", ErrHardware)
	}
	return r, nil
}
