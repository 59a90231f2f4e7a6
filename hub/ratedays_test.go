package hub_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/protocol"
)

// dearerTableFrom writes a rate table into dir that takes effect at d's
// date and asks 820 mills for a First-Class letter (the demo's asks 780).
func dearerTableFrom(t *testing.T, dir string, d time.Time) {
	t.Helper()
	table := `{"version":"usps-new","effective":"` + d.Format(time.DateOnly) + `","classes":[
	 {"class":"1100","name":"Letter","print":"FIRST-CLASS","first_ounce_mills":820,"additional_ounce_mills":290,"max_weight_mg":99223}]}`
	if err := os.WriteFile(filepath.Join(dir, "new.json"), []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A sale priced at 23:59:59 on the old table and signed after midnight,
// the first day of a dearer one (here the card's authorization takes the 2
// s), is dated the day it was priced: a stamp dated the new table's day
// with the old postage would be short-paid.
func TestSaleDatedTheDayItWasPriced(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	d := time.Date(now.Year(), now.Month(), now.Day()+2, 0, 0, 0, 0, time.Local) // the new table's first day
	dearerTableFrom(t, dir, d)
	ck := &clock{t: now}
	e := newEnvWith(t, func(c *hub.Config) {
		c.RatesDir = dir
		c.Ledger.Now = ck.Now
		c.PaymentsURL = faultyProxy(t, c.PaymentsURL, func(r *http.Request) bool {
			if r.URL.Path == "/v1/authorize" {
				ck.Set(d.Add(time.Second))
			}
			return false
		})
	})
	ck.Set(d.Add(-time.Second))
	res := decode(t, e.kiosk("kiosk-1").ask(purchase("rb-1", "kiosk-1", "1966-F8CF-01", nil)))
	if res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	in, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	if in.Date != protocol.DateOf(d.Add(-time.Second)) || in.Postage != 780 {
		t.Fatalf("stamp dated %s with %d mills; want %s, the day it was priced at 780", in.Date, in.Postage, protocol.DateOf(d.Add(-time.Second)))
	}
}

// A free reprint is dated the day it is printed, so it is refused once a
// rate change has moved the postage of its service: the customer gets a
// refund instead of a stamp short-paid by today's table.
func TestReprintRefusedAcrossARateChange(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	d := time.Date(now.Year(), now.Month(), now.Day()+2, 0, 0, 0, 0, time.Local)
	dearerTableFrom(t, dir, d)
	ck := &clock{t: now}
	e := newEnvWith(t, func(c *hub.Config) { c.RatesDir = dir; c.Ledger.Now = ck.Now })
	k := e.kiosk("kiosk-1")
	ck.Set(d.Add(-time.Hour))
	e.failLabel(k, "old-1", "1966-F8CF-01") // sold at 780, jammed
	reprint := func(id, label, table string) *protocol.PurchaseResult {
		return decode(t, k.ask(purchase(id, "kiosk-1", label, func(r *protocol.PurchaseRequest) {
			r.RateTable = table
			r.Payment = protocol.Payment{Method: protocol.PayNone}
			r.ReprintOf = &protocol.LabelRef{RequestID: "old-1", LabelSerial: "1966-F8CF-01"}
		})))
	}
	ck.Set(d.Add(30 * 24 * time.Hour))
	if res := reprint("rp-new", "1966-F8CF-02", "usps-new"); res.Status == protocol.ResultOK || res.Error.Code != protocol.CodeRemedyNotAllowed {
		t.Fatalf("a reprint after a rate change: %+v %+v", res, res.Error)
	}
}

// zoneBehind returns a time zone in which it is still the day before at
// at, by the hub's clock (time.Local).
func zoneBehind(t *testing.T, at time.Time) *time.Location {
	t.Helper()
	for _, name := range []string{"America/Los_Angeles", "Pacific/Honolulu", "Etc/GMT+12"} {
		loc, err := fleet.LoadZone(name)
		if err != nil {
			t.Fatal(err)
		}
		if protocol.DateOf(at.In(loc)) < protocol.DateOf(at) {
			return loc
		}
	}
	t.Fatalf("no zone is a day behind %s", at)
	return nil
}

// A store in another time zone sells on its own day. At 01:00 on the hub's
// first day of a dearer table, a store where it is still the day before
// sells on the old table and dates its stamps that day, while a store in
// the hub's zone is sent the new table and refused the old; at the store's
// own midnight its kiosks are sent the new table.
func TestStoreSellsOnItsOwnDay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Now()
	d := time.Date(now.Year(), now.Month(), now.Day()+2, 0, 0, 0, 0, time.Local) // the new table's first day, at the hub
	dearerTableFrom(t, dir, d)
	e := newEnvWith(t, func(c *hub.Config) { c.RatesDir = dir })
	at := d.Add(time.Hour)
	zone := zoneBehind(t, at)
	if err := e.h.Fleet().SetStoreZone(ctx, "store-a", zone.String()); err != nil {
		t.Fatal(err)
	}
	if err := e.h.Fleet().SetStoreZone(ctx, "store-a", "Mars/Olympus_Mons"); err == nil {
		t.Fatal("a zone that is not one was taken")
	}
	if err := e.h.Fleet().SetStoreZone(ctx, "no-such-store", "UTC"); err == nil {
		t.Fatal("the zone of a store that is not one was taken")
	}
	away, home := e.kiosk("kiosk-1"), e.kiosk("kiosk-2") // store-a, and store-b in the hub's zone
	awayCfg, homeCfg := away.configsOf(t), home.configsOf(t)
	for _, k := range []*kioskClient{away, home} {
		k.c.Publish(protocol.KioskTopic(k.id, protocol.TopicStatus), 1, true, protocol.StatusOnline).Wait()
	}
	old := func(c protocol.KioskConfig) bool { return c.Rates.Version == "usps-2025-07-13" }
	dearer := func(c protocol.KioskConfig) bool { return c.Rates.Version == "usps-new" }
	waitConfig(t, awayCfg, "the old table", old)
	waitConfig(t, homeCfg, "the old table", old)

	e.clock.Set(at)
	e.h.Tick(ctx)
	waitConfig(t, homeCfg, "the new table", dearer)
	if res := decode(t, home.ask(purchase("home-old", "kiosk-2", "2222-0001-01", nil))); res.Error == nil || res.Error.Code != protocol.CodeRateTableStale {
		t.Fatalf("the hub's zone on the old table after its midnight: %+v", res)
	}
	res := decode(t, away.ask(purchase("away-old", "kiosk-1", "1966-F8CF-01", nil)))
	if res.Status != protocol.ResultOK {
		t.Fatalf("a store still on the day before: %+v", res.Error)
	}
	in, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	if want := protocol.DateOf(at.In(zone)); in.Date != want || in.Date == protocol.DateOf(at) || in.Postage != 780 {
		t.Fatalf("stamp dated %s with %d mills; want the store's date %s at 780", in.Date, in.Postage, want)
	}
	for len(awayCfg) > 0 { // its config went out before the answer
		if c := <-awayCfg; dearer(c) {
			t.Fatal("the new table was sent to a store before its day")
		}
	}

	y, m, day := at.In(zone).Date()
	e.clock.Set(time.Date(y, m, day+1, 0, 0, 1, 0, zone))
	e.h.Tick(ctx)
	waitConfig(t, awayCfg, "the new table at the store's midnight", dearer)
	if res := decode(t, away.ask(purchase("away-old-2", "kiosk-1", "1966-F8CF-02", nil))); res.Error == nil || res.Error.Code != protocol.CodeRateTableStale {
		t.Fatalf("the store on the old table after its midnight: %+v", res)
	}
	res = decode(t, away.ask(purchase("away-new", "kiosk-1", "1966-F8CF-02", func(r *protocol.PurchaseRequest) {
		r.RateTable, r.Items[0].AmountMills = "usps-new", 820
	})))
	if res.Status != protocol.ResultOK || res.Indicia[0].AmountMills != 820 {
		t.Fatalf("the store on the new table: %+v %+v", res, res.Error)
	}
}

// A store moved into a zone another store already sells in, on a day the
// two zones have different tables in force, is sent its new zone's table
// at the leader's next tick: it was sent nothing, and every sale was
// refused rate_table_stale until that zone's midnight.
func TestStoreMovedToAnotherZoneSentItsTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Now()
	d := time.Date(now.Year(), now.Month(), now.Day()+2, 0, 0, 0, 0, time.Local)
	dearerTableFrom(t, dir, d)
	e := newEnvWith(t, func(c *hub.Config) { c.RatesDir = dir })
	at := d.Add(time.Hour)
	zone := zoneBehind(t, at)
	if err := e.h.Fleet().SetStoreZone(ctx, "store-a", zone.String()); err != nil {
		t.Fatal(err)
	}
	home := e.kiosk("kiosk-2") // store-b, in the hub's zone
	homeCfg := home.configsOf(t)
	home.c.Publish(protocol.KioskTopic(home.id, protocol.TopicStatus), 1, true, protocol.StatusOnline).Wait()
	old := func(c protocol.KioskConfig) bool { return c.Rates.Version == "usps-2025-07-13" }
	waitConfig(t, homeCfg, "the old table", old)
	e.clock.Set(at)
	e.h.Tick(ctx)
	waitConfig(t, homeCfg, "the new table", func(c protocol.KioskConfig) bool { return c.Rates.Version == "usps-new" })
	if err := e.h.Fleet().SetStoreZone(ctx, "store-b", zone.String()); err != nil { // where it is still the day before
		t.Fatal(err)
	}
	e.h.Tick(ctx)
	waitConfig(t, homeCfg, "the old table again, in force in the store's new zone", old)
	if res := decode(t, home.ask(purchase("home-old", "kiosk-2", "2222-0001-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("a sale on the table in force in the store's zone: %+v", res.Error)
	}
}

// A kiosk still on yesterday's table, which no hub sent the new one at
// midnight (the leader died then, or every hub was down), is refused with
// rate_table_stale and sent the table in force with the refusal: it
// re-prices and sells, rather than being refused until it reconnects.
func TestStaleKioskSentTheTableInForce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	day := time.Date(now.Year(), now.Month(), now.Day()+10, 0, 0, 0, 0, time.Local)
	dearerTableFrom(t, dir, day)
	e := newEnvWith(t, func(c *hub.Config) { c.RatesDir = dir })
	k := e.kiosk("kiosk-1")
	configs := k.configsOf(t)
	k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicStatus), 1, true, protocol.StatusOnline).Wait()
	old := waitConfig(t, configs, "the table in force today", func(c protocol.KioskConfig) bool { return c.Rates.Version != "" })
	if old.Rates.Version == "usps-new" {
		t.Fatal("sent the new table ahead of its day")
	}
	e.clock.Set(day.Add(time.Hour)) // and no tick: nobody pushes the new table
	res := decode(t, k.ask(purchase("stale-1", "kiosk-1", "1966-F8CF-01", nil)))
	if res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeRateTableStale {
		t.Fatalf("priced on %s after the new table's day: %+v", old.Rates.Version, res)
	}
	waitConfig(t, configs, "the new table", func(c protocol.KioskConfig) bool { return c.Rates.Version == "usps-new" })
	res = decode(t, k.ask(purchase("stale-2", "kiosk-1", "1966-F8CF-01", func(r *protocol.PurchaseRequest) {
		r.RateTable, r.Items[0].AmountMills = "usps-new", 820
	})))
	if res.Status != protocol.ResultOK {
		t.Fatalf("re-priced on the new table: %+v", res.Error)
	}
}

// A hub that takes the lead sends every kiosk the table in force: what the
// last leader sent is not known to it. Here the new table took over before
// this hub started, as a follower, and its leader stopped before its tick.
func TestNewLeaderSendsTheTableInForce(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	dir := t.TempDir()
	now := time.Now()
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.Local) // today's
	dearerTableFrom(t, dir, day)
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn; c.RatesDir = dir })
	ctx := context.Background()
	e.clock.Set(day.Add(-time.Hour))
	e.h.Tick(ctx) // the leader sends yesterday's table
	e.clock.Set(now)
	e.h.Round() // renews its lease, and stops before its next tick
	// Started now, on the clock the kiosks' certificates are checked by.
	e2 := &env{t: t, pa: e.pa, cards: e.cards, clock: e.clock, pw: e.pw, cfg: e.cfg}
	e2.start()
	k := e2.kiosk("kiosk-2")
	configs := k.configsOf(t)
	e.h.Close()
	e2.h.Tick(ctx)
	waitConfig(t, configs, "the new table from the new leader", func(c protocol.KioskConfig) bool { return c.Rates.Version == "usps-new" })
}

// A hub that leads from its start sends every kiosk the table in force,
// as one that takes the lead later does: a table that took over while
// every hub was down reaches kiosks that stayed connected to the broker
// (mosquitto), which do not come online again. Here the config is there,
// retained, before the kiosk says it is online.
func TestLeaderAtStartSendsTheTableInForce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.h.Close()
	e.start() // alone on its database: it leads from its start
	e.h.Tick(context.Background())
	configs := e.kiosk("kiosk-2").configsOf(t)
	waitConfig(t, configs, "the table in force before the kiosk is online", func(c protocol.KioskConfig) bool { return c.Rates.Version != "" })
}
