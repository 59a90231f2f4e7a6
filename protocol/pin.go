package protocol

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Fingerprint names a certificate for pinning without any web PKI: the
// SHA-256 of its public key (SubjectPublicKeyInfo), 64 hex digits. It
// stays the same when the certificate is reissued for the same key. A
// kiosk enrolls against the fingerprint of the hub's device CA (or of the
// hub's own TLS certificate), carried in the enrollment code.
func Fingerprint(cert *x509.Certificate) string {
	h := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(h[:])
}

// ParseFingerprint reads a fingerprint as people copy it: any case, with
// or without a "sha256:" prefix and colons.
func ParseFingerprint(s string) (string, error) {
	s = strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:"), ":", "")
	if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("protocol: fingerprint: want 64 hex digits (SHA-256)")
	}
	return s, nil
}

// SplitEnrollCode takes "CODE@FINGERPRINT", as `hub kiosk add` prints it,
// apart; either may be alone.
func SplitEnrollCode(s string) (code, fingerprint string) {
	code, fingerprint, _ = strings.Cut(strings.TrimSpace(s), "@")
	return code, fingerprint
}

// ErrPin is a server whose certificates do not include the pinned one.
var ErrPin = errors.New("protocol: the server's certificate does not match the pinned fingerprint")

// PinnedTLS trusts a server only through a certificate whose fingerprint
// is pin: the server's own certificate, or a CA in its chain that signed
// it. No web PKI and no host name is involved, so a kiosk that knows the
// pin from its enrollment code reaches the hub by any name or address.
func PinnedTLS(pin string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // VerifyConnection does it, against the pin
		VerifyConnection: func(cs tls.ConnectionState) error {
			return VerifyPinned(cs.PeerCertificates, pin, time.Now())
		},
	}
}

// VerifyPinned checks a presented chain against pin at now.
func VerifyPinned(chain []*x509.Certificate, pin string, now time.Time) error {
	if len(chain) == 0 {
		return ErrPin
	}
	leaf := chain[0]
	for i, c := range chain {
		if Fingerprint(c) != pin {
			continue
		}
		if i == 0 {
			if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
				return fmt.Errorf("protocol: the pinned certificate is not valid now (%s to %s)", leaf.NotBefore, leaf.NotAfter)
			}
			return nil
		}
		roots, mid := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(c)
		for _, m := range chain[1:i] {
			mid.AddCert(m)
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: mid, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return fmt.Errorf("protocol: the server's certificate is not signed by the pinned CA: %w", err)
		}
		return nil
	}
	return ErrPin
}
