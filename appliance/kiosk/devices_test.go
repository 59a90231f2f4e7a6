package kiosk_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/appliance/payterm"
	"github.com/frank-postage/frank/appliance/scale"
	"github.com/frank-postage/frank/appliance/scanner"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/wait"
)

// cardOrder is a sale paid on the kiosk's card terminal, on the next free
// label of the loaded stock.
func cardOrder() kiosk.Order {
	o := order("")
	o.Labels = nil
	o.Payment = protocol.Payment{Method: kiosk.PayTerminal}
	return o
}

// A card terminal whose line failed for good (the adapter unplugged) takes
// the kiosk out of service, terminal_offline, with that its last error:
// no customer weighs, chooses and pays only to be told the terminal failed.
func TestTerminalGoneTakesKioskOutOfService(t *testing.T) {
	near, far := net.Pipe()
	fh := &fakeHub{answer: vectorAnswer, devices: &kiosk.Devices{Terminal: payterm.New(near, payterm.Config{})}}
	k, _ := setupWith(t, fh, nil)
	if _, err := k.LoadStock(context.Background(), []string{"1966-F8CF"}); err != nil {
		t.Fatal(err)
	}
	if st := k.Status(); !st.InService {
		t.Fatalf("status with a live terminal: %+v", st)
	}
	far.Close()
	wait.For(t, 10*time.Second, "terminal_offline", func() bool { return slices.Contains(k.Status().Reasons, "terminal_offline") })
	if st := k.Status(); st.InService || st.LastError != "terminal_offline" {
		t.Fatalf("status with the terminal gone: %+v", st)
	}
	if tm := k.Telemetry(); tm.InService || !slices.Contains(tm.Reasons, "terminal_offline") || tm.Validate() != nil {
		t.Fatalf("telemetry with the terminal gone: %+v (%v)", tm, tm.Validate())
	}
	if _, err := k.Sell(context.Background(), cardOrder()); protocol.AsError(err).Code != protocol.CodeServiceUnavailable {
		t.Fatalf("sale with the terminal gone: %v; want service_unavailable", err)
	}
	if n := fh.requests.Load(); n != 0 {
		t.Fatalf("the hub was asked %d times", n)
	}
}

// A head scanner whose line failed for good takes the kiosk out of
// service, head_scanner_offline: otherwise every sale is bought from the
// hub and then fails label_unread.
func TestHeadScannerGoneTakesKioskOutOfService(t *testing.T) {
	head := scanner.NewHead()
	scans := make(chan scanner.Scan)
	go head.Run(scans)
	fh := &fakeHub{answer: vectorAnswer}
	k, p := setupWith(t, fh, func(c *kiosk.Config) { c.LabelCheck = head })
	if st := k.Status(); slices.Contains(st.Reasons, "head_scanner_offline") {
		t.Fatalf("status with a live head scanner: %+v", st)
	}
	close(scans) // the port vanished
	wait.For(t, 10*time.Second, "head_scanner_offline", func() bool {
		return slices.Contains(k.Status().Reasons, "head_scanner_offline")
	})
	if st := k.Status(); st.InService || st.LastError != "head_scanner_offline" {
		t.Fatalf("status with the head scanner gone: %+v", st)
	}
	if _, err := k.Sell(context.Background(), order("1966-F8CF-01")); protocol.AsError(err).Code != protocol.CodeServiceUnavailable {
		t.Fatalf("sale with the head scanner gone: %v; want service_unavailable", err)
	}
	if n := fh.requests.Load(); n != 0 || p.count() != 0 {
		t.Fatalf("the hub was asked %d times, %d printed", n, p.count())
	}
}

// The kiosk hands over to DeviceGone (cmd/kiosk exits and systemd starts
// it again, opening the ports anew) only once the sale in hand is over.
func TestDeviceGoneWaitsForTheSaleInHand(t *testing.T) {
	near, far := net.Pipe()
	charging := make(chan struct{})
	go func() {
		bufio.NewReader(far).ReadString('\n') // the sale; no answer
		close(charging)
	}()
	var k *kiosk.Kiosk
	gone := make(chan string, 1)
	stepAtGone := make(chan string, 1)
	fh := &fakeHub{answer: vectorAnswer, devices: &kiosk.Devices{Terminal: payterm.New(near, payterm.Config{})}}
	k, _ = setupWith(t, fh, func(c *kiosk.Config) {
		c.DeviceGone = func(reason string) {
			stepAtGone <- k.Progress().Step
			gone <- reason
		}
	})
	if _, err := k.LoadStock(context.Background(), []string{"1966-F8CF"}); err != nil {
		t.Fatal(err)
	}
	sold := make(chan error, 1)
	go func() {
		_, err := k.Sell(context.Background(), cardOrder())
		sold <- err
	}()
	select {
	case <-charging:
	case <-time.After(10 * time.Second):
		t.Fatal("the sale never reached the terminal")
	}
	far.Close() // unplugged while the customer is at the terminal
	select {
	case err := <-sold:
		if protocol.AsError(err).Code != protocol.CodePaymentInvalid {
			t.Fatalf("sale cut by the terminal: %v; want payment_invalid", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sale did not end with its terminal")
	}
	select {
	case why := <-gone:
		if step := <-stepAtGone; why != "terminal_offline" || step != "idle" {
			t.Fatalf("DeviceGone(%q) with the sale at %q; want terminal_offline once idle", why, step)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("DeviceGone not called")
	}
}

// fixedScale always reads the same, or fails the same way.
type fixedScale struct {
	r   scale.Reading
	err error
}

func (s fixedScale) Read(context.Context) (scale.Reading, error) { return s.r, s.err }
func (s fixedScale) Zero(context.Context) error                  { return nil }

// A serial scale reports a moving load as ErrMotion: the screen and the
// heartbeat say motion (the customer waits), not offline (staff must look).
func TestScaleInMotionIsNotOffline(t *testing.T) {
	motion := fmt.Errorf("scale: sics: read: %w", scale.ErrMotion)
	fh := &fakeHub{answer: vectorAnswer, devices: &kiosk.Devices{Scale: fixedScale{r: scale.Reading{WeightMg: 20_000}, err: motion}}}
	k, _ := setupWith(t, fh, nil)
	wait.For(t, 10*time.Second, "a reading", func() bool { return k.Weight().State != "" })
	if w := k.Weight(); w.State != "motion" || w.Stable {
		t.Fatalf("weight %+v; want motion, not stable", w)
	}
	if tm := k.Telemetry(); tm.Scale != "motion" || tm.Validate() != nil {
		t.Fatalf("telemetry scale %q (%v); want motion", tm.Scale, tm.Validate())
	}
}

// logBuf is a log the test reads while the kiosk writes it.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// calScale is a load cell the kiosk calibrates, as the HX711.
type calScale struct {
	mu  sync.Mutex
	cal scale.Calibration
}

func (s *calScale) Read(context.Context) (scale.Reading, error) {
	return scale.Reading{WeightMg: 1200, Stable: true}, nil
}

func (s *calScale) Zero(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cal.Offset = 84_000
	return nil
}

func (s *calScale) Calibrate(_ context.Context, mg int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cal.Counts, s.cal.Mg = 84_000, mg
	return nil
}

func (s *calScale) Calibration() scale.Calibration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cal
}

// Zeroing and calibrating the scale move every later price: each leaves a
// log line saying who did it, with the values before and after.
func TestScaleZeroAndCalibrationLogged(t *testing.T) {
	var logs logBuf
	fh := &fakeHub{}
	fh.link = &memLink{hub: fh.handle}
	fh.prints = make(chan protocol.PrintReport, 8)
	fh.t = t
	fh.link.push(protocol.TopicConfig, protocol.KioskConfig{KioskID: "k1", HeartbeatS: 30, Rates: prototest.Rates})
	cell := &calScale{cal: scale.Calibration{Offset: 80_000, Counts: 40_000, Mg: 1_000_000}}
	k := startKiosk(t, kiosk.Config{ID: "k1", Link: fh.link, OriginZIP: "94544", StaffBadges: []string{"STAFF-0001"}},
		&fakePrinter{}, slog.New(slog.NewTextHandler(&logs, nil)), func(k *kiosk.Kiosk) { k.UseDevices(kiosk.Devices{Scale: cell}) })
	srv := httptest.NewServer(k.Handler())
	defer srv.Close()
	st, token := staffLogin(t, srv.URL, `{"badge":"STAFF-0001"}`)
	if st != http.StatusOK || token == "" {
		t.Fatalf("staff login: %d", st)
	}
	post := func(path, body string) {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
	}
	wait.For(t, 10*time.Second, "a reading", func() bool { return k.Weight().State == "ok" })
	post("/api/v1/staff/zero", `{}`)
	post("/api/v1/staff/calibrate", `{"known_mg":2000000}`)
	for _, want := range []string{
		`level=INFO msg="staff zeroed the scale" staff=local weight_was_mg=1200 state_was=ok offset_was=80000 offset=84000`,
		`level=INFO msg="staff calibrated the scale" staff=local known_mg=2000000 offset_was=84000 counts_was=40000 mg_was=1000000 offset=84000 counts=84000 mg=2000000`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}
