package web_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/hub/web"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// caHub is the web front of a hub with a device CA, over HTTPS that asks
// for kiosk certificates, under a clock the test moves.
type caHub struct {
	t     *testing.T
	db    *store.DB
	ca    *ca.CA
	url   string
	clock atomic.Int64 // unix nanoseconds
}

func newCAHub(t *testing.T, dsn string) *caHub {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.ExecContext(ctx, `DELETE FROM device_certs`)
	db.ExecContext(ctx, `DELETE FROM device_ca`)
	db.ExecContext(ctx, `DELETE FROM kiosks WHERE id = 'kiosk-1'`)
	h := &caHub{t: t, db: db}
	h.clock.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	ks, err := soft.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h.ca = ca.New(db, ks, hsm.Opener(ks.Session), ca.Config{Now: h.now})
	t.Cleanup(h.ca.Close)
	if err := h.ca.Init(ctx); err != nil {
		t.Fatal(err)
	}
	kiosks := fleet.New(db)
	if _, err := kiosks.Add(ctx, "kiosk-1", "store-a"); err != nil {
		t.Fatal(err)
	}
	s := &web.Server{DB: db, CA: h.ca, Enroll: kiosks, Log: quiet}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: h.ca.Pool(), Time: h.now}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

func (h *caHub) now() time.Time          { return time.Unix(0, h.clock.Load()).UTC() }
func (h *caHub) set(t time.Time)         { h.clock.Store(t.UnixNano()) }
func (h *caHub) advance(d time.Duration) { h.set(h.now().Add(d)) }

// kioskCert is a certificate for kiosk-1 from the CA, with its key.
func (h *caHub) kioskCert() tls.Certificate {
	h.t.Helper()
	key, csr := newKioskCSR(h.t)
	der, err := h.ca.IssueKiosk(context.Background(), csr, "kiosk-1", "store-a")
	if err != nil {
		h.t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func newKioskCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

// do sends a request presenting cert, if any, and returns the status,
// the headers and the body.
func (h *caHub) do(cert *tls.Certificate, method, path string, body []byte) (int, http.Header, []byte) {
	h.t.Helper()
	tc := &tls.Config{InsecureSkipVerify: true}
	if cert != nil {
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(method, h.url+path, bytes.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// renew asks for a certificate for a new key, presenting cert.
func (h *caHub) renew(cert tls.Certificate) (int, http.Header, []byte) {
	h.t.Helper()
	_, csr := newKioskCSR(h.t)
	body, _ := json.Marshal(protocol.RenewRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	return h.do(&cert, http.MethodPost, protocol.RenewPath, body)
}

func (h *caHub) count(query string) int64 {
	h.t.Helper()
	var n int64
	if err := h.db.QueryRowContext(context.Background(), query).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// The anonymous CRL costs no signature and no write: asked many times it
// is the same list and crl_number moves at most once; a revocation is on
// the next list at once under a higher number; past half of its day the
// list is signed again.
func TestCRLServedFromCache(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		h := newCAHub(t, dsn)
		cert := h.kioskCert()
		get := func() ([]byte, *x509.RevocationList) {
			t.Helper()
			st, hdr, der := h.do(nil, http.MethodGet, "/api/v1/ca/crl", nil)
			if st != http.StatusOK || hdr.Get("Content-Type") != "application/pkix-crl" {
				t.Fatalf("GET /api/v1/ca/crl: %d %s", st, der)
			}
			crl, err := x509.ParseRevocationList(der)
			if err != nil || crl.CheckSignatureFrom(h.ca.Certificate()) != nil {
				t.Fatalf("CRL: %v", err)
			}
			return der, crl
		}
		const number = `SELECT crl_number FROM device_ca WHERE id = 1`
		before := h.count(number)
		first, crl := get()
		for range 200 {
			if der, _ := get(); !bytes.Equal(der, first) {
				t.Fatal("nothing changed, yet the CRL was signed again")
			}
		}
		if after := h.count(number); after > before+1 {
			t.Fatalf("201 anonymous GETs moved crl_number %d -> %d", before, after)
		}

		if _, err := h.ca.Revoke(context.Background(), "kiosk-1", "stolen"); err != nil {
			t.Fatal(err)
		}
		revokedDER, revoked := get()
		if len(revoked.RevokedCertificateEntries) != 1 || revoked.RevokedCertificateEntries[0].SerialNumber.Cmp(cert.Leaf.SerialNumber) != 0 ||
			revoked.Number.Cmp(crl.Number) <= 0 {
			t.Fatalf("after a revocation: number %v (was %v), entries %v", revoked.Number, crl.Number, revoked.RevokedCertificateEntries)
		}

		h.advance(13 * time.Hour)
		der, fresh := get()
		if bytes.Equal(der, revokedDER) || fresh.Number.Cmp(revoked.Number) <= 0 || len(fresh.RevokedCertificateEntries) != 1 ||
			!fresh.NextUpdate.After(h.now().Add(23*time.Hour)) {
			t.Fatalf("past half its life: number %v (was %v), next update %v", fresh.Number, revoked.Number, fresh.NextUpdate)
		}
	})
}

// A kiosk renews when due, as it schedules it (two thirds of the life);
// asking with a fresh certificate is refused, and 50 rapid renewals with
// the due one make one certificate.
func TestRenewOncePerCertificate(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		h := newCAHub(t, dsn)
		cur := h.kioskCert()
		const certs = `SELECT COUNT(*) FROM device_certs WHERE subject = 'kiosk-1'`
		refused := func(st int, b []byte, status int) bool {
			pe := protocol.DecodeHTTPError(b)
			return st == status && pe != nil && pe.Code == protocol.CodeForbidden
		}
		if st, _, b := h.renew(cur); !refused(st, b, http.StatusForbidden) {
			t.Fatalf("a fresh certificate: %d %v", st, protocol.DecodeHTTPError(b))
		}

		// When the kiosk's own schedule says so (identity.Due).
		l := cur.Leaf
		h.set(l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) * 2 / 3).Add(time.Second))
		st, _, b := h.renew(cur)
		if st != http.StatusOK {
			t.Fatalf("a due renewal: %d %v", st, protocol.DecodeHTTPError(b))
		}
		res, err := protocol.DecodeRenewResult(b)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode([]byte(res.Certificate))
		next, err := x509.ParseCertificate(blk.Bytes)
		if err != nil || next.Subject.CommonName != "kiosk-1" || !next.NotAfter.After(l.NotAfter) {
			t.Fatalf("renewed certificate: %v %+v", err, next)
		}

		for i := range 50 {
			st, hdr, b := h.renew(cur)
			if !refused(st, b, http.StatusTooManyRequests) || hdr.Get("Retry-After") == "" {
				t.Fatalf("renewal %d again: %d %v, Retry-After %q", i, st, protocol.DecodeHTTPError(b), hdr.Get("Retry-After"))
			}
		}
		if n := h.count(certs); n != 2 {
			t.Fatalf("50 rapid renewals: %d certificates for kiosk-1, want 2 (the first and one renewal)", n)
		}
	})
}
