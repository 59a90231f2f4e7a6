package protocol_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"testing"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

func TestIndiciumVectors(t *testing.T) {
	pub := &prototest.Key().PublicKey
	for _, v := range prototest.Indicia {
		t.Run(v.Name, func(t *testing.T) {
			b := v.Bytes()
			if len(b) != protocol.IndiciumLen {
				t.Fatalf("vector is %d bytes", len(b))
			}
			got, err := protocol.VerifyIndicium(b, pub)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			want := v.Fields
			want.Signature = got.Signature
			if *got != want {
				t.Errorf("decoded\n %+v\nwant\n %+v", *got, want)
			}
			// Encoding the decoded fields gives back the same bytes.
			re, err := got.MarshalBinary()
			if err != nil || !bytes.Equal(re, b) {
				t.Errorf("re-encode = %x, %v", re, err)
			}
		})
	}
}

func TestBadIndicia(t *testing.T) {
	pub := &prototest.Key().PublicKey
	for _, v := range prototest.BadIndicia {
		t.Run(v.Name, func(t *testing.T) {
			b := prototest.IndiciumVector{Name: v.Name, Hex: v.Hex}.Bytes()
			_, err := protocol.VerifyIndicium(b, pub)
			if !errors.Is(err, v.Err) {
				t.Fatalf("err = %v, want %v", err, v.Err)
			}
		})
	}
}

// Every single-byte change anywhere in the 113 bytes must fail verification.
func TestIndiciumEveryByteFlipFails(t *testing.T) {
	pub := &prototest.Key().PublicKey
	for _, v := range prototest.Indicia {
		b := v.Bytes()
		for i := range b {
			for _, mask := range []byte{0x01, 0x80, 0xFF} {
				c := bytes.Clone(b)
				c[i] ^= mask
				if _, err := protocol.VerifyIndicium(c, pub); err == nil {
					t.Errorf("%s: byte %d ^ %#x still verifies", v.Name, i, mask)
				}
			}
		}
	}
}

func TestIndiciumSignRoundTrip(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	in := prototest.Indicia[0].Fields
	if err := in.Sign(k); err != nil {
		t.Fatal(err)
	}
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.VerifyIndicium(b, &k.PublicKey); err != nil {
		t.Fatalf("own signature: %v", err)
	}
	if _, err := protocol.VerifyIndicium(b, &prototest.Key().PublicKey); !errors.Is(err, protocol.ErrIndiciumSignature) {
		t.Fatalf("other key: err = %v, want bad signature", err)
	}
}

func TestIndiciumFieldLimits(t *testing.T) {
	base := prototest.Indicia[0].Fields
	cases := []struct {
		name string
		edit func(*protocol.Indicium)
	}{
		{"AR over 5 bytes", func(in *protocol.Indicium) { in.AR = protocol.MaxAR + 1 }},
		{"negative AR", func(in *protocol.Indicium) { in.AR = -1 }},
		{"DR over 4 bytes", func(in *protocol.Indicium) { in.DR = protocol.MaxDR + 1 }},
		{"postage over 3 bytes", func(in *protocol.Indicium) { in.Postage = protocol.MaxPostage + 1 }},
		{"zero postage", func(in *protocol.Indicium) { in.Postage = 0 }},
		{"bad date", func(in *protocol.Indicium) { in.Date = 20260230 }},
		{"zip over 5 digits", func(in *protocol.Indicium) { in.OriginZIP = 100000 }},
		{"user id over 5 bytes", func(in *protocol.Indicium) { in.UserID = protocol.MaxUserID + 1 }},
		{"label position 11", func(in *protocol.Indicium) { in.Label.Position = 11 }},
		{"lowercase vendor", func(in *protocol.Indicium) { in.Vendor = "fr" }},
		{"model letter first", func(in *protocol.Indicium) { in.Model = "N2" }},
		{"rate class letters", func(in *protocol.Indicium) { in.RateCategory = "FCLS" }},
	}
	for _, c := range cases {
		in := base
		c.edit(&in)
		if _, err := in.MarshalBinary(); !errors.Is(err, protocol.ErrIndiciumField) {
			t.Errorf("%s: err = %v, want field error", c.name, err)
		}
	}
}

func TestMeterNumber(t *testing.T) {
	in := prototest.Indicia[0].Fields
	if got := in.MeterNumber(); got != "FR2N50000061" {
		t.Errorf("meter number = %q", got)
	}
	if got := protocol.MeterNumber("FR", "2N", 7); got != "FR2N00000007" {
		t.Errorf("meter number = %q", got)
	}
}

func TestSignatureFromASN1Rejects(t *testing.T) {
	for _, der := range [][]byte{nil, {0x30, 0x00}, {0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01}} {
		if _, err := protocol.SignatureFromASN1(der); !errors.Is(err, protocol.ErrIndiciumSignature) {
			t.Errorf("%x: err = %v", der, err)
		}
	}
}

// The decoder refuses what README says it refuses: a meter number wider
// than 8 digits, and ZIP 00000.
func TestParseIndiciumRefusesMPSDSerialAndZIP(t *testing.T) {
	pub := &prototest.Key().PublicKey
	cases := []struct {
		name string
		at   int
		v    uint32
	}{
		{"MPSD serial over 8 digits", 10, protocol.MaxMPSDSerial + 1},
		{"MPSD serial 2^32-1", 10, 1<<32 - 1},
		{"ZIP 00000", 26, 0},
	}
	for _, c := range cases {
		b := prototest.Indicia[0].Bytes()
		binary.BigEndian.PutUint32(b[c.at:c.at+4], c.v)
		if _, err := protocol.ParseIndicium(b); !errors.Is(err, protocol.ErrIndiciumField) {
			t.Errorf("%s: parse: err = %v, want field error", c.name, err)
		}
		if _, err := protocol.VerifyIndicium(b, pub); !errors.Is(err, protocol.ErrIndiciumField) {
			t.Errorf("%s: verify: err = %v, want field error", c.name, err)
		}
	}
	// The encoder refuses the same, so no signer makes a stamp that fails.
	in := prototest.Indicia[0].Fields
	in.MPSDSerial = protocol.MaxMPSDSerial + 1
	if _, err := in.MarshalBinary(); !errors.Is(err, protocol.ErrIndiciumField) {
		t.Errorf("encode MPSD serial over 8 digits: err = %v", err)
	}
	in = prototest.Indicia[0].Fields
	in.OriginZIP = 0
	if _, err := in.MarshalBinary(); !errors.Is(err, protocol.ErrIndiciumField) {
		t.Errorf("encode ZIP 0: err = %v", err)
	}
}

// A high s is turned into n−s, so every signer gives one byte string; the
// verifier still accepts a high s, which older stamps may carry.
func TestSignatureFromASN1LowS(t *testing.T) {
	k := prototest.Key()
	in := prototest.Indicia[0].Fields
	d, err := in.Digest()
	if err != nil {
		t.Fatal(err)
	}
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	n := elliptic.P256().Params().N
	half := new(big.Int).Rsh(n, 1)
	low, high := new(big.Int).Set(s), new(big.Int).Sub(n, s)
	if low.Cmp(half) > 0 {
		low, high = high, low
	}
	der := func(r, s *big.Int) []byte {
		b, err := asn1.Marshal(struct{ R, S *big.Int }{r, s})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fromLow, err := protocol.SignatureFromASN1(der(r, low))
	if err != nil {
		t.Fatal(err)
	}
	fromHigh, err := protocol.SignatureFromASN1(der(r, high))
	if err != nil {
		t.Fatal(err)
	}
	if fromHigh != fromLow {
		t.Fatalf("high s gives %x, low s %x: want the same bytes", fromHigh, fromLow)
	}
	if got := new(big.Int).SetBytes(fromHigh[32:]); got.Cmp(low) != 0 {
		t.Fatalf("s = %x, want the low one %x", got, low)
	}
	// Both forms verify: a verifier must not refuse a stamp signed before.
	for name, sv := range map[string]*big.Int{"low": low, "high": high} {
		in.Signature = fromLow
		new(big.Int).Set(sv).FillBytes(in.Signature[32:])
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := protocol.VerifyIndicium(b, &k.PublicKey); err != nil {
			t.Errorf("%s s: %v", name, err)
		}
	}
	// r or s at or above n never verifies, so it is malformed.
	if _, err := protocol.SignatureFromASN1(der(r, n)); !errors.Is(err, protocol.ErrIndiciumSignature) {
		t.Errorf("s = n: err = %v", err)
	}
	if _, err := protocol.SignatureFromASN1(der(n, low)); !errors.Is(err, protocol.ErrIndiciumSignature) {
		t.Errorf("r = n: err = %v", err)
	}
}

// highSigner returns every signature of its key with a high s, as a signer
// that does not normalise may.
type highSigner struct{ *ecdsa.PrivateKey }

func (h highSigner) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	r, s, err := ecdsa.Sign(rand.Reader, h.PrivateKey, digest)
	if err != nil {
		return nil, err
	}
	n := elliptic.P256().Params().N
	if s.Cmp(new(big.Int).Rsh(n, 1)) <= 0 {
		s.Sub(n, s)
	}
	return asn1.Marshal(struct{ R, S *big.Int }{r, s})
}

// Indicium.Sign goes through the normalisation whatever the signer gives.
func TestIndiciumSignLowS(t *testing.T) {
	half := new(big.Int).Rsh(elliptic.P256().Params().N, 1)
	for range 8 {
		in := prototest.Indicia[0].Fields
		if err := in.Sign(highSigner{prototest.Key()}); err != nil {
			t.Fatal(err)
		}
		if s := new(big.Int).SetBytes(in.Signature[32:]); s.Cmp(half) > 0 {
			t.Fatalf("signed with high s %x", s)
		}
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := protocol.VerifyIndicium(b, &prototest.Key().PublicKey); err != nil {
			t.Fatal(err)
		}
	}
}
