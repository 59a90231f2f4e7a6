package protocol_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
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
