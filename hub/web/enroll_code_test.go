package web_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/web"
	"github.com/frank-postage/frank/hub/web/session"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// racedEnroller is the fleet with another use of the code winning while
// this one's certificate is issued.
type racedEnroller struct{ *fleet.Registry }

func (r racedEnroller) Enroll(ctx context.Context, code string, issue func(*protocol.EnrollResult) error) (*protocol.EnrollResult, error) {
	return r.Registry.Enroll(ctx, code, func(res *protocol.EnrollResult) error {
		if err := issue(res); err != nil {
			return err
		}
		_, err := r.Registry.Enroll(ctx, code, nil)
		return err
	})
}

// An enrollment code is spent only once the kiosk's certificate is issued:
// a certificate that cannot be issued (the HSM, the database, a hub
// stopped in between) left the code spent and the kiosk unenrolled until
// ops gave a new one. A certificate issued for a use of the code that
// another use beat is revoked.
func TestEnrollmentCodeSpentAfterTheCertificate(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		h := newCAHub(t, dsn)
		ctx := context.Background()
		kiosks := fleet.New(h.db)
		h.db.ExecContext(ctx, `DELETE FROM kiosks WHERE kiosk_id = 'kiosk-2'`)
		pw, err := kiosks.Add(ctx, "kiosk-2", "store-a")
		if err != nil {
			t.Fatal(err)
		}
		code, err := kiosks.NewEnrollment(ctx, "kiosk-2", pw, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kiosks.Enroll(ctx, code, func(*protocol.EnrollResult) error { return errors.New("the HSM is out of reach") }); err == nil {
			t.Fatal("enrolled with the certificate failing")
		}
		enroll := func(e interface {
			Enroll(context.Context, string, func(*protocol.EnrollResult) error) (*protocol.EnrollResult, error)
			Get(context.Context, string) (fleet.Kiosk, error)
		}) (int, []byte) {
			s := &web.Server{DB: h.db, CA: h.ca, Enroll: e, EnrollLogins: session.NewCodeLimit("enroll", session.Proxies{}), Log: quiet}
			srv := httptest.NewUnstartedServer(s.Handler())
			srv.TLS = &tls.Config{}
			srv.StartTLS()
			defer srv.Close()
			_, csr := newKioskCSR(t)
			body, _ := json.Marshal(protocol.EnrollRequest{Code: code, CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
			h.url = srv.URL
			st, _, b := h.do(nil, http.MethodPost, protocol.EnrollPath, body)
			return st, b
		}
		// The code is good still.
		if st, b := enroll(kiosks); st != http.StatusOK {
			t.Fatalf("enrollment with the code after its certificate failed: %d %s", st, b)
		}
		if st, b := enroll(kiosks); st != http.StatusUnauthorized {
			t.Fatalf("a spent code enrolled again: %d %s", st, b)
		}
		// Another use wins while this one's certificate is issued: that
		// certificate is revoked, and the code is spent.
		if code, err = kiosks.NewEnrollment(ctx, "kiosk-2", pw, time.Hour); err != nil {
			t.Fatal(err)
		}
		if st, b := enroll(racedEnroller{kiosks}); st != http.StatusUnauthorized {
			t.Fatalf("enrollment beaten by another use of its code: %d %s", st, b)
		}
		if issued, revoked := h.count(`SELECT COUNT(*) FROM device_certs WHERE subject = 'kiosk-2'`),
			h.count(`SELECT COUNT(*) FROM device_certs WHERE subject = 'kiosk-2' AND revoked_at IS NOT NULL`); issued != 2 || revoked != 1 {
			t.Fatalf("kiosk-2: %d certificates issued, %d revoked; want 2, the second revoked", issued, revoked)
		}
	})
}
