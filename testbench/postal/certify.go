package postal

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// KeyValidity is how long the authority certifies an indicium key for:
// stamps dated within it verify, after a rotation too.
const KeyValidity = 3 * 365 * 24 * time.Hour

// AuthorityFile is the file, beside the state file, that holds the
// authority's public key for verifiers (PEM PUBLIC KEY).
const AuthorityFile = "authority.pem"

// signer is the authority's key and self-signed certificate. A real
// authority keeps its key in its own HSM; the simulator keeps it in its
// state file.
type signer struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

// loadSigner reads the authority's key from the state, or makes one.
func (a *Authority) loadSigner() (created bool, err error) {
	if a.st.AuthorityKey != "" {
		blk, _ := pem.Decode([]byte(a.st.AuthorityKey))
		if blk == nil {
			return false, fmt.Errorf("postal: authority key: not PEM")
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return false, fmt.Errorf("postal: authority key: %w", err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return false, fmt.Errorf("postal: authority key: not ECDSA")
		}
		blk, _ = pem.Decode([]byte(a.st.AuthorityCert))
		if blk == nil {
			return false, fmt.Errorf("postal: authority certificate: not PEM")
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return false, fmt.Errorf("postal: authority certificate: %w", err)
		}
		a.sig = &signer{key: ec, cert: c}
		return false, nil
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, err
	}
	now := time.Now().UTC()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Postal authority (simulated) indicium key CA", Organization: []string{"Postal authority (simulated)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return false, err
	}
	c, _ := x509.ParseCertificate(der)
	p8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return false, err
	}
	a.st.AuthorityKey = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}))
	a.st.AuthorityCert = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	a.sig = &signer{key: k, cert: c}
	return true, nil
}

// PublicKeyPEM is the authority's public key, which verifiers are given.
func (a *Authority) PublicKeyPEM() string {
	der, _ := x509.MarshalPKIXPublicKey(&a.sig.key.PublicKey)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// writeAuthorityFile puts the public key beside the state file.
func (a *Authority) writeAuthorityFile() error {
	if a.path == "" {
		return nil
	}
	p := filepath.Join(filepath.Dir(a.path), AuthorityFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(a.PublicKeyPEM()), 0o644)
}

// certify signs c's key, serial, vendor and validity: an X.509 certificate
// whose serial number is the indicium's certificate serial.
func (a *Authority) certify(c *Certificate, pub *ecdsa.PublicKey) error {
	nb := c.IssuedAt.Add(-time.Minute).Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(c.Serial)),
		Subject: pkix.Name{CommonName: fmt.Sprintf("%s indicium key %d", c.Vendor, c.Serial),
			Organization: []string{c.Vendor}},
		NotBefore: nb,
		NotAfter:  nb.Add(KeyValidity),
		KeyUsage:  x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.sig.cert, pub, a.sig.key)
	if err != nil {
		return fmt.Errorf("postal: certify %d: %w", c.Serial, err)
	}
	c.CertificatePEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	c.NotBefore, c.NotAfter = tmpl.NotBefore, tmpl.NotAfter
	return nil
}

// getAuthority publishes the authority's public key and certificate.
func (a *Authority) getAuthority(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"public_key_pem": a.PublicKeyPEM(), "certificate_pem": a.st.AuthorityCert})
}
