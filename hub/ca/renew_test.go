package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// A kiosk renews once a certificate: the kiosk asks at two thirds of its
// life (identity.Due) and the CA takes it from half. A fresh certificate
// is refused; a due one renews once, however many ask at once on two
// hubs; asking again within the hour, with either certificate, makes no
// other; an hour on, the old one renews again, for a kiosk whose answer
// was lost.
func TestRenewKioskOncePerCertificate(t *testing.T) {
	forEachHubs(t, func(t *testing.T, c *ca.CA, other func() *ca.CA, db *store.DB, now *time.Time) {
		ctx := context.Background()
		if err := c.Init(ctx); err != nil {
			t.Fatal(err)
		}
		csr, _ := newCSR(t, "kiosk-1")
		der, err := c.IssueKiosk(ctx, csr, "kiosk-1", "store-a")
		if err != nil {
			t.Fatal(err)
		}
		cur, _ := x509.ParseCertificate(der)
		certs := func() int {
			t.Helper()
			var n int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM device_certs WHERE subject = 'kiosk-1'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		var notYet *ca.NotYet
		if _, err := c.RenewKiosk(ctx, cur, csr, "store-a"); !errors.Is(err, ca.ErrNotDue) || !errors.As(err, &notYet) ||
			!notYet.At.Equal(cur.NotBefore.Add(cur.NotAfter.Sub(cur.NotBefore)/2)) {
			t.Fatalf("a fresh certificate renewed: %v", err)
		}

		// Due by the kiosk's rule, the hub's clock a minute behind its own.
		*now = cur.NotBefore.Add(cur.NotAfter.Sub(cur.NotBefore) * 2 / 3).Add(-time.Minute)
		h2 := other()
		var ok, recent atomic.Int32
		var renewed atomic.Pointer[x509.Certificate]
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				h := c
				if i%2 == 1 {
					h = h2
				}
				csr, _ := newCSR(t, "kiosk-1")
				der, err := h.RenewKiosk(ctx, cur, csr, "store-a")
				switch {
				case err == nil:
					ok.Add(1)
					cert, _ := x509.ParseCertificate(der)
					renewed.Store(cert)
				case errors.Is(err, ca.ErrRenewedRecently):
					recent.Add(1)
				default:
					t.Errorf("renewal: %v", err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 || recent.Load() != 49 || certs() != 2 {
			t.Fatalf("50 renewals at once on two hubs: %d issued, %d refused as recent, %d certificates", ok.Load(), recent.Load(), certs())
		}
		next := renewed.Load()
		if next.Subject.CommonName != "kiosk-1" || next.Subject.OrganizationalUnit[0] != "store-a" || !next.NotAfter.Equal(now.Add(30*24*time.Hour)) {
			t.Fatalf("renewed certificate %+v until %v", next.Subject, next.NotAfter)
		}
		if _, err := next.Verify(x509.VerifyOptions{Roots: c.Pool(), CurrentTime: *now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("renewed certificate: %v", err)
		}
		for range 50 {
			if _, err := c.RenewKiosk(ctx, cur, csr, "store-a"); !errors.Is(err, ca.ErrRenewedRecently) {
				t.Fatalf("the old certificate again within the hour: %v", err)
			}
			if _, err := c.RenewKiosk(ctx, next, csr, "store-a"); !errors.Is(err, ca.ErrNotDue) {
				t.Fatalf("the new certificate at once: %v", err)
			}
		}
		if n := certs(); n != 2 {
			t.Fatalf("%d certificates after 100 more renewals", n)
		}
		// The answer was lost: the kiosk asks again at its next hourly check.
		*now = now.Add(time.Hour)
		if _, err := c.RenewKiosk(ctx, cur, csr, "store-a"); err != nil {
			t.Fatalf("an hour on, the old certificate: %v", err)
		}
	})
}

// A hub's certificate is valid from the CA's start, for kiosks whose
// clocks lag, but at most a year back: with its 30 days ahead, its whole
// life stays within the 398 days browsers take for a server certificate.
func TestHubCertificateBackdatedAYearAtMost(t *testing.T) {
	forEachHubs(t, func(t *testing.T, c *ca.CA, _ func() *ca.CA, _ *store.DB, now *time.Time) {
		ctx := context.Background()
		if err := c.Init(ctx); err != nil {
			t.Fatal(err)
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		issue := func() *x509.Certificate {
			t.Helper()
			der, err := c.IssueHub(ctx, &key.PublicKey, protocol.HubPrefix+"-a", []string{"127.0.0.1"})
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			return cert
		}
		if got := issue(); !got.NotBefore.Equal(c.Certificate().NotBefore) {
			t.Fatalf("a young CA's hub certificate starts %s, want the CA's start %s", got.NotBefore, c.Certificate().NotBefore)
		}
		*now = now.Add(3 * 365 * 24 * time.Hour)
		got := issue()
		if life := got.NotAfter.Sub(got.NotBefore); life > 398*24*time.Hour || got.NotBefore.After(now.Add(-364*24*time.Hour)) {
			t.Fatalf("a three-year-old CA's hub certificate: %s to %s (%v)", got.NotBefore, got.NotAfter, life)
		}
	})
}
