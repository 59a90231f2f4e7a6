package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/frank-postage/frank/hub/ca"
)

// A CSR comes with the enrollment request, before its code is checked:
// whatever the bytes, CheckCSR answers without a panic, and what it takes
// carries a P-256 key whose signature checks.
func FuzzCheckCSR(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "kiosk-1"}}, k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Add(der[:len(der)/2])
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := ca.CheckCSR(b)
		if err != nil {
			return
		}
		if pub, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() || csr.CheckSignature() != nil {
			t.Fatalf("took a CSR with key %T or a bad signature", csr.PublicKey)
		}
	})
}
