package web_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/releases"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/hub/web"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// A release download checks the certificate against the CA's revocations,
// as renewal does: a retired kiosk's certificate (the CA revoked it) is
// refused with 403 in the one error shape while a kiosk in service
// downloads; and a revoked certificate spends none of its kiosk's download
// budget, so a kiosk's superseded certificate in the wrong hands cannot
// starve the kiosk of its releases.
func TestReleaseRefusesRevokedCertificate(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		now := func() time.Time { return time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC) }
		ks, err := soft.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		dca := ca.New(db, ks, hsm.Opener(ks.Session), ca.Config{Now: now})
		t.Cleanup(dca.Close)
		if err := dca.Init(ctx); err != nil {
			t.Fatal(err)
		}
		kiosks := fleet.New(db)
		for _, k := range []string{"kiosk-1", "kiosk-2"} {
			if _, err := kiosks.Add(ctx, k, "store-a"); err != nil {
				t.Fatal(err)
			}
		}
		bin := bytes.Repeat([]byte("frank kiosk 2.0.0\n"), 1000)
		s := &web.Server{DB: db, CA: dca, Enroll: kiosks, Releases: oneRelease(bin), Now: now, Log: quiet}
		srv := httptest.NewUnstartedServer(s.Handler())
		srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: dca.Pool(), Time: now}
		srv.StartTLS()
		t.Cleanup(srv.Close)

		cert := func(id string) *tls.Certificate {
			t.Helper()
			key, csr := newKioskCSR(t)
			der, err := dca.IssueKiosk(ctx, csr, id, "store-a")
			if err != nil {
				t.Fatal(err)
			}
			leaf, _ := x509.ParseCertificate(der)
			return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		}
		download := func(c *tls.Certificate) (int, []byte) {
			t.Helper()
			tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }}}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Get(srv.URL + releases.Path + "/2.0.0/arm64")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			return resp.StatusCode, b
		}
		forbidden := func(what string, st int, b []byte) {
			t.Helper()
			var body protocol.ErrorBody
			if st != http.StatusForbidden || json.Unmarshal(b, &body) != nil || body.Error == nil || body.Error.Code != protocol.CodeForbidden {
				t.Fatalf("%s: %d %.200q, want 403 forbidden in the one error shape", what, st, b)
			}
		}

		retired, inService := cert("kiosk-1"), cert("kiosk-2")
		if st, b := download(retired); st != http.StatusOK || !bytes.Equal(b, bin) {
			t.Fatalf("kiosk-1 before its retirement: %d %.200q", st, b)
		}
		if err := kiosks.Retire(ctx, "kiosk-1", "taken out", false); err != nil {
			t.Fatal(err)
		}
		if n, err := dca.Revoke(ctx, "kiosk-1", "retired"); err != nil || n != 1 {
			t.Fatalf("revoke kiosk-1: %d %v", n, err)
		}
		st, b := download(retired)
		forbidden("the retired kiosk-1's revoked certificate", st, b)
		if st, b := download(inService); st != http.StatusOK || !bytes.Equal(b, bin) {
			t.Fatalf("kiosk-2 in service: %d %.200q", st, b)
		}

		// kiosk-2's old certificate revoked, its new one not: the old one
		// asks 60 times, which charged to the budget (six releases an hour,
		// the clock stands still, one spent above; at least a fiftieth of
		// a release a request) would leave less than the five releases
		// left, and the new one still gets all five.
		old := inService
		current := cert("kiosk-2")
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE device_certs SET revoked_at = ?, reason = 'superseded' WHERE serial = ?`),
			now().UnixMicro(), ca.SerialHex(old.Leaf.SerialNumber)); err != nil {
			t.Fatal(err)
		}
		for i := range 60 {
			st, b := download(old)
			forbidden(fmt.Sprintf("kiosk-2's revoked certificate, request %d", i+1), st, b)
		}
		for i := range 5 {
			if st, b := download(current); st != http.StatusOK || !bytes.Equal(b, bin) {
				t.Fatalf("kiosk-2's certificate in force, download %d after the revoked one's: %d %.200q", i+1, st, b)
			}
		}
	})
}
