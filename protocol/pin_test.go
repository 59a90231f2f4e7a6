package protocol_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/frank-postage/frank/protocol"
)

type testCert struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

func mint(t *testing.T, cn string, parent *testCert, isCA bool) *testCert {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	signer, issuer := k, tmpl
	if parent != nil {
		signer, issuer = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &k.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCert{cert: c, der: der, key: k}
}

func serve(t *testing.T, leaf *testCert, chain ...*testCert) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tc := tls.Certificate{Certificate: [][]byte{leaf.der}, PrivateKey: leaf.key}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.der)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{tc}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(url, pin string) error {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: protocol.PinnedTLS(pin)}, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

// A pinned client reaches a server whose own certificate, or whose CA in
// the chain it sends, has the pinned fingerprint; anything else fails,
// even a chain that shows the pinned CA beside a leaf it did not sign.
func TestPinnedTLS(t *testing.T) {
	ca := mint(t, "device CA", nil, true)
	leaf := mint(t, "hub", ca, false)
	url := serve(t, leaf, ca)
	for name, pin := range map[string]string{"the CA": protocol.Fingerprint(ca.cert), "the leaf": protocol.Fingerprint(leaf.cert)} {
		if err := get(url, pin); err != nil {
			t.Errorf("pinning %s: %v", name, err)
		}
	}
	other := mint(t, "other CA", nil, true)
	if err := get(url, protocol.Fingerprint(other.cert)); err == nil {
		t.Error("a server reached with another CA's pin")
	}
	// A stranger's leaf, sent with our CA's certificate to borrow its pin.
	forged := serve(t, mint(t, "hub", other, false), ca, other)
	if err := get(forged, protocol.Fingerprint(ca.cert)); err == nil {
		t.Error("a leaf our CA did not sign passed for ours")
	}
	if fp, err := protocol.ParseFingerprint("SHA256:" + protocol.Fingerprint(ca.cert)[:2] + ":" + protocol.Fingerprint(ca.cert)[2:]); err != nil || fp != protocol.Fingerprint(ca.cert) {
		t.Errorf("parse fingerprint: %q %v", fp, err)
	}
	if code, fp := protocol.SplitEnrollCode("ABCDE-FGHIJ-KLMNO-PQRST@" + protocol.Fingerprint(ca.cert)); code != "ABCDE-FGHIJ-KLMNO-PQRST" || fp != protocol.Fingerprint(ca.cert) {
		t.Errorf("split: %q %q", code, fp)
	}
}
