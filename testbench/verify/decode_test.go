package verify_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/verify"
)

// The decoder written from protocol/README.md reads the byte-level vectors
// to the fields prototest says they carry, and verifies their signatures
// with the test key: the README, the vectors and the hub's codec agree.
func TestDecodeReadsTheVectors(t *testing.T) {
	pub := &prototest.Key().PublicKey
	for _, v := range prototest.Indicia {
		b := v.Bytes()
		d, err := verify.Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		want := v.Fields
		copy(want.Signature[:], b[protocol.IndiciumBody:])
		if err := d.Agrees(&want); err != nil {
			t.Errorf("%s: %v", v.Name, err)
		}
		if !d.VerifySignature(b, pub) {
			t.Errorf("%s: the signature does not verify by the README", v.Name)
		}
		keys := verify.Keys{v.Fields.CertSerial: verify.Key{Public: pub}}
		if in, err := keys.Verify(b); err != nil || in.AR != v.Fields.AR {
			t.Errorf("%s: Verify: %+v, %v", v.Name, in, err)
		}
	}
	for _, v := range prototest.BadIndicia {
		b := []byte(nil)
		if v.Hex != "" {
			b = prototest.IndiciumVector{Name: v.Name, Hex: v.Hex}.Bytes()
		}
		d, err := verify.Decode(b)
		if errors.Is(v.Err, protocol.ErrIndiciumSignature) {
			if err != nil || d.VerifySignature(b, pub) {
				t.Errorf("%s: decoded %v, signature verifies %v; want decoded, not verified", v.Name, err, err == nil && d.VerifySignature(b, pub))
			}
			continue
		}
		if !errors.Is(err, v.Err) {
			t.Errorf("%s: %v, want %v", v.Name, err, v.Err)
		}
	}
}

// Every byte of a stamp, changed to values that break each rule the
// README gives (and to some that break none), is read alike by both
// decoders: the same fields, or a refusal of the same kind. Verify refuses
// a stamp the two read differently.
func TestDecodersAgreeByteForByte(t *testing.T) {
	for _, v := range prototest.Indicia {
		orig := v.Bytes()
		for i := range orig {
			for _, x := range []byte{0, 1, 2, 3, 9, 10, 11, '0', '9', 'A', 'Z', 'a', 0x7F, 0x80, 0xFF, orig[i] ^ 1, orig[i] ^ 0x80} {
				b := append([]byte(nil), orig...)
				b[i] = x
				if _, _, err := verify.DecodeBoth(b); errors.Is(err, verify.ErrDecodeMismatch) {
					t.Errorf("%s, byte %d = %#02x: %v", v.Name, i, x, err)
				}
			}
		}
		for _, n := range []int{0, 1, 48, 49, 112, 114} {
			b := append(append([]byte(nil), orig...), make([]byte, 1)...)[:n]
			if _, _, err := verify.DecodeBoth(b); !errors.Is(err, protocol.ErrIndiciumLength) || errors.Is(err, verify.ErrDecodeMismatch) {
				t.Errorf("%s, %d bytes: %v", v.Name, n, err)
			}
		}
	}
}

// A field the two decoders read differently is named.
func TestDecodeMismatchNamed(t *testing.T) {
	b := prototest.Indicia[0].Bytes()
	d, err := verify.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	in, err := protocol.ParseIndicium(b)
	if err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*protocol.Indicium){
		"ascending register":  func(in *protocol.Indicium) { in.AR++ },
		"descending register": func(in *protocol.Indicium) { in.DR-- },
		"label":               func(in *protocol.Indicium) { in.Label.Position = 2 },
		"origin ZIP":          func(in *protocol.Indicium) { in.OriginZIP = 2134 },
		"signature":           func(in *protocol.Indicium) { in.Signature[40] ^= 1 },
	} {
		other := *in
		change(&other)
		if err := d.Agrees(&other); !errors.Is(err, verify.ErrDecodeMismatch) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s changed: %v", name, err)
		}
	}
	if err := d.Agrees(in); err != nil {
		t.Errorf("the same stamp: %v", err)
	}
}

// No byte string makes the two decoders disagree, and none panics either.
func FuzzDecodersAgree(f *testing.F) {
	for _, v := range prototest.Indicia {
		f.Add(v.Bytes())
	}
	for _, v := range prototest.BadIndicia {
		if v.Hex != "" {
			f.Add(prototest.IndiciumVector{Hex: v.Hex}.Bytes())
		}
	}
	pub := &prototest.Key().PublicKey
	f.Fuzz(func(t *testing.T, b []byte) {
		in, d, err := verify.DecodeBoth(b)
		if errors.Is(err, verify.ErrDecodeMismatch) {
			t.Fatalf("%x: %v", b, err)
		}
		if err == nil {
			_, perr := protocol.VerifyIndicium(b, pub)
			if (perr == nil) != d.VerifySignature(b, pub) || in == nil {
				t.Fatalf("%x: signature by protocol %v, by the README %v", b, perr, d.VerifySignature(b, pub))
			}
		}
	})
}
