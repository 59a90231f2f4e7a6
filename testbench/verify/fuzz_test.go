package verify_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"

	"github.com/frank-postage/frank/testbench/verify"
)

// Certificates and authority keys come from files anyone can hand a
// verifier: no input panics it, and none passes as certified without the
// authority's signature.
func FuzzKeysOf(f *testing.F) {
	authority, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Add([]byte(`[{"serial":1,"algorithm":3,"public_key_pem":"-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n","certificate_pem":""}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n`))
	f.Fuzz(func(t *testing.T, b []byte) {
		verify.ParseAuthority(b)
		certs, err := verify.ParseCertificates(b)
		if err != nil {
			return
		}
		// A key published without a certificate is kept only as uncertified.
		if keys, err := verify.KeysOf(certs, &authority.PublicKey); err == nil {
			for serial, k := range keys {
				if !k.Uncertified || k.Public != nil || k.Certified {
					t.Fatalf("key %d certified without the authority's signature: %q", serial, b)
				}
			}
		}
		verify.KeysOf(certs, nil)
	})
}

// A void list comes from a file anyone can hand a verifier: no input
// panics it, and what it lists is found again.
func FuzzParseVoidList(f *testing.F) {
	f.Add([]byte(`[{"meter":"FR2N50000001","label":"1966-F8CF-01","ar":780,"reason":"refund_requested"}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"meter":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		vl, err := verify.ParseVoidList(b)
		if err != nil {
			return
		}
		var vs []verify.Void
		json.Unmarshal(b, &vs)
		if len(vs) > 0 && len(vl) == 0 {
			t.Fatalf("%d entries parsed to an empty list", len(vs))
		}
	})
}
