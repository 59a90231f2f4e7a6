package scale

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// SICS is a Mettler-Toledo balance speaking MT-SICS level 0. It is safe
// for concurrent use.
type SICS struct {
	mu      sync.Mutex
	port    Port
	timeout time.Duration
}

// NewSICS returns a driver on port. timeout bounds each reply; zero means
// 500 ms. S waits on the balance for stability, so give it the balance's
// own stability timeout if you call Stable.
func NewSICS(port Port, timeout time.Duration) *SICS {
	if timeout == 0 {
		timeout = 500 * time.Millisecond
	}
	return &SICS{port: port, timeout: timeout}
}

// Read asks for the weight immediately (SI), stable or dynamic.
func (s *SICS) Read(ctx context.Context) (Reading, error) {
	return s.weigh(ctx, "read", "SI\r\n")
}

// Stable asks for the next stable weight (S); the balance answers S I if
// it cannot settle, which comes back as ErrMotion.
func (s *SICS) Stable(ctx context.Context) (Reading, error) {
	return s.weigh(ctx, "stable", "S\r\n")
}

func (s *SICS) weigh(ctx context.Context, op, cmd string) (Reading, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	reply, err := exchange(ctx, s.port, s.timeout, []byte(cmd), "\r\n")
	if err != nil {
		return Reading{}, fmt.Errorf("scale: sics: %s: %w", op, err)
	}
	r, err := parseSICSWeight(reply)
	if err != nil {
		return r, fmt.Errorf("scale: sics: %s: %w", op, err)
	}
	return r, nil
}

// Zero zeroes the balance (Z).
func (s *SICS) Zero(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	reply, err := exchange(ctx, s.port, s.timeout, []byte("Z\r\n"), "\r\n")
	if err == nil {
		err = parseSICSZero(reply)
	}
	if err != nil {
		return fmt.Errorf("scale: sics: zero: %w", err)
	}
	return nil
}

// sicsFields splits a reply line; the weight is right-aligned with spaces.
func sicsFields(reply []byte) ([]string, error) {
	line, ok := strings.CutSuffix(string(reply), "\r\n")
	if !ok || strings.ContainsAny(line, "\r\n") {
		return nil, fmt.Errorf("reply %q: bad framing: %w", reply, ErrProtocol)
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return nil, fmt.Errorf("reply %q: empty: %w", reply, ErrProtocol)
	}
	switch f[0] {
	case "ES":
		return nil, fmt.Errorf("syntax error: %w", ErrProtocol)
	case "ET":
		return nil, fmt.Errorf("transmission error: %w", ErrProtocol)
	case "EL":
		return nil, fmt.Errorf("logical error: %w", ErrProtocol)
	}
	return f, nil
}

// parseSICSWeight parses "S S     100.00 g" (stable), "S D ..." (dynamic),
// "S I" (busy), "S +" and "S -" (out of range).
func parseSICSWeight(reply []byte) (Reading, error) {
	f, err := sicsFields(reply)
	if err != nil {
		return Reading{}, err
	}
	if f[0] != "S" || len(f) < 2 {
		return Reading{}, fmt.Errorf("reply %q: not a weight: %w", reply, ErrProtocol)
	}
	switch f[1] {
	case "I":
		return Reading{}, ErrMotion
	case "+":
		return Reading{OverCapacity: true}, ErrOverCapacity
	case "-":
		return Reading{UnderCapacity: true}, ErrUnderCapacity
	case "S", "D":
	default:
		return Reading{}, fmt.Errorf("reply %q: status %q: %w", reply, f[1], ErrProtocol)
	}
	if len(f) != 4 {
		return Reading{}, fmt.Errorf("reply %q: fields: %w", reply, ErrProtocol)
	}
	mg, err := parseDecimal(f[2], f[3])
	if err != nil {
		return Reading{}, err
	}
	return Reading{WeightMg: mg, Stable: f[1] == "S", AtZero: mg == 0}, nil
}

// parseSICSZero parses Z A (done), Z I (busy, usually motion), Z + and Z -.
func parseSICSZero(reply []byte) error {
	f, err := sicsFields(reply)
	if err != nil {
		return err
	}
	if f[0] != "Z" || len(f) != 2 {
		return fmt.Errorf("reply %q: not a zero reply: %w", reply, ErrProtocol)
	}
	switch f[1] {
	case "A":
		return nil
	case "I":
		return ErrMotion
	case "+":
		return ErrOverCapacity
	case "-":
		return ErrUnderCapacity
	}
	return fmt.Errorf("reply %q: status %q: %w", reply, f[1], ErrProtocol)
}
