package hub_test

import (
	"context"
	"testing"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/verify"
)

// The hub publishes, beside each indicium key, the postal authority's
// certificate for it; a stamp verifies with the authority's key alone. A
// key registered before the authority signed keys gets its certificate when
// the hub next starts.
func TestPublishedKeysCarryTheAuthoritysSignature(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	stamp := decode(t, e.kiosk("kiosk-1").ask(purchase("cert-1", "kiosk-1", "1966-F8CF-01", nil))).Indicia[0].Matrix
	authority, err := verify.ParseAuthority([]byte(e.pa.PublicKeyPEM()))
	if err != nil {
		t.Fatal(err)
	}
	certified := func() {
		t.Helper()
		certs, err := verify.FetchCertificates(ctx, "http://"+e.h.HTTPAddr, nil)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := verify.KeysOf(certs, authority)
		if err != nil {
			t.Fatal(err)
		}
		k := keys[1]
		if !k.Certified || k.Vendor != "FR" || !k.NotAfter.After(k.NotBefore) {
			t.Fatalf("key 1: %+v", k)
		}
		if in, err := keys.Verify(stamp); err != nil || in.Date != protocol.DateOf(e.clock.Now()) {
			t.Fatalf("the stamp with the certified key: %+v %v", in, err)
		}
	}
	certified()

	e.h.Close()
	db, err := store.Open(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE signing_keys SET certificate_pem = ''`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e.start()
	certified()
}
