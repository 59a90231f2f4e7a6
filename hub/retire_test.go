package hub_test

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/appliance/identity"
	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// Retiring a kiosk, here one reported lost with a sale it never reported
// printing: its mqtts session is cut within 5 s and a new one refused, its
// enrollment and id are spent, its loaded sheets voided, the unreported
// stamp voided and refunded, and the next postal report declares it lost.
// The console retires a kiosk too, for ops.
func TestRetireKiosk(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t)
	ctx := context.Background()
	code, pin := e.enrollCode("kiosk-9", "store-a")
	e.loadStock("store-a", "kiosk-9", "9999-0001")
	files := identity.In(t.TempDir())
	if _, err := identity.Enroll(ctx, e.h.URL(), code, pin, files); err != nil {
		t.Fatal(err)
	}
	id, err := identity.Load(files, e.h.URL(), pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(e.h.BrokerTLSAddr)
	dial := func(lost chan struct{}) (mqtt.Client, error) {
		opts := mqtt.NewClientOptions().AddBroker("mqtts://" + e.h.BrokerTLSAddr).SetClientID("kiosk-9").SetTLSConfig(id.ClientTLS(host)).
			SetAutoReconnect(false).SetOrderMatters(false).SetConnectTimeout(5 * time.Second)
		if lost != nil {
			opts.SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
		}
		c := mqtt.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, tok.Error()
		}
		return c, nil
	}
	lost := make(chan struct{})
	c, err := dial(lost)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(50)
	answers := make(chan []byte, 4)
	c.Subscribe(protocol.KioskTopic("kiosk-9", protocol.TopicPurchaseResult), 1, func(_ mqtt.Client, m mqtt.Message) { answers <- m.Payload() }).Wait()
	c.Publish(protocol.KioskTopic("kiosk-9", protocol.TopicPurchase), 1, false, purchase("ret-1", "kiosk-9", "9999-0001-01", nil))
	select {
	case raw := <-answers:
		if res := decode(t, raw); res.Status != protocol.ResultOK {
			t.Fatalf("sale: %+v", res.Error)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no answer")
	}
	before := e.cards.Totals()

	start := time.Now()
	r, err := e.h.RetireKiosk(ctx, "kiosk-9", "", true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Certificates != 1 || r.Sheets != 1 || r.Labels != 1 || r.Refunded != 780 {
		t.Fatalf("retire did %+v", r)
	}
	select {
	case <-lost:
		t.Logf("session cut %v after retire", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the retired kiosk's session is still open after 5 s")
	}
	if c2, err := dial(nil); err == nil {
		c2.Disconnect(0)
		t.Fatal("the retired kiosk connected again")
	}
	if after := e.cards.Totals(); after.Refunded-before.Refunded != 780 {
		t.Fatalf("refunded %d, want the unreported stamp's 780", after.Refunded-before.Refunded)
	}
	if sheets, _ := e.h.Stock().Sheets(ctx, "kiosk-9"); len(sheets) != 0 {
		t.Fatalf("the retired kiosk still holds sheets %v", sheets)
	}
	if _, err := e.h.Fleet().Add(ctx, "kiosk-9", "store-a"); err == nil {
		t.Fatal("a retired kiosk's id was provisioned again")
	}
	if _, err := e.h.Fleet().Enroll(ctx, code, nil); err == nil {
		t.Fatal("a retired kiosk enrolled")
	}
	e.clock.Set(time.Now()) // the period has ended: retiring dated its event by the wall clock
	rep, err := e.h.Ledger().BuildReport(ctx, e.clock.Now().Add(-time.Hour), e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range rep.Events {
		found = found || ev.Kind == "kiosk_lost" && ev.Subject == "kiosk/kiosk-9"
	}
	if !found {
		t.Fatalf("the postal report does not declare kiosk-9 lost: %+v", rep.Events)
	}
	e.check()

	// The console, for ops: kiosk-2 retired with a reason.
	b := e.operator("rita", "ops")
	st, loc, _ := b.post("/console/kiosks/kiosk-2", "/console/kiosks/kiosk-2/retire", url.Values{"confirm": {"kiosk-2"}, "why": {"water damage"}})
	if st != http.StatusSeeOther || !strings.Contains(loc, "Kiosk+retired") {
		t.Fatalf("console retire: %d %s", st, loc)
	}
	if _, err := e.h.Fleet().Get(ctx, "kiosk-2"); err == nil {
		t.Fatal("kiosk-2 is still in service")
	}
	if _, _, page := b.do("GET", "/console/", nil); !strings.Contains(page, "retired") {
		t.Fatal("the fleet page does not show kiosk-2 retired")
	}
	staff := e.operator("sid", "staff", "store-a")
	if st, _, _ := staff.post("/console/kiosks/kiosk-1", "/console/kiosks/kiosk-1/retire", url.Values{"confirm": {"kiosk-1"}}); st != http.StatusForbidden {
		t.Fatalf("store staff retiring a kiosk: %d", st)
	}
}

// A retirement whose refunds fail part way (the gateway out, or the hub
// stopped) leaves them due, not lost: retiring again finishes the rest of
// the retirement, and the leader's tick a minute on moves the money, once.
func TestRetireRefundsFinishedAfterAFailure(t *testing.T) {
	t.Parallel()
	var refuse atomic.Bool
	refuse.Store(true)
	e := newEnvWith(t, func(c *hub.Config) {
		c.PaymentsURL = faultyProxy(t, c.PaymentsURL, func(r *http.Request) bool { return r.URL.Path == "/v1/refund" && refuse.Load() })
	})
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	for _, label := range []string{"1966-F8CF-01", "1966-F8CF-02"} {
		if res := decode(t, k.ask(purchase("ret-"+label, "kiosk-1", label, nil))); res.Status != protocol.ResultOK {
			t.Fatalf("sale %s: %+v", label, res.Error)
		}
	}
	before := e.cards.Totals()
	if r, err := e.h.RetireKiosk(ctx, "kiosk-1", "", true); err == nil || r.Labels != 2 || r.Refunded != 0 {
		t.Fatalf("retire with the gateway refusing refunds: %+v, %v", r, err)
	}
	refuse.Store(false)
	if r, err := e.h.RetireKiosk(ctx, "kiosk-1", "", true); err != nil || r.Labels != 0 {
		t.Fatalf("retire again: %+v, %v", r, err)
	}
	// kiosk-2's retirement stops right after its stamps are voided, as a
	// hub killed there would: their refunds were recorded with the void.
	if res := decode(t, e.kiosk("kiosk-2").ask(purchase("ret-2", "kiosk-2", "2222-0001-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale on kiosk-2: %+v", res.Error)
	}
	if v, err := e.h.Ledger().VoidIssued(ctx, "kiosk-2", "kiosk_retired"); err != nil || len(v) != 1 {
		t.Fatalf("void issued: %+v, %v", v, err)
	}
	e.h.Tick(ctx) // too soon: a refund is the leader's a minute on
	e.clock.Set(e.clock.Now().Add(2 * time.Minute))
	e.h.Tick(ctx)
	e.h.Tick(ctx)
	if got := e.cards.Totals().Refunded - before.Refunded; got != 3*780 {
		t.Fatalf("card refunded %d mills, want 2,340 once", got)
	}
	e.check()
}

// A hub that stops right after retiring a kiosk, before the later steps
// (a kill, the HSM or the database out of reach), leaves them to the
// leader's next tick: the kiosk declared lost had its certificate still
// good at the broker, its sheets loaded, and its unreported stamp neither
// voided nor refunded, and nothing came back to them.
func TestRetirementCutShortFinishedByTheLeader(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t)
	ctx := context.Background()
	code, pin := e.enrollCode("kiosk-9", "store-a")
	files := identity.In(t.TempDir())
	if _, err := identity.Enroll(ctx, e.h.URL(), code, pin, files); err != nil {
		t.Fatal(err)
	}
	e.loadStock("store-a", "kiosk-9", "9999-0001")
	id, err := identity.Load(files, e.h.URL(), pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(e.h.BrokerTLSAddr)
	connect := func() (mqtt.Client, error) {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("mqtts://" + e.h.BrokerTLSAddr).SetClientID("kiosk-9").
			SetTLSConfig(id.ClientTLS(host)).SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(false))
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return nil, context.DeadlineExceeded
		}
		return c, tok.Error()
	}
	c, err := connect()
	if err != nil {
		t.Fatal(err)
	}
	answers := make(chan []byte, 1)
	c.Subscribe(protocol.KioskTopic("kiosk-9", protocol.TopicPurchaseResult), 1, func(_ mqtt.Client, m mqtt.Message) { answers <- m.Payload() }).Wait()
	c.Publish(protocol.KioskTopic("kiosk-9", protocol.TopicPurchase), 1, false, purchase("cut-1", "kiosk-9", "9999-0001-01", nil))
	select {
	case raw := <-answers:
		if res := decode(t, raw); res.Status != protocol.ResultOK {
			t.Fatalf("sale: %+v", res.Error)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no answer to the sale")
	}
	c.Disconnect(50)
	before := e.cards.Totals()
	// RetireKiosk's first step committed, and the hub stopped.
	if err := e.h.Fleet().Retire(ctx, "kiosk-9", "lost or stolen", true); err != nil {
		t.Fatal(err)
	}
	e.h.Close()
	e.start()
	e.h.Tick(ctx)
	if sheets, _ := e.h.Stock().Sheets(ctx, "kiosk-9"); len(sheets) != 0 {
		t.Errorf("the retired kiosk still holds sheets %v", sheets)
	}
	db := e.openDB()
	var state string
	if err := db.QueryRowContext(ctx, db.Rebind(`SELECT state FROM indicia WHERE kiosk_id = ? AND request_id = ?`), "kiosk-9", "cut-1").Scan(&state); err != nil {
		t.Fatal(err)
	}
	if state != "voided" {
		t.Errorf("the retired kiosk's unreported stamp is %q, want voided", state)
	}
	e.clock.Set(e.clock.Now().Add(2 * time.Minute))
	e.h.Tick(ctx) // the refund recorded due is finished a minute on
	if got := e.cards.Totals().Refunded - before.Refunded; got != 780 {
		t.Errorf("refunded %d mills, want 780", got)
	}
	// The broker rereads the revocations within seconds, as for a
	// retirement done in one go (TestRetireKiosk).
	wait.For(t, 10*time.Second, "the lost kiosk's certificate refused", func() bool {
		c, err := connect()
		if err == nil {
			c.Disconnect(0)
		}
		return err != nil
	})
	// Finished once: the next tick has nothing left to do.
	left, err := e.h.Fleet().RetiredUnfinished(ctx)
	if err != nil || len(left) != 0 {
		t.Fatalf("retirements left after the tick: %v %v", left, err)
	}
}
