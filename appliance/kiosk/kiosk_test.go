package kiosk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/appliance/escpos"
	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/appliance/printer"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/wait"
)

// memLink is the kiosk's session with its hub, in memory: what the kiosk
// sends goes to the fake hub, and what the hub sends arrives as it would
// over MQTT, each message on a goroutine of its own.
type memLink struct {
	mu      sync.Mutex
	deliver func(suffix string, payload []byte)
	hub     func(suffix string, payload []byte)
	config  []byte // retained: delivered on every Open
	up      atomic.Bool
}

func (l *memLink) Open(deliver func(string, []byte)) {
	l.mu.Lock()
	l.deliver = deliver
	cfg := l.config
	l.mu.Unlock()
	l.up.Store(true)
	if cfg != nil {
		go deliver(protocol.TopicConfig, cfg)
	}
}

func (l *memLink) Up() bool { return l.up.Load() }

func (l *memLink) Send(suffix string, payload []byte, _ time.Duration) bool {
	if !l.up.Load() {
		return false
	}
	go l.hub(suffix, slices.Clone(payload))
	return true
}

func (l *memLink) Close() { l.up.Store(false) }

// push sends v from the hub on suffix; a config is kept, as the broker
// retains it.
func (l *memLink) push(suffix string, v any) {
	b, _ := json.Marshal(v)
	l.pushRaw(suffix, b)
}

func (l *memLink) pushRaw(suffix string, b []byte) {
	l.mu.Lock()
	if suffix == protocol.TopicConfig {
		l.config = b
	}
	deliver := l.deliver
	l.mu.Unlock()
	if deliver != nil {
		go deliver(suffix, b)
	}
}

// fakePrinter records labels, or fails with a fault.
type fakePrinter struct {
	mu       sync.Mutex
	labels   []image.Image
	receipts [][]byte // text jobs: receipts and shift reports
	fault    error
	hold     chan struct{} // if set, a print waits for it to close
}

func (p *fakePrinter) Print(img image.Image) error {
	if p.hold != nil {
		<-p.hold
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fault != nil {
		return p.fault
	}
	p.labels = append(p.labels, img)
	return nil
}

func (p *fakePrinter) PrintReceipt(job []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fault != nil {
		return p.fault
	}
	p.receipts = append(p.receipts, job)
	return nil
}

func (p *fakePrinter) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.labels)
}

// report waits for the next print report the kiosk sends.
func (fh *fakeHub) report(t *testing.T) protocol.PrintReport {
	t.Helper()
	select {
	case r := <-fh.prints:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no print report")
		return protocol.PrintReport{}
	}
}

// fakeHub answers purchases with vector results, over a memLink.
type fakeHub struct {
	link     *memLink
	requests atomic.Int32
	prints   chan protocol.PrintReport
	drop     int32 // ignore this many requests first
	// answer answers a purchase; nil leaves it unanswered.
	answer func(req *protocol.PurchaseRequest) *protocol.PurchaseResult
	// confirm, if set, confirms print reports (print/result) once it
	// returns true, and answers refunds.
	confirm func(r protocol.PrintReport) bool
	refunds chan protocol.RefundRequest
	// refundRefuse, if set, refuses every refund with it.
	refundRefuse *protocol.Error
	// beats, if set, gets the kiosk's telemetry.
	beats   chan protocol.Telemetry
	journal *journal.Journal // the kiosk's, if set
	devices *kiosk.Devices   // the kiosk's, if set
	// commands, if set, gets the kiosk's answers to commands.
	commands chan protocol.CommandResult
	// stockGate, if set, holds every stock answer until it is closed.
	stockGate chan struct{}
	// onStock, if set, sees each stock load as the hub takes it in,
	// before the gate; stockRefuse, if set, refuses every stock load.
	onStock     func(r *protocol.StockLoad)
	stockRefuse *protocol.Error
	// stockRefuseIf, if set, refuses the stock loads it returns an error for.
	stockRefuseIf func(r *protocol.StockLoad) *protocol.Error
	// staff, if set, answers staff logins; staffAsked counts them.
	staff      func(r protocol.StaffLogin) protocol.StaffLoginResult
	staffAsked atomic.Int32
	t          *testing.T
}

// handle serves what the kiosk sent on suffix.
func (fh *fakeHub) handle(suffix string, payload []byte) {
	switch suffix {
	case protocol.TopicPurchase:
		if fh.requests.Add(1) <= fh.drop {
			return
		}
		req, err := protocol.DecodePurchaseRequest(payload)
		if err != nil {
			fh.t.Errorf("kiosk sent a bad request: %v", err)
			return
		}
		if res := fh.answer(req); res != nil {
			fh.link.push(protocol.TopicPurchaseResult, res)
		}
	case protocol.TopicRefund:
		r, err := protocol.DecodeRefundRequest(payload)
		if err != nil || fh.confirm == nil {
			return
		}
		fh.refunds <- *r
		if fh.refundRefuse != nil {
			fh.link.push(protocol.TopicRefundResult, protocol.RefundResult{RequestID: r.RequestID, Status: protocol.ResultRejected, Error: fh.refundRefuse})
			return
		}
		fh.link.push(protocol.TopicRefundResult, protocol.RefundResult{RequestID: r.RequestID, Status: protocol.ResultOK, AmountMills: 780})
	case protocol.TopicStock:
		r, err := protocol.DecodeStockLoad(payload)
		if err != nil {
			return
		}
		if fh.onStock != nil {
			fh.onStock(r)
		}
		if fh.stockGate != nil {
			<-fh.stockGate
		}
		refuse := fh.stockRefuse
		if fh.stockRefuseIf != nil {
			refuse = fh.stockRefuseIf(r)
		}
		if refuse != nil {
			fh.link.push(protocol.TopicStockResult, protocol.StockResult{RequestID: r.RequestID, Status: protocol.ResultRejected, Error: refuse})
			return
		}
		res := protocol.StockResult{RequestID: r.RequestID, Status: protocol.ResultOK}
		for _, sh := range r.Sheets {
			res.Sheets = append(res.Sheets, protocol.SheetState{Sheet: sh, Free: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}})
		}
		fh.link.push(protocol.TopicStockResult, res)
	case protocol.TopicPrint:
		r, err := protocol.DecodePrintReport(payload)
		if err != nil {
			fh.t.Errorf("bad print report: %v", err)
			return
		}
		select {
		case fh.prints <- *r:
		default: // a test that does not read them
		}
		if fh.confirm != nil && fh.confirm(*r) {
			fh.link.push(protocol.TopicPrintResult, protocol.PrintResult{RequestID: r.RequestID, Status: protocol.ResultOK})
		}
	case protocol.TopicStaff:
		r, err := protocol.DecodeStaffLogin(payload)
		if err != nil {
			fh.t.Errorf("bad staff login %s: %v", payload, err)
			return
		}
		fh.staffAsked.Add(1)
		if fh.staff != nil {
			res := fh.staff(*r)
			res.RequestID = r.RequestID
			fh.link.push(protocol.TopicStaffResult, res)
		}
	case protocol.TopicCommandResult:
		r, err := protocol.DecodeCommandResult(payload)
		if err != nil {
			fh.t.Errorf("bad command result %s: %v", payload, err)
			return
		}
		if fh.commands != nil {
			fh.commands <- *r
		}
	case protocol.TopicTelemetry:
		tm, err := protocol.DecodeTelemetry(payload)
		if err != nil {
			fh.t.Errorf("bad telemetry: %v", err)
			return
		}
		if fh.beats != nil {
			fh.beats <- *tm
		}
	}
}

func setup(t *testing.T, fh *fakeHub) (*kiosk.Kiosk, *fakePrinter) {
	t.Helper()
	return setupWith(t, fh, nil)
}

// startKiosk makes a kiosk of kc, has before (if not nil) set it up, connects
// it, and waits until it is ready; it closes with the test.
func startKiosk(tb testing.TB, kc kiosk.Config, p *fakePrinter, log *slog.Logger, before func(*kiosk.Kiosk)) *kiosk.Kiosk {
	tb.Helper()
	k, err := kiosk.New(kc, p, log)
	if err != nil {
		tb.Fatal(err)
	}
	if before != nil {
		before(k)
	}
	if err := k.Connect(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(k.Close)
	wait.For(tb, 5*time.Second, "the kiosk to be ready", k.Ready)
	return k
}

func setupWith(t *testing.T, fh *fakeHub, edit func(*kiosk.Config)) (*kiosk.Kiosk, *fakePrinter) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fh.t = t
	fh.prints = make(chan protocol.PrintReport, 64)
	fh.refunds = make(chan protocol.RefundRequest, 16)
	fh.link = &memLink{hub: fh.handle}
	fh.link.push(protocol.TopicConfig, protocol.KioskConfig{KioskID: "k1", HeartbeatS: 30, Rates: prototest.Rates})

	p := &fakePrinter{}
	kc := kiosk.Config{ID: "k1", Link: fh.link, OriginZIP: "94544", ResendEvery: 200 * time.Millisecond, Deadline: 5 * time.Second}
	if edit != nil {
		edit(&kc)
	}
	k := startKiosk(t, kc, p, log, func(k *kiosk.Kiosk) {
		if fh.journal != nil {
			k.UseJournal(fh.journal)
		}
		if fh.devices != nil {
			k.UseDevices(*fh.devices)
		}
	})
	if fh.journal != nil && fh.stockGate == nil {
		// With a journal the kiosk sells only once the hub has answered
		// for its stock (checking_stock until then).
		wait.For(t, 10*time.Second, "the kiosk to have checked its stock", func() bool {
			select {
			case <-k.Recovered():
				return true
			default:
				return false
			}
		})
	}
	return k, p
}

// vectorAnswer returns the signed vector indicium for label 1966-F8CF-01.
func vectorAnswer(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
	v := prototest.Indicia[0]
	return &protocol.PurchaseResult{RequestID: req.RequestID, Status: protocol.ResultOK, Indicia: []protocol.IssuedIndicium{{
		MeterNumber: "FR2N50000061", RateClass: "1100", AmountMills: 780, LabelSerial: "1966-F8CF-01", Matrix: v.Bytes()}}}
}

func order(label string) kiosk.Order {
	return kiosk.Order{RateClass: "1100", WeightMg: 20_000, Labels: []string{label},
		Payment: protocol.Payment{Method: protocol.PayCardToken, Token: "tok"}}
}

// The touchscreen can follow a sale: which label prints, then idle.
func TestProgress(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer}
	k, p := setup(t, fh)
	p.hold = make(chan struct{})
	if got := k.Progress(); got.Step != "idle" {
		t.Fatalf("before a sale: %+v", got)
	}
	done := make(chan error, 1)
	go func() {
		_, err := k.Sell(context.Background(), order("1966-F8CF-01"))
		done <- err
	}()
	want := kiosk.Progress{Step: "printing", Label: 1, Of: 1}
	wait.For(t, 10*time.Second, fmt.Sprintf("progress %+v", want), func() bool { return k.Progress() == want })
	close(p.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := k.Progress(); got.Step != "idle" {
		t.Fatalf("after the sale: %+v", got)
	}
}

func TestResendsUntilAnswered(t *testing.T) {
	fh := &fakeHub{drop: 2, answer: vectorAnswer}
	k, p := setup(t, fh)
	rc, err := k.Sell(context.Background(), order("1966-F8CF-01"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Status != protocol.ResultOK || len(rc.Labels) != 1 || rc.Labels[0].Outcome != protocol.Printed || rc.Total != 780 {
		t.Fatalf("receipt %+v", rc)
	}
	if n := fh.requests.Load(); n < 3 {
		t.Fatalf("%d requests sent, want at least 3", n)
	}
	if p.count() != 1 {
		t.Fatalf("%d labels printed, want exactly 1", p.count())
	}
	r := fh.report(t)
	if r.RequestID != rc.RequestID || r.Labels[0].Outcome != protocol.Printed {
		t.Fatalf("print report %+v", r)
	}
}

// A kiosk never prints an indicium made for another label, even one the
// hub's answer files under the label asked for.
func TestRefusesIndiciumForAnotherLabel(t *testing.T) {
	fh := &fakeHub{answer: func(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
		res := vectorAnswer(req) // signed for 1966-F8CF-01
		res.Indicia[0].LabelSerial = req.Items[0].LabelSerial
		return res
	}}
	k, p := setup(t, fh)
	rc, err := k.Sell(context.Background(), order("0000-0001-05"))
	if err != nil {
		t.Fatal(err)
	}
	if p.count() != 0 || rc.Labels[0].Outcome != protocol.PrintFailed || rc.Total != 0 {
		t.Fatalf("printed a foreign indicium: %+v", rc)
	}
	if r := fh.report(t); r.Labels[0].Outcome != protocol.PrintFailed {
		t.Fatalf("print report %+v", r)
	}
}

// A hub answer whose stamps do not pair one to one with the labels asked
// (by label serial) is one the kiosk cannot use: nothing prints, the
// customer gets service_unavailable, and the settler reports each label
// failed and refunds it, as for a hub that did not answer.
func TestUnpairedStampsPrintNothing(t *testing.T) {
	two := []string{"1966-F8CF-01", "1966-F8CF-02"}
	for _, tc := range []struct {
		name   string
		labels []string
		answer func(*protocol.PurchaseRequest) *protocol.PurchaseResult
	}{
		{"a stamp too many", two[:1], func(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
			res := vectorAnswer(req)
			res.Indicia = append(res.Indicia, res.Indicia[0])
			res.Indicia[1].LabelSerial = "1966-F8CF-02"
			return res
		}},
		{"a stamp too few", two, vectorAnswer},
		{"a stamp twice", two, func(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
			res := vectorAnswer(req)
			res.Indicia = append(res.Indicia, res.Indicia[0])
			return res
		}},
		{"a stamp for another label", []string{"1966-F8CF-03"}, vectorAnswer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fh := &fakeHub{answer: tc.answer, journal: openJournal(t), confirm: func(protocol.PrintReport) bool { return true }}
			k, p := setupWith(t, fh, nil)
			o := order("")
			o.Labels = tc.labels
			rc, err := k.Sell(context.Background(), o)
			if protocol.AsError(err).Code != protocol.CodeServiceUnavailable || p.count() != 0 {
				t.Fatalf("Sell = %+v, %v, %d printed; want service_unavailable and nothing printed", rc, err, p.count())
			}
			if st := k.Status(); st.LastError != "hub_bad_answer" {
				t.Errorf("last_error %q, want hub_bad_answer", st.LastError)
			}
			refunded := map[string]bool{}
			for range tc.labels {
				select {
				case r := <-fh.refunds:
					refunded[r.Label.LabelSerial] = true
				case <-time.After(15 * time.Second):
					t.Fatalf("refunded %v of %v", refunded, tc.labels)
				}
			}
			for _, l := range tc.labels {
				if !refunded[l] {
					t.Errorf("label %s not refunded: %v", l, refunded)
				}
			}
			waitClosed(t, fh.journal, 15*time.Second)
			if p.count() != 0 {
				t.Fatalf("%d labels printed", p.count())
			}
		})
	}
}

func TestPrinterFaultIsReported(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer}
	k, p := setup(t, fh)
	p.fault = &printer.FaultError{Status: escpos.Status{CutterError: true}}
	rc, err := k.Sell(context.Background(), order("1966-F8CF-01"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Labels[0].Outcome != protocol.PrintFailed || rc.Labels[0].Reason != "jam" {
		t.Fatalf("receipt %+v", rc)
	}
	if r := fh.report(t); r.Labels[0].Reason != "jam" {
		t.Fatalf("print report %+v", r)
	}
}

func TestRejectionPassesThrough(t *testing.T) {
	fh := &fakeHub{answer: func(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
		return protocol.Rejected(req.RequestID, protocol.Errorf(protocol.CodeLabelUsed, "used"))
	}}
	k, p := setup(t, fh)
	rc, err := k.Sell(context.Background(), order("1966-F8CF-01"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Status != protocol.ResultRejected || rc.Error.Code != protocol.CodeLabelUsed || p.count() != 0 {
		t.Fatalf("receipt %+v", rc)
	}
}

func TestLocalPriceChecks(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer}
	k, _ := setup(t, fh)
	o := order("1966-F8CF-01")
	o.WeightMg = 200_000
	if _, err := k.Sell(context.Background(), o); protocol.AsError(err).Code != protocol.CodeOverweight {
		t.Fatalf("err = %v", err)
	}
	if fh.requests.Load() != 0 {
		t.Fatal("an overweight letter reached the hub")
	}
}

// Telemetry comes at the period the hub's config sets, and a new period
// applies without a restart.
func TestHeartbeatFollowsConfig(t *testing.T) {
	beats := make(chan protocol.Telemetry, 8)
	fh := &fakeHub{answer: vectorAnswer, beats: beats}
	setup(t, fh) // config says 30 s
	fh.link.push(protocol.TopicConfig, protocol.KioskConfig{KioskID: "k1", HeartbeatS: 1, Rates: prototest.Rates})
	var got []protocol.Telemetry
	deadline := time.After(10 * time.Second)
	for len(got) < 3 {
		select {
		case tm := <-beats:
			got = append(got, tm)
		case <-deadline:
			t.Fatalf("%d heartbeats in 10 s", len(got))
		}
	}
	// Not faster than the period: each heartbeat waits the period out
	// after the one before, so however loaded the machine, they are 1 s
	// apart at least (less a margin for the wall clock At is read from).
	// Not slower either, as far as a test can tell without a clock to
	// move: three came before the deadline, where 30 s would give none.
	if gap := got[2].At.Sub(got[1].At); gap < 900*time.Millisecond {
		t.Fatalf("heartbeats %v apart, want 1 s", gap)
	}
	// No stock is loaded, so the kiosk says it is not in service.
	if got[2].KioskID != "k1" || got[2].InService || got[2].LabelsLeft != 0 || got[2].UptimeS < 1 {
		t.Fatalf("telemetry %+v", got[2])
	}
}

// postSale posts an order to the local API and returns the status and
// the error it answered, if any.
func postSale(t *testing.T, url, body string) (int, *protocol.Error) {
	t.Helper()
	resp, err := http.Post(url+"/api/v1/sales", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Error *protocol.Error }
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Error
}

// Bad orders at the local API are invalid_request, and nothing reaches
// the hub or the printer: a quantity or weight out of range, trailing
// data, a key given twice.
func TestAPIInputRules(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer}
	k, p := setup(t, fh)
	srv := httptest.NewServer(k.Handler())
	defer srv.Close()
	const good = `{"rate_class":"1100","weight_mg":20000,"labels":["1966-F8CF-01"],"payment":{"method":"card_token","token":"tok"}}`
	for name, body := range map[string]string{
		"zero quantity":      `{"rate_class":"1100","weight_mg":20000,"quantity":0,"payment":{"method":"card_token","token":"tok"}}`,
		"negative quantity":  `{"rate_class":"1100","weight_mg":20000,"quantity":-3,"payment":{"method":"card_token","token":"tok"}}`,
		"absurd quantity":    `{"rate_class":"1100","weight_mg":20000,"quantity":1000000,"payment":{"method":"card_token","token":"tok"}}`,
		"over the limit":     `{"rate_class":"1100","weight_mg":20000,"quantity":11,"payment":{"method":"card_token","token":"tok"}}`,
		"negative weight":    `{"rate_class":"1100","weight_mg":-20000,"labels":["1966-F8CF-01"],"payment":{"method":"card_token","token":"tok"}}`,
		"absurd weight":      `{"rate_class":"1100","weight_mg":9223372036854775807,"labels":["1966-F8CF-01"],"payment":{"method":"card_token","token":"tok"}}`,
		"trailing object":    good + `{}`,
		"trailing garbage":   good + `x`,
		"duplicate key":      `{"rate_class":"1100","weight_mg":20000,"weight_mg":1,"labels":["1966-F8CF-01"],"payment":{"method":"card_token","token":"tok"}}`,
		"duplicate key case": `{"rate_class":"1100","weight_mg":20000,"labels":["1966-F8CF-01"],"payment":{"method":"card_token","token":"tok","TOKEN":"other"}}`,
	} {
		if st, e := postSale(t, srv.URL, body); st != http.StatusBadRequest || e == nil || e.Code != protocol.CodeInvalidRequest {
			t.Errorf("%s: %d %+v, want 400 invalid_request", name, st, e)
		}
	}
	// A card number given as the token (track data, or wrapped) is
	// refused before the journal, which would keep it.
	for name, body := range map[string]string{
		"track data":        `{"rate_class":"1100","weight_mg":20000,"labels":["1966-F8CF-01"],"payment":{"method":"card_token","token":";4111111111111111=2512101?"}}`,
		"wrapped":           `{"rate_class":"1100","weight_mg":20000,"labels":["1966-F8CF-01"],"payment":{"method":"card_token","token":"tok_4111111111111111"}}`,
		"number as a brand": `{"rate_class":"1100","weight_mg":20000,"labels":["1966-F8CF-01"],"payment":{"method":"card_token","token":"tok","brand":"4111 1111 1111 1111"}}`,
	} {
		if st, e := postSale(t, srv.URL, body); st != http.StatusPaymentRequired || e == nil || e.Code != protocol.CodePaymentInvalid {
			t.Errorf("%s: %d %+v, want 402 payment_invalid", name, st, e)
		}
	}
	for _, q := range []string{"0", "-1", "99999999999"} {
		resp, err := http.Get(srv.URL + "/api/v1/prices?weight_mg=" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("prices at %s mg: %d", q, resp.StatusCode)
		}
	}
	if n := fh.requests.Load(); n != 0 || p.count() != 0 {
		t.Fatalf("%d requests reached the hub and %d labels printed", n, p.count())
	}
}

// Wrong staff PINs are limited: after five, even the right PIN waits.
func TestStaffPINLimit(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer}
	k, _ := setupWith(t, fh, func(c *kiosk.Config) { c.StaffPINHash = pinHash(t, "2468") })
	srv := httptest.NewServer(k.Handler())
	defer srv.Close()
	login := func(pin string) int {
		resp, err := http.Post(srv.URL+"/api/v1/staff/login", "application/json", strings.NewReader(`{"pin":"`+pin+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := login("2468"); st != http.StatusOK {
		t.Fatalf("right PIN: %d", st)
	}
	for i := range 5 {
		if st := login(fmt.Sprintf("%04d", i)); st != http.StatusUnauthorized {
			t.Fatalf("wrong PIN %d: %d", i, st)
		}
	}
	if st := login("2468"); st != http.StatusTooManyRequests {
		t.Fatalf("right PIN after five wrong ones: %d, want 429", st)
	}
}

func pinHash(t *testing.T, pin string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pin), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func openJournal(t *testing.T) *journal.Journal {
	t.Helper()
	j, err := journal.Open(t.TempDir() + "/journal.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// waitClosed waits until the journal holds no unfinished sale.
func waitClosed(t *testing.T, j *journal.Journal, d time.Duration) {
	t.Helper()
	wait.Until(t, d, "the journal to close its sales", func() error {
		open, err := j.Unfinished(context.Background())
		if err == nil && len(open) > 0 {
			err = fmt.Errorf("%d open sales", len(open))
		}
		return err
	})
}

// A print report the hub does not confirm (the broker lost it, or no hub
// was subscribed) is sent again until it is; only then is the sale closed.
func TestPrintReportResentUntilConfirmed(t *testing.T) {
	var seen atomic.Int32
	fh := &fakeHub{answer: vectorAnswer, journal: openJournal(t),
		confirm: func(protocol.PrintReport) bool { return seen.Add(1) > 2 }}
	k, p := setup(t, fh)
	rc, err := k.Sell(context.Background(), order("1966-F8CF-01"))
	if err != nil || rc.Status != protocol.ResultOK || p.count() != 1 {
		t.Fatalf("sale: %+v %v", rc, err)
	}
	waitClosed(t, fh.journal, 30*time.Second) // three sends, a resend period apart, on a loaded machine
	if n := seen.Load(); n < 3 {
		t.Fatalf("the report was sent %d times; the hub ignored the first two", n)
	}
	for range seen.Load() {
		if r := fh.report(t); r.RequestID != rc.RequestID || r.Labels[0].Outcome != protocol.Printed {
			t.Fatalf("report %+v", r)
		}
	}
}

// A sale the hub does not answer before the deadline, or answers
// outcome_unknown (a commit it could not confirm as it stopped, or another
// hub still serving the request), is not forgotten: its labels stay out of
// the next sale, the kiosk keeps asking, and when the hub answers that it
// did sell, nothing prints (the customer has gone) and every label is
// reported failed and refunded.
func TestUnansweredSaleSettled(t *testing.T) {
	t.Run("silent", func(t *testing.T) { testUnansweredSaleSettled(t, nil) })
	t.Run("outcome unknown", func(t *testing.T) {
		testUnansweredSaleSettled(t, func(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
			return protocol.Rejected(req.RequestID, protocol.Errorf(protocol.CodeOutcomeUnknown, "the sale's outcome is not known yet"))
		})
	})
}

func testUnansweredSaleSettled(t *testing.T, undecided func(*protocol.PurchaseRequest) *protocol.PurchaseResult) {
	var first atomic.Value // the first request id
	var answerFirst atomic.Bool
	var labelsAsked sync.Map // request id -> labels
	var asked atomic.Int32   // times the first request came
	fh := &fakeHub{journal: openJournal(t), confirm: func(protocol.PrintReport) bool { return true }}
	fh.answer = func(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
		labelsAsked.Store(req.RequestID, req.Items[0].LabelSerial)
		first.CompareAndSwap(nil, req.RequestID)
		if req.RequestID == first.Load() {
			asked.Add(1)
			if !answerFirst.Load() {
				if undecided != nil {
					return undecided(req)
				}
				return nil // the hub is silent
			}
			return vectorAnswer(req)
		}
		return protocol.Rejected(req.RequestID, protocol.Errorf(protocol.CodePaymentDeclined, "declined"))
	}
	k, p := setupWith(t, fh, func(c *kiosk.Config) { c.Deadline = time.Second })
	if _, err := k.LoadStock(context.Background(), []string{"1966-F8CF"}); err != nil {
		t.Fatal(err)
	}
	o := order("")
	o.Labels = nil
	_, err := k.Sell(context.Background(), o)
	if protocol.AsError(err).Code != protocol.CodeServiceUnavailable {
		t.Fatalf("first sale: %v, want service_unavailable", err)
	}
	rc, err := k.Sell(context.Background(), o)
	if err != nil || rc.Status != protocol.ResultRejected {
		t.Fatalf("second sale: %+v %v", rc, err)
	}
	l1, _ := labelsAsked.Load(first.Load())
	l2, _ := labelsAsked.Load(rc.RequestID)
	if l1 != "1966-F8CF-01" || l2 != "1966-F8CF-02" {
		t.Fatalf("labels %v then %v: the second sale must pass over the first's, whose fate is unknown", l1, l2)
	}
	n := asked.Load()
	wait.For(t, 10*time.Second, "the kiosk to ask again about the first sale", func() bool { return asked.Load() > n })
	if open, err := fh.journal.Unfinished(context.Background()); err != nil || len(open) != 1 || open[0].RequestID != first.Load() {
		t.Fatalf("open sales %+v %v: the first sale must stay open until the hub's answer is final", open, err)
	}
	answerFirst.Store(true)
	waitClosed(t, fh.journal, 15*time.Second)
	var report *protocol.PrintReport
	for report == nil {
		r := fh.report(t)
		if r.RequestID == first.Load() {
			report = &r
		}
	}
	if len(report.Labels) != 1 || report.Labels[0].LabelSerial != "1966-F8CF-01" || report.Labels[0].Outcome != protocol.PrintFailed || report.Labels[0].Reason != "no_answer" {
		t.Fatalf("report of the late sale: %+v", report)
	}
	select {
	case r := <-fh.refunds:
		if r.Label.RequestID != first.Load() || r.Label.LabelSerial != "1966-F8CF-01" {
			t.Fatalf("refund %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the late sale was not refunded")
	}
	if p.count() != 0 {
		t.Fatalf("%d labels printed for a customer who was told the sale failed", p.count())
	}
}

// A kiosk whose certificate expired while it was off says so on its
// status, which the screen shows out of service: only a new enrollment
// code brings it back.
func TestExpiredCertificateIsAReason(t *testing.T) {
	expired := true
	k, _ := setupWith(t, &fakeHub{answer: vectorAnswer}, func(c *kiosk.Config) {
		c.CertExpired = func() bool { return expired }
	})
	if st := k.Status(); !slices.Contains(st.Reasons, "certificate_expired") {
		t.Fatalf("status with an expired certificate: %+v", st)
	}
	expired = false
	if st := k.Status(); slices.Contains(st.Reasons, "certificate_expired") {
		t.Fatalf("status with a good certificate: %+v", st)
	}
}

// headScanner is the label a fake head scanner reads under the print head.
type headScanner struct {
	mu    sync.Mutex
	under string
}

func (h *headScanner) UnderHead(context.Context) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.under == "" {
		return "", errors.New("nothing read")
	}
	return h.under, nil
}

// With a head scanner, a stamp prints only on the label it was signed for:
// another label under the head fails the label (the hub voids it and the
// customer gets the remedy) and stops sales until staff reload the stock.
func TestLabelUnderHeadChecked(t *testing.T) {
	head := &headScanner{under: "1966-F8CF-01"}
	fh := &fakeHub{answer: vectorAnswer}
	k, p := setupWith(t, fh, func(c *kiosk.Config) { c.LabelCheck = head })
	rc, err := k.Sell(context.Background(), order("1966-F8CF-01"))
	if err != nil || rc.Labels[0].Outcome != protocol.Printed || p.count() != 1 {
		t.Fatalf("the right label: %+v %v, %d printed", rc, err, p.count())
	}
	fh.report(t)
	head.mu.Lock()
	head.under = "1966-F8CF-07" // the sheet went in the wrong way round
	head.mu.Unlock()
	rc, err = k.Sell(context.Background(), order("1966-F8CF-01")) // the fake hub signs -01 each time
	if err != nil || rc.Labels[0].Outcome != protocol.PrintFailed || rc.Labels[0].Reason != "wrong_label" || p.count() != 1 {
		t.Fatalf("the wrong label under the head: %+v %v, %d printed", rc, err, p.count())
	}
	if r := fh.report(t); r.Labels[0].Outcome != protocol.PrintFailed || r.Labels[0].Reason != "wrong_label" {
		t.Fatalf("print report %+v", r)
	}
	if st := k.Status(); st.InService || !slices.Contains(st.Reasons, "wrong_stock") {
		t.Fatalf("status after the wrong label: %+v", st)
	}
	if _, err := k.Sell(context.Background(), order("1966-F8CF-01")); protocol.AsError(err).Code != protocol.CodeServiceUnavailable {
		t.Fatalf("sold with the wrong stock in: %v", err)
	}
	// Staff load the sheet again: sales may start.
	if _, err := k.LoadStock(context.Background(), []string{"1966-F8CF"}); err != nil {
		t.Fatal(err)
	}
	if st := k.Status(); slices.Contains(st.Reasons, "wrong_stock") {
		t.Fatalf("status after reloading: %+v", st)
	}
}

// A sale recorded reported but left open (the journal write that closes it
// failed when the confirmation came) is closed by the settler, not left
// holding its label.
func TestReportedSaleLeftOpenIsClosed(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer, journal: openJournal(t)}
	k, _ := setup(t, fh)
	<-k.Recovered()
	ctx := context.Background()
	j := fh.journal
	if err := j.Begin(ctx, "left-open", []byte(`{}`), []string{"1966-F8CF-01"}); err != nil {
		t.Fatal(err)
	}
	steps := []error{
		j.Answer(ctx, "left-open", []byte(`{"request_id":"left-open","status":"ok"}`)),
		j.SetLabel(ctx, "left-open", "1966-F8CF-01", journal.Printed, ""),
		j.Reported(ctx, "left-open"),
	}
	if err := errors.Join(steps...); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, j, 10*time.Second)
}

// A config from a newer hub, with a field this kiosk does not know, is
// taken: kiosks are updated after their hub (protocol README,
// Compatibility).
func TestConfigFromNewerHubAccepted(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer}
	k, _ := setup(t, fh)
	rates := prototest.Rates
	rates.Version = "usps-next"
	cfg, _ := json.Marshal(protocol.KioskConfig{KioskID: "k1", HeartbeatS: 30, Rates: rates})
	fh.link.pushRaw(protocol.TopicConfig, append([]byte(`{"screen_language":"es","idle_timeout_s":90,`), cfg[1:]...))
	wait.For(t, 5*time.Second, "the newer config's rates", func() bool { return k.Rates().Version == "usps-next" })
}

// A sale settled after its customer left (the hub answered late), reported,
// whose refund was cut short, is refunded and closed by the next round of
// the settler, not after the remedy window.
func TestSettledSaleRefundResumed(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer, journal: openJournal(t), confirm: func(protocol.PrintReport) bool { return true }}
	k, _ := setup(t, fh)
	<-k.Recovered()
	ctx := context.Background()
	j := fh.journal
	res, _ := json.Marshal(vectorAnswer(&protocol.PurchaseRequest{RequestID: "late"}))
	steps := []error{
		j.Begin(ctx, "late", []byte(`{}`), []string{"1966-F8CF-01"}),
		j.Answer(ctx, "late", res),
		j.SetLabel(ctx, "late", "1966-F8CF-01", journal.Failed, "no_answer"),
		j.Reported(ctx, "late"),
	}
	if err := errors.Join(steps...); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, j, 10*time.Second)
	select {
	case r := <-fh.refunds:
		if r.Label.RequestID != "late" || r.Label.LabelSerial != "1966-F8CF-01" {
			t.Fatalf("refund %+v", r)
		}
	default:
		t.Fatal("closed without the refund")
	}
}

// The local API answers a refusal with protocol's status for its code, as
// the hub's APIs do: a declined card is 402 here too, and a locked kiosk's
// staff login 423, each in the one error shape.
func TestAPIStatusesAreProtocols(t *testing.T) {
	fh := &fakeHub{answer: func(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
		return protocol.Rejected(req.RequestID, protocol.Errorf(protocol.CodePaymentDeclined, "declined"))
	}}
	k, _ := setup(t, fh)
	srv := httptest.NewServer(k.Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/api/v1/sales", "application/json",
		strings.NewReader(`{"rate_class":"1100","weight_mg":20000,"labels":["1966-F8CF-01"],"payment":{"method":"card_token","token":"tok"}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if pe := protocol.DecodeHTTPError(b); resp.StatusCode != http.StatusPaymentRequired || pe == nil || pe.Code != protocol.CodePaymentDeclined {
		t.Fatalf("a declined sale: %d %s, want 402 payment_declined", resp.StatusCode, b)
	}
	resp, err = http.Post(srv.URL+"/api/v1/staff/login", "application/json", strings.NewReader(`{"pin":"0000"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), `{"error":{"code":"unauthorized"`) || resp.StatusCode != protocol.CodeUnauthorized.HTTPStatus() {
		t.Fatalf("a wrong PIN: %d %s", resp.StatusCode, b)
	}
}

// Loading label stock is staff's: only POST /api/v1/staff/stock with a
// staff login loads sheets; the touchscreen's /api/v1/stock only counts.
func TestStockLoadNeedsStaffLogin(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer}
	k, _ := setupWith(t, fh, func(c *kiosk.Config) { c.StaffBadges = []string{"STAFF-0001"} })
	srv := httptest.NewServer(k.Handler())
	defer srv.Close()
	load := func(path, token string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(`{"sheets":["1966-F8CF"]}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := load("/api/v1/stock", ""); st != http.StatusMethodNotAllowed || k.LabelsLeft() != 0 {
		t.Fatalf("POST /api/v1/stock: %d, %d labels loaded", st, k.LabelsLeft())
	}
	if st := load("/api/v1/staff/stock", ""); st != http.StatusUnauthorized || k.LabelsLeft() != 0 {
		t.Fatalf("staff stock without a login: %d, %d labels loaded", st, k.LabelsLeft())
	}
	_, token := staffLogin(t, srv.URL, `{"badge":"STAFF-0001"}`)
	if st := load("/api/v1/staff/stock", token); st != http.StatusOK || k.LabelsLeft() != 10 {
		t.Fatalf("staff stock with a login: %d, %d labels loaded", st, k.LabelsLeft())
	}
	resp, err := http.Get(srv.URL + "/api/v1/stock")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"labels_left":10`) {
		t.Fatalf("GET /api/v1/stock: %d %s", resp.StatusCode, b)
	}
}

// The touchscreen's watchdog asks whether the screen polled lately: stale
// until the page's first poll, live after it, stale again once it stops
// polling for longer than asked, by the kiosk's uptime: a step of the wall
// clock neither has a hung page live for an hour nor a live one restarted.
func TestScreenWatchdogEndpoint(t *testing.T) {
	clock := newFakeClock()
	k, _ := setupWith(t, &fakeHub{answer: vectorAnswer}, func(c *kiosk.Config) { clock.use(c) })
	srv := httptest.NewServer(k.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Screen string }
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.Screen
	}
	if _, s := get("/api/v1/screen?within=120"); s != "stale" {
		t.Fatalf("before the page polled: %q, want stale", s)
	}
	get("/api/v1/status") // a tool, not the screen
	if _, s := get("/api/v1/screen?within=120"); s != "stale" {
		t.Fatalf("after a poll without screen=1: %q, want stale", s)
	}
	get("/api/v1/status?screen=1")
	clock.Add(100 * time.Second)
	clock.Step(time.Hour) // NTP sets a slow clock
	if _, s := get("/api/v1/screen?within=120"); s != "live" {
		t.Fatalf("100 s after the page polled, the wall clock stepped an hour on: %q, want live", s)
	}
	if _, s := get("/api/v1/screen"); s != "stale" {
		t.Fatalf("100 s after, within the default 60 s: %q, want stale", s)
	}
	clock.Add(30 * time.Second)
	clock.Step(-2 * time.Hour)
	if _, s := get("/api/v1/screen?within=120"); s != "stale" {
		t.Fatalf("130 s after the page polled, the wall clock stepped back: %q, want stale", s)
	}
	for _, q := range []string{"0", "-5", "x", "100000"} {
		if st, _ := get("/api/v1/screen?within=" + q); st != http.StatusBadRequest {
			t.Errorf("within=%s: %d, want 400", q, st)
		}
	}
}

// A kiosk that starts with sheets in its journal does not know their free
// labels until the hub has answered for them: its heartbeats say so
// (labels_unknown) rather than count none, so the hub raises no labels_low
// for a kiosk that is only starting; once reloaded, it reports its count
// at once.
func TestLabelsUnknownUntilStockReloaded(t *testing.T) {
	j := openJournal(t)
	if err := j.AddSheets(context.Background(), []string{"1966-F8CF"}); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	fh := &fakeHub{answer: vectorAnswer, journal: j, stockGate: gate, beats: make(chan protocol.Telemetry, 64)}
	k, _ := setup(t, fh)
	if tm := k.Telemetry(); !tm.LabelsUnknown || tm.LabelsLeft != 0 {
		t.Fatalf("before the hub answered for the stock: labels_unknown %v, labels_left %d", tm.LabelsUnknown, tm.LabelsLeft)
	}
	// The screen says it is getting ready, not that it is out of labels.
	if r := k.Status().Reasons; !slices.Contains(r, "checking_stock") || slices.Contains(r, "out_of_labels") {
		t.Fatalf("before the hub answered for the stock the kiosk says %v, want checking_stock and not out_of_labels", r)
	}
	close(gate)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case tm := <-fh.beats:
			if tm.LabelsUnknown {
				continue
			}
			if tm.LabelsLeft != 10 {
				t.Fatalf("the first heartbeat with labels known counts %d, want the sheet's 10", tm.LabelsLeft)
			}
			if r := k.Status().Reasons; slices.Contains(r, "checking_stock") {
				t.Fatalf("with its stock known the kiosk still says %v", r)
			}
			return
		case <-deadline:
			t.Fatal("no heartbeat with the labels known after the stock was reloaded")
		}
	}
}

// A reprint or refund is only for a label that failed to print: one the
// kiosk printed is refused here, never sent to the hub (which would void a
// stamp the customer holds and pay it back), and stays printed in the
// journal. A label that failed still gets its refund.
func TestRemedyRefusedForPrintedLabel(t *testing.T) {
	var reprints atomic.Int32
	fh := &fakeHub{journal: openJournal(t), confirm: func(protocol.PrintReport) bool { return false }} // the sales stay open
	fh.answer = func(req *protocol.PurchaseRequest) *protocol.PurchaseResult {
		if req.ReprintOf != nil {
			reprints.Add(1)
		}
		return vectorAnswer(req)
	}
	k, p := setup(t, fh)
	ctx := context.Background()
	printed, err := k.Sell(ctx, order("1966-F8CF-01"))
	if err != nil || printed.Labels[0].Outcome != protocol.Printed {
		t.Fatalf("sale: %+v %v", printed, err)
	}
	if _, err := k.LoadStock(ctx, []string{"1966-F8CF"}); err != nil { // labels for a reprint
		t.Fatal(err)
	}
	refused := func(what string, err error) {
		t.Helper()
		if pe := (*protocol.Error)(nil); !errors.As(err, &pe) || pe.Code != protocol.CodeRemedyNotAllowed {
			t.Errorf("%s of a printed label: %v, want %s", what, err, protocol.CodeRemedyNotAllowed)
		}
	}
	_, err = k.Refund(ctx, printed.RequestID, "1966-F8CF-01")
	refused("refund", err)
	_, err = k.Reprint(ctx, printed.RequestID, "1966-F8CF-01")
	refused("reprint", err)
	if n := len(fh.refunds); n != 0 {
		t.Errorf("%d refunds sent to the hub", n)
	}
	if n := reprints.Load(); n != 0 {
		t.Errorf("%d reprints asked of the hub; %d labels printed", n, p.count())
	}
	labelState := func(requestID string) journal.LabelState {
		t.Helper()
		s, err := fh.journal.Get(ctx, requestID)
		if err != nil {
			t.Fatal(err)
		}
		return s.Labels[0].State
	}
	if st := labelState(printed.RequestID); st != journal.Printed {
		t.Fatalf("the journal has the label %s after the refusals, want printed", st)
	}

	p.fault = &printer.FaultError{Status: escpos.Status{CutterError: true}}
	failed, err := k.Sell(ctx, order("1966-F8CF-01"))
	if err != nil || failed.Labels[0].Outcome != protocol.PrintFailed {
		t.Fatalf("sale: %+v %v", failed, err)
	}
	if res, err := k.Refund(ctx, failed.RequestID, "1966-F8CF-01"); err != nil || res.Status != protocol.ResultOK {
		t.Fatalf("refund of a failed label: %+v %v", res, err)
	}
	if st := labelState(failed.RequestID); st != journal.Refunded {
		t.Fatalf("the journal has the failed label %s after its refund, want refunded", st)
	}
}
