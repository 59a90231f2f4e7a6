package scale

import (
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzHX711Calibration feeds the saved calibration file to
// KeepCalibration, on a reader with no pins (loading touches none). It
// never panics; a file it refuses is an error that names the file and
// leaves the calibration as it was; and one it takes reads as the JSON
// says and weighs every raw value the chip can give without overflow:
// either it is uncalibrated (no counts: Read refuses), or its weights are
// the exact (raw-offset)*mg/counts, rounded, and a heavier load never
// weighs less.
func FuzzHX711Calibration(f *testing.F) {
	path := filepath.Join(f.TempDir(), "scale-calibration.json")
	for _, s := range []string{
		`{"offset":84000,"counts":84000,"mg":2000000}`, `{"offset":-8388608,"counts":-100,"mg":1}`,
		`{"offset":8388607,"counts":16777215,"mg":1000000000}`, `{"offset":12}`, `{}`,
		`{"offset":0,"counts":1,"mg":0}`, `{"offset":0,"counts":100,"mg":-5}`, `{"counts":1,"mg":9223372036854775807}`,
		`{"offset":-9223372036854775808,"counts":100,"mg":1}`, `{"counts":-9223372036854775808,"mg":1}`,
		`{"counts":1e99}`, `{"counts":"100"}`, `{"counts":100,"counts":0}`, `{"Counts":100,"mg":1}`,
		`null`, `[]`, ``, `{`, `{"offset":1} x`, "\xff",
	} {
		f.Add([]byte(s))
	}
	before := Calibration{Offset: 1, Counts: 2, Mg: 3}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		h := &HX711{cal: before}
		if err := h.KeepCalibration(path); err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("%q: the error %q does not name the file", b, err)
			}
			if h.Calibration() != before || h.keep != "" {
				t.Fatalf("%q refused, but the calibration became %+v (kept at %q)", b, h.Calibration(), h.keep)
			}
			return
		}
		var want Calibration
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%q taken, but it is not JSON: %v", b, err)
		}
		c := h.Calibration()
		if c != want || h.keep != path {
			t.Fatalf("%q read as %+v (kept at %q), want %+v", b, c, h.keep, want)
		}
		if c.Counts == 0 {
			return // uncalibrated: Read refuses
		}
		if c.Mg <= 0 {
			t.Fatalf("%q taken: %+v weighs every load as %d mg or less", b, c, 0)
		}
		last := int64(0)
		for i, raw := range []int64{hx711Min + 1, -1 << 20, -1, 0, 1, 1 << 20, hx711Max - 1} {
			if c.Counts < 0 {
				raw = -raw // a cell wired the other way: heavier is lower
			}
			got := mulDivRound(raw-c.Offset, c.Mg, c.Counts)
			if exact := exactWeight(raw, c); !exact.IsInt64() || got != exact.Int64() {
				t.Fatalf("%q taken: raw %d weighs %d mg, not %s", b, raw, got, exact)
			}
			if i > 0 && got < last {
				t.Fatalf("%q taken: raw %d weighs %d mg, less than a lighter load's %d", b, raw, got, last)
			}
			last = got
		}
	})
}

// exactWeight is (raw-offset)*mg/counts rounded half away from zero, in
// big integers.
func exactWeight(raw int64, c Calibration) *big.Int {
	n := new(big.Int).Sub(big.NewInt(raw), big.NewInt(c.Offset))
	n.Mul(n, big.NewInt(c.Mg))
	d := big.NewInt(c.Counts)
	neg := n.Sign()*d.Sign() < 0
	n.Abs(n)
	d.Abs(d)
	n.Add(n, new(big.Int).Rsh(d, 1))
	n.Quo(n, d)
	if neg {
		n.Neg(n)
	}
	return n
}
