package ca_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ca"
)

// ParseCertPEM reads certificates a hub is given: a broker's or a CA's
// bundle in its configuration, a kiosk's in a request. Held: it never
// panics; what it takes is the first CERTIFICATE block of the input, whole
// (its DER is that block's bytes), and reads back the same from its own
// PEM; what it refuses gives no certificate.
func FuzzParseCertPEM(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "kiosk-1"},
		NotBefore: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		f.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, _ := x509.MarshalECPrivateKey(k)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	f.Add(certPEM)
	f.Add(append(bytes.Clone(keyPEM), certPEM...))
	f.Add(append(bytes.Clone(certPEM), certPEM...))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der[:len(der)-2]}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: append(bytes.Clone(der), 0)}))
	f.Add([]byte("junk before\n" + string(certPEM)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		cert, err := ca.ParseCertPEM(b)
		if err != nil {
			if cert != nil {
				t.Fatalf("refused (%v), yet gave a certificate", err)
			}
			return
		}
		var first []byte
		for rest := b; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			if blk.Type == "CERTIFICATE" {
				first = blk.Bytes
				break
			}
		}
		if first == nil || !bytes.Equal(cert.Raw, first) {
			t.Fatalf("%q taken as a certificate of % x, not its first block's", b, cert.Raw)
		}
		back, err := ca.ParseCertPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
		if err != nil || !back.Equal(cert) {
			t.Fatalf("% x does not read back: %v", cert.Raw, err)
		}
	})
}
