package hub_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
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
