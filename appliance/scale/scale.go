// Package scale reads postal scales: the serial NCI protocol (Avery
// Weigh-Tronix and most shipping scales), Mettler-Toledo MT-SICS, and an
// HX711 load-cell amplifier for DIY builds. Every driver gives a Reading in
// integer milligrams; WaitStable turns a stream of readings into a weight
// fit to price postage with.
package scale

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"time"
)

// Port is a serial line to the scale. Line settings (baud, parity) are the
// caller's; go.bug.st/serial's Port satisfies this.
type Port interface {
	io.ReadWriter
	// SetReadTimeout bounds each Read; a Read that times out returns 0, nil
	// (or an error for which os.IsTimeout is true).
	SetReadTimeout(d time.Duration) error
}

// inputResetter is implemented by serial ports that can drop stale input,
// such as a reply that arrived after its command had timed out.
type inputResetter interface {
	ResetInputBuffer() error
}

// Reading is one weight report.
type Reading struct {
	WeightMg      int64
	Stable        bool // the scale says the weight is not moving
	AtZero        bool
	UnderCapacity bool
	OverCapacity  bool
}

// Error is a scale condition, comparable with errors.Is.
type Error string

func (e Error) Error() string { return string(e) }

// Conditions a driver reports. Read returns ErrOverCapacity and
// ErrUnderCapacity together with a Reading that has the flag set.
const (
	ErrMotion        Error = "scale: in motion"
	ErrOverCapacity  Error = "scale: over capacity"
	ErrUnderCapacity Error = "scale: under capacity"
	ErrSilent        Error = "scale: no answer"
	ErrProtocol      Error = "scale: protocol error" // wrapped with detail
	ErrHardware      Error = "scale: hardware fault" // RAM, ROM, EEPROM or calibration
	ErrUncalibrated  Error = "scale: not calibrated"
)

// Reader is anything that gives one reading at a time.
type Reader interface {
	Read(ctx context.Context) (Reading, error)
}

// WaitStable polls s every poll until the scale says stable and n
// consecutive readings agree, and returns the last. Capacity, hardware,
// silence and protocol errors end the wait at once; motion does not. If ctx
// ends first the error wraps both ErrMotion and ctx.Err().
func WaitStable(ctx context.Context, s Reader, n int, poll time.Duration) (Reading, error) {
	n = max(n, 1)
	var last Reading
	agree := 0
	for {
		r, err := s.Read(ctx)
		switch {
		case errors.Is(err, ErrMotion):
			agree = 0
		case err != nil:
			if cerr := ctxErr(ctx); cerr != nil {
				return Reading{}, fmt.Errorf("scale: wait stable: %w: %w", ErrMotion, cerr)
			}
			return r, fmt.Errorf("scale: wait stable: %w", err)
		case !r.Stable:
			agree = 0
		case agree > 0 && r.WeightMg == last.WeightMg:
			agree++
		default:
			agree = 1
		}
		last = r
		if agree >= n {
			return r, nil
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return Reading{}, fmt.Errorf("scale: wait stable: %w: %w", ErrMotion, ctx.Err())
		case <-t.C:
		}
	}
}

// ctxErr is ctx.Err(), or context.DeadlineExceeded once ctx's deadline
// has passed: a read that times out at the deadline can return before the
// context's timer fires, and must not be taken for silence.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// Unit conversion factors as exact fractions of a milligram.
var (
	mgPerLb = big.NewRat(45359237, 100)        // 453592.37 mg
	mgPerOz = big.NewRat(28349523125, 1000000) // 28349.523125 mg
	mgPerKg = big.NewRat(1000000, 1)           //
	mgPerG  = big.NewRat(1000, 1)              //
	mgPerMg = big.NewRat(1, 1)                 //
)

// unitFactor maps the unit names scales print to milligrams per unit.
func unitFactor(u string) (*big.Rat, bool) {
	switch u {
	case "lb":
		return mgPerLb, true
	case "oz":
		return mgPerOz, true
	case "kg":
		return mgPerKg, true
	case "g":
		return mgPerG, true
	case "mg":
		return mgPerMg, true
	}
	return nil, false
}

// roundRat rounds x to the nearest integer, halves away from zero.
func roundRat(x *big.Rat) int64 {
	num, den := new(big.Int).Set(x.Num()), x.Denom()
	neg := num.Sign() < 0
	num.Abs(num)
	num.Mul(num, big.NewInt(2)).Add(num, den)
	num.Quo(num, new(big.Int).Mul(den, big.NewInt(2)))
	if neg {
		num.Neg(num)
	}
	return num.Int64()
}

// parseDecimal reads a decimal number such as "0001.25" or "-12.5" in the
// given unit and converts it to milligrams with correct rounding.
func parseDecimal(s, unit string) (int64, error) {
	f, ok := unitFactor(unit)
	if !ok {
		return 0, fmt.Errorf("unknown unit %q: %w", unit, ErrProtocol)
	}
	body := s
	if len(body) > 0 && (body[0] == '-' || body[0] == '+') {
		body = body[1:]
	}
	digits, dots := 0, 0
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return 0, fmt.Errorf("weight %q: %w", s, ErrProtocol)
		}
	}
	// Scales print at most 8 digits; many more is noise on the line.
	if digits == 0 || digits > 12 || dots > 1 {
		return 0, fmt.Errorf("weight %q: %w", s, ErrProtocol)
	}
	v, ok := new(big.Rat).SetString(s)
	if !ok {
		return 0, fmt.Errorf("weight %q: %w", s, ErrProtocol)
	}
	return roundRat(v.Mul(v, f)), nil
}

// FromUnit converts a count of 10^-decimals units (as a scale displays
// it) to milligrams, rounding halves away from zero.
func FromUnit(n int64, decimals int, unit string) (int64, error) {
	f, ok := unitFactor(unit)
	if !ok {
		return 0, fmt.Errorf("scale: unit %q: %w", unit, ErrProtocol)
	}
	v := new(big.Rat).SetFrac(big.NewInt(n), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(decimals)), nil))
	return roundRat(v.Mul(v, f)), nil
}

// ToUnit converts milligrams to a count of 10^-decimals units, rounding
// halves away from zero: ToUnit(566990, 2, "lb") is 125 (1.25 lb).
func ToUnit(mg int64, decimals int, unit string) (int64, error) {
	f, ok := unitFactor(unit)
	if !ok {
		return 0, fmt.Errorf("scale: unit %q: %w", unit, ErrProtocol)
	}
	v := new(big.Rat).SetInt64(mg)
	v.Quo(v, f)
	v.Mul(v, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(decimals)), nil)))
	return roundRat(v), nil
}

// exchange sends cmd and reads one reply ending in term. It is shared by
// the serial drivers.
func exchange(ctx context.Context, p Port, timeout time.Duration, cmd []byte, term string) ([]byte, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	// A reply to an earlier command that timed out may still be waiting;
	// read as this command's, it would shift every later reply by one.
	if r, ok := p.(inputResetter); ok {
		if err := r.ResetInputBuffer(); err != nil {
			return nil, err
		}
	}
	if _, err := p.Write(cmd); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var reply []byte
	buf := make([]byte, 64)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if err := p.SetReadTimeout(left); err != nil {
			return nil, err
		}
		n, err := p.Read(buf)
		reply = append(reply, buf[:n]...)
		if i := bytes.Index(reply, []byte(term)); i >= 0 {
			// Bytes after the terminator belong to no command we sent.
			return reply[:i+len(term)], nil
		}
		if len(reply) > 256 {
			return nil, fmt.Errorf("reply %q...: too long: %w", reply[:32], ErrProtocol)
		}
		if err != nil && !os.IsTimeout(err) && !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, err
		}
		if err := ctxErr(ctx); err != nil {
			return nil, err
		}
	}
	// The deadline may have been ctx's: then the caller gave up, and the
	// scale was not silent.
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if len(reply) == 0 {
		return nil, ErrSilent
	}
	return nil, fmt.Errorf("reply %q: truncated: %w", reply, ErrProtocol)
}
