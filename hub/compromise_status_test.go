package hub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/verify"
	"github.com/frank-postage/frank/testbench/wait"
)

// A stamp its key's compromise voids (dated on or after the day the
// compromise names) is refused by every verifier. The hub does not call it
// valid; the leader voids it, refunds its buyer once and claims it back in
// the postal report. A stamp of the key that replaced it stays valid.
func TestCompromisedKeysStampsVoidedAndRefunded(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.KeyCheckEvery = 10 * time.Millisecond })
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	from, err := e.h.Ledger().ReportedUntil(ctx)
	if err != nil {
		t.Fatal(err)
	}
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
	compromised := []*protocol.Indicium{old} // and any signed before the hub saw it
	var fresh *protocol.Indicium
	n := 1
	wait.For(t, 10*time.Second, "a sale signed by the new key", func() bool {
		n++ // a label each try
		res := decode(t, k.ask(purchase(fmt.Sprintf("c-%d", n), "kiosk-1", fmt.Sprintf("1966-F8CF-%02d", n), nil)))
		if res.Status != protocol.ResultOK {
			return false
		}
		in, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
		if err != nil || in.CertSerial == old.CertSerial {
			compromised = append(compromised, in)
			return false
		}
		fresh = in
		return true
	})
	// Its stamps still waiting for the committer are spoiled, not sold
	// (ledger's TestRefusedKeysWaitingStampSpoiled).
	if !e.h.Ledger().Refuses(old.CertSerial) || e.h.Ledger().Refuses(fresh.CertSerial) {
		t.Fatalf("the committer refuses key %d: %t; key %d: %t", old.CertSerial, e.h.Ledger().Refuses(old.CertSerial),
			fresh.CertSerial, e.h.Ledger().Refuses(fresh.CertSerial))
	}
	base := "http://" + e.h.HTTPAddr
	status := func(in *protocol.Indicium) verify.LedgerStatus {
		t.Helper()
		st, err := verify.FetchLedgerStatus(ctx, base, nil, in)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := status(old); st.Status != verify.LedgerVoided || st.Reason != "key_compromised" {
		t.Errorf("the compromised key's stamp before the leader's round: %+v", st)
	}
	before := e.cards.Totals().Refunded
	e.h.Round()
	e.h.Round() // once only
	if got, want := e.cards.Totals().Refunded-before, int64(780*len(compromised)); got != want {
		t.Errorf("refunded %d mills for %d stamps of the compromised key, want %d", got, len(compromised), want)
	}
	vl, err := verify.FetchVoidList(ctx, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range compromised {
		if _, voided := vl.Voided(in); !voided {
			t.Errorf("label %s of the compromised key is not on the void list", in.Label)
		}
	}
	if st := status(fresh); st.Status != verify.LedgerValid {
		t.Errorf("the new key's stamp: %+v", st)
	}
	e.clock.Set(e.clock.Now().Add(time.Minute))
	r, err := e.h.Ledger().BuildReport(ctx, from, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Voided) != len(compromised) {
		t.Errorf("the report claims %d stamps back, want the %d of the compromised key", len(r.Voided), len(compromised))
	}
	if _, err := e.h.Ledger().SubmitReport(ctx, r, e.h.Postal()); err != nil {
		t.Fatalf("the authority refused the report: %v", err)
	}
	if rep, err := e.h.Ledger().Check(ctx); err != nil || !rep.OK() {
		t.Fatalf("ledger check: %v %v", rep.Violations, err)
	}
}

// A free reprint signed by a key later compromised is refunded to the sale
// that paid for the label it replaced: the reprint has no payment of its
// own, and its refund used to fail every round.
func TestCompromisedReprintRefundedToTheSaleThatPaid(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.KeyCheckEvery = 10 * time.Millisecond })
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	e.failLabel(k, "s-1", "1966-F8CF-01")
	res := decode(t, k.ask(reprintOf("rp-1", "s-1", "1966-F8CF-01", "1966-F8CF-02")))
	if res.Status != protocol.ResultOK {
		t.Fatal(res.Error)
	}
	in, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.h.Keys().Compromise(ctx, in.CertSerial, e.clock.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	before := e.cards.Totals().Refunded
	e.h.Round()
	e.clock.Set(e.clock.Now().Add(2 * time.Minute))
	e.h.Tick(ctx) // the leader's refunds due: nothing left
	e.h.Round()
	if got := e.cards.Totals().Refunded - before; got != int64(res.Indicia[0].AmountMills) {
		t.Errorf("refunded %d mills for the voided reprint of a paid sale, want %d", got, res.Indicia[0].AmountMills)
	}
}

// A compromise declared again with an earlier time, after the first was
// swept, sweeps again: the stamps the earlier day now voids for every
// verifier are voided and refunded too.
func TestCompromiseMovedEarlierSweptAgain(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.KeyCheckEvery = 10 * time.Millisecond })
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	res := decode(t, k.ask(purchase("c-1", "kiosk-1", "1966-F8CF-01", nil)))
	if res.Status != protocol.ResultOK {
		t.Fatal(res.Error)
	}
	in, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	sold := e.clock.Now()
	e.clock.Set(sold.Add(72 * time.Hour))
	if err := e.h.Keys().Compromise(ctx, in.CertSerial, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	before := e.cards.Totals().Refunded
	e.h.Round()
	e.clock.Set(e.clock.Now().Add(11 * time.Minute))
	e.h.Round() // settled: swept
	if got := e.cards.Totals().Refunded - before; got != 0 {
		t.Fatalf("refunded %d for a stamp dated before the compromise", got)
	}
	if err := e.h.Keys().Compromise(ctx, in.CertSerial, sold.Add(-24*time.Hour)); err != nil { // the leak was older
		t.Fatal(err)
	}
	e.h.Round()
	if got := e.cards.Totals().Refunded - before; got != 780 {
		t.Errorf("refunded %d mills for a stamp every verifier now refuses, want 780", got)
	}
}

// A sweep that fails part way still refunds at once the stamps of the
// chunks it voided before the failure, not a minute later.
func TestCompromiseSweepFailingPartWayRefundsWhatItVoided(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn; c.Ledger.SweepChunk = 1 })
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	for i, label := range []string{"1966-F8CF-01", "1966-F8CF-02"} {
		if res := decode(t, k.ask(purchase(fmt.Sprintf("p-%d", i), "kiosk-1", label, nil))); res.Status != protocol.ResultOK {
			t.Fatal(res.Error)
		}
	}
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The second stamp's refund cannot be recorded: its chunk fails.
	if _, err := db.ExecContext(ctx, `CREATE FUNCTION fail_remedy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$;
		CREATE TRIGGER fail_remedy BEFORE INSERT ON remedies FOR EACH ROW WHEN (NEW.label = '1966-F8CF-02') EXECUTE FUNCTION fail_remedy()`); err != nil {
		t.Fatal(err)
	}
	before := e.cards.Totals().Refunded
	if err := e.h.Keys().Compromise(ctx, 1, e.clock.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	e.h.Round()
	if got := e.cards.Totals().Refunded - before; got != 780 {
		t.Fatalf("refunded %d mills after a sweep that voided one stamp and failed on the next, want 780", got)
	}
	if _, err := db.ExecContext(ctx, `DROP TRIGGER fail_remedy ON remedies`); err != nil {
		t.Fatal(err)
	}
	e.h.Round()
	if got := e.cards.Totals().Refunded - before; got != 2*780 {
		t.Fatalf("refunded %d mills once the sweep could finish, want %d", got, 2*780)
	}
}
