package keys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// FuzzParsePublicKey feeds parsePublicKey the PEM of a signing key's
// public half, as the keys table keeps it for certification. It never
// panics; what it refuses is an error and no key; and a key it takes is
// an ECDSA key on its curve that the PEM's first block holds.
func FuzzParsePublicKey(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	good := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	f.Add(string(good))
	f.Add(string(good) + string(good))
	f.Add("junk\n" + string(good))
	f.Add(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der[:len(der)-3]})))
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKIXPublicKey(edPub)
	f.Add(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: edDER})))
	priv, _ := x509.MarshalECPrivateKey(k)
	f.Add(string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv})))
	for _, s := range []string{"", "not pem", "-----BEGIN PUBLIC KEY-----\n", "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		pub, err := parsePublicKey(p)
		if err != nil {
			if pub != nil || err.Error() == "" {
				t.Fatalf("%q: %v with the error %q", p, pub, err)
			}
			return
		}
		if pub == nil || pub.Curve == nil {
			t.Fatalf("%q: took a key that is not whole: %+v", p, pub)
		}
		if _, err := pub.Bytes(); err != nil { // a point on its curve
			t.Fatalf("%q: took a key that is not whole: %v", p, err)
		}
		blk, _ := pem.Decode([]byte(p))
		again, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil || !pub.Equal(again) {
			t.Fatalf("%q: took %+v, not the first block's key (%v)", p, pub, err)
		}
	})
}
