package ca_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/hub/store"
)

// A kiosk retired on hub A while its renewal is under way on hub B: B's
// web handler found the certificate unrevoked (before reading the body, up
// to a minute), and the renewal then issued a stolen kiosk a certificate
// nobody revoked. RenewKiosk looks again under the CA row's lock, which
// Revoke takes too.
func TestNoRenewalAfterRevocationOnAnotherHub(t *testing.T) {
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
		*now = cur.NotBefore.Add(cur.NotAfter.Sub(cur.NotBefore) * 2 / 3)
		hubB := other()
		if revoked, err := hubB.Revoked(ctx); err != nil || revoked[ca.SerialHex(cur.SerialNumber)] {
			t.Fatalf("revoked before the retirement: %v %v", revoked, err)
		}
		if n, err := c.Revoke(ctx, "kiosk-1", "lost or stolen"); err != nil || n != 1 {
			t.Fatalf("revoke: %d %v", n, err)
		}
		csr2, _ := newCSR(t, "kiosk-1")
		if der, err := hubB.RenewKiosk(ctx, cur, csr2, "store-a"); !errors.Is(err, ca.ErrRevoked) {
			t.Fatalf("renewal by a certificate revoked on another hub: %d bytes, %v; want ErrRevoked", len(der), err)
		}
	})
}

// A retired kiosk gets no certificate, by enrollment or renewal, even
// before its revocation has run: the fleet marks it retired first.
func TestRetiredKioskGetsNoCertificate(t *testing.T) {
	forEachHubs(t, func(t *testing.T, c *ca.CA, other func() *ca.CA, db *store.DB, now *time.Time) {
		ctx := context.Background()
		if err := c.Init(ctx); err != nil {
			t.Fatal(err)
		}
		db.ExecContext(ctx, db.Rebind(`DELETE FROM kiosks WHERE kiosk_id = ?`), "kiosk-r")
		if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO kiosks (kiosk_id, user_id, created_at) VALUES (?, (SELECT COALESCE(MAX(user_id), 0) + 1 FROM kiosks), ?)`),
			"kiosk-r", now.UnixMicro()); err != nil {
			t.Fatal(err)
		}
		csr, _ := newCSR(t, "kiosk-r")
		der, err := c.IssueKiosk(ctx, csr, "kiosk-r", "store-a")
		if err != nil {
			t.Fatal(err)
		}
		cur, _ := x509.ParseCertificate(der)
		*now = cur.NotBefore.Add(cur.NotAfter.Sub(cur.NotBefore) * 2 / 3)
		// Retired on hub A (the fleet marks it first), the revocation not
		// yet run: hub B refuses both ways.
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE kiosks SET retired_at = ? WHERE kiosk_id = ?`), now.UnixMicro(), "kiosk-r"); err != nil {
			t.Fatal(err)
		}
		hubB := other()
		csr2, _ := newCSR(t, "kiosk-r")
		if _, err := hubB.RenewKiosk(ctx, cur, csr2, "store-a"); !errors.Is(err, ca.ErrRevoked) {
			t.Fatalf("renewal of a retired kiosk: %v; want ErrRevoked", err)
		}
		if _, err := hubB.IssueKiosk(ctx, csr2, "kiosk-r", "store-a"); !errors.Is(err, ca.ErrRevoked) {
			t.Fatalf("a certificate issued a retired kiosk: %v; want ErrRevoked", err)
		}
	})
}
