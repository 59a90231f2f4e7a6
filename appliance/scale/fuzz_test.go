package scale

import (
	"errors"
	"testing"
)

var typed = []error{ErrProtocol, ErrMotion, ErrOverCapacity, ErrUnderCapacity, ErrHardware}

func checkTyped(t *testing.T, in []byte, err error) {
	for _, e := range typed {
		if errors.Is(err, e) {
			return
		}
	}
	t.Fatalf("%q: untyped error %v", in, err)
}

func FuzzNCI(f *testing.F) {
	for _, s := range []string{
		"\n0001.25lb\r\n00\r\x03", "\n0020.0oz\r\n00\r\x03", "\n001.250kg\r\n0p0\r\x03",
		"\n^^^^^^lb\r\n02\r\x03", "\n------lb\r\n01\r\x03", "\n?\r\x03", "\n20\r\x03",
		"\n-001.25lb\r\n10\r\x03", "\n0001.25lb\r\n\xb0\xb0\r\x03",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := parseNCIWeight(in); err != nil {
			checkTyped(t, in, err)
		}
		if _, err := parseNCIStatusReply(in); err != nil {
			checkTyped(t, in, err)
		}
	})
}

func FuzzSICS(f *testing.F) {
	for _, s := range []string{
		"S S     100.00 g\r\n", "S D     101.20 g\r\n", "S S      0.567 kg\r\n", "S I\r\n",
		"S +\r\n", "S -\r\n", "ES\r\n", "ET\r\n", "EL\r\n", "Z A\r\n", "Z I\r\n", "Z +\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := parseSICSWeight(in); err != nil {
			checkTyped(t, in, err)
		}
		if err := parseSICSZero(in); err != nil {
			checkTyped(t, in, err)
		}
	})
}

func TestUnits(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		d    int
		unit string
		mg   int64
	}{
		{100, 2, "lb", 453592},   // 453592.37
		{125, 2, "lb", 566990},   // 566990.4625
		{1, 0, "oz", 28350},      // 28349.523125
		{1, 2, "oz", 283},        // 283.49523125
		{-125, 2, "lb", -566990}, // rounds away from zero symmetrically
		{1250, 3, "kg", 1250000},
	} {
		mg, err := FromUnit(tt.n, tt.d, tt.unit)
		if err != nil || mg != tt.mg {
			t.Errorf("FromUnit(%d, %d, %s) = %d, %v; want %d", tt.n, tt.d, tt.unit, mg, err, tt.mg)
		}
		if n, _ := ToUnit(tt.mg, tt.d, tt.unit); n != tt.n {
			t.Errorf("ToUnit(%d, %d, %s) = %d; want %d", tt.mg, tt.d, tt.unit, n, tt.n)
		}
	}
	if mg, _ := parseDecimal("0.5", "mg"); mg != 1 {
		t.Errorf("0.5 mg rounds to %d, want 1", mg)
	}
}
