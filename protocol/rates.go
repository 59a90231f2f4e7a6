package protocol

import "fmt"

// OunceNg is one avoirdupois ounce in nanograms, exact, so that weights
// round to ounces without floating point.
const OunceNg = 28_349_523_125

// Ounces returns weightMg rounded up to whole ounces, at least 1, as postal
// rates charge.
func Ounces(weightMg int64) int64 {
	if weightMg <= 0 {
		return 1
	}
	return (weightMg*1_000_000 + OunceNg - 1) / OunceNg
}

// RateTable prices every service the kiosk sells. The hub owns it and pushes
// it to kiosks in KioskConfig; a purchase names the version it was priced on.
type RateTable struct {
	Version   string      `json:"version"`
	Effective string      `json:"effective"` // first day of use, 2006-01-02
	Classes   []RateClass `json:"classes"`
}

// RateClass is one service. Rate class codes follow the patent (1100 is a
// First-Class letter).
type RateClass struct {
	Class string `json:"class"`
	Name  string `json:"name"`  // for the touchscreen: "Letter"
	Print string `json:"print"` // printed on the label: "FIRST-CLASS"
	// FirstOunce is the price up to one ounce; AdditionalOunce is added for
	// each further ounce or part of one, up to MaxWeightMg.
	FirstOunce      Mills `json:"first_ounce_mills"`
	AdditionalOunce Mills `json:"additional_ounce_mills,omitempty"`
	MaxWeightMg     int64 `json:"max_weight_mg"`
}

// Class finds a class by code.
func (t *RateTable) Class(code string) (RateClass, bool) {
	for _, c := range t.Classes {
		if c.Class == code {
			return c, true
		}
	}
	return RateClass{}, false
}

// Price returns the postage for a piece of class code weighing weightMg.
func (t *RateTable) Price(code string, weightMg int64) (Mills, error) {
	c, ok := t.Class(code)
	if !ok {
		return 0, Errorf(CodeRateClassUnknown, "rate class %q is not in rate table %s", code, t.Version)
	}
	return c.Price(weightMg)
}

// Price returns the postage for weightMg in this class.
func (c RateClass) Price(weightMg int64) (Mills, error) {
	if weightMg > c.MaxWeightMg {
		return 0, Errorf(CodeOverweight, "%d mg is over the %d mg limit for %s", weightMg, c.MaxWeightMg, c.Name)
	}
	return c.FirstOunce + Mills(Ounces(weightMg)-1)*c.AdditionalOunce, nil
}

// Validate checks a table before it is used or pushed.
func (t *RateTable) Validate() error {
	bad := func(format string, args ...any) error {
		return Errorf(CodeInvalidRequest, "rate table %q: %s", t.Version, fmt.Sprintf(format, args...))
	}
	if t.Version == "" || len(t.Version) > 64 {
		return bad("version: want 1-64 characters")
	}
	if _, err := ParseDate(t.Effective); err != nil {
		return bad("effective: want 2006-01-02")
	}
	if len(t.Classes) == 0 {
		return bad("no classes")
	}
	seen := map[string]bool{}
	for _, c := range t.Classes {
		switch {
		case !validRateClass(c.Class) || seen[c.Class]:
			return bad("class %q: want four digits, once", c.Class)
		case c.Name == "" || c.Print == "":
			return bad("class %s: name and print are required", c.Class)
		case c.FirstOunce <= 0 || c.AdditionalOunce < 0 || c.MaxWeightMg <= 0 || c.MaxWeightMg > MaxWeightMg:
			return bad("class %s: prices and max_weight_mg must be positive", c.Class)
		case c.FirstOunce > MaxPostage || c.AdditionalOunce > MaxPostage:
			// Bounded so that the price at max weight, checked below,
			// cannot wrap around int64 (1<<62 mills an ounce did, to a
			// negative price that passed): MaxWeightMg is 160 ounces.
			return bad("class %s: prices must be at most the indicium's postage field, %d mills", c.Class, MaxPostage)
		}
		if p, _ := c.Price(c.MaxWeightMg); p > MaxPostage {
			return bad("class %s: price at max weight exceeds the indicium's postage field", c.Class)
		}
		seen[c.Class] = true
	}
	return nil
}
