package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"maps"
	"math/big"
	"testing"
	"time"
)

// fuzzCA is a CA certificate and key made for the fuzzer.
func fuzzCA(f *testing.F, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		f.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		f.Fatal(err)
	}
	return cert, k
}

// parseCRL reads the list a hub stored in device_ca, which every hub on
// the database then serves: a list it takes must be the CA's own. Held:
// it never panics; a list taken checks against the CA's certificate, is
// kept byte for byte, and holds exactly its entries' serials and its own
// update times; a list refused gives nothing.
func FuzzParseCRL(f *testing.F) {
	caCert, caKey := fuzzCA(f, "Frank devices")
	otherCert, otherKey := fuzzCA(f, "Frank devices")
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	sign := func(cert *x509.Certificate, key *ecdsa.PrivateKey, n int64, serials ...int64) []byte {
		var es []x509.RevocationListEntry
		for _, s := range serials {
			es = append(es, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: now.Add(-time.Hour)})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(n), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
			RevokedCertificateEntries: es}, cert, key)
		if err != nil {
			f.Fatal(err)
		}
		return der
	}
	good := sign(caCert, caKey, 1, 0x1234, 0x7bcdef0123456789)
	f.Add(good)
	f.Add(sign(caCert, caKey, 2))
	f.Add(sign(caCert, caKey, 3, 7, 7))
	f.Add(sign(otherCert, otherKey, 1, 0x1234)) // another CA of the same name
	f.Add(good[:len(good)-1])
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	c := &CA{cert: caCert}
	f.Fuzz(func(t *testing.T, der []byte) {
		l, err := c.parseCRL(der)
		if err != nil {
			if l != nil {
				t.Fatalf("refused (%v), yet gave %+v", err, l)
			}
			return
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil || crl.CheckSignatureFrom(caCert) != nil {
			t.Fatalf("took % x, which is not a list the CA signed: %v", der, err)
		}
		want := map[string]bool{}
		for _, e := range crl.RevokedCertificateEntries {
			want[SerialHex(e.SerialNumber)] = true
		}
		if string(l.der) != string(der) || !l.this.Equal(crl.ThisUpdate) || !l.next.Equal(crl.NextUpdate) || !maps.Equal(l.serials, want) {
			t.Fatalf("took % x as %+v, want serials %v", der, l, want)
		}
	})
}
