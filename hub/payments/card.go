package payments

import (
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// Card is a card number as the patent's XML API receives it. It is passed
// to the gateway and never stored or logged: String and LogValue show the
// brand and last four digits only.
type Card struct {
	Number string
	Exp    string // MMYY
	Name   string
}

func (c Card) String() string { return Brand(c.Number) + " …" + Last4(c.Number) }

// LogValue redacts the card for slog.
func (c Card) LogValue() slog.Value {
	return slog.GroupValue(slog.String("brand", Brand(c.Number)), slog.String("last4", Last4(c.Number)))
}

// Check validates the number (digits, length, Luhn) and the expiry
// against now.
func (c Card) Check(now time.Time) error {
	n := strings.ReplaceAll(c.Number, " ", "")
	if len(n) < 12 || len(n) > 19 || strings.Trim(n, "0123456789") != "" || !luhn(n) {
		return protocol.Errorf(protocol.CodePaymentInvalid, "the card number is not valid")
	}
	if len(c.Exp) != 4 || strings.Trim(c.Exp, "0123456789") != "" {
		return protocol.Errorf(protocol.CodePaymentInvalid, "the expiry date must be MMYY")
	}
	mm, _ := strconv.Atoi(c.Exp[:2])
	yy, _ := strconv.Atoi(c.Exp[2:])
	if mm < 1 || mm > 12 {
		return protocol.Errorf(protocol.CodePaymentInvalid, "the expiry month must be 01-12")
	}
	// A card is good through the last day of its expiry month.
	end := time.Date(2000+yy, time.Month(mm)+1, 1, 0, 0, 0, 0, time.UTC)
	if !now.Before(end) {
		return protocol.Errorf(protocol.CodePaymentInvalid, "the card expired in %02d/%02d", mm, yy)
	}
	return nil
}

func luhn(n string) bool {
	sum, double := 0, false
	for i := len(n) - 1; i >= 0; i-- {
		d := int(n[i] - '0')
		if double {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

// Brand names the card network from the number's prefix.
func Brand(n string) string {
	switch {
	case strings.HasPrefix(n, "4"):
		return "visa"
	case len(n) >= 2 && n[0] == '5' && n[1] >= '1' && n[1] <= '5', strings.HasPrefix(n, "2"):
		return "mastercard"
	case strings.HasPrefix(n, "34"), strings.HasPrefix(n, "37"):
		return "amex"
	case strings.HasPrefix(n, "6"):
		return "discover"
	}
	return "card"
}

// Last4 is the only part of a number Frank keeps.
func Last4(n string) string {
	if len(n) < 4 {
		return ""
	}
	return n[len(n)-4:]
}
