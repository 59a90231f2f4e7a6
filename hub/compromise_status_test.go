package hub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/verify"
	"github.com/frank-postage/frank/testbench/wait"
)

// A stamp its key's compromise voids (dated on or after the day the
// compromise names) is refused by every verifier, so the hub's own status
// service does not call it valid; a stamp of the key that replaced it is.
func TestCompromisedKeysStampsNotValid(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.KeyCheckEvery = 10 * time.Millisecond })
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	res := decode(t, k.ask(purchase("c-1", "kiosk-1", "1966-F8CF-01", nil)))
	if res.Status != protocol.ResultOK {
		t.Fatal(res.Error)
	}
	old, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.h.Keys().Compromise(ctx, old.CertSerial, e.clock.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	var fresh *protocol.Indicium
	n := 1
	wait.For(t, 10*time.Second, "a sale signed by the new key", func() bool {
		n++ // a label each try: one signed before the hub saw the compromise is used
		res := decode(t, k.ask(purchase(fmt.Sprintf("c-%d", n), "kiosk-1", fmt.Sprintf("1966-F8CF-%02d", n), nil)))
		if res.Status != protocol.ResultOK {
			return false
		}
		fresh, err = protocol.ParseIndicium(res.Indicia[0].Matrix)
		return err == nil && fresh.CertSerial != old.CertSerial
	})
	base := "http://" + e.h.HTTPAddr
	for _, c := range []struct {
		in   *protocol.Indicium
		want string
	}{{old, verify.LedgerVoided}, {fresh, verify.LedgerValid}} {
		st, err := verify.FetchLedgerStatus(ctx, base, nil, c.in)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status != c.want {
			t.Errorf("certificate %d's stamp: %s (%s), want %s", c.in.CertSerial, st.Status, st.Reason, c.want)
		}
	}
}
