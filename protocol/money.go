package protocol

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mills is an amount of money in mills, a tenth of a cent, as the patent
// counts postage. Money never passes through floating point.
type Mills int64

// String formats m as dollars, rounding half up to the cent as a customer
// would read it on a label: 780 is "$0.78", 1005 is "$1.01".
func (m Mills) String() string {
	sign := ""
	if m < 0 {
		sign = "-"
		m = -m
	}
	cents := (m + 5) / 10
	return fmt.Sprintf("%s$%d.%02d", sign, cents/100, cents%100)
}

// Exact formats m with all three decimals: "$0.780".
func (m Mills) Exact() string {
	sign := ""
	if m < 0 {
		sign = "-"
		m = -m
	}
	return fmt.Sprintf("%s$%d.%03d", sign, m/1000, m%1000)
}

// Date is a calendar date as the number YYYYMMDD, the way the indicium
// carries the date of mailing.
type Date uint32

// DateOf returns the date of t in t's location.
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date(y*10000 + int(m)*100 + d)
}

// Valid reports whether d names a real calendar date from year 2000 on.
func (d Date) Valid() bool {
	y, m, day := int(d/10000), time.Month(d/100%100), int(d%100)
	if y < 2000 || y > 9999 {
		return false
	}
	t := time.Date(y, m, day, 0, 0, 0, 0, time.UTC)
	return t.Year() == y && t.Month() == m && t.Day() == day
}

// String formats d as 2006-01-02.
func (d Date) String() string {
	return fmt.Sprintf("%04d-%02d-%02d", d/10000, d/100%100, d%100)
}

// ParseDate reads 2006-01-02.
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return 0, fmt.Errorf("protocol: parse date %q: %w", s, err)
	}
	return DateOf(t), nil
}

// ZIP is a five-digit US ZIP code. It travels as a string in JSON so that
// leading zeros survive ("02134"), and as a number in the indicium.
type ZIP string

// Number returns z as the indicium carries it. 00000 is no ZIP code.
func (z ZIP) Number() (uint32, error) {
	if len(z) != 5 || strings.Trim(string(z), "0123456789") != "" || z == "00000" {
		return 0, fmt.Errorf("protocol: zip %q: want five digits, not 00000", string(z))
	}
	n, err := strconv.ParseUint(string(z), 10, 32)
	return uint32(n), err
}

// ZIPFromNumber formats n with its leading zeros.
func ZIPFromNumber(n uint32) ZIP { return ZIP(fmt.Sprintf("%05d", n)) }

// ParseMills reads a dollar amount such as "1000", "0.78" or "$1,000.00"
// exactly, to the mill (three decimals at most).
func ParseMills(s string) (Mills, error) {
	t := strings.ReplaceAll(strings.TrimPrefix(strings.TrimSpace(s), "$"), ",", "")
	whole, frac, _ := strings.Cut(t, ".")
	if whole == "" || len(frac) > 3 || !allDigits(whole) || !allDigits(frac) || len(whole) > 12 {
		return 0, fmt.Errorf("protocol: amount %q: want dollars like 1000.00", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("protocol: amount %q: %w", s, err)
	}
	f := int64(0)
	if frac != "" {
		f, _ = strconv.ParseInt((frac + "00")[:3], 10, 64)
	}
	return Mills(w*1000 + f), nil
}
