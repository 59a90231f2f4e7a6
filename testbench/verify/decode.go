package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// The indicium v1 layout as protocol/README.md gives it, declared again
// here so that a verifier reading the README and the hub's codec must
// agree byte for byte: a field moved or misread in one shows as a
// mismatch in Verify, which decodes every stamp both ways.
const (
	v1Len       = 113
	v1Body      = 49 // the signed bytes, 0-48
	v1Version   = 1
	v1Algorithm = 3 // ECDSA P-256 over SHA-256
	v1MaxMPSD   = 99_999_999
	v1MaxZIP    = 99_999
	v1Positions = 10
)

// ErrDecodeMismatch is a stamp that this package's decoder, written from
// protocol/README.md alone, reads differently from the protocol package.
var ErrDecodeMismatch = errors.New("verify: the README's decoder and the protocol package disagree")

// Decoded is an indicium read by Decode, field by field as the README's
// table names them.
type Decoded struct {
	Version      uint8
	Algorithm    uint8
	CertSerial   uint32
	Vendor       string
	Model        string
	MPSDSerial   uint32
	AR           uint64 // mills
	Postage      uint64 // mills
	Date         uint32 // YYYYMMDD
	OriginZIP    uint32
	UserID       uint64
	SoftwareID   uint8
	Sheet        uint32
	Position     uint8
	DR           uint64 // mills
	RateCategory string
	R, S         [32]byte
}

// be reads an unsigned big-endian integer of any width.
func be(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// Decode reads the 113 bytes as protocol/README.md's "The indicium (v1)"
// describes them, without the protocol package's codec, and applies the
// ranges it gives. Errors wrap the README's typed errors.
func Decode(b []byte) (Decoded, error) {
	var d Decoded
	if len(b) != v1Len {
		return d, fmt.Errorf("%w: %d bytes, want %d", protocol.ErrIndiciumLength, len(b), v1Len)
	}
	d.Version, d.Algorithm = b[0], b[1]
	if d.Version != v1Version {
		return d, fmt.Errorf("%w: %d", protocol.ErrIndiciumVersion, d.Version)
	}
	if d.Algorithm != v1Algorithm {
		return d, fmt.Errorf("%w: %d", protocol.ErrIndiciumAlgorithm, d.Algorithm)
	}
	d.CertSerial = uint32(be(b[2:6]))
	d.Vendor, d.Model = string(b[6:8]), string(b[8:10])
	d.MPSDSerial = uint32(be(b[10:14]))
	d.AR = be(b[14:19])
	d.Postage = be(b[19:22])
	d.Date = uint32(be(b[22:26]))
	d.OriginZIP = uint32(be(b[26:30]))
	d.UserID = be(b[30:35])
	d.SoftwareID = b[35]
	d.Sheet, d.Position = uint32(be(b[36:40])), b[40]
	d.DR = be(b[41:45])
	d.RateCategory = string(b[45:49])
	copy(d.R[:], b[49:81])
	copy(d.S[:], b[81:113])
	field := func(format string, args ...any) (Decoded, error) {
		return d, fmt.Errorf("%w: "+format, append([]any{protocol.ErrIndiciumField}, args...)...)
	}
	switch {
	case !capsOrDigits(d.Vendor):
		return field("vendor %q", d.Vendor)
	case !(digit(d.Model[0]) && upper(d.Model[1])):
		return field("model %q", d.Model)
	case d.MPSDSerial > v1MaxMPSD:
		return field("MPSD serial %d", d.MPSDSerial)
	case d.Postage < 1:
		return field("postage %d", d.Postage)
	case !calendarDate(d.Date):
		return field("date %d", d.Date)
	case d.OriginZIP < 1 || d.OriginZIP > v1MaxZIP:
		return field("zip %d", d.OriginZIP)
	case d.Position < 1 || d.Position > v1Positions:
		return field("label position %d", d.Position)
	case !allDigits(d.RateCategory):
		return field("rate category %q", d.RateCategory)
	}
	return d, nil
}

func digit(c byte) bool { return c >= '0' && c <= '9' }
func upper(c byte) bool { return c >= 'A' && c <= 'Z' }

func capsOrDigits(s string) bool {
	for i := range len(s) {
		if !digit(s[i]) && !upper(s[i]) {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	for i := range len(s) {
		if !digit(s[i]) {
			return false
		}
	}
	return true
}

// calendarDate: YYYYMMDD, a real day of a year from 2000 to 9999.
func calendarDate(n uint32) bool {
	y, m, day := int(n/10000), int(n/100%100), int(n%100)
	if y < 2000 || y > 9999 || m < 1 || m > 12 || day < 1 {
		return false
	}
	return day <= time.Date(y, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// Meter is the printed meter number: vendor, model, the MPSD serial in 8
// digits.
func (d Decoded) Meter() string { return fmt.Sprintf("%s%s%08d", d.Vendor, d.Model, d.MPSDSerial) }

// Label is the label serial as printed: 1966-F8CF-01.
func (d Decoded) Label() string {
	return fmt.Sprintf("%04X-%04X-%02d", d.Sheet>>16, d.Sheet&0xFFFF, d.Position)
}

// VerifySignature checks r‖s over SHA-256 of bytes 0-48 of b, the bytes d
// was decoded from, with the standard library's ECDSA alone; either half
// of s verifies.
func (d Decoded) VerifySignature(b []byte, pub *ecdsa.PublicKey) bool {
	if len(b) != v1Len || pub == nil || pub.Curve != elliptic.P256() {
		return false
	}
	sum := sha256.Sum256(b[:v1Body])
	return ecdsa.Verify(pub, sum[:], new(big.Int).SetBytes(d.R[:]), new(big.Int).SetBytes(d.S[:]))
}

// Agrees reports how in, the protocol package's reading of the same
// bytes, differs from d; nil when they agree on every field.
func (d Decoded) Agrees(in *protocol.Indicium) error {
	type pair struct {
		name      string
		mine, its any
	}
	for _, p := range []pair{
		{"certificate serial", d.CertSerial, in.CertSerial},
		{"vendor", d.Vendor, in.Vendor},
		{"model", d.Model, in.Model},
		{"MPSD serial", d.MPSDSerial, in.MPSDSerial},
		{"ascending register", d.AR, uint64(in.AR)},
		{"postage", d.Postage, uint64(in.Postage)},
		{"date", d.Date, uint32(in.Date)},
		{"origin ZIP", d.OriginZIP, in.OriginZIP},
		{"user id", d.UserID, in.UserID},
		{"software id", d.SoftwareID, in.SoftwareID},
		{"label", d.Label(), in.Label.String()},
		{"descending register", d.DR, uint64(in.DR)},
		{"rate category", d.RateCategory, in.RateCategory},
		{"meter number", d.Meter(), in.MeterNumber()},
		{"signature", [2][32]byte{d.R, d.S}, [2][32]byte{[32]byte(in.Signature[:32]), [32]byte(in.Signature[32:])}},
	} {
		if p.mine != p.its {
			return fmt.Errorf("%w: %s: README's reading %v, protocol's %v", ErrDecodeMismatch, p.name, p.mine, p.its)
		}
	}
	return nil
}

// decodeBoth reads b with both decoders and fails unless they agree: on
// every field of a stamp both accept, or on the kind of error for one both
// refuse.
func decodeBoth(b []byte) (*protocol.Indicium, Decoded, error) {
	d, derr := Decode(b)
	in, perr := protocol.ParseIndicium(b)
	switch {
	case derr == nil && perr == nil:
		if err := d.Agrees(in); err != nil {
			return nil, d, err
		}
		return in, d, nil
	case derr != nil && perr != nil:
		for _, kind := range []error{protocol.ErrIndiciumLength, protocol.ErrIndiciumVersion, protocol.ErrIndiciumAlgorithm, protocol.ErrIndiciumField} {
			if errors.Is(derr, kind) != errors.Is(perr, kind) {
				return nil, d, fmt.Errorf("%w: README's decoder: %v; protocol's: %v", ErrDecodeMismatch, derr, perr)
			}
		}
		return nil, d, perr
	case derr != nil:
		return nil, d, fmt.Errorf("%w: README's decoder refuses it (%v), protocol's accepts it", ErrDecodeMismatch, derr)
	default:
		return nil, d, fmt.Errorf("%w: protocol's decoder refuses it (%v), README's accepts it", ErrDecodeMismatch, perr)
	}
}
