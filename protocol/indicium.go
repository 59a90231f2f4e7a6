package protocol

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
)

// Indicium v1 layout: 113 bytes, big-endian unsigned integers, ASCII text.
const (
	IndiciumLen   = 113
	IndiciumBody  = 49 // bytes covered by the signature
	SignatureLen  = 64 // r‖s, 32 bytes each
	IndiciumV1    = 1
	AlgECDSAP256  = 3 // ECDSA P-256 over SHA-256
	MaxAR         = 1<<40 - 1
	MaxDR         = 1<<32 - 1
	MaxPostage    = 1<<24 - 1
	MaxUserID     = 1<<40 - 1
	maxZIPNumeric = 99999
)

// Errors from ParseIndicium, VerifyIndicium and Indicium.Body. They are
// wrapped with detail; test with errors.Is.
var (
	ErrIndiciumLength    = errors.New("indicium: wrong length")
	ErrIndiciumVersion   = errors.New("indicium: unsupported version")
	ErrIndiciumAlgorithm = errors.New("indicium: unsupported algorithm")
	ErrIndiciumField     = errors.New("indicium: field out of range")
	ErrIndiciumSignature = errors.New("indicium: bad signature")
)

// Indicium is the machine-readable part of a stamp: the patent's struct
// Indicium, fixed as version 1 with an ECDSA P-256 signature.
type Indicium struct {
	CertSerial   uint32 // certificate serial the postal authority gave the signing key
	Vendor       string // 2 ASCII, e.g. "FR"
	Model        string // digit + capital, e.g. "2N"
	MPSDSerial   uint32
	AR           Mills // ascending register after this stamp
	Postage      Mills
	Date         Date // date of mailing
	OriginZIP    uint32
	UserID       uint64 // the kiosk or web user, as numbered by the hub
	SoftwareID   uint8
	Label        LabelSerial
	DR           Mills  // descending register after this stamp
	RateCategory string // 4 ASCII digits, e.g. "1100"
	Signature    [SignatureLen]byte
}

// MeterNumber returns the printed meter number, e.g. "FR2N50000061".
func (in *Indicium) MeterNumber() string { return MeterNumber(in.Vendor, in.Model, in.MPSDSerial) }

// Body returns the 49 signed bytes. It refuses values that do not fit their
// field rather than truncate them: a truncated register is a forged one.
func (in *Indicium) Body() ([]byte, error) {
	b := make([]byte, IndiciumBody)
	return b, in.putBody(b)
}

func (in *Indicium) putBody(b []byte) error {
	switch {
	case !validVendor(in.Vendor):
		return fmt.Errorf("%w: vendor %q", ErrIndiciumField, in.Vendor)
	case !validModel(in.Model):
		return fmt.Errorf("%w: model %q", ErrIndiciumField, in.Model)
	case in.MPSDSerial > MaxMPSDSerial: // the meter number has 8 digits
		return fmt.Errorf("%w: MPSD serial %d", ErrIndiciumField, in.MPSDSerial)
	case in.AR < 0 || in.AR > MaxAR:
		return fmt.Errorf("%w: ascending register %d", ErrIndiciumField, in.AR)
	case in.Postage <= 0 || in.Postage > MaxPostage:
		return fmt.Errorf("%w: postage %d", ErrIndiciumField, in.Postage)
	case in.DR < 0 || in.DR > MaxDR:
		return fmt.Errorf("%w: descending register %d", ErrIndiciumField, in.DR)
	case !in.Date.Valid():
		return fmt.Errorf("%w: date %d", ErrIndiciumField, in.Date)
	case in.OriginZIP == 0 || in.OriginZIP > maxZIPNumeric: // 00000 is no ZIP code
		return fmt.Errorf("%w: zip %d", ErrIndiciumField, in.OriginZIP)
	case in.UserID > MaxUserID:
		return fmt.Errorf("%w: user id %d", ErrIndiciumField, in.UserID)
	case !in.Label.Valid():
		return fmt.Errorf("%w: label position %d", ErrIndiciumField, in.Label.Position)
	case !validRateClass(in.RateCategory):
		return fmt.Errorf("%w: rate category %q", ErrIndiciumField, in.RateCategory)
	}
	b[0] = IndiciumV1
	b[1] = AlgECDSAP256
	binary.BigEndian.PutUint32(b[2:6], in.CertSerial)
	copy(b[6:8], in.Vendor)
	copy(b[8:10], in.Model)
	binary.BigEndian.PutUint32(b[10:14], in.MPSDSerial)
	putUint40(b[14:19], uint64(in.AR))
	putUint24(b[19:22], uint32(in.Postage))
	binary.BigEndian.PutUint32(b[22:26], uint32(in.Date))
	binary.BigEndian.PutUint32(b[26:30], in.OriginZIP)
	putUint40(b[30:35], in.UserID)
	b[35] = in.SoftwareID
	binary.BigEndian.PutUint32(b[36:40], uint32(in.Label.Sheet))
	b[40] = in.Label.Position
	binary.BigEndian.PutUint32(b[41:45], uint32(in.DR))
	copy(b[45:49], in.RateCategory)
	return nil
}

// Digest returns SHA-256 of the body, the value that is signed.
func (in *Indicium) Digest() ([sha256.Size]byte, error) {
	body, err := in.Body()
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(body), nil
}

// MarshalBinary returns the 113 bytes that the DataMatrix carries.
func (in *Indicium) MarshalBinary() ([]byte, error) {
	b := make([]byte, IndiciumLen)
	if err := in.putBody(b[:IndiciumBody]); err != nil {
		return nil, err
	}
	copy(b[IndiciumBody:], in.Signature[:])
	return b, nil
}

// Sign fills in the signature using s, which must hold a P-256 key and
// return ASN.1 signatures as crypto.Signer does.
func (in *Indicium) Sign(s crypto.Signer) error {
	d, err := in.Digest()
	if err != nil {
		return err
	}
	der, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return fmt.Errorf("indicium: sign: %w", err)
	}
	rs, err := SignatureFromASN1(der)
	if err != nil {
		return err
	}
	in.Signature = rs
	return nil
}

// ParseIndicium decodes the 113 bytes without checking the signature.
func ParseIndicium(b []byte) (*Indicium, error) {
	if len(b) != IndiciumLen {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrIndiciumLength, len(b), IndiciumLen)
	}
	if b[0] != IndiciumV1 {
		return nil, fmt.Errorf("%w: %d", ErrIndiciumVersion, b[0])
	}
	if b[1] != AlgECDSAP256 {
		return nil, fmt.Errorf("%w: %d", ErrIndiciumAlgorithm, b[1])
	}
	in := &Indicium{
		CertSerial:   binary.BigEndian.Uint32(b[2:6]),
		Vendor:       string(b[6:8]),
		Model:        string(b[8:10]),
		MPSDSerial:   binary.BigEndian.Uint32(b[10:14]),
		AR:           Mills(uint40(b[14:19])),
		Postage:      Mills(uint24(b[19:22])),
		Date:         Date(binary.BigEndian.Uint32(b[22:26])),
		OriginZIP:    binary.BigEndian.Uint32(b[26:30]),
		UserID:       uint40(b[30:35]),
		SoftwareID:   b[35],
		Label:        LabelSerial{Sheet: SheetSerial(binary.BigEndian.Uint32(b[36:40])), Position: b[40]},
		DR:           Mills(binary.BigEndian.Uint32(b[41:45])),
		RateCategory: string(b[45:49]),
	}
	copy(in.Signature[:], b[IndiciumBody:])
	// Re-encoding applies every field rule in one place.
	var scratch [IndiciumBody]byte
	if err := in.putBody(scratch[:]); err != nil {
		return nil, err
	}
	return in, nil
}

// VerifyIndicium decodes b and checks its signature against pub.
func VerifyIndicium(b []byte, pub *ecdsa.PublicKey) (*Indicium, error) {
	in, err := ParseIndicium(b)
	if err != nil {
		return nil, err
	}
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: not a P-256 key", ErrIndiciumSignature)
	}
	d := sha256.Sum256(b[:IndiciumBody])
	r := new(big.Int).SetBytes(in.Signature[:32])
	s := new(big.Int).SetBytes(in.Signature[32:])
	if !ecdsa.Verify(pub, d[:], r, s) {
		return nil, fmt.Errorf("%w: certificate %d", ErrIndiciumSignature, in.CertSerial)
	}
	return in, nil
}

// SignatureFromASN1 converts an ASN.1 ECDSA signature to the fixed r‖s
// form with s ≤ n/2: (r, s) and (r, n−s) both verify, and one byte string
// per signature, whatever the signer, keeps stamps from having twins.
// VerifyIndicium still accepts a high s, which older stamps carry.
func SignatureFromASN1(der []byte) ([SignatureLen]byte, error) {
	var sig struct{ R, S *big.Int }
	var out [SignatureLen]byte
	rest, err := asn1.Unmarshal(der, &sig)
	n := elliptic.P256().Params().N
	if err != nil || len(rest) != 0 || sig.R == nil || sig.S == nil ||
		sig.R.Sign() <= 0 || sig.S.Sign() <= 0 || sig.R.Cmp(n) >= 0 || sig.S.Cmp(n) >= 0 {
		return out, fmt.Errorf("%w: malformed ASN.1 signature", ErrIndiciumSignature)
	}
	if sig.S.Cmp(halfOrder) > 0 {
		sig.S.Sub(n, sig.S)
	}
	sig.R.FillBytes(out[:32])
	sig.S.FillBytes(out[32:])
	return out, nil
}

// halfOrder is n/2 for P-256, rounded down: the largest low s.
var halfOrder = new(big.Int).Rsh(elliptic.P256().Params().N, 1)

func putUint40(b []byte, v uint64) {
	b[0] = byte(v >> 32)
	binary.BigEndian.PutUint32(b[1:], uint32(v))
}

func uint40(b []byte) uint64 { return uint64(b[0])<<32 | uint64(binary.BigEndian.Uint32(b[1:])) }

func putUint24(b []byte, v uint32) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }

func uint24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }
