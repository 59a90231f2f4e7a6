package ca_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"github.com/frank-postage/frank/hsm"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm/pkcs11"
	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/softhsm"
)

var (
	tokenOnce sync.Once
	token     *pkcs11.Token
	tokenErr  error
)

// softHSM opens one SoftHSM2 token per test process: the library can be
// initialized only once.
func softHSM(t *testing.T) *pkcs11.Token {
	tokenOnce.Do(func() {
		dir, err := os.MkdirTemp("", "frank-ca-softhsm")
		if err != nil {
			tokenErr = err
			return
		}
		tok, err := softhsm.Setup(dir, "frank-ca-test", "1234")
		if err != nil {
			tokenErr = err
			return
		}
		token, tokenErr = pkcs11.Open(pkcs11.Config{Module: tok.Module, Token: tok.Label, PIN: tok.PIN})
	})
	if tokenErr != nil {
		t.Fatalf("SoftHSM2: %v", tokenErr)
	}
	return token
}

// forEach runs test on SQLite and PostgreSQL, with the soft key store and
// with SoftHSM2.
func forEach(t *testing.T, test func(t *testing.T, c *ca.CA, now *time.Time)) {
	forEachHubs(t, func(t *testing.T, c *ca.CA, _ func() *ca.CA, _ *store.DB, now *time.Time) { test(t, c, now) })
}

// forEachHubs is forEach with the database and another hub's CA at hand:
// other makes one on the same database and key, loaded.
func forEachHubs(t *testing.T, test func(t *testing.T, c *ca.CA, other func() *ca.CA, db *store.DB, now *time.Time)) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		for _, backend := range []string{"soft", "softhsm"} {
			t.Run(backend, func(t *testing.T) {
				ctx := context.Background()
				db, err := store.Open(ctx, dsn)
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				db.ExecContext(ctx, `DELETE FROM device_certs`)
				db.ExecContext(ctx, `DELETE FROM device_ca`)
				now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
				cfg := ca.Config{Vendor: "FR", Now: func() time.Time { return now }}
				var newCA func() *ca.CA
				switch backend {
				case "soft":
					ks, err := soft.Open(t.TempDir())
					if err != nil {
						t.Fatal(err)
					}
					newCA = func() *ca.CA { return ca.New(db, ks, hsm.Opener(ks.Session), cfg) }
				default:
					// The token outlives this subtest: a key label per run.
					tok := softHSM(t)
					cfg.KeyLabel = fmt.Sprintf("ca-%d", time.Now().UnixNano())
					newCA = func() *ca.CA { return ca.New(db, tok, hsm.Opener(tok.Session), cfg) }
				}
				c := newCA()
				defer c.Close()
				other := func() *ca.CA {
					o := newCA()
					t.Cleanup(o.Close)
					if err := o.Load(ctx); err != nil {
						t.Fatal(err)
					}
					return o
				}
				test(t, c, other, db, &now)
			})
		}
	})
}

func newCSR(t *testing.T, cn string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der, k
}

// The CA is made once, issues a kiosk a 30-day client certificate that
// names the kiosk and store whatever the CSR says, issues hubs client and
// server certificates, and revokes onto a signed CRL.
func TestCA(t *testing.T) {
	forEach(t, func(t *testing.T, c *ca.CA, now *time.Time) {
		ctx := context.Background()
		if err := c.Load(ctx); !errors.Is(err, ca.ErrNoCA) {
			t.Fatalf("load before init: %v", err)
		}
		if err := c.Init(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Init(ctx); !errors.Is(err, ca.ErrExists) {
			t.Fatalf("second init: %v", err)
		}
		root := c.Certificate()
		if !root.IsCA || root.Subject.CommonName != "FR device CA" {
			t.Fatalf("CA certificate %+v", root.Subject)
		}
		csr, _ := newCSR(t, "kiosk-2") // it may say anything
		der, err := c.IssueKiosk(ctx, csr, "kiosk-1", "store-a")
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		if cert.Subject.CommonName != "kiosk-1" || len(cert.Subject.OrganizationalUnit) != 1 || cert.Subject.OrganizationalUnit[0] != "store-a" ||
			!cert.NotAfter.Equal(now.Add(30*24*time.Hour)) {
			t.Fatalf("kiosk certificate %+v until %v", cert.Subject, cert.NotAfter)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: c.Pool(), CurrentTime: *now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("kiosk certificate does not verify: %v", err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: c.Pool(), CurrentTime: now.Add(31 * 24 * time.Hour),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
			t.Fatal("a kiosk certificate verifies after 31 days")
		}
		if _, err := c.IssueKiosk(ctx, csr, "frank-hub-x", "store-a"); err == nil {
			t.Fatal("issued a kiosk certificate under a hub's name")
		}
		bad := append([]byte{}, csr...)
		bad[len(bad)-3] ^= 1
		if _, err := c.IssueKiosk(ctx, bad, "kiosk-1", "store-a"); err == nil {
			t.Fatal("issued for a CSR whose signature fails")
		}
		hk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		srv, err := c.IssueHub(ctx, &hk.PublicKey, "frank-hub-1", []string{"localhost", "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		sc, _ := x509.ParseCertificate(srv)
		if _, err := sc.Verify(x509.VerifyOptions{Roots: c.Pool(), CurrentTime: *now, DNSName: "127.0.0.1"}); err != nil {
			t.Fatalf("server certificate: %v", err)
		}
		if _, err := c.IssueHub(ctx, &hk.PublicKey, "kiosk-1", nil); err == nil {
			t.Fatal("issued a hub certificate under a kiosk's name")
		}
		if n, err := c.Revoke(ctx, "kiosk-1", "retired"); err != nil || n != 1 {
			t.Fatalf("revoke: %d %v", n, err)
		}
		revoked, err := c.Revoked(ctx)
		if err != nil || !revoked[ca.SerialHex(cert.SerialNumber)] || len(revoked) != 1 {
			t.Fatalf("revoked %v %v", revoked, err)
		}
		crlDER, err := c.CRL(ctx, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(crlDER)
		if err != nil || crl.CheckSignatureFrom(root) != nil {
			t.Fatalf("CRL: %v", err)
		}
		if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(cert.SerialNumber) != 0 {
			t.Fatalf("CRL lists %v", crl.RevokedCertificateEntries)
		}
		if again, _ := c.CRL(ctx, time.Hour); !bytes.Equal(again, crlDER) {
			t.Fatal("nothing changed, yet the CRL was signed again")
		}
		latest, err := c.Latest(ctx, "kiosk-1")
		if err != nil || latest == nil || latest.Revoked == nil || latest.Reason != "retired" {
			t.Fatalf("latest %+v %v", latest, err)
		}
	})
}
