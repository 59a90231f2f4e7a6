package verify_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/verify"
)

// authority is a postal authority that certifies indicium keys for vendor FR
// from 2026-01-01 to 2028-01-01.
type authority struct {
	key  *ecdsa.PrivateKey
	tmpl *x509.Certificate
}

func newAuthority(t *testing.T) *authority {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &authority{key: k, tmpl: &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test postal authority"}}}
}

// publish makes a signing key for serial and its entry in
// /api/v1/certificates, certified by a unless bare.
func (a *authority) publish(t *testing.T, serial uint32, bare bool) (*ecdsa.PrivateKey, verify.Certificate) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	c := verify.Certificate{Serial: serial, Algorithm: protocol.AlgECDSAP256,
		PublicKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}
	if !bare {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(serial)), Subject: pkix.Name{Organization: []string{"FR"}},
			NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC),
			KeyUsage: x509.KeyUsageDigitalSignature}
		cert, err := x509.CreateCertificate(rand.Reader, tmpl, a.tmpl, &k.PublicKey, a.key)
		if err != nil {
			t.Fatal(err)
		}
		c.CertificatePEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}))
	}
	return k, c
}

// stamp signs the first test vector's fields as certificate serial with k.
func stamp(t *testing.T, serial uint32, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	_, b, err := prototest.Resign(serial, k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// One key the authority never certified (the hub publishes it with an
// empty certificate_pem) must not stop the other keys' stamps from
// verifying; its own stamps are refused as uncertified.
func TestKeysOfSkipsUncertifiedKey(t *testing.T) {
	a := newAuthority(t)
	k1, c1 := a.publish(t, 1, false)
	k2, c2 := a.publish(t, 2, true)
	keys, err := verify.KeysOf([]verify.Certificate{c1, c2}, &a.key.PublicKey)
	if err != nil {
		t.Fatalf("one uncertified key refused them all: %v", err)
	}
	if _, err := keys.Verify(stamp(t, 1, k1)); err != nil {
		t.Fatalf("stamp of the certified key: %v", err)
	}
	_, err = keys.Verify(stamp(t, 2, k2))
	if !errors.Is(err, verify.ErrUncertified) || !errors.Is(err, protocol.ErrIndiciumSignature) {
		t.Fatalf("stamp of the uncertified key: err = %v, want uncertified", err)
	}
	// Listed again with its certificate, the key is not hidden by the bare entry.
	keys, err = verify.KeysOf([]verify.Certificate{c2, c1, {Serial: 1, PublicKeyPEM: c1.PublicKeyPEM}}, &a.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(stamp(t, 1, k1)); err != nil {
		t.Fatalf("certified key listed before a bare copy: %v", err)
	}
	// On the hub's word (no authority key) the bare key verifies, as before.
	keys, err = verify.KeysOf([]verify.Certificate{c1, c2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(stamp(t, 2, k2)); err != nil {
		t.Fatalf("on the hub's word: %v", err)
	}
}

// A certificate that is there but not the authority's still refuses the
// whole file: that is a forgery, not a key awaiting its certificate.
func TestKeysOfRefusesForgedCertificate(t *testing.T) {
	a, forger := newAuthority(t), newAuthority(t)
	_, c1 := a.publish(t, 1, false)
	_, forged := forger.publish(t, 2, false)
	if _, err := verify.KeysOf([]verify.Certificate{c1, forged}, &a.key.PublicKey); err == nil {
		t.Fatal("a certificate by another authority was accepted")
	}
}

// FetchLedgerStatus reads /api/v1/indicia/{meter}/{label} as the hub
// serves it, and refuses an answer about another stamp or an unknown status.
func TestFetchLedgerStatus(t *testing.T) {
	in := prototest.Indicia[0].Fields
	answer := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/indicia/FR2N50000061/1966-F8CF-01" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(answer)
	}))
	defer srv.Close()
	ctx := context.Background()
	for _, st := range []string{verify.LedgerValid, verify.LedgerVoided, verify.LedgerUnknown} {
		answer = map[string]string{"meter": "FR2N50000061", "label": "1966-F8CF-01", "status": st, "reason": "r"}
		got, err := verify.FetchLedgerStatus(ctx, srv.URL, srv.Client(), &in)
		if err != nil || got.Status != st || got.Reason != "r" {
			t.Errorf("%s: %+v, %v", st, got, err)
		}
	}
	for name, a := range map[string]map[string]string{
		"another meter":  {"meter": "FR2N50000062", "label": "1966-F8CF-01", "status": "valid"},
		"another label":  {"meter": "FR2N50000061", "label": "1966-F8CF-02", "status": "valid"},
		"unknown status": {"meter": "FR2N50000061", "label": "1966-F8CF-01", "status": "fine"},
	} {
		answer = a
		if got, err := verify.FetchLedgerStatus(ctx, srv.URL, srv.Client(), &in); err == nil {
			t.Errorf("%s: accepted %+v", name, got)
		}
	}
	other := in
	other.Label.Position = 2
	if _, err := verify.FetchLedgerStatus(ctx, srv.URL, srv.Client(), &other); err == nil {
		t.Error("a 404 was taken for an answer")
	}
}

// A retired key's stamp dated within a day of its retirement verifies (hubs
// follow a rotation within seconds, and the date is the hub's local one);
// one dated later came from a copy of the key and is refused.
func TestRetiredKeyStampsRefusedAfterADay(t *testing.T) {
	a := newAuthority(t)
	k, c := a.publish(t, 1, false)
	b := stamp(t, 1, k)
	in, err := protocol.ParseIndicium(b)
	if err != nil {
		t.Fatal(err)
	}
	day, err := time.Parse(time.DateOnly, in.Date.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		retired time.Time
		ok      bool
	}{{day.Add(13 * time.Hour), true}, {day.Add(-11 * time.Hour), true}, {day.Add(-24*time.Hour - time.Hour), false}} {
		c.Retired = &tc.retired
		keys, err := verify.KeysOf([]verify.Certificate{c}, &a.key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		_, err = keys.Verify(b)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, protocol.ErrIndiciumSignature)) {
			t.Errorf("dated %s, key retired %s: err = %v, want ok %v", in.Date, tc.retired.Format(time.RFC3339), err, tc.ok)
		}
	}
}

// A key compromised at 04:30 UTC on 2026-12-07 voids the stamp a hub at
// UTC-5 signed at 23:45 local on the 6th, a quarter hour after: the stamp
// carries the hub's local date, a day behind UTC's, and Verify refuses it.
// A stamp dated the 5th stays valid.
func TestCompromiseVoidsStampsDatedWestOfUTC(t *testing.T) {
	a := newAuthority(t)
	k, c := a.publish(t, 1, false)
	compromised := time.Date(2026, 12, 7, 4, 30, 0, 0, time.UTC)
	c.Compromised = &compromised
	keys, err := verify.KeysOf([]verify.Certificate{c}, &a.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	west := time.FixedZone("UTC-5", -5*3600)
	for _, tc := range []struct {
		signed time.Time
		void   bool
	}{
		{time.Date(2026, 12, 6, 23, 45, 0, 0, west), true},
		{time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC), true},
		{time.Date(2026, 12, 5, 23, 45, 0, 0, west), false},
	} {
		in := prototest.Indicia[0].Fields
		in.CertSerial, in.Date = 1, protocol.DateOf(tc.signed)
		if err := in.Sign(k); err != nil {
			t.Fatal(err)
		}
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		// Verify itself refuses the void stamp: a caller that forgets
		// CompromisedSigner must not take it for postage.
		got, err := keys.Verify(b)
		var ce *verify.CompromisedError
		switch {
		case tc.void && (got != nil || !errors.Is(err, verify.ErrCompromised) || !errors.As(err, &ce) || !ce.Since.Equal(compromised) || ce.Indicium.Date != in.Date):
			t.Errorf("dated %s (signed %s), key compromised %s: Verify = %v, %v; want refused as compromised", in.Date,
				tc.signed.Format(time.RFC3339), compromised.Format(time.RFC3339), got, err)
		case !tc.void && err != nil:
			t.Errorf("dated %s (signed %s), key compromised %s: %v", in.Date, tc.signed.Format(time.RFC3339), compromised.Format(time.RFC3339), err)
		case !tc.void:
			if _, void := keys.CompromisedSigner(got); void {
				t.Errorf("dated %s: CompromisedSigner says void", got.Date)
			}
		}
	}
}
