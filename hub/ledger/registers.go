package ledger

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// PSD kinds.
const (
	KindGPSD = "gpsd"
	KindMPSD = "mpsd"
)

// GPSDSerial is the serial of the one global PSD. MPSD serials start at
// FirstMPSDSerial so meter numbers read like the patent's (…50000061).
const (
	GPSDSerial      = 1
	FirstMPSDSerial = 50_000_001
)

// PSD is one postal security device's registers: the ascending register
// (postage ever issued or passed on) and the descending register (postage
// still available), in mills.
type PSD struct {
	Serial      uint32         `json:"serial"`
	Kind        string         `json:"kind"`
	AR          protocol.Mills `json:"ar_mills"`
	DR          protocol.Mills `json:"dr_mills"`
	Control     []byte         `json:"-"`
	Locked      string         `json:"locked,omitempty"` // why it no longer sells; empty when it does
	LeaseHolder string         `json:"lease_holder,omitempty"`
	LeaseUntil  time.Time      `json:"lease_until"`
	ReportedAt  time.Time      `json:"reported_at"` // last postal report that covered it
	head        auditHead      // its audit chain's last entry
}

// controlMessage is what the control code covers. The kind is included so a
// GPSD row can never pass for an MPSD row.
func controlMessage(kind string, serial uint32, ar, dr protocol.Mills) []byte {
	b := make([]byte, 0, 32)
	b = append(b, "frank-psd-v1\x00"...)
	b = append(b, kind...)
	b = binary.BigEndian.AppendUint32(b, serial)
	b = binary.BigEndian.AppendUint64(b, uint64(ar))
	b = binary.BigEndian.AppendUint64(b, uint64(dr))
	return b
}

// macer computes the HMAC that seals registers; the HSM provides it.
type macer interface {
	MAC(label string, data []byte) ([]byte, error)
}

// controlTag starts a control code made under key generation 2 or later,
// followed by the generation (2 bytes) and the MAC. A generation-1 code is
// the bare MAC, as before rotations existed.
const controlTag = 0xC7

// controlLabel is the HSM label of generation gen of the control-code key;
// base is the configured (first) one.
func controlLabel(base string, gen int) string {
	if gen <= 1 {
		return base
	}
	return fmt.Sprintf("frank-control-g%d", gen)
}

// seal computes p's control code under generation gen of the key.
func seal(m macer, base string, gen int, p *PSD) error {
	c, err := m.MAC(controlLabel(base, gen), controlMessage(p.Kind, p.Serial, p.AR, p.DR))
	if err != nil {
		return fmt.Errorf("ledger: seal psd %d: %w", p.Serial, err)
	}
	if gen > 1 {
		c = append([]byte{controlTag, byte(gen >> 8), byte(gen)}, c...)
	}
	p.Control = c
	return nil
}

// sealGen is the key generation a control code names: 1 for a bare code.
func sealGen(code []byte) int {
	if len(code) == 3+sha256.Size && code[0] == controlTag {
		return max(int(code[1])<<8|int(code[2]), 1)
	}
	return 1
}

// verifySeal reports whether p's control code matches its registers, under
// the key generation the code names.
func verifySeal(m macer, base string, p *PSD) (bool, error) {
	gen, code := sealGen(p.Control), p.Control
	if gen > 1 {
		code = code[3:]
	}
	c, err := m.MAC(controlLabel(base, gen), controlMessage(p.Kind, p.Serial, p.AR, p.DR))
	if err != nil {
		return false, fmt.Errorf("ledger: verify psd %d: %w", p.Serial, err)
	}
	return hmac.Equal(c, code), nil
}

// inRange checks register widths: AR fits 5 bytes, DR 4, neither negative.
func (p *PSD) inRange() bool {
	return p.AR >= 0 && p.AR <= protocol.MaxAR && p.DR >= 0 && p.DR <= protocol.MaxDR
}
