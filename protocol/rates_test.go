package protocol_test

import (
	"testing"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

func TestPrices(t *testing.T) {
	rt := prototest.Rates
	if err := rt.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		class    string
		weightMg int64
		want     protocol.Mills
		code     protocol.Code
	}{
		{"1100", 1, 780, ""},
		{"1100", 28_349, 780, ""},  // just under 1 oz
		{"1100", 28_350, 1070, ""}, // just over 1 oz
		{"1100", 56_699, 1070, ""},
		{"1100", 85_048, 1360, ""},
		{"1100", 99_223, 1650, ""}, // 3.5 oz rounds up to 4
		{"1100", 99_224, 0, protocol.CodeOverweight},
		{"1200", 5_000, 610, ""},
		{"1300", 28_000, 1630, ""},
		{"1300", 30_000, 1900, ""},
		{"2100", 20_000, 1700, ""},
		{"2100", 30_000, 0, protocol.CodeOverweight},
		{"9999", 1, 0, protocol.CodeRateClassUnknown},
	}
	for _, c := range cases {
		got, err := rt.Price(c.class, c.weightMg)
		checkCode(t, err, c.code)
		if got != c.want {
			t.Errorf("%s %d mg = %v, want %v", c.class, c.weightMg, got, c.want)
		}
	}
}

func TestOunces(t *testing.T) {
	for mg, want := range map[int64]int64{0: 1, 1: 1, 28_349: 1, 28_350: 2, 56_699: 2, 56_700: 3} {
		if got := protocol.Ounces(mg); got != want {
			t.Errorf("Ounces(%d) = %d, want %d", mg, got, want)
		}
	}
}
