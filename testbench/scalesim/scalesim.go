// Package scalesim emulates postal scales for the testbench: an NCI or
// MT-SICS scale on a pseudo-terminal, answering byte for byte as the real
// scale does, with the faults kiosks meet (motion, over and under capacity,
// a dead line, noise), and a fake HX711 load-cell chip on periph GPIO pins.
package scalesim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/frank-postage/frank/testbench/ptylink"
)

// Protocol is the language the simulated scale speaks.
type Protocol int

// Protocols.
const (
	NCI  Protocol = iota // commands end in CR; replies LF ... CR ETX
	SICS                 // MT-SICS level 0, grams; lines end in CR LF
)

// Fault is a state the scale can be put in.
type Fault int

// Faults.
const (
	OK Fault = iota
	OverCapacity
	UnderCapacity
	Silent  // answers nothing
	Garbled // answers noise inside valid framing
)

// Unit is the display unit of an NCI scale.
type Unit string

// NCI units and how many decimals the scale shows in each.
const (
	LB Unit = "lb" // 2 decimals
	OZ Unit = "oz" // 1 decimal
	KG Unit = "kg" // 3 decimals
	G  Unit = "g"  // 0 decimals
)

var decimals = map[Unit]int{LB: 2, OZ: 1, KG: 3, G: 0}

// Scale is a running simulated scale.
type Scale struct {
	line  *ptylink.Line
	proto Protocol
	log   *slog.Logger
	done  chan struct{}

	mu          sync.Mutex
	weight      int64 // on the platter, mg
	zero        int64 // set by Z
	motionUntil time.Time
	settle      time.Duration
	fault       Fault
	unit        Unit
	tick        int64 // varies the weight while in motion
}

// Start opens a pseudo-terminal, links its device to link (as a udev rule
// names a real scale; empty means no link) and answers in proto.
func Start(link string, proto Protocol, log *slog.Logger) (*Scale, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	line, err := ptylink.Open(link)
	if err != nil {
		return nil, fmt.Errorf("scalesim: %w", err)
	}
	s := &Scale{line: line, proto: proto, log: log.With("sim", "scale"),
		done: make(chan struct{}), settle: 500 * time.Millisecond, unit: LB}
	go s.run()
	return s, nil
}

// Path is the device the kiosk should open.
func (s *Scale) Path() string {
	return s.line.Path()
}

// SetWeight puts mg on the platter.
func (s *Scale) SetWeight(mg int64) {
	s.mu.Lock()
	s.weight = mg
	s.mu.Unlock()
}

// SetMotion(true) sets the platter moving; it settles after the settle
// time (SetSettle). SetMotion(false) stops it at once.
func (s *Scale) SetMotion(on bool) {
	s.mu.Lock()
	s.motionUntil = time.Time{}
	if on {
		s.motionUntil = time.Now().Add(s.settle)
	}
	s.mu.Unlock()
}

// SetSettle sets how long motion lasts; the default is 500 ms.
func (s *Scale) SetSettle(d time.Duration) {
	s.mu.Lock()
	s.settle = d
	s.mu.Unlock()
}

// SetFault puts the scale in a fault (OK clears it).
func (s *Scale) SetFault(f Fault) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

// SetUnit sets the NCI display unit (SICS always answers in grams).
func (s *Scale) SetUnit(u Unit) {
	s.mu.Lock()
	s.unit = u
	s.mu.Unlock()
}

// Close stops the scale and removes the link.
func (s *Scale) Close() error {
	s.line.Close()
	<-s.done
	return nil
}

func (s *Scale) run() {
	defer close(s.done)
	r := bufio.NewReader(s.line.Master)
	for {
		line, err := r.ReadString('\r')
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) && !errors.Is(err, syscall.EIO) {
				s.log.Warn("scale simulator: read", "err", err)
			}
			return
		}
		cmd := strings.TrimSpace(line) // SICS's LF is left over from the last line
		reply := s.answer(cmd)
		s.log.Debug("scale simulator", "cmd", cmd, "reply", reply)
		if reply == "" {
			continue
		}
		if _, err := s.line.Master.Write([]byte(reply)); err != nil {
			return
		}
	}
}

// answer returns the reply to cmd, or "" for none.
func (s *Scale) answer(cmd string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.fault {
	case Silent:
		return ""
	case Garbled:
		if s.proto == NCI {
			return "\n00#1.?5l\x7f\r\n0\x01\r\x03"
		}
		return "S S  1#.?0 g\x7f\r\n"
	}
	moving := time.Now().Before(s.motionUntil)
	shown := s.weight - s.zero
	if moving {
		// A settling platter swings around the true weight.
		s.tick++
		shown += (s.tick%5 - 2) * 7000
	}
	if s.proto == NCI {
		return s.nci(cmd, moving, shown)
	}
	return s.sics(cmd, moving, shown)
}

func (s *Scale) nci(cmd string, moving bool, shown int64) string {
	status := func() string {
		b1, b2 := byte(0x30), byte(0x30)
		if moving {
			b1 |= 1
		}
		if shown == 0 && s.fault == OK {
			b1 |= 2
		}
		switch s.fault {
		case UnderCapacity:
			b2 |= 1
		case OverCapacity:
			b2 |= 2
		}
		return string([]byte{b1, b2})
	}
	switch cmd {
	case "W":
		u := s.unit
		var w string
		switch s.fault {
		case OverCapacity:
			w = "^^^^^^"
		case UnderCapacity:
			w = "------"
		default:
			w = formatUnit(shown, u)
		}
		return "\n" + w + string(u) + "\r\n" + status() + "\r\x03"
	case "S":
		return "\n" + status() + "\r\x03"
	case "Z":
		if !moving && s.fault == OK {
			s.zero = s.weight
			shown = 0
		}
		return "\n" + status() + "\r\x03"
	}
	return "\n?\r\x03"
}

func (s *Scale) sics(cmd string, moving bool, shown int64) string {
	switch cmd {
	case "S", "SI":
		switch {
		case s.fault == OverCapacity:
			return "S +\r\n"
		case s.fault == UnderCapacity:
			return "S -\r\n"
		case moving && cmd == "S":
			// A real balance waits for stability; the simulator says it
			// could not settle, as a balance does at its timeout.
			return "S I\r\n"
		}
		st := "S"
		if moving {
			st = "D"
		}
		return fmt.Sprintf("S %s %10s g\r\n", st, formatFixed(toUnit(shown, 2, G), 2))
	case "Z":
		switch {
		case s.fault == OverCapacity:
			return "Z +\r\n"
		case s.fault == UnderCapacity:
			return "Z -\r\n"
		case moving:
			return "Z I\r\n"
		}
		s.zero = s.weight
		return "Z A\r\n"
	}
	return "ES\r\n"
}

// formatUnit prints mg as an NCI weight field: 7 characters, zero-padded,
// the sign taking the place of a leading zero (0001.25, -001.25).
func formatUnit(mg int64, u Unit) string {
	d := decimals[u]
	return fmt.Sprintf("%07s", formatFixed(toUnit(mg, d, u), d))
}

// formatFixed prints n hundredths (for d=2) as "1.25".
func formatFixed(n int64, d int) string {
	neg := n < 0
	if neg {
		n = -n
	}
	s := fmt.Sprint(n)
	if d > 0 {
		for len(s) <= d {
			s = "0" + s
		}
		s = s[:len(s)-d] + "." + s[len(s)-d:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// mgPer is milligrams per unit as a fraction num/den.
var mgPer = map[Unit][2]int64{LB: {45359237, 100}, OZ: {28349523125, 1000000}, KG: {1000000, 1}, G: {1000, 1}}

// toUnit converts mg to a count of 10^-d units, rounding halves away from
// zero. Weights stay far below the uint64 limit (10^9 mg * 10^6 * 10^3).
// The simulator keeps its own arithmetic so that it checks the
// driver's rather than sharing its bugs.
func toUnit(mg int64, d int, u Unit) int64 {
	f := mgPer[u]
	neg := mg < 0
	if neg {
		mg = -mg
	}
	num := uint64(mg) * uint64(f[1]) * pow10(d) // mg * den * 10^d
	den := uint64(f[0])
	q := (num + den/2) / den
	if neg {
		return -int64(q)
	}
	return int64(q)
}

func pow10(d int) uint64 {
	p := uint64(1)
	for range d {
		p *= 10
	}
	return p
}
