package prototest_test

import (
	"bytes"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// protocol/README.md's test vector can be checked from the page alone: it
// publishes the test key's public key, the vector, and its low-s twin, and
// says the vector's s is high. Each is the one this package holds.
func TestREADMEVectorCheckable(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	der, err := x509.MarshalPKIXPublicKey(&prototest.Key().PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if p := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); !strings.Contains(readme, p) {
		t.Errorf("README.md does not publish the test key's public key:\n%s", p)
	}
	// The README's hex blocks, lines joined.
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```\n([0-9a-f\n]+)```").FindAllStringSubmatch(readme, -1) {
		blocks = append(blocks, strings.ReplaceAll(m[1], "\n", ""))
	}
	half := new(big.Int).Rsh(elliptic.P256().Params().N, 1)
	pub := &prototest.Key().PublicKey
	for _, c := range []struct {
		v    prototest.IndiciumVector
		high bool
	}{{prototest.Indicia[0], true}, {prototest.LowS, false}} {
		b := c.v.Bytes()
		if !slices.Contains(blocks, c.v.Hex) {
			t.Errorf("README.md lacks the vector %q", c.v.Name)
		}
		in, err := protocol.VerifyIndicium(b, pub)
		if err != nil {
			t.Errorf("%s: %v", c.v.Name, err)
			continue
		}
		want := c.v.Fields
		want.Signature = in.Signature
		if *in != want {
			t.Errorf("%s: reads %+v, want %+v", c.v.Name, *in, want)
		}
		if high := new(big.Int).SetBytes(b[81:]).Cmp(half) > 0; high != c.high {
			t.Errorf("%s: high s %v, want %v", c.v.Name, high, c.high)
		}
	}
	if a, b := prototest.Indicia[0].Bytes(), prototest.LowS.Bytes(); !bytes.Equal(a[:81], b[:81]) {
		t.Error("the low-s vector is not the same stamp with another s")
	}
	if !strings.Contains(readme, "high") || !strings.Contains(readme, "on purpose") {
		t.Error("README.md does not say the vector's s is high on purpose")
	}
}
