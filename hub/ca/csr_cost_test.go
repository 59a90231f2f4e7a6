package ca_test

import (
	"crypto/rand"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"

	"github.com/frank-postage/frank/hub/ca"
)

// forgedRSACSR is a CSR with an RSA key of bits bits and exponent e whose
// signature is wrong: only the costly s^e mod N finds that out.
func forgedRSACSR(t *testing.T, bits, e int) []byte {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits)))
	if err != nil {
		t.Fatal(err)
	}
	n.SetBit(n, bits-1, 1)
	n.SetBit(n, 0, 1)
	pub, err := asn1.Marshal(struct {
		N *big.Int
		E int
	}{n, e})
	if err != nil {
		t.Fatal(err)
	}
	type algo struct {
		OID  asn1.ObjectIdentifier
		Null asn1.RawValue
	}
	null := asn1.RawValue{Tag: 5}
	info, err := asn1.Marshal(struct {
		Version int
		Subject asn1.RawValue
		SPKI    any
		Attrs   asn1.RawValue `asn1:"tag:0"`
	}{0, asn1.RawValue{Tag: 16, IsCompound: true}, struct {
		Algo algo
		Key  asn1.BitString
	}{algo{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}, null}, asn1.BitString{Bytes: pub, BitLength: len(pub) * 8}},
		asn1.RawValue{Class: 2, Tag: 0, IsCompound: true}})
	if err != nil {
		t.Fatal(err)
	}
	sig := new(big.Int).Sub(n, big.NewInt(2)).FillBytes(make([]byte, (bits+7)/8))
	der, err := asn1.Marshal(struct {
		Info asn1.RawValue
		Algo algo
		Sig  asn1.BitString
	}{asn1.RawValue{FullBytes: info}, algo{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, null}, asn1.BitString{Bytes: sig, BitLength: len(sig) * 8}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// A CSR whose key is not P-256 is refused for its key before its signature
// is checked: anyone may send one to /api/v1/enroll, and checking a forged
// signature by a 176,000-bit RSA key cost 1.5 s of CPU.
func TestCSRKeyCheckedBeforeSignature(t *testing.T) {
	t.Parallel()
	_, err := ca.CheckCSR(forgedRSACSR(t, 4096, 0x7fffffff))
	if err == nil || !strings.Contains(err.Error(), "P-256") || strings.Contains(err.Error(), "signature") {
		t.Fatalf("a forged RSA CSR: %v; want it refused for its key, its signature never checked", err)
	}
}
