package protocol

import (
	"fmt"
	"strconv"
	"strings"
)

// LabelsPerSheet is the number of labels on one sheet of label stock
// (patent Fig. 5).
const LabelsPerSheet = 10

// SheetSerial identifies one sheet of serialized label stock. It prints as
// eight hex digits in two groups, as in the patent: "1966-F8CF".
type SheetSerial uint32

func (s SheetSerial) String() string {
	return fmt.Sprintf("%04X-%04X", uint32(s)>>16, uint32(s)&0xFFFF)
}

// ParseSheetSerial reads "1966-F8CF". Case is ignored and the middle dash
// is optional, because staff type serials by hand and scanners differ.
func ParseSheetSerial(s string) (SheetSerial, error) {
	t := strings.TrimSpace(s)
	if len(t) == 9 && t[4] == '-' {
		t = t[:4] + t[5:]
	}
	if len(t) != 8 {
		return 0, fmt.Errorf("protocol: sheet serial %q: want 8 hex digits like 1966-F8CF", s)
	}
	n, err := strconv.ParseUint(t, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("protocol: sheet serial %q: want 8 hex digits like 1966-F8CF", s)
	}
	return SheetSerial(n), nil
}

// LabelSerial is one label on a sheet: the sheet serial and the position,
// 1 to LabelsPerSheet. It prints as "1966-F8CF-03".
type LabelSerial struct {
	Sheet    SheetSerial
	Position uint8
}

func (l LabelSerial) String() string {
	return fmt.Sprintf("%s-%02d", l.Sheet, l.Position)
}

// Valid reports whether the position is on the sheet.
func (l LabelSerial) Valid() bool { return l.Position >= 1 && l.Position <= LabelsPerSheet }

// ParseLabelSerial reads "1966-F8CF-03".
func ParseLabelSerial(s string) (LabelSerial, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return LabelSerial{}, fmt.Errorf("protocol: label serial %q: want sheet-position like 1966-F8CF-03", s)
	}
	sheet, err := ParseSheetSerial(s[:i])
	if err != nil {
		return LabelSerial{}, fmt.Errorf("protocol: label serial %q: want sheet-position like 1966-F8CF-03", s)
	}
	p, err := strconv.ParseUint(s[i+1:], 10, 8)
	l := LabelSerial{Sheet: sheet, Position: uint8(p)}
	if err != nil || !l.Valid() {
		return LabelSerial{}, fmt.Errorf("protocol: label serial %q: position must be 1 to %d", s, LabelsPerSheet)
	}
	return l, nil
}

// MarshalText makes a LabelSerial a JSON string.
func (l LabelSerial) MarshalText() ([]byte, error) {
	if !l.Valid() {
		return nil, fmt.Errorf("protocol: label serial position %d out of range", l.Position)
	}
	return []byte(l.String()), nil
}

// UnmarshalText reads the form String writes.
func (l *LabelSerial) UnmarshalText(b []byte) error {
	v, err := ParseLabelSerial(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// MaxMPSDSerial bounds MPSD serials so a meter number has 8 digits.
const MaxMPSDSerial = 99_999_999

// MeterNumber is the printed identity of the MPSD that made an indicium:
// vendor id + model id + 8-digit MPSD serial, e.g. "FR2N50000061".
func MeterNumber(vendor, model string, mpsd uint32) string {
	return fmt.Sprintf("%s%s%08d", vendor, model, mpsd)
}

// validVendor: two ASCII capitals or digits, e.g. "FR" (the patent's "04").
func validVendor(v string) bool {
	return len(v) == 2 && isUpperOrDigit(v[0]) && isUpperOrDigit(v[1])
}

// validModel: a digit and a capital letter, as IBIP requires ("2N").
func validModel(m string) bool {
	return len(m) == 2 && m[0] >= '0' && m[0] <= '9' && m[1] >= 'A' && m[1] <= 'Z'
}

func isUpperOrDigit(c byte) bool { return c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

// validRateClass: four ASCII digits, e.g. "1100".
func validRateClass(s string) bool {
	return len(s) == 4 && strings.Trim(s, "0123456789") == ""
}
