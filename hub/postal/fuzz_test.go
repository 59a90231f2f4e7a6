package postal_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/postal"
)

var postalOps = []string{"register", "funds", "anchors", "report"}

// FuzzAuthorityAnswer feeds the postal authority's answer, an HTTP status
// and a body, to each of the client's calls, through one test server for
// the whole run. The answer never panics; a status other than 2xx is a
// *RefusedError with that status and the answer's text, trimmed and no
// longer than the 1 MiB the client reads; and what a 2xx answer decodes
// to is checked as the calls check it: funds bought are the amount asked,
// a certificate is for the key registered and its serial.
func FuzzAuthorityAnswer(f *testing.F) {
	var mu sync.Mutex
	var status int
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		st, b := status, body
		mu.Unlock()
		w.WriteHeader(st)
		w.Write(b)
	}))
	f.Cleanup(srv.Close)
	c := postal.New(srv.URL, "V1", "L1")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	pubPEM, err := postal.PublicKeyPEM(&key.PublicKey)
	if err != nil {
		f.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		f.Fatal(err)
	}
	cert, _ := json.Marshal(postal.Certificate{Serial: 7, PublicKeyPEM: pubPEM,
		CertificatePEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))})
	for _, s := range []struct {
		status int
		body   string
	}{
		{200, string(cert)},
		{200, `{"serial":8,"certificate_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}`},
		{200, `{"purchase_id":"p1","amount_mills":100000}`},
		{200, `{"purchase_id":"p1","amount_mills":99999}`},
		{200, `[{"chain":1,"seq":3,"hash":"ab","report_ref":"R1","received":"2025-01-01T00:00:00Z"}]`},
		{200, `{"ref":"R1"}`},
		{200, `not json`},
		{204, ``},
		{400, "  the totals do not add up\n"},
		{403, `{"error":"licence"}`},
		{500, ``},
		{999, `x`},
	} {
		for op := range postalOps {
			f.Add(s.status, []byte(s.body), uint8(op))
		}
	}
	f.Fuzz(func(t *testing.T, st int, b []byte, op uint8) {
		if st < 200 || st > 999 { // 1xx are informational
			st = 200 + (st%800+800)%800
		}
		mu.Lock()
		status, body = st, b
		mu.Unlock()
		got := b // as the client reads it
		if st == http.StatusNoContent || st == http.StatusNotModified {
			got = nil
		}
		if len(got) > 1<<20 {
			got = got[:1<<20]
		}
		ctx := context.Background()
		name := postalOps[int(op)%len(postalOps)]
		var err error
		switch name {
		case "register":
			var out postal.Certificate
			out, err = c.RegisterKey(ctx, &key.PublicKey)
			if err == nil && out.CertificatePEM != "" && !certifies(out, &key.PublicKey) {
				t.Fatalf("register: a certificate not for the key and serial was taken: %+v", out)
			}
		case "funds":
			var p postal.Purchase
			p, err = c.BuyFunds(ctx, "r1", 100000)
			if err == nil && p.AmountMills != 100000 {
				t.Fatalf("funds: %d mills taken for 100000 asked", p.AmountMills)
			}
		case "anchors":
			_, err = c.Anchors(ctx)
		case "report":
			_, err = c.SubmitReport(ctx, &postal.Report{ReportID: "r1"})
		}
		if st/100 == 2 {
			return
		}
		var re *postal.RefusedError
		if !errors.As(err, &re) || re.Status != st {
			t.Fatalf("%s, %d: %v, want a RefusedError of %d", name, st, err, st)
		}
		if re.Answer != string(bytes.TrimSpace(got)) || len(re.Answer) > 1<<20 {
			t.Fatalf("%s, %d: answer %d bytes, want the %d the authority sent, at most 1 MiB", name, st, len(re.Answer), len(bytes.TrimSpace(got)))
		}
	})
}

// certifies says whether c's certificate is for pub and c.Serial.
func certifies(c postal.Certificate, pub *ecdsa.PublicKey) bool {
	blk, _ := pem.Decode([]byte(c.CertificatePEM))
	if blk == nil {
		return false
	}
	x, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return false
	}
	k, ok := x.PublicKey.(*ecdsa.PublicKey)
	return ok && k.Equal(pub) && x.SerialNumber.IsUint64() && x.SerialNumber.Uint64() == uint64(c.Serial)
}
