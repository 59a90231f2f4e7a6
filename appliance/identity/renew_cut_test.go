package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// A power cut can stop a renewal after any of write's steps; the kiosk
// must still start, on the old identity or the new one, never on the new
// certificate with the old key (Load failed there, and main exited before
// recovery ran, at every start).
func TestRenewalCutAfterEachStepStillLoads(t *testing.T) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	leaf := func(k *ecdsa.PrivateKey, serial int64) []byte {
		tm := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "k1"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tm, caTmpl, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	oldKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	oldCert, newCert := leaf(oldKey, 2), leaf(newKey, 3)

	probe, err := writeSteps(In(t.TempDir()), newKey, newCert, caPEM)
	if err != nil {
		t.Fatal(err)
	}
	for cut := 0; cut <= len(probe); cut++ {
		files := In(t.TempDir())
		if err := write(files, oldKey, oldCert, caPEM); err != nil {
			t.Fatal(err)
		}
		steps, err := writeSteps(files, newKey, newCert, caPEM)
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range steps[:cut] {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		// --- power cut here; the kiosk starts again ---
		id, err := Load(files, "", "", nil)
		if err != nil {
			t.Fatalf("cut after %d of %d steps: the kiosk cannot start: %v", cut, len(steps), err)
		}
		serial := id.Leaf().SerialNumber.Int64()
		if serial != 2 && serial != 3 {
			t.Fatalf("cut after %d steps: loaded certificate %d, neither the old nor the new", cut, serial)
		}
		if cut == len(steps) && serial != 3 {
			t.Fatalf("renewal complete, yet the old certificate loaded")
		}
		// The pair on disk is whole now: a second start loads the same.
		again, err := Load(files, "", "", nil)
		if err != nil || again.Leaf().SerialNumber.Int64() != serial {
			t.Fatalf("cut after %d steps: second start: %v", cut, err)
		}
	}
}
