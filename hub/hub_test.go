package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/cards"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/verify"
	"github.com/frank-postage/frank/testbench/wait"
	"golang.org/x/crypto/bcrypt"
)

// clock is a settable clock for the hub.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

type env struct {
	t     testing.TB
	h     *hub.Hub
	cfg   hub.Config
	pa    *postal.Authority
	cards *cards.Gateway
	clock *clock
	pw    map[string]string // kiosk -> broker password
}

func quietLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newEnv runs a whole hub in-process on free ports, with the embedded
// broker, SQLite and the soft HSM, against a simulated postal authority and
// card gateway. Kiosks kiosk-1 (store-a) and kiosk-2 (store-b) are
// provisioned, and sheets 1966-F8CF and 1966-F8D0 are loaded into kiosk-1.
func newEnv(t testing.TB) *env { return newEnvWith(t, nil) }

// newEnvWith is newEnv with a change to the hub's config.
func newEnvWith(t testing.TB, edit func(*hub.Config)) *env {
	t.Helper()
	log := quietLog()
	pa, err := postal.New("", log)
	if err != nil {
		t.Fatal(err)
	}
	paSrv := httptest.NewServer(pa.Handler())
	t.Cleanup(paSrv.Close)
	gw := cards.New(log)
	gwSrv := httptest.NewServer(gw.Handler())
	t.Cleanup(gwSrv.Close)
	e := &env{t: t, pa: pa, cards: gw, clock: &clock{t: time.Now()}, pw: map[string]string{}}
	// Plain HTTP and broker passwords keep most tests short; the TLS
	// listener runs too, and tls_test.go uses it.
	e.cfg = hub.Config{DataDir: t.TempDir(), HTTPListen: "127.0.0.1:0", BrokerListen: "127.0.0.1:0", PostalURL: paSrv.URL,
		TLS: "off", KioskPasswords: true, BrokerTLSListen: "127.0.0.1:0", HTTPSListen: "127.0.0.1:0",
		PaymentsURL: gwSrv.URL, PaymentsTimeout: 2 * time.Second} // tok_timeout waits it out
	e.cfg.Ledger.Now = e.clock.Now
	e.cfg.Reports.Every = -1 // tests that jump the clock file reports by hand; TestScheduledReports turns it on
	e.cfg.Ledger.Licence = postal.DemoLicence
	e.cfg.PasswordCost = bcrypt.MinCost // a test is not a brute-force attack
	if edit != nil {
		edit(&e.cfg)
	}
	if e.cfg.DB == "" && os.Getenv("FRANK_TEST_DB") == "postgres" {
		// The whole suite again on PostgreSQL (make unit does): every
		// store-backed package the hub uses, on both stores.
		e.cfg.DB = pgtest.NewTestDatabase(t)
	}
	e.start()
	ctx := context.Background()
	for _, k := range [][2]string{{"kiosk-1", "store-a"}, {"kiosk-2", "store-b"}} {
		if e.pw[k[0]], err = e.h.Fleet().Add(ctx, k[0], k[1]); err != nil {
			t.Fatal(err)
		}
	}
	e.loadStock("store-a", "kiosk-1", "1966-F8CF", "1966-F8D0")
	e.loadStock("store-b", "kiosk-2", "2222-0001")
	return e
}

func (e *env) start() {
	e.t.Helper()
	ctx := context.Background()
	h, err := hub.Open(ctx, e.cfg, quietLog())
	if err != nil {
		e.t.Fatal(err)
	}
	if err := h.Start(ctx); err != nil {
		h.Close()
		e.t.Fatal(err)
	}
	e.h = h
	e.t.Cleanup(func() { h.Close() })
}

func (e *env) loadStock(storeID, kioskID string, serials ...string) {
	e.t.Helper()
	ctx := context.Background()
	var ss []protocol.SheetSerial
	for _, s := range serials {
		sh, err := protocol.ParseSheetSerial(s)
		if err != nil {
			e.t.Fatal(err)
		}
		ss = append(ss, sh)
	}
	if err := e.h.Stock().AddStore(ctx, storeID, ""); err != nil {
		e.t.Fatal(err)
	}
	if err := e.h.Stock().Import(ctx, storeID, ss); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.h.Stock().Load(ctx, kioskID, ss); err != nil {
		e.t.Fatal(err)
	}
}

// kioskClient is a bare MQTT client standing in for a kiosk.
type kioskClient struct {
	t       testing.TB
	id      string
	c       mqtt.Client
	results chan []byte
}

func (e *env) connect(id, password string) (*kioskClient, error) {
	k := &kioskClient{t: e.t, id: id, results: make(chan []byte, 16)}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + e.h.BrokerAddr).SetClientID("test-" + id).SetOrderMatters(false).
		SetUsername(id).SetPassword(password).SetAutoReconnect(false)
	k.c = mqtt.NewClient(opts)
	if tok := k.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect: %v", tok.Error())
	}
	e.t.Cleanup(func() { k.c.Disconnect(100) })
	return k, nil
}

// kiosk connects a provisioned kiosk and subscribes to its results.
func (e *env) kiosk(id string) *kioskClient {
	e.t.Helper()
	k, err := e.connect(id, e.pw[id])
	if err != nil {
		e.t.Fatal(err)
	}
	for _, suffix := range []string{protocol.TopicPurchaseResult, protocol.TopicRefundResult, protocol.TopicStockResult} {
		tok := k.c.Subscribe(protocol.KioskTopic(id, suffix), 1, func(_ mqtt.Client, m mqtt.Message) { k.results <- m.Payload() })
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			e.t.Fatalf("subscribe: %v", tok.Error())
		}
	}
	return k
}

// send publishes payload on one of the kiosk's topics and returns the raw answer.
func (k *kioskClient) send(suffix string, payload []byte) []byte {
	k.t.Helper()
	k.c.Publish(protocol.KioskTopic(k.id, suffix), 1, false, payload)
	select {
	case r := <-k.results:
		return r
	case <-time.After(15 * time.Second):
		k.t.Fatal("no answer")
		return nil
	}
}

func (k *kioskClient) ask(payload []byte) []byte { return k.send(protocol.TopicPurchase, payload) }

func purchase(id, kiosk, label string, mutate func(*protocol.PurchaseRequest)) []byte {
	var r protocol.PurchaseRequest
	if err := json.Unmarshal([]byte(prototest.GoodPurchase), &r); err != nil {
		panic(err)
	}
	r.RequestID, r.KioskID, r.Items[0].LabelSerial = id, kiosk, label
	if mutate != nil {
		mutate(&r)
	}
	b, _ := json.Marshal(r)
	return b
}

func decode(t testing.TB, raw []byte) *protocol.PurchaseResult {
	t.Helper()
	res, err := protocol.DecodePurchaseResult(raw)
	if err != nil {
		t.Fatalf("result %s: %v", raw, err)
	}
	if res.Error != nil {
		met.Store(res.Error.Code, true)
	}
	return res
}

// met records every code the hub answered in this package's tests;
// TestMain checks, after a full run, that each code in protocol.Codes came
// up at least once.
var met sync.Map

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 && flag.Lookup("test.run").Value.String() == "" && flag.Lookup("test.list").Value.String() == "" {
		for _, c := range protocol.Codes {
			if _, ok := met.Load(c.Code); !ok && c.Code != protocol.CodeInternal {
				// internal_error is the hub's own fault, never a kiosk's input.
				fmt.Fprintf(os.Stderr, "no test here met error code %s\n", c.Code)
				code = 1
			}
		}
	}
	os.Exit(code)
}

// dsn is the env's database: PostgreSQL's URL, or the SQLite file.
func (e *env) dsn() string {
	if e.cfg.DB != "" {
		return e.cfg.DB
	}
	return filepath.Join(e.cfg.DataDir, "hub.db")
}

// openDB is a second handle on the env's database, for tests that look
// under the hub or tamper with its rows; it closes with the test.
// faultyProxy passes requests on to target, but answers those fail picks
// with a 502: an outside party that is down now and then.
func faultyProxy(t testing.TB, target string, fail func(*http.Request) bool) string {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail(r) {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func (e *env) openDB() *store.DB {
	e.t.Helper()
	db, err := store.Open(context.Background(), e.dsn())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { db.Close() })
	return db
}

func (e *env) check() {
	e.t.Helper()
	r, err := e.h.Ledger().Check(context.Background())
	if err != nil || !r.OK() {
		e.t.Fatalf("ledger: %v %v", r.Violations, err)
	}
}

func TestPurchaseOverMQTT(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.kiosk("kiosk-1")
	raw := k.ask(purchase("req-1", "kiosk-1", "1966-F8CF-01", nil))
	res := decode(t, raw)
	if res.Status != protocol.ResultOK || res.RequestID != "req-1" || len(res.Indicia) != 1 {
		t.Fatalf("result %s", raw)
	}
	keys, err := verify.FetchKeys(context.Background(), "http://"+e.h.HTTPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := keys.Verify(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	if in.Postage != 780 || in.AR != 780 || in.DR != 999_220 || in.Label.String() != "1966-F8CF-01" || in.OriginZIP != 94544 ||
		in.Date != protocol.DateOf(time.Now()) || res.Indicia[0].MeterNumber != in.MeterNumber() {
		t.Fatalf("indicium %+v", in)
	}
	// The same request three more times: the same bytes, and no money moves.
	for range 3 {
		if again := k.ask(purchase("req-1", "kiosk-1", "1966-F8CF-01", nil)); !bytes.Equal(again, raw) {
			t.Fatalf("repeat differs:\n%s\n%s", again, raw)
		}
	}
	r, err := e.h.Ledger().Check(context.Background())
	if err != nil || !r.OK() || r.Indicia != 1 {
		t.Fatalf("ledger after repeats: %+v %v", r, err)
	}
	// The capture follows the answer.
	wait.For(t, 10*time.Second, "one capture of 780", func() bool { tot := e.cards.Totals(); return tot.Captured == 780 && tot.Open == 0 })
	if tot := e.cards.Totals(); tot.Captured != 780 || tot.Open != 0 {
		t.Fatalf("card gateway %+v, want one capture of 780", tot)
	}
}

// Every refusal a kiosk can meet, each with its code and a message, and
// none of them moves money.
func TestPurchaseRejections(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.kiosk("kiosk-1")
	if res := decode(t, k.ask(purchase("first", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatal("setup sale failed")
	}
	// Its label printed, so it has no remedy.
	if err := e.h.Ledger().RecordPrint(context.Background(), &protocol.PrintReport{RequestID: "first", KioskID: "kiosk-1",
		Labels: []protocol.LabelOutcome{{LabelSerial: "1966-F8CF-01", Outcome: protocol.Printed}}}); err != nil {
		t.Fatal(err)
	}
	lbl := func(n int) string { return fmt.Sprintf("1966-F8CF-%02d", n) }
	cases := []struct {
		name    string
		payload []byte
		code    protocol.Code
		id      string
	}{
		{"malformed", []byte(`{"request_id":"bad-1","oops":`), protocol.CodeMalformed, ""},
		{"unknown field keeps id", []byte(`{"request_id":"bad-2","kiosk_id":"kiosk-1","pan":"4111"}`), protocol.CodeMalformed, "bad-2"},
		{"no rate table", purchase("i-1", "kiosk-1", lbl(2), func(r *protocol.PurchaseRequest) { r.RateTable = "" }), protocol.CodeInvalidRequest, "i-1"},
		{"kiosk mismatch", purchase("m-1", "kiosk-2", lbl(2), nil), protocol.CodeKioskMismatch, "m-1"},
		{"label used", purchase("u-1", "kiosk-1", lbl(1), nil), protocol.CodeLabelUsed, "u-1"},
		{"label unknown", purchase("lu-1", "kiosk-1", "ABCD-0000-01", nil), protocol.CodeLabelUnknown, "lu-1"},
		{"label of another kiosk", purchase("ln-1", "kiosk-1", "2222-0001-01", nil), protocol.CodeLabelNotAssigned, "ln-1"},
		{"amount mismatch", purchase("a-1", "kiosk-1", lbl(3), func(r *protocol.PurchaseRequest) { r.Items[0].AmountMills = 700 }), protocol.CodeAmountMismatch, "a-1"},
		{"overweight", purchase("o-1", "kiosk-1", lbl(4), func(r *protocol.PurchaseRequest) { r.Items[0].WeightMg = 200_000 }), protocol.CodeOverweight, "o-1"},
		{"unknown class", purchase("c-1", "kiosk-1", lbl(5), func(r *protocol.PurchaseRequest) { r.Items[0].RateClass = "9999" }), protocol.CodeRateClassUnknown, "c-1"},
		{"stale rates", purchase("s-1", "kiosk-1", lbl(6), func(r *protocol.PurchaseRequest) { r.RateTable = "usps-2024-07-14" }), protocol.CodeRateTableStale, "s-1"},
		{"idempotency conflict", purchase("first", "kiosk-1", lbl(7), nil), protocol.CodeIdempotencyConflict, "first"},
		{"card declined", purchase("p-1", "kiosk-1", lbl(8), func(r *protocol.PurchaseRequest) { r.Payment.Token = "tok_decline" }), protocol.CodePaymentDeclined, "p-1"},
		{"card short", purchase("p-2", "kiosk-1", lbl(8), func(r *protocol.PurchaseRequest) { r.Payment.Token = "tok_insufficient" }), protocol.CodeInsufficientFunds, "p-2"},
		{"gateway silent", purchase("p-3", "kiosk-1", lbl(8), func(r *protocol.PurchaseRequest) { r.Payment.Token = "tok_timeout" }), protocol.CodePaymentTimeout, "p-3"},
		{"bad token", purchase("p-4", "kiosk-1", lbl(8), func(r *protocol.PurchaseRequest) { r.Payment.Token = "4111111111111111" }), protocol.CodePaymentInvalid, "p-4"},
		{"no such account", purchase("p-5", "kiosk-1", lbl(8), func(r *protocol.PurchaseRequest) {
			r.Payment = protocol.Payment{Method: protocol.PayAccount, AccountID: "nobody"}
		}), protocol.CodePaymentInvalid, "p-5"},
		{"reprint of a printed label", purchase("rp-1", "kiosk-1", lbl(9), func(r *protocol.PurchaseRequest) {
			r.Payment = protocol.Payment{Method: protocol.PayNone}
			r.ReprintOf = &protocol.LabelRef{RequestID: "first", LabelSerial: lbl(1)}
		}), protocol.CodeRemedyNotAllowed, "rp-1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := k.ask(c.payload)
			res := decode(t, raw)
			if res.Status != protocol.ResultRejected || res.Error.Code != c.code || res.RequestID != c.id || res.Error.Message == "" {
				t.Fatalf("got %s, want %s for %q", raw, c.code, c.id)
			}
			if c.code == protocol.CodeInsufficientFunds && res.Error.MissingMills != 780 {
				t.Fatalf("missing_mills %d, want 780", res.Error.MissingMills)
			}
		})
	}
	e.check()
	// The setup sale's capture follows its answer.
	wait.Until(t, 10*time.Second, "the setup sale's capture, and nothing else", func() error {
		if tot := e.cards.Totals(); tot.Captured != 780 || tot.Open != 0 {
			return fmt.Errorf("card gateway %+v: a refusal moved money or left a hold", tot)
		}
		return nil
	})
	// A used label offered again is a fraud alert.
	as, _ := e.h.Alerts().List(context.Background(), true)
	var fraud bool
	for _, a := range as {
		fraud = fraud || a.Kind == alerts.Fraud && a.Subject == "label/1966-F8CF-01"
	}
	if !fraud {
		t.Fatalf("no fraud alert: %+v", as)
	}
}

// Refusals that need a hub in a particular state.
func TestStateRejections(t *testing.T) {
	t.Parallel()
	t.Run("unknown kiosk", func(t *testing.T) {
		e := newEnv(t)
		out, perr := e.h.Sales().Purchase(context.Background(), "kiosk-9", purchase("x-1", "kiosk-9", "1966-F8CF-02", nil))
		if perr == nil || perr.Code != protocol.CodeUnknownKiosk {
			t.Fatalf("got %s", out)
		}
		decode(t, out)
		if _, err := e.connect("kiosk-9", "guess"); err == nil {
			t.Fatal("the broker let an unprovisioned kiosk in")
		}
		if _, err := e.connect("kiosk-1", "wrong password"); err == nil {
			t.Fatal("the broker took a wrong password")
		}
	})
	t.Run("webstamp without a login", func(t *testing.T) {
		e := newEnv(t)
		req, _ := http.NewRequest(http.MethodPost, "http://"+e.h.HTTPAddr+"/api/v1/webstamp", strings.NewReader(prototest.PatentWebStampRequest))
		req.SetBasicAuth("nobody", "guess")
		req.Header.Set("Content-Type", "application/xml")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var x protocol.XMLError
		if err := xml.NewDecoder(resp.Body).Decode(&x); err != nil || resp.StatusCode != http.StatusUnauthorized || x.Code != protocol.CodeUnauthorized {
			t.Fatalf("%s: %+v %v", resp.Status, x, err)
		}
		met.Store(x.Code, true)
	})
	t.Run("no postage funds", func(t *testing.T) {
		e := newEnv(t)
		e.pa.SetRefuseFunds(true)
		res := decode(t, e.kiosk("kiosk-1").ask(purchase("f-1", "kiosk-1", "1966-F8CF-02", nil)))
		if res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeFundsUnavailable {
			t.Fatalf("got %+v", res)
		}
		if tot := e.cards.Totals(); tot.Captured != 0 || tot.Open != 0 {
			t.Fatalf("money moved: %+v", tot)
		}
	})
	t.Run("inspection overdue", func(t *testing.T) {
		e := newEnv(t)
		e.clock.Set(time.Now().Add(121 * 24 * time.Hour))
		e.h.Tick(context.Background())
		res := decode(t, e.kiosk("kiosk-1").ask(purchase("io-1", "kiosk-1", "1966-F8CF-02", nil)))
		if res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeInspectionOverdue {
			t.Fatalf("got %+v", res)
		}
	})
	t.Run("no rate table in force", func(t *testing.T) {
		e := newEnv(t)
		e.clock.Set(time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC))
		res := decode(t, e.kiosk("kiosk-1").ask(purchase("nr-1", "kiosk-1", "1966-F8CF-02", nil)))
		if res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeServiceUnavailable {
			t.Fatalf("got %+v", res)
		}
	})
	t.Run("prepaid account short", func(t *testing.T) {
		e := newEnv(t)
		ctx := context.Background()
		acct, err := e.h.Accounts().Create(ctx, "alice", "correct horse battery")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.h.Accounts().Credit(ctx, acct.ID, 500, "fund", "t1"); err != nil {
			t.Fatal(err)
		}
		code, _, err := e.h.Accounts().NewPayCode(ctx, acct.ID, 100_000)
		if err != nil {
			t.Fatal(err)
		}
		res := decode(t, e.kiosk("kiosk-1").ask(purchase("ac-1", "kiosk-1", "1966-F8CF-02", func(r *protocol.PurchaseRequest) {
			r.Payment = protocol.Payment{Method: protocol.PayAccount, PayCode: code}
		})))
		if res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeInsufficientFunds || res.Error.MissingMills != 280 {
			t.Fatalf("got %+v", res)
		}
	})
}

// A kiosk may use only its own topics.
func TestKioskConfinedToItsTopics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, err := e.connect("kiosk-1", e.pw["kiosk-1"])
	if err != nil {
		t.Fatal(err)
	}
	for _, filter := range []string{
		protocol.KioskTopic("kiosk-2", protocol.TopicPurchaseResult),
		protocol.TopicRoot + "+/purchase/result",
		"frank/#",
		protocol.KioskTopic("kiosk-1", protocol.TopicPurchase), // its own requests: write only
	} {
		tok := a.c.Subscribe(filter, 1, func(mqtt.Client, mqtt.Message) {})
		tok.WaitTimeout(5 * time.Second)
		if qos := tok.(*mqtt.SubscribeToken).Result()[filter]; qos != 0x80 {
			t.Errorf("kiosk-1 subscribed to %q (granted %#x)", filter, qos)
		}
	}
	tok := a.c.Subscribe(protocol.KioskTopic("kiosk-1", protocol.TopicPurchaseResult), 1, func(mqtt.Client, mqtt.Message) {})
	tok.WaitTimeout(5 * time.Second)
	if qos := tok.(*mqtt.SubscribeToken).Result()[protocol.KioskTopic("kiosk-1", protocol.TopicPurchaseResult)]; qos == 0x80 {
		t.Error("kiosk-1 may not subscribe to its own results")
	}
}

// A kiosk password replaced elsewhere (here through a second handle on
// the store, as `hub kiosk add` in another process or another hub would)
// stops working at once on the running hub: the open session is closed and
// the old password is refused, while the new one works.
func TestReplacedPasswordStopsAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	lost := make(chan struct{})
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + e.h.BrokerAddr).SetClientID("kiosk-1").SetUsername("kiosk-1").
		SetPassword(e.pw["kiosk-1"]).SetAutoReconnect(false).SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(50)
	other, err := store.Open(context.Background(), e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	reg := fleet.New(other)
	reg.Passwords = true
	newPW, err := reg.Add(context.Background(), "kiosk-1", "store-a")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the session opened with the replaced password is still open")
	}
	if _, err := e.connect("kiosk-1", e.pw["kiosk-1"]); err == nil {
		t.Fatal("the replaced password still connects")
	}
	if _, err := e.connect("kiosk-1", newPW); err != nil {
		t.Fatalf("the new password: %v", err)
	}
}

// No kiosk may be named like a hub: brokers make a kiosk's client id its
// user name, and a kiosk called frank-hub-... would take a hub's session.
func TestKioskIDNotAHubs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.h.Fleet().Add(context.Background(), "frank-hub-2", "store-a"); err == nil {
		t.Fatal("a kiosk named frank-hub-2 was provisioned")
	}
}

func TestCertificatesAndHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := demo.WaitHTTP(context.Background(), "http://"+e.h.HTTPAddr+"/healthz", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	keys, err := verify.FetchKeys(context.Background(), "http://"+e.h.HTTPAddr, nil)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %v, %v", keys, err)
	}
}

// A ledger that does not add up stops the hub: it refuses to start.
func TestHubRefusesToStartOnViolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if res := decode(t, e.kiosk("kiosk-1").ask(purchase("v1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatal("sale failed")
	}
	e.h.Close()
	db := e.openDB()
	if _, err := db.Exec(`UPDATE indicia SET postage = postage + 10`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	ctx := context.Background()
	h, err := hub.Open(ctx, e.cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Start(ctx); err == nil || !strings.Contains(err.Error(), "violation") {
		t.Fatalf("hub started on a broken ledger: %v", err)
	}
}

// A violation found while the hub sells stops every sale at once, before
// any card is touched; the hub says so on /healthz and in a tamper alert.
func TestLedgerCheckStopsSales(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.LedgerCheckEvery = 50 * time.Millisecond })
	k := e.kiosk("kiosk-1")
	if res := decode(t, k.ask(purchase("s1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatal("sale failed")
	}
	health := func() int {
		resp, err := http.Get("http://" + e.h.HTTPAddr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := health(); st != http.StatusOK {
		t.Fatalf("healthz %d", st)
	}
	db := e.openDB()
	if _, err := db.Exec(`UPDATE indicia SET postage = postage + 10`); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the running hub to find the edited indicium", func() bool { return health() == http.StatusServiceUnavailable })
	before := e.cards.Totals()
	res := decode(t, k.ask(purchase("s2", "kiosk-1", "1966-F8CF-02", nil)))
	if res.Status == protocol.ResultOK || res.Error.Code != protocol.CodeServiceUnavailable || strings.Contains(res.Error.Message, "indicium") {
		t.Fatalf("sold on a broken ledger: %+v", res.Error)
	}
	if after := e.cards.Totals(); after != before {
		t.Fatalf("the refused sale touched the card: %+v, then %+v", before, after)
	}
	wait.For(t, 10*time.Second, "a tamper alert on the ledger", func() bool {
		as, err := e.h.Alerts().List(context.Background(), true)
		return err == nil && slices.ContainsFunc(as, func(a alerts.Alert) bool { return a.Kind == alerts.Tamper && a.Subject == "ledger" })
	})
	// Ops see why on every console page, staff that sales stopped, and
	// Prometheus a gauge its alert rule watches.
	ops := e.operator("olga", "ops")
	if st, _, page := ops.do("GET", "/console/", nil); st != http.StatusOK || !strings.Contains(page, `id="stopped"`) || !strings.Contains(page, "violation") {
		t.Fatalf("fleet page while stopped: %d\n%s", st, page)
	}
	staff := e.operator("sam", "staff", "store-a")
	if st, _, page := staff.do("GET", "/console/", nil); st != http.StatusOK || !strings.Contains(page, `id="stopped"`) || strings.Contains(page, "violation") {
		t.Fatalf("staff fleet page while stopped: %d\n%s", st, page)
	}
	tok, err := e.h.Operators().NewToken(context.Background(), "olga", "scrape", operators.ReadOnly, operators.DefaultTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	if st, _, body := e.browser().do("GET", "/metrics", nil, "Authorization", "Bearer "+tok); st != http.StatusOK || !strings.Contains(body, "\nfrank_sales_stopped 1\n") {
		t.Fatalf("/metrics while stopped: %d", st)
	}
	if st, _, body := e.browser().do("GET", "/api/v1/ops/funds", nil, "Authorization", "Bearer "+tok); st != http.StatusOK || !strings.Contains(body, `"sales_stopped":"the ledger check found`) {
		t.Fatalf("operator API funds while stopped: %d %s", st, body)
	}
}

// After a key rotation new stamps carry the new certificate serial, and the
// old key stays published so stamps already sold still verify.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	old := decode(t, e.kiosk("kiosk-1").ask(purchase("k1", "kiosk-1", "1966-F8CF-01", nil))).Indicia[0].Matrix
	e.h.Close()
	h, err := hub.Open(ctx, e.cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	k, err := h.Keys().Rotate(ctx)
	h.Close()
	if err != nil || k.CertSerial != 2 {
		t.Fatalf("rotate: %+v %v", k, err)
	}
	e.start()
	fresh := decode(t, e.kiosk("kiosk-1").ask(purchase("k2", "kiosk-1", "1966-F8CF-02", nil))).Indicia[0].Matrix
	keys, err := verify.FetchKeys(ctx, "http://"+e.h.HTTPAddr, nil)
	if err != nil || len(keys) != 2 {
		t.Fatalf("published keys %d, %v", len(keys), err)
	}
	for want, m := range map[uint32][]byte{1: old, 2: fresh} {
		in, err := keys.Verify(m)
		if err != nil || in.CertSerial != want {
			t.Fatalf("stamp of certificate %d: %+v %v", want, in, err)
		}
	}
}

// A rate table dropped into the hub's rates directory while it runs, ahead
// of its date, takes over on that date: every kiosk is sent it, and a
// request still priced on the old one is refused.
func TestRateTableTakesOverOnItsDate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	day := time.Now().UTC().AddDate(0, 0, 10).Truncate(24 * time.Hour)
	e := newEnvWith(t, func(c *hub.Config) { c.RatesDir = dir })
	next := prototest.Rates
	next.Version, next.Effective = "usps-next", day.Format(time.DateOnly)
	next.Classes = append([]protocol.RateClass(nil), next.Classes...)
	next.Classes[0].FirstOunce = 900
	b, _ := json.Marshal(next)
	if err := os.WriteFile(filepath.Join(dir, "next.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	e.h.Tick(context.Background()) // loads it; the old table stays in force until the day
	k := e.kiosk("kiosk-1")
	configs := make(chan protocol.KioskConfig, 4)
	k.c.Subscribe(protocol.KioskTopic("kiosk-1", protocol.TopicConfig), 1, func(_ mqtt.Client, m mqtt.Message) {
		if c, err := protocol.DecodeKioskConfig(m.Payload()); err == nil {
			configs <- *c
		}
	}).Wait()
	k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicStatus), 1, true, protocol.StatusOnline).Wait()
	waitConfig := func(version string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case c := <-configs:
				if c.Rates.Version == version {
					return
				}
			case <-deadline:
				t.Fatalf("no config with rate table %s", version)
			}
		}
	}
	waitConfig("usps-2025-07-13")
	if res := decode(t, k.ask(purchase("before", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("before the change: %+v", res)
	}
	e.clock.Set(day.Add(time.Second))
	e.h.Tick(context.Background())
	waitConfig("usps-next")
	res := decode(t, k.ask(purchase("after-old", "kiosk-1", "1966-F8CF-02", nil)))
	if res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeRateTableStale {
		t.Fatalf("old prices after the change: %+v", res)
	}
	res = decode(t, k.ask(purchase("after-new", "kiosk-1", "1966-F8CF-02", func(r *protocol.PurchaseRequest) {
		r.RateTable, r.Items[0].AmountMills = "usps-next", 900
	})))
	if res.Status != protocol.ResultOK || res.Indicia[0].AmountMills != 900 {
		t.Fatalf("new prices: %+v", res)
	}
}

// The hub marks a kiosk offline within two heartbeat periods of its link
// going quiet (no last will: a clean disconnect sends none), and at once on
// its last will; both raise an alert.
func TestKioskOffline(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.HeartbeatS = 1 })
	state := func(id string) fleet.KioskState {
		for _, s := range e.h.Presence().List() {
			if s.ID == id {
				return s
			}
		}
		return fleet.KioskState{}
	}
	// Presence and its sweeper run on the hub's clock, which the test
	// moves, and the test sweeps at once rather than wait for the hub's
	// next quarter period.
	waitFor := func(id string, online bool, within time.Duration) {
		t.Helper()
		wait.For(t, within, fmt.Sprintf("%s online=%v", id, online), func() bool { return state(id).Online == online })
	}
	// Silence counts from when the hub hears the other hubs and has read
	// what it missed (a sweep does that read): on a busy machine its
	// listener may start after the first heartbeats.
	wait.For(t, 10*time.Second, "the hub hearing the other hubs", func() bool {
		e.h.SweepSilent()
		return e.h.HearsPeers()
	})
	k := e.kiosk("kiosk-1")
	k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicStatus), 1, true, protocol.StatusOnline).Wait()
	waitFor("kiosk-1", true, 5*time.Second)
	beats := 0
	beat := func() {
		t.Helper()
		beats++
		b, _ := json.Marshal(protocol.Telemetry{KioskID: "kiosk-1", At: e.clock.Now(), Firmware: "test", Sales: int64(beats), LabelsLeft: 7, Paper: "ok", Printer: "ok", Scale: "ok", InService: true})
		k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicTelemetry), 0, false, b).Wait()
		wait.For(t, 5*time.Second, "the heartbeat taken", func() bool {
			s := state("kiosk-1")
			return s.Telemetry != nil && s.Telemetry.Sales == int64(beats)
		})
	}
	for range 6 { // a heartbeat each period keeps it online
		beat()
		e.clock.Set(e.clock.Now().Add(time.Second))
		e.h.SweepSilent()
		if !state("kiosk-1").Online {
			t.Fatalf("offline with a heartbeat each period: %+v", state("kiosk-1"))
		}
	}
	k.c.Disconnect(0)
	// Two periods since its last heartbeat: one lost heartbeat is not silence.
	e.clock.Set(e.clock.Now().Add(time.Second))
	e.h.SweepSilent()
	if !state("kiosk-1").Online {
		t.Fatal("offline after two periods of silence; the hub waits two and a half")
	}
	e.clock.Set(e.clock.Now().Add(time.Second))
	e.h.SweepSilent()
	if state("kiosk-1").Online {
		t.Fatalf("online after three periods of silence: %+v", state("kiosk-1"))
	}

	// Back online, then its last will arrives.
	k2, err := e.connect("kiosk-1", e.pw["kiosk-1"])
	if err != nil {
		t.Fatal(err)
	}
	k2.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicStatus), 1, true, protocol.StatusOnline).Wait()
	waitFor("kiosk-1", true, 5*time.Second)
	k2.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicStatus), 1, true, protocol.StatusOffline).Wait()
	waitFor("kiosk-1", false, time.Second)
	// The alert is stored just after the kiosk is marked offline.
	wait.For(t, 5*time.Second, "a kiosk_offline alert", func() bool {
		as, _ := e.h.Alerts().List(context.Background(), true)
		return slices.ContainsFunc(as, func(a alerts.Alert) bool { return a.Kind == alerts.KioskOffline && a.Subject == "kiosk/kiosk-1" })
	})
}

// The console's activity charts outlive a restart: finished minutes are
// stored, and a starting hub reads the last day back.
func TestActivityOutlivesRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.kiosk("kiosk-1")
	for i, l := range []string{"1966-F8CF-01", "1966-F8CF-02", "1966-F8CF-03", "1966-F8CF-01"} {
		k.ask(purchase(fmt.Sprintf("act-%d", i), "kiosk-1", l, nil)) // the last reuses a label
	}
	total := func() (ok, rejected int) {
		for _, p := range e.h.Metrics().Activity().Series(time.Hour, time.Minute) {
			ok, rejected = ok+p.OK, rejected+p.Rejected
		}
		return ok, rejected
	}
	if ok, rej := total(); ok != 3 || rej != 1 {
		t.Fatalf("before the restart: %d ok, %d rejected", ok, rej)
	}
	e.clock.Set(e.clock.Now().Add(time.Minute)) // that minute is over
	e.h.Close()
	e.start()
	if ok, rej := total(); ok != 3 || rej != 1 {
		t.Fatalf("after the restart: %d ok, %d rejected", ok, rej)
	}
	// A second restart counts nothing twice.
	e.clock.Set(e.clock.Now().Add(time.Minute))
	e.h.Close()
	e.start()
	if ok, rej := total(); ok != 3 || rej != 1 {
		t.Fatalf("after a second restart: %d ok, %d rejected", ok, rej)
	}
}
