package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/printersim"
	"github.com/frank-postage/frank/testbench/verify"
	"github.com/frank-postage/frank/testbench/wait"
)

type receipt struct {
	RequestID string          `json:"request_id"`
	Status    string          `json:"status"`
	Error     *protocol.Error `json:"error"`
	Total     protocol.Mills  `json:"total_mills"`
	Labels    []struct {
		LabelSerial string `json:"label_serial"`
		Outcome     string `json:"outcome"`
		Reason      string `json:"reason"`
	} `json:"labels"`
}

func sell(t *testing.T, d *demo.Demo, order map[string]any) (int, receipt) {
	t.Helper()
	status, body, err := d.Sell(context.Background(), order)
	if err != nil {
		t.Fatal(err)
	}
	var rc receipt
	if err := json.Unmarshal(body, &rc); err != nil {
		t.Fatalf("%d %s", status, body)
	}
	if rc.Error == nil && status != http.StatusOK {
		var e struct{ Error *protocol.Error }
		json.Unmarshal(body, &e)
		rc.Error = e.Error
	}
	return status, rc
}

func card(token string) protocol.Payment {
	return protocol.Payment{Method: protocol.PayCardToken, Token: token}
}

// mqttKiosk is a second, bare testbench kiosk on the real broker.
func mqttKiosk(t *testing.T, b bare) (mqtt.Client, chan []byte) {
	t.Helper()
	id := b.id
	answers := make(chan []byte, 8)
	c := mqtt.NewClient(b.options())
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	tok := c.Subscribe(protocol.KioskTopic(id, protocol.TopicPurchaseResult), 1, func(_ mqtt.Client, m mqtt.Message) { answers <- m.Payload() })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return c, answers
}

func password(t *testing.T, out string) string {
	t.Helper()
	_, pw, ok := strings.Cut(out, "broker password: ")
	if !ok {
		t.Fatalf("no password in %q", out)
	}
	pw, _, _ = strings.Cut(pw, "\n") // the enrollment code follows
	return strings.TrimSpace(pw)
}

// The purchase service end to end, through the real hub and kiosk binaries,
// the embedded broker, the card gateway and the printer emulator. After
// every scenario the ledger adds up, and at the end the money does: what
// customers paid, less refunds, is the postage of the stamps that printed.
func TestPurchaseServiceEndToEnd(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := demo.Start(ctx, demo.Config{BinDir: binDir, Dir: dir, KioskID: "store1-k1", Store: "store1", Sheets: 4, Output: output(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	keys, err := verify.FetchKeys(ctx, d.HubURL(), d.Client())
	if err != nil {
		t.Fatal(err)
	}
	hubCmd := func(args ...string) string {
		out, err := d.Hub(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	t.Run("three-stamp sale", func(t *testing.T) {
		before := len(d.Printer().Labels())
		status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "quantity": 3, "payment": card("tok_approve")})
		if status != http.StatusOK || len(rc.Labels) != 3 || rc.Total != 3*780 {
			t.Fatalf("%d %+v", status, rc)
		}
		printed := d.Printer().Labels()
		if len(printed)-before != 3 {
			t.Fatalf("%d labels came out, want 3", len(printed)-before)
		}
		for _, p := range printed[before:] {
			if _, err := keys.Verify(readBoth(t, p)); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
		}
	})

	t.Run("declined card moves nothing", func(t *testing.T) {
		before, printed := d.Cards().Totals(), len(d.Printer().Labels())
		status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_decline")})
		if status == http.StatusOK || rc.Error == nil || rc.Error.Code != protocol.CodePaymentDeclined {
			t.Fatalf("%d %+v", status, rc)
		}
		if after := d.Cards().Totals(); after != before || len(d.Printer().Labels()) != printed {
			t.Fatalf("money or labels moved: %+v -> %+v", before, after)
		}
	})

	t.Run("reused label is refused and raises a fraud alert", func(t *testing.T) {
		used := d.Sheets()[0] + "-01"
		status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "labels": []string{used}, "payment": card("tok_approve")})
		if status == http.StatusOK || rc.Error == nil || rc.Error.Code != protocol.CodeLabelUsed {
			t.Fatalf("%d %+v", status, rc)
		}
		var as []alerts.Alert
		if err := json.Unmarshal([]byte(hubCmd("alerts", "list", "--open")), &as); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, a := range as {
			found = found || a.Kind == alerts.Fraud && a.Subject == "label/"+used
		}
		if !found {
			t.Fatalf("no fraud alert for %s in %+v", used, as)
		}
	})

	t.Run("jam after the indicium: void and reprint, one stamp charged", func(t *testing.T) {
		before := d.Cards().Totals()
		d.Printer().FailNext(printersim.Jam)
		status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")})
		if status != http.StatusOK || len(rc.Labels) != 1 || rc.Labels[0].Outcome != protocol.PrintFailed || rc.Labels[0].Reason != "jam" {
			t.Fatalf("%d %+v", status, rc)
		}
		jammed := rc.Labels[0].LabelSerial
		d.Printer().SetFault(printersim.OK) // staff clear the jam
		next := d.Printer().Next()
		st, body, err := d.Post(ctx, d.KioskURL()+"/api/v1/sales/"+rc.RequestID+"/reprint", map[string]string{"label": jammed})
		if err != nil || st != http.StatusOK {
			t.Fatalf("reprint: %d %s %v", st, body, err)
		}
		var re receipt
		json.Unmarshal(body, &re)
		if len(re.Labels) != 1 || re.Labels[0].Outcome != protocol.Printed || re.Labels[0].LabelSerial == jammed {
			t.Fatalf("reprint %+v", re)
		}
		in, err := keys.Verify(readBoth(t, <-next))
		if err != nil || in.Postage != 780 || in.Label.String() != re.Labels[0].LabelSerial {
			t.Fatalf("reprinted stamp %+v %v", in, err)
		}
		wait.Until(t, 10*time.Second, "one capture, which follows the answer", func() error {
			if after := d.Cards().Totals(); after.Captured-before.Captured != 780 || after.Refunded != before.Refunded {
				return fmt.Errorf("charged %d for a jammed stamp and its reprint", after.Captured-before.Captured)
			}
			return nil
		})
		// A second remedy for the same label is refused.
		st, body, _ = d.Post(ctx, d.KioskURL()+"/api/v1/sales/"+rc.RequestID+"/refund", map[string]string{"label": jammed})
		if st == http.StatusOK || !bytes.Contains(body, []byte(protocol.CodeRemedyNotAllowed)) {
			t.Fatalf("second remedy: %d %s", st, body)
		}
	})

	t.Run("paper out: refund", func(t *testing.T) {
		before := d.Cards().Totals()
		d.Printer().FailNext(printersim.PaperOut)
		d.Scale().SetWeight(5_000) // a postcard
		defer d.Scale().SetWeight(20_000)
		_, rc := sell(t, d, map[string]any{"rate_class": "1200", "weight_mg": 5_000, "payment": card("tok_approve")})
		if len(rc.Labels) != 1 || rc.Labels[0].Reason != "paper_out" {
			t.Fatalf("%+v", rc)
		}
		d.Printer().SetFault(printersim.OK)
		st, body, err := d.Post(ctx, d.KioskURL()+"/api/v1/sales/"+rc.RequestID+"/refund", map[string]string{"label": rc.Labels[0].LabelSerial})
		if err != nil || st != http.StatusOK || !bytes.Contains(body, []byte(`"amount_mills":610`)) {
			t.Fatalf("refund: %d %s %v", st, body, err)
		}
		if after := d.Cards().Totals(); after.Captured-before.Captured != 610 || after.Refunded-before.Refunded != 610 {
			t.Fatalf("gateway %+v -> %+v", before, after)
		}
	})

	// A bare testbench kiosk on the real broker, for what the kiosk
	// firmware would never send.
	k2 := provisionBare(t, d, "store1-k2", "store1", nil)
	sheet := strings.Fields(hubCmd("stock", "issue", "--store", "store1", "--sheets", "1"))[0]
	hubCmd("stock", "load", "--kiosk", "store1-k2", sheet)
	c, answers := mqttKiosk(t, k2)
	ask := func(payload []byte) *protocol.PurchaseResult {
		t.Helper()
		c.Publish(protocol.KioskTopic("store1-k2", protocol.TopicPurchase), 1, false, payload)
		select {
		case raw := <-answers:
			res, err := protocol.DecodePurchaseResult(raw)
			if err != nil {
				t.Fatal(err)
			}
			return res
		case <-time.After(15 * time.Second):
			t.Fatal("no answer")
			return nil
		}
	}
	req := func(id, label string, edit func(*protocol.PurchaseRequest)) []byte {
		var r protocol.PurchaseRequest
		json.Unmarshal([]byte(prototest.GoodPurchase), &r)
		r.RequestID, r.KioskID, r.Items[0].LabelSerial = id, "store1-k2", label
		if edit != nil {
			edit(&r)
		}
		b, _ := json.Marshal(r)
		return b
	}

	t.Run("stale rate table", func(t *testing.T) {
		res := ask(req("stale-1", sheet+"-01", func(r *protocol.PurchaseRequest) { r.RateTable = "usps-2024-07-14" }))
		if res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodeRateTableStale {
			t.Fatalf("%+v", res)
		}
	})

	t.Run("same request three times: one sale, identical results", func(t *testing.T) {
		before := d.Cards().Totals()
		payload := req("thrice-1", sheet+"-02", nil)
		var first []byte
		for i := range 3 {
			res := ask(payload)
			b, _ := json.Marshal(res)
			if res.Status != protocol.ResultOK {
				t.Fatalf("send %d: %+v", i, res)
			}
			if i == 0 {
				first = b
			} else if !bytes.Equal(b, first) {
				t.Fatalf("send %d differs", i)
			}
		}
		wait.Until(t, 10*time.Second, "one capture, which follows the answer", func() error {
			if after := d.Cards().Totals(); after.Captured-before.Captured != 780 {
				return fmt.Errorf("three sends charged %d", after.Captured-before.Captured)
			}
			return nil
		})
		// The bare kiosk prints nothing; it reports the label printed.
		rep, _ := json.Marshal(protocol.PrintReport{RequestID: "thrice-1", KioskID: "store1-k2",
			Labels: []protocol.LabelOutcome{{LabelSerial: sheet + "-02", Outcome: protocol.Printed}}})
		c.Publish(protocol.KioskTopic("store1-k2", protocol.TopicPrint), 1, false, rep).Wait()
	})

	t.Run("kiosk A cannot subscribe to kiosk B's results", func(t *testing.T) {
		filter := protocol.KioskTopic("store1-k1", protocol.TopicPurchaseResult)
		tok := c.Subscribe(filter, 1, func(mqtt.Client, mqtt.Message) { t.Error("got another kiosk's result") })
		tok.WaitTimeout(5 * time.Second)
		if qos := tok.(*mqtt.SubscribeToken).Result()[filter]; qos != 0x80 {
			t.Fatalf("subscription granted (%#x)", qos)
		}
	})

	t.Run("the patent's XML example", func(t *testing.T) {
		// TestPrint is a web customer with the patent's sheet 1966-F8CF.
		out, err := d.HubWithEnv([]string{"FRANK_ACCOUNT_PASSWORD=correct horse battery"}, "account", "add", "TestPrint", "--zip", "20187")
		if err != nil {
			t.Fatal(err, out)
		}
		hubCmd("stock", "import", "--store", "web", "1966-F8CF")
		hubCmd("stock", "assign", "--account", "TestPrint", "1966-F8CF")
		post := func(body string) (int, []byte) {
			r, _ := http.NewRequest(http.MethodPost, d.HubURL()+"/api/v1/webstamp", strings.NewReader(body))
			r.SetBasicAuth("TestPrint", "correct horse battery")
			r.Header.Set("Content-Type", "application/xml")
			r.Header.Set("Idempotency-Key", protocol.NewRequestID())
			resp, err := d.Client().Do(r)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, b
		}
		// Verbatim: $0.33 is not a price today, so a clear XML error.
		st, b := post(prototest.PatentWebStampRequest)
		var xe protocol.XMLError
		if err := xml.Unmarshal(b, &xe); err != nil || st == http.StatusOK || xe.Code != protocol.CodeAmountMismatch {
			t.Fatalf("patent example verbatim: %d %s", st, b)
		}
		// With today's price: still refused, for the patent's card fails the Luhn check.
		st, b = post(strings.Replace(prototest.PatentWebStampRequest, "<Amount>330</Amount>", "<Amount>780</Amount>", 1))
		if err := xml.Unmarshal(b, &xe); err != nil || xe.Code != protocol.CodePaymentInvalid {
			t.Fatalf("patent card: %d %s", st, b)
		}
		// With today's price and a good test card: an <Indicium> that verifies.
		good := strings.NewReplacer("<Amount>330</Amount>", "<Amount>780</Amount>",
			"<CCNumber>0000111122223333</CCNumber>", "<CCNumber>4242424242424242</CCNumber>",
			"<CCExp>0401</CCExp>", "<CCExp>1230</CCExp>").Replace(prototest.PatentWebStampRequest)
		st, b = post(good)
		x, err := protocol.DecodeXMLIndicium(b)
		if err != nil || st != http.StatusOK {
			t.Fatalf("%d %s %v", st, b, err)
		}
		in, err := keys.Verify(x.Matrix)
		if err != nil || in.Postage != 780 || in.Label.String() != "1966-F8CF-01" || in.OriginZIP != 20187 || x.MeterNumber != in.MeterNumber() {
			t.Fatalf("indicium %+v %v", in, err)
		}
		// Unauthenticated: refused.
		resp, err := d.Client().Post(d.HubURL()+"/api/v1/webstamp", "application/xml", strings.NewReader(good))
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("no credentials: %v %v", resp.Status, err)
		}
		resp.Body.Close()
		// The web customer prints the stamp on the sheet at home.
		db, err := store.Open(ctx, filepath.Join(dir, "hub", "hub.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		db.ExecContext(ctx, `UPDATE indicia SET state = 'printed' WHERE label = '1966-F8CF-01'`)
	})

	d.Close()
	out, err := osexec.Command(filepath.Join(binDir, "hub"), "ledger", "check", "--data", filepath.Join(dir, "hub"), "--log", "text").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ledger ok") {
		t.Fatalf("hub ledger check: %v\n%s", err, out)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "hub", "hub.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var printed int64
	if err := db.QueryRow(`SELECT COALESCE(SUM(postage), 0) FROM indicia WHERE state = 'printed'`).Scan(&printed); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the captures, which follow the answers", func() error {
		if tot := d.Cards().Totals(); tot.Captured-tot.Refunded != printed || tot.Open != 0 {
			return fmt.Errorf("customers paid %d - %d refunded, stamps printed %d, %d authorizations open", tot.Captured, tot.Refunded, printed, tot.Open)
		}
		return nil
	})
	tot := d.Cards().Totals()
	t.Logf("captured %d, refunded %d, printed postage %d", tot.Captured, tot.Refunded, printed)
}

// A customer who walks away from a label that failed to print does not pay
// for it: once the remedy window passes, the kiosk refunds it, and the
// hub's books and the card gateway agree.
func TestUnclaimedFailedLabelIsRefunded(t *testing.T) {
	ctx := context.Background()
	d := startDemo(t, demo.Config{KioskArgs: []string{"--remedy-window", "1s"}})
	before := d.Cards().Totals()
	d.Printer().FailAfter(1, printersim.Jam) // the second label jams
	status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "quantity": 2, "payment": card("tok_approve")})
	if status != http.StatusOK || len(rc.Labels) != 2 || rc.Labels[0].Outcome != protocol.Printed || rc.Labels[1].Outcome != protocol.PrintFailed {
		t.Fatalf("%d %+v", status, rc)
	}
	d.Printer().SetFault(printersim.OK)
	// Nobody taps Reprint or Refund.
	wait.Until(t, 20*time.Second, "the failed label refunded", func() error {
		if after := d.Cards().Totals(); after.Captured-before.Captured != 1_560 || after.Refunded-before.Refunded != 780 {
			return fmt.Errorf("the gateway moved %+v, then %+v", before, after)
		}
		return nil
	})
	// The customer coming back too late is told it is refunded, and
	// nothing moves a second time.
	st, body, err := d.Post(ctx, d.KioskURL()+"/api/v1/sales/"+rc.RequestID+"/refund", map[string]string{"label": rc.Labels[1].LabelSerial})
	if err != nil || st != http.StatusOK || !strings.Contains(string(body), `"amount_mills":780`) {
		t.Fatalf("a late refund: %d %s %v", st, body, err)
	}
	if after := d.Cards().Totals(); after.Refunded-before.Refunded != 780 {
		t.Fatalf("refunded %d in all, want 780", after.Refunded-before.Refunded)
	}
	ledgerOK(t, d)
}

// The next sale means the customer before has left: their unclaimed
// failed label is refunded before the new customer pays.
func TestNextSaleRefundsUnclaimedLabel(t *testing.T) {
	d := startDemo(t, demo.Config{KioskArgs: []string{"--remedy-window", "1h"}})
	before := d.Cards().Totals()
	d.Printer().FailNext(printersim.PaperOut)
	if status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")}); status != http.StatusOK || rc.Labels[0].Outcome != protocol.PrintFailed {
		t.Fatalf("%d %+v", status, rc)
	}
	d.Printer().SetFault(printersim.OK) // staff load paper
	wait.Never(t, 500*time.Millisecond, "refunded within the window", func() bool { return d.Cards().Totals().Refunded != before.Refunded })
	if status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")}); status != http.StatusOK || rc.Labels[0].Outcome != protocol.Printed {
		t.Fatalf("%d %+v", status, rc)
	}
	wait.For(t, 10*time.Second, "both captures, which follow the answers", func() bool { return d.Cards().Totals().Captured-before.Captured >= 1_560 })
	if after := d.Cards().Totals(); after.Captured-before.Captured != 1_560 || after.Refunded-before.Refunded != 780 {
		t.Fatalf("gateway %+v, then %+v: want 1560 captured and the failed 780 refunded", before, after)
	}
	ledgerOK(t, d)
}

// A free reprint that fails too is refunded from the sale that was paid,
// once: the customer gets back what they paid for the stamp.
func TestFailedReprintIsRefunded(t *testing.T) {
	ctx := context.Background()
	d := startDemo(t, demo.Config{})
	before := d.Cards().Totals()
	d.Printer().FailNext(printersim.Jam)
	status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")})
	if status != http.StatusOK || rc.Labels[0].Outcome != protocol.PrintFailed {
		t.Fatalf("%d %+v", status, rc)
	}
	d.Printer().SetFault(printersim.OK)
	d.Printer().FailNext(printersim.Jam)
	var re receipt
	st, body, err := d.Post(ctx, d.KioskURL()+"/api/v1/sales/"+rc.RequestID+"/reprint", map[string]string{"label": rc.Labels[0].LabelSerial})
	if err != nil || st != http.StatusOK || json.Unmarshal(body, &re) != nil || len(re.Labels) != 1 || re.Labels[0].Outcome != protocol.PrintFailed {
		t.Fatalf("reprint: %d %s %v", st, body, err)
	}
	d.Printer().SetFault(printersim.OK)
	st, body, err = d.Post(ctx, d.KioskURL()+"/api/v1/sales/"+re.RequestID+"/refund", map[string]string{"label": re.Labels[0].LabelSerial})
	if err != nil || st != http.StatusOK {
		t.Fatalf("refund of the failed reprint: %d %s %v", st, body, err)
	}
	if after := d.Cards().Totals(); after.Captured-before.Captured != 780 || after.Refunded-before.Refunded != 780 {
		t.Fatalf("gateway %+v, then %+v: want 780 captured and 780 refunded", before, after)
	}
	ledgerOK(t, d)
}

// startDemo starts the whole system with cfg's extras, for one test.
func startDemo(t *testing.T, cfg demo.Config) *demo.Demo {
	t.Helper()
	cfg.BinDir, cfg.Output = binDir, output(t)
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	d, err := demo.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// ledgerOK runs `hub ledger check` on the demo's ledger.
func ledgerOK(t *testing.T, d *demo.Demo) {
	t.Helper()
	if out, err := d.Hub("ledger", "check"); err != nil || !strings.Contains(out, "ledger ok") {
		t.Fatalf("hub ledger check: %v\n%s", err, out)
	}
}
