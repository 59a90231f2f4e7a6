package hub_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/verify"
)

// startHub runs a whole hub in-process on free ports, with the embedded
// broker, SQLite and the soft HSM, against a simulated postal authority.
func startHub(t *testing.T) *hub.Hub {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	pa, err := postal.New("", log)
	if err != nil {
		t.Fatal(err)
	}
	paSrv := httptest.NewServer(pa.Handler())
	t.Cleanup(paSrv.Close)
	cfg := hub.Config{DataDir: t.TempDir(), HTTPListen: "127.0.0.1:0", BrokerListen: "127.0.0.1:0", PostalURL: paSrv.URL}
	ctx := context.Background()
	h, err := hub.Open(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

// kioskClient is a bare MQTT client standing in for a kiosk.
type kioskClient struct {
	t       *testing.T
	id      string
	c       mqtt.Client
	results chan []byte
}

func connectKiosk(t *testing.T, h *hub.Hub, id string) *kioskClient {
	t.Helper()
	k := &kioskClient{t: t, id: id, results: make(chan []byte, 16)}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + h.BrokerAddr).SetClientID("test-" + id).SetOrderMatters(false)
	k.c = mqtt.NewClient(opts)
	if tok := k.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { k.c.Disconnect(100) })
	tok := k.c.Subscribe(protocol.KioskTopic(id, protocol.TopicPurchaseResult), 1, func(_ mqtt.Client, m mqtt.Message) {
		k.results <- m.Payload()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return k
}

// ask publishes payload on the kiosk's purchase topic and returns the raw result.
func (k *kioskClient) ask(payload []byte) []byte {
	k.t.Helper()
	k.c.Publish(protocol.KioskTopic(k.id, protocol.TopicPurchase), 1, false, payload)
	select {
	case r := <-k.results:
		return r
	case <-time.After(15 * time.Second):
		k.t.Fatal("no purchase result")
		return nil
	}
}

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

func TestPurchaseOverMQTT(t *testing.T) {
	h := startHub(t)
	k := connectKiosk(t, h, "kiosk-1")
	raw := k.ask(purchase("req-1", "kiosk-1", "1966-F8CF-01", nil))
	res, err := protocol.DecodePurchaseResult(raw)
	if err != nil {
		t.Fatalf("result %s: %v", raw, err)
	}
	if res.Status != protocol.ResultOK || res.RequestID != "req-1" || len(res.Indicia) != 1 {
		t.Fatalf("result %s", raw)
	}
	keys, err := verify.FetchKeys(context.Background(), "http://"+h.HTTPAddr)
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
	r, err := h.Ledger().Check(context.Background())
	if err != nil || !r.OK() || r.Indicia != 1 {
		t.Fatalf("ledger after repeats: %+v %v", r, err)
	}
}

func TestPurchaseRejections(t *testing.T) {
	h := startHub(t)
	k := connectKiosk(t, h, "kiosk-1")
	if res, _ := protocol.DecodePurchaseResult(k.ask(purchase("first", "kiosk-1", "1966-F8CF-01", nil))); res == nil || res.Status != protocol.ResultOK {
		t.Fatal("setup sale failed")
	}
	cases := []struct {
		name    string
		payload []byte
		code    protocol.Code
		id      string
	}{
		{"malformed", []byte(`{"request_id":"bad-1","oops":`), protocol.CodeMalformed, ""},
		{"unknown field keeps id", []byte(`{"request_id":"bad-2","kiosk_id":"kiosk-1","pan":"4111"}`), protocol.CodeMalformed, "bad-2"},
		{"kiosk mismatch", purchase("m-1", "kiosk-2", "1966-F8CF-02", nil), protocol.CodeKioskMismatch, "m-1"},
		{"label used", purchase("u-1", "kiosk-1", "1966-F8CF-01", nil), protocol.CodeLabelUsed, "u-1"},
		{"amount mismatch", purchase("a-1", "kiosk-1", "1966-F8CF-03", func(r *protocol.PurchaseRequest) { r.Items[0].AmountMills = 700 }), protocol.CodeAmountMismatch, "a-1"},
		{"overweight", purchase("o-1", "kiosk-1", "1966-F8CF-04", func(r *protocol.PurchaseRequest) { r.Items[0].WeightMg = 200_000 }), protocol.CodeOverweight, "o-1"},
		{"unknown class", purchase("c-1", "kiosk-1", "1966-F8CF-05", func(r *protocol.PurchaseRequest) { r.Items[0].RateClass = "9999" }), protocol.CodeRateClassUnknown, "c-1"},
		{"stale rates", purchase("s-1", "kiosk-1", "1966-F8CF-06", func(r *protocol.PurchaseRequest) { r.RateTable = "usps-2024-07-14" }), protocol.CodeRateTableStale, "s-1"},
		{"idempotency conflict", purchase("first", "kiosk-1", "1966-F8CF-07", nil), protocol.CodeIdempotencyConflict, "first"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := k.ask(c.payload)
			res, err := protocol.DecodePurchaseResult(raw)
			if err != nil {
				t.Fatalf("result %s: %v", raw, err)
			}
			if res.Status != protocol.ResultRejected || res.Error.Code != c.code || res.RequestID != c.id || res.Error.Message == "" {
				t.Fatalf("got %s, want %s for %q", raw, c.code, c.id)
			}
		})
	}
	r, err := h.Ledger().Check(context.Background())
	if err != nil || !r.OK() || r.Indicia != 1 {
		t.Fatalf("ledger after rejections: %+v %v", r, err)
	}
}

func TestCertificatesAndHealth(t *testing.T) {
	h := startHub(t)
	if err := demo.WaitHTTP(context.Background(), "http://"+h.HTTPAddr+"/healthz", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	keys, err := verify.FetchKeys(context.Background(), "http://"+h.HTTPAddr)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %v, %v", keys, err)
	}
}

// A ledger that does not add up stops the hub: it refuses to start.
func TestHubRefusesToStartOnViolation(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pa, _ := postal.New("", log)
	paSrv := httptest.NewServer(pa.Handler())
	defer paSrv.Close()
	cfg := hub.Config{DataDir: t.TempDir(), HTTPListen: "127.0.0.1:0", BrokerListen: "127.0.0.1:0", PostalURL: paSrv.URL}
	ctx := context.Background()
	h, err := hub.Open(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	k := connectKiosk(t, h, "kiosk-1")
	if res, _ := protocol.DecodePurchaseResult(k.ask(purchase("v1", "kiosk-1", "1966-F8CF-01", nil))); res == nil || res.Status != protocol.ResultOK {
		t.Fatal("sale failed")
	}
	h.Close()
	db, err := sql.Open("sqlite", filepath.Join(cfg.DataDir, "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE indicia SET postage = postage + 10`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	h, err = hub.Open(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Start(ctx); err == nil || !strings.Contains(err.Error(), "violation") {
		t.Fatalf("hub started on a broken ledger: %v", err)
	}
}

// After a key rotation new stamps carry the new certificate serial, and the
// old key stays published so stamps already sold still verify.
func TestKeyRotation(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pa, _ := postal.New("", log)
	paSrv := httptest.NewServer(pa.Handler())
	defer paSrv.Close()
	cfg := hub.Config{DataDir: t.TempDir(), HTTPListen: "127.0.0.1:0", BrokerListen: "127.0.0.1:0", PostalURL: paSrv.URL}
	ctx := context.Background()
	sell := func(id, label string) []byte {
		h, err := hub.Open(ctx, cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if err := h.Start(ctx); err != nil {
			t.Fatal(err)
		}
		res, err := protocol.DecodePurchaseResult(connectKiosk(t, h, "kiosk-1").ask(purchase(id, "kiosk-1", label, nil)))
		if err != nil || res.Status != protocol.ResultOK {
			t.Fatalf("sale %s: %v", id, err)
		}
		return res.Indicia[0].Matrix
	}
	old := sell("k1", "1966-F8CF-01")
	h, err := hub.Open(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	k, err := h.Keys().Rotate(ctx)
	h.Close()
	if err != nil || k.CertSerial != 2 {
		t.Fatalf("rotate: %+v %v", k, err)
	}
	fresh := sell("k2", "1966-F8CF-02")
	h, _ = hub.Open(ctx, cfg, log)
	defer h.Close()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := verify.FetchKeys(ctx, "http://"+h.HTTPAddr)
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
