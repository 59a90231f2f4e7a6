package ca_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/hub/store"
)

// Anyone may fetch the CRL, so it is signed only when the revoked
// certificates change or it is half way to its next update: asked again,
// on this hub or another, it is the same list under the same number; a
// revocation on either hub is on the next list of both at once, under a
// higher number; and past half its life it is signed again.
func TestCRLSignedOnlyWhenNeeded(t *testing.T) {
	forEachHubs(t, func(t *testing.T, c *ca.CA, other func() *ca.CA, db *store.DB, now *time.Time) {
		ctx := context.Background()
		if err := c.Init(ctx); err != nil {
			t.Fatal(err)
		}
		serials := map[string]string{}
		for _, k := range []string{"kiosk-1", "kiosk-2"} {
			csr, _ := newCSR(t, k)
			der, err := c.IssueKiosk(ctx, csr, k, "store-a")
			if err != nil {
				t.Fatal(err)
			}
			cert, _ := x509.ParseCertificate(der)
			serials[k] = ca.SerialHex(cert.SerialNumber)
		}
		number := func() int64 {
			t.Helper()
			var n int64
			if err := db.QueryRowContext(ctx, `SELECT crl_number FROM device_ca WHERE id = 1`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		get := func(c *ca.CA) ([]byte, *x509.RevocationList) {
			t.Helper()
			der, err := c.CRL(ctx, 24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			crl, err := x509.ParseRevocationList(der)
			if err != nil || crl.CheckSignatureFrom(c.Certificate()) != nil {
				t.Fatalf("CRL: %v", err)
			}
			return der, crl
		}
		listed := func(crl *x509.RevocationList) map[string]bool {
			out := map[string]bool{}
			for _, e := range crl.RevokedCertificateEntries {
				out[ca.SerialHex(e.SerialNumber)] = true
			}
			return out
		}

		before := number()
		first, crl := get(c)
		for range 100 {
			if der, _ := get(c); !bytes.Equal(der, first) {
				t.Fatal("nothing changed, yet the CRL was signed again")
			}
		}
		h2 := other()
		if der, _ := get(h2); !bytes.Equal(der, first) {
			t.Fatal("another hub signed its own CRL rather than serve the stored one")
		}
		if n := number(); n > before+1 || crl.Number.Int64() != n {
			t.Fatalf("101 fetches on two hubs moved crl_number %d -> %d (the list says %v)", before, n, crl.Number)
		}

		// A revocation on the other hub is on this hub's next list.
		if _, err := h2.Revoke(ctx, "kiosk-1", "stolen"); err != nil {
			t.Fatal(err)
		}
		revokedDER, revoked := get(c)
		if l := listed(revoked); len(l) != 1 || !l[serials["kiosk-1"]] {
			t.Fatalf("after revoking kiosk-1 the CRL lists %v", l)
		}
		if revoked.Number.Cmp(crl.Number) <= 0 {
			t.Fatalf("CRL number %v after %v", revoked.Number, crl.Number)
		}
		if der, _ := get(h2); !bytes.Equal(der, revokedDER) {
			t.Fatal("the other hub serves another list for the same revocations")
		}
		// Hubs racing after a revocation agree on one list.
		if _, err := c.Revoke(ctx, "kiosk-2", "stolen"); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		seen := map[string]bool{}
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				h := c
				if i%2 == 1 {
					h = h2
				}
				der, err := h.CRL(ctx, 24*time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[string(der)] = true
				mu.Unlock()
			})
		}
		wg.Wait()
		if len(seen) != 1 {
			t.Fatalf("16 racing fetches on two hubs got %d lists", len(seen))
		}
		bothDER, both := get(c)
		if l := listed(both); len(l) != 2 || both.Number.Cmp(revoked.Number) <= 0 {
			t.Fatalf("after revoking kiosk-2: number %v, lists %v", both.Number, l)
		}

		// Good for a day: served until half of it has passed, then signed
		// again, and the other hub serves that one.
		*now = now.Add(11 * time.Hour)
		if der, _ := get(c); !bytes.Equal(der, bothDER) {
			t.Fatal("signed again before half its life")
		}
		*now = now.Add(2 * time.Hour)
		fresh, crl := get(c)
		if bytes.Equal(fresh, bothDER) || crl.Number.Cmp(both.Number) <= 0 || !crl.NextUpdate.After(both.NextUpdate) || len(listed(crl)) != 2 {
			t.Fatalf("past half its life: number %v (was %v), next update %v (was %v)", crl.Number, both.Number, crl.NextUpdate, both.NextUpdate)
		}
		if der, _ := get(h2); !bytes.Equal(der, fresh) {
			t.Fatal("the other hub did not take the list signed again")
		}
	})
}
