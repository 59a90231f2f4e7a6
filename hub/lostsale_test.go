package hub_test

import (
	"fmt"
	"testing"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/protocol"
)

// A kiosk sale whose ledger commit happened but whose answer the hub never
// heard (the connection dropped, the database failed over) is answered
// from the database, and the MPSD it was signed on goes on selling. Before,
// its worker went back to its own copy of the registers, from before that
// sale, and every later stamp on the MPSD broke the chain and was refused
// until the hub restarted.
func TestLostLedgerCommitStrandsNoMPSD(t *testing.T) {
	t.Parallel()
	dsn, proxy := startPGProxy(t, peersDB(t), "INSERT INTO indicia")
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn; c.Workers = 1 })
	k := e.kiosk("kiosk-1")
	if r := decode(t, k.ask(purchase("lost-0", "kiosk-1", "1966-F8CF-01", nil))); r.Status != protocol.ResultOK {
		t.Fatalf("first sale: %+v", r.Error)
	}
	proxy.armed.Store(true)
	if r := decode(t, k.ask(purchase("lost-1", "kiosk-1", "1966-F8CF-02", nil))); r.Status != protocol.ResultOK || proxy.fired.Load() != 1 {
		t.Fatalf("the sale whose commit's answer was lost: %+v, proxy fired %d", r.Error, proxy.fired.Load())
	}
	for i := 3; i <= 6; i++ {
		id, label := fmt.Sprintf("lost-%d", i), fmt.Sprintf("1966-F8CF-%02d", i)
		if r := decode(t, k.ask(purchase(id, "kiosk-1", label, nil))); r.Status != protocol.ResultOK {
			t.Fatalf("sale %s after the lost answer: %+v", id, r.Error)
		}
	}
	e.check()
}
