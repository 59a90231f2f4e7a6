package kiosk_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/escpos"
	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/appliance/printer"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// staffLogin logs in to staff mode with body and returns the status and
// the token.
func staffLogin(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url+"/api/v1/staff/login", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Token
}

// staffLive reports whether a staff token still opens staff mode.
func staffLive(t *testing.T, url, token string) bool {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/api/v1/staff/counters", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// fakeClock is a kiosk clock that moves only when the test moves it: the
// wall clock, and the monotonic one beside it.
type fakeClock struct{ ns, mono atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Add(d time.Duration)     { c.ns.Add(int64(d)); c.mono.Add(int64(d)) }
func (c *fakeClock) Step(d time.Duration)    { c.ns.Add(int64(d)) } // the wall clock alone, as NTP sets it
func (c *fakeClock) uptime() time.Duration   { return time.Duration(c.mono.Load()) }
func (c *fakeClock) use(cfg *kiosk.Config)   { cfg.Clock = c.Now; kiosk.SetMonotonic(cfg, c.uptime) }
func (c *fakeClock) String() string          { return c.Now().UTC().Format(time.TimeOnly) }
func (c *fakeClock) since(t time.Time) int64 { return int64(c.Now().Sub(t) / time.Minute) }

// remedyKiosk is a kiosk on a fake clock, recovered, with a remedy window
// of 2 s; its hub confirms print reports and refunds.
func remedyKiosk(t *testing.T) (*fakeClock, *fakeHub, *kiosk.Kiosk, *fakePrinter) {
	t.Helper()
	clock := newFakeClock()
	fh := &fakeHub{answer: vectorAnswer, journal: openJournal(t), confirm: func(protocol.PrintReport) bool { return true }}
	k, p := setupWith(t, fh, func(c *kiosk.Config) {
		clock.use(c)
		c.RemedyWindow = 2 * time.Second // the sweep looks every half second of real time
	})
	<-k.Recovered()
	return clock, fh, k, p
}

// A label that failed to print is its customer's to remedy, by a reprint
// or a refund, for the remedy window; once that window has passed on the
// kiosk's clock with no choice made, the kiosk refunds the label and
// closes the sale. Real time passing does not count.
func TestFailedLabelRefundedAfterRemedyWindow(t *testing.T) {
	clock, fh, k, p := remedyKiosk(t)
	p.fault = &printer.FaultError{Status: escpos.Status{CutterError: true}}
	rc, err := k.Sell(context.Background(), order("1966-F8CF-01"))
	if err != nil || rc.Labels[0].Outcome != protocol.PrintFailed {
		t.Fatalf("sale: %+v %v", rc, err)
	}
	if r := fh.report(t); r.Labels[0].Outcome != protocol.PrintFailed {
		t.Fatalf("print report %+v", r)
	}
	refunded := func() bool { return len(fh.refunds) > 0 }
	wait.Never(t, 2*time.Second, "a refund while the window is open on the kiosk's clock", refunded)

	clock.Add(time.Second)
	wait.Never(t, 2*time.Second, "a refund a second before the window ends", refunded)

	clock.Add(1500 * time.Millisecond)
	wait.For(t, 10*time.Second, "the unclaimed label's refund", refunded)
	if r := <-fh.refunds; r.Label.RequestID != rc.RequestID || r.Label.LabelSerial != "1966-F8CF-01" {
		t.Fatalf("refund %+v", r)
	}
	waitClosed(t, fh.journal, 10*time.Second)
	if p.count() != 0 {
		t.Fatalf("%d labels printed", p.count())
	}
}

// A failed label whose refund the hub refuses for good (remedy_not_allowed)
// once the sale is past protocol.RemedyLimit (the kiosk was off that long)
// is closed as refused, not refunded: the shift report tells staff to
// settle it at the counter, and counts no refund money that never moved.
// Refused sooner, the hub had remedied it already (a reprint, or a refund
// at the counter): it is closed as refunded, and not left for staff to pay
// again.
func TestRefusedRefundNotCountedRefunded(t *testing.T) {
	expired := protocol.Errorf(protocol.CodeRemedyNotAllowed, "issued too long ago")
	expired.Expired = true
	for _, c := range []struct {
		name    string
		after   time.Duration // the kiosk's clock moved on after the sale
		refuse  *protocol.Error
		want    journal.LabelState
		refunds int
		refused int
		printed string
	}{
		{"past the remedy limit", protocol.RemedyLimit + time.Second, expired, journal.Refused, 0, 1, "1 refused: settle at the counter"},
		{"remedied already", 3 * time.Second, protocol.Errorf(protocol.CodeRemedyNotAllowed, "already had its refund"), journal.Refunded, 1, 0, ""},
		// The hub judges lateness, not the kiosk's clock: a Pi without a
		// real-time clock may be hours behind after a restart, or ahead.
		{"past it by the hub's clock, not the kiosk's", 3 * time.Second, expired, journal.Refused, 0, 1, "1 refused: settle at the counter"},
		{"remedied at the counter, asked late", protocol.RemedyLimit + time.Second,
			protocol.Errorf(protocol.CodeRemedyNotAllowed, "taken back at the counter"), journal.Refunded, 1, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			clock, fh, k, p := remedyKiosk(t)
			fh.refundRefuse = c.refuse
			p.fault = &printer.FaultError{Status: escpos.Status{CutterError: true}}
			rc, err := k.Sell(context.Background(), order("1966-F8CF-01"))
			if err != nil || rc.Labels[0].Outcome != protocol.PrintFailed {
				t.Fatalf("sale: %+v %v", rc, err)
			}
			fh.report(t)
			clock.Add(c.after) // past the kiosk's remedy window: its sweep asks the refund
			select {
			case <-fh.refunds:
			case <-time.After(10 * time.Second):
				t.Fatal("the unclaimed label's refund was never asked")
			}
			waitClosed(t, fh.journal, 10*time.Second)
			s, err := fh.journal.Get(context.Background(), rc.RequestID)
			if err != nil {
				t.Fatal(err)
			}
			if st := s.Labels[0].State; st != c.want {
				t.Fatalf("the journal has the label %s, want %s", st, c.want)
			}
			// The shift began at the kiosk's start, taken as now less the
			// real time since: set the wall clock back over what it moved.
			clock.Step(-c.after - time.Minute)
			shift, err := k.ShiftReport(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if shift.Refunds != c.refunds || shift.RefundsRefused != c.refused {
				t.Fatalf("shift report: %d refunds, %d refused; want %d and %d", shift.Refunds, shift.RefundsRefused, c.refunds, c.refused)
			}
			if c.printed == "" {
				return
			}
			p.fault = nil
			if _, err := k.PrintShift(context.Background(), "en", false); err != nil {
				t.Fatal(err)
			}
			p.mu.Lock()
			printed := string(p.receipts[len(p.receipts)-1])
			p.mu.Unlock()
			if !strings.Contains(printed, c.printed) {
				t.Fatalf("the printed shift report does not tell staff of the refused refund:\n%q", printed)
			}
		})
	}
}

// A wall clock stepped back (NTP correcting a fast clock) holds no refund
// of a failed label: the remedy window of a sale begun since the start runs
// on the monotonic clock. The sweep refunds once the window has passed, and
// the next sale refunds the last customer's label at once.
func TestWallClockStepHoldsNoRefund(t *testing.T) {
	clock, fh, k, p := remedyKiosk(t)
	failedSale := func() string {
		t.Helper()
		p.fault = &printer.FaultError{Status: escpos.Status{CutterError: true}}
		defer func() { p.fault = nil }()
		rc, err := k.Sell(context.Background(), order("1966-F8CF-01"))
		if err != nil || rc.Labels[0].Outcome != protocol.PrintFailed {
			t.Fatalf("sale: %+v %v", rc, err)
		}
		fh.report(t)
		wait.Until(t, 10*time.Second, "the hub's confirmation of the print report", func() error {
			s, err := fh.journal.Get(context.Background(), rc.RequestID)
			if err == nil && !s.Reported {
				err = errors.New("not recorded yet")
			}
			return err
		})
		return rc.RequestID
	}
	refunded := func(requestID string) {
		t.Helper()
		select {
		case r := <-fh.refunds:
			if r.Label.RequestID != requestID {
				t.Fatalf("refund %+v, want sale %s's", r, requestID)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("at %s, sale %s's failed label not refunded", clock, requestID)
		}
	}

	id := failedSale()
	clock.Step(-time.Hour)
	clock.Add(2500 * time.Millisecond) // the window has passed
	refunded(id)

	id = failedSale()
	clock.Step(-time.Hour)
	if _, err := k.Sell(context.Background(), order("1966-F8CF-01")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-fh.refunds:
		if r.Label.RequestID != id {
			t.Fatalf("refund %+v, want sale %s's", r, id)
		}
	default:
		t.Fatalf("the next sale began without refunding sale %s's failed label", id)
	}
}

// Staff logins and the PIN lockout run on the kiosk's clock: a login
// lasts ten minutes from its last use, and a locked-out PIN is taken again
// once the lockout has passed.
func TestStaffLoginsOnTheKiosksClock(t *testing.T) {
	clock := newFakeClock()
	k, _ := setupWith(t, &fakeHub{answer: vectorAnswer}, func(c *kiosk.Config) {
		clock.use(c)
		c.StaffPINHash = pinHash(t, "2468")
	})
	srv := httptest.NewServer(k.Handler())
	defer srv.Close()
	login := func(pin string) (int, string) { t.Helper(); return staffLogin(t, srv.URL, `{"pin":"`+pin+`"}`) }
	live := func(token string) bool { t.Helper(); return staffLive(t, srv.URL, token) }

	st, tok := login("2468")
	if st != http.StatusOK || !live(tok) {
		t.Fatalf("login: %d", st)
	}
	start := clock.Now()
	clock.Add(9 * time.Minute)
	if !live(tok) {
		t.Fatalf("at %s, %d minutes after the login: ended, want live", clock, clock.since(start))
	}
	clock.Add(9 * time.Minute) // nine minutes after its last use
	if !live(tok) {
		t.Fatalf("at %s, nine minutes after its last use: ended, want live", clock)
	}
	clock.Add(10*time.Minute + time.Second)
	if live(tok) {
		t.Fatalf("at %s, over ten minutes unused: live, want ended", clock)
	}

	for range 5 {
		if st, _ := login("0000"); st != http.StatusUnauthorized {
			t.Fatalf("wrong PIN: %d", st)
		}
	}
	if st, _ := login("2468"); st != http.StatusTooManyRequests {
		t.Fatalf("right PIN after five wrong ones: %d, want 429", st)
	}
	clock.Add(5*time.Minute - time.Second)
	if st, _ := login("2468"); st != http.StatusTooManyRequests {
		t.Fatalf("right PIN a second before the lockout ends: %d, want 429", st)
	}
	clock.Add(2 * time.Second)
	if st, tok := login("2468"); st != http.StatusOK || !live(tok) {
		t.Fatalf("right PIN after the lockout: %d", st)
	}
}

// Staff end the shift, and then the wall clock steps back 30 s (NTP pulling
// back a fast clock, or a start on a saved time): a sale then is in the new
// shift's report. It was dated before the shift's start, so it was in no
// report at all, and its takings were never counted.
func TestSaleAfterClockStepBackInTheNextShift(t *testing.T) {
	clock := newFakeClock()
	fh := &fakeHub{answer: vectorAnswer, journal: openJournal(t), confirm: func(protocol.PrintReport) bool { return true }}
	k, _ := setupWith(t, fh, func(c *kiosk.Config) { clock.use(c) })
	<-k.Recovered()
	ctx := context.Background()
	clock.Add(time.Minute)
	if _, err := k.PrintShift(ctx, "en", true); err != nil {
		t.Fatal(err)
	}
	clock.Step(-30 * time.Second)
	if _, err := k.Sell(ctx, order("1966-F8CF-01")); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Hour)
	s, err := k.ShiftReport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Sales != 1 {
		t.Fatalf("a sale after the shift ended (the clock stepped back 30 s): the new report, %s to %s, has %d sales, want 1",
			s.From.UTC().Format(time.TimeOnly), s.To.UTC().Format(time.TimeOnly), s.Sales)
	}
}

// Staff end the shift while a customer's sale waits for the hub's answer:
// the sale is counted in the ending shift or the next one. The ending
// report was read before the sale was answered, and the shift ended after
// the sale began: it was in neither report, and its takings in none.
func TestSaleInHandAtShiftEndInOneReport(t *testing.T) {
	clock := newFakeClock()
	gate := make(chan struct{})
	fh := &fakeHub{answer: func(r *protocol.PurchaseRequest) *protocol.PurchaseResult { <-gate; return vectorAnswer(r) },
		journal: openJournal(t), confirm: func(protocol.PrintReport) bool { return true }}
	k, _ := setupWith(t, fh, func(c *kiosk.Config) { clock.use(c) })
	<-k.Recovered()
	ctx := context.Background()
	clock.Add(time.Minute)
	sold := make(chan error, 1)
	go func() { _, err := k.Sell(ctx, order("1966-F8CF-01")); sold <- err }()
	wait.For(t, 5*time.Second, "the purchase sent", func() bool { return fh.requests.Load() > 0 })
	clock.Add(time.Second)
	started, ended := make(chan struct{}), make(chan *kiosk.Shift, 1)
	go func() {
		close(started)
		s, err := k.PrintShift(ctx, "en", true)
		if err != nil {
			t.Error(err)
		}
		ended <- s
	}()
	<-started
	close(gate)
	if err := <-sold; err != nil {
		t.Fatal(err)
	}
	old := <-ended
	clock.Add(time.Hour)
	next, err := k.ShiftReport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if old == nil || old.Sales+next.Sales != 1 {
		t.Fatalf("a sale in hand when the shift ended: in %+v and %+v; want it in one of them", old, next)
	}
}
