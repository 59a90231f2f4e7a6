package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/reports"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/wait"
)

// The hub files each ended period's report by itself: no command typed.
// A refused report raises report_refused, one still not accepted hours
// after its period raises report_late, and both clear once the authority
// accepts it on a later try.
func TestScheduledReports(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) {
		c.Reports.Every, c.ReportTick = time.Hour, 10*time.Millisecond
	})
	ctx := context.Background()
	if res := decode(t, e.kiosk("kiosk-1").ask(purchase("sched-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	start := e.clock.Now()
	if n := len(e.pa.Reports()); n != 0 {
		t.Fatalf("%d reports before the period ended", n)
	}
	// The period ends, and its grace minute passes.
	end := start.Truncate(time.Hour).Add(time.Hour)
	e.clock.Set(end.Add(2 * time.Minute))
	wait.For(t, 10*time.Second, "scheduled report", func() bool { return len(e.pa.Reports()) == 1 })
	f := e.pa.Reports()[0]
	if f.Indicia != 1 || !f.To.Equal(end) || f.Licence != postal.DemoLicence {
		t.Fatalf("filed %+v, want 1 indicium up to %s", f, end)
	}

	// The authority now refuses (the licence it holds changed): alerts.
	if err := e.pa.IssueLicence("FR", "PVS-00000-0000"); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(end.Add(time.Hour + 2*time.Minute))
	subject := "report/" + end.UTC().Format(time.RFC3339)
	open := func(kind string) bool {
		as, err := e.h.Alerts().List(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.Kind == kind && a.Subject == subject {
				return true
			}
		}
		return false
	}
	wait.For(t, 10*time.Second, "report_refused alert", func() bool { return open(alerts.ReportRefused) })
	if open(alerts.ReportLate) {
		t.Fatal("late two minutes after its period")
	}
	e.clock.Set(end.Add(8 * time.Hour))
	wait.For(t, 10*time.Second, "report_late alert", func() bool { return open(alerts.ReportLate) })

	// Fixed: the next try, after its backoff, is accepted and clears both;
	// the periods since are sent in order.
	if err := e.pa.IssueLicence("FR", postal.DemoLicence); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(end.Add(10 * time.Hour))
	wait.For(t, 10*time.Second, "the reports since", func() bool { return len(e.pa.Reports()) == 10 })
	wait.For(t, 10*time.Second, "alerts cleared", func() bool { return !open(alerts.ReportRefused) && !open(alerts.ReportLate) })
	prev := e.pa.Reports()[0].To
	for _, f := range e.pa.Reports()[1:] {
		if !f.From.Equal(prev) || f.To.Sub(f.From) != time.Hour {
			t.Fatalf("periods not contiguous: %+v after %s", f, prev)
		}
		prev = f.To
	}
	e.check()
}

// A report names each indicium's buyer (a kiosk and its store, or a web
// customer's account) and carries the period's status and security
// events; the authority checks both, and refuses a report without them.
func TestReportNamesBuyersAndEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	from := e.clock.Now().Add(-time.Minute)
	if res := decode(t, e.kiosk("kiosk-1").ask(purchase("buyer-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("kiosk sale: %+v", res.Error)
	}
	e.customer("wendy", "10.00")
	sheet := e.webSheet()
	acct, _ := e.h.Accounts().ByLogin(ctx, "wendy")
	sh, _ := protocol.ParseSheetSerial(sheet)
	if err := e.h.Stock().AssignToAccount(ctx, sh, acct.ID); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`<server.bp_RequestWebStampParams><LoginID>wendy</LoginID><Amount>780</Amount><RateClass>1100</RateClass>`+
		`<FIM>0</FIM><SerialNumber>%s</SerialNumber></server.bp_RequestWebStampParams>`, sheet)
	if st, b := postWebStamp(t, e, "wendy", "buyer-web-1", body); st != http.StatusOK {
		t.Fatalf("web stamp: %d %s", st, b)
	}
	if _, err := e.h.Keys().Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.RetireKiosk(ctx, "kiosk-2", "stolen from the counter", true); err != nil {
		t.Fatal(err)
	}
	e.h.Alerts().Raise(ctx, alerts.Tamper, "psd/7", "PSD 7 locked: control code mismatch") // as the ledger raises it
	to := e.clock.Now().Add(time.Minute)
	e.clock.Set(to) // the period has ended
	rep, err := e.h.Ledger().BuildReport(ctx, from, to)
	if err != nil {
		t.Fatal(err)
	}
	var kiosk, web bool
	for _, x := range rep.Transactions {
		kiosk = kiosk || x.Buyer == hubpostal.Buyer{Channel: "kiosk", Kiosk: "kiosk-1", Store: "store-a"}
		web = web || x.Buyer == hubpostal.Buyer{Channel: "web", Account: acct.ID}
	}
	if !kiosk || !web {
		t.Fatalf("buyers %+v", rep.Transactions)
	}
	kinds := map[string]string{}
	for _, ev := range rep.Events {
		kinds[ev.Kind] = ev.Subject
	}
	for kind, subject := range map[string]string{hubpostal.EventKioskLost: "kiosk/kiosk-2", hubpostal.EventPSDLocked: "psd/7",
		hubpostal.EventKeyActivated: "key/2", hubpostal.EventKeyRetired: "key/1"} {
		if kinds[kind] != subject {
			t.Errorf("event %s: subject %q, want %q (all %+v)", kind, kinds[kind], subject, rep.Events)
		}
	}
	// The authority refuses a report whose buyer or event it cannot place.
	bad := *rep
	bad.ReportID += "-anon"
	bad.Transactions = slices.Clone(rep.Transactions)
	bad.Transactions[0].Buyer = hubpostal.Buyer{}
	if _, err := e.h.Postal().SubmitReport(ctx, &bad); err == nil || !strings.Contains(err.Error(), "buyer") {
		t.Fatalf("anonymous buyer: %v", err)
	}
	bad = *rep
	bad.ReportID += "-event"
	bad.Events = append(slices.Clone(rep.Events), hubpostal.Event{Kind: "meteor_strike", Subject: "psd/1", At: from})
	if _, err := e.h.Postal().SubmitReport(ctx, &bad); err == nil || !strings.Contains(err.Error(), "event") {
		t.Fatalf("unknown event: %v", err)
	}
	if _, err := e.h.Ledger().SubmitReport(ctx, rep, e.h.Postal()); err != nil {
		t.Fatal(err)
	}
	e.check()
}

// A stamp handed back at the counter after its period was reported is
// claimed back in the next report, once; one voided within its period in
// that period's, once. (Reports listed claims by sale time, so the first
// was claimed in none: the customer got the postage back, the vendor never
// did.) The period reported, built again, is the report sent.
func TestLateRefundClaimedInNextReport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	if res := decode(t, k.ask(purchase("lv-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	e.failLabel(k, "lv-2", "1966-F8CF-02")
	day := e.clock.Now().Truncate(24 * time.Hour)
	d1, d2, d3 := day.Add(24*time.Hour), day.Add(48*time.Hour), day.Add(72*time.Hour)
	from, err := e.h.Ledger().ReportedUntil(ctx)
	if err != nil {
		t.Fatal(err)
	}
	labels := func(r *hubpostal.Report) []string {
		var out []string
		for _, x := range r.Voided {
			out = append(out, x.Label)
		}
		return out
	}
	file := func(from, to time.Time) *hubpostal.Report {
		t.Helper()
		e.clock.Set(to.Add(time.Minute))
		rep, err := e.h.Ledger().BuildReport(ctx, from, to)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.h.Ledger().SubmitReport(ctx, rep, e.h.Postal()); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if got := labels(file(from, d1)); !slices.Equal(got, []string{"1966-F8CF-02"}) {
		t.Fatalf("day 1 claims %v, want the jammed label's", got)
	}
	// The next day the customer hands the first stamp in at the counter.
	e.clock.Set(d1.Add(10 * time.Hour))
	label, _ := protocol.ParseLabelSerial("1966-F8CF-01")
	if _, err := e.h.Ledger().RefundUnused(ctx, "kiosk-1", "lv-1", label, time.Time{}, "sue", "wrong class"); err != nil {
		t.Fatal(err)
	}
	again, err := e.h.Ledger().BuildReport(ctx, from, d1)
	if err != nil {
		t.Fatal(err)
	}
	var sent []byte
	if err := e.openDB().QueryRowContext(ctx, `SELECT body FROM reports WHERE state = 'accepted'`).Scan(&sent); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(again); !bytes.Equal(b, sent) {
		t.Fatalf("day 1 built again differs from the report sent:\n%s\n%s", b, sent)
	}
	if got := labels(file(d1, d2)); !slices.Equal(got, []string{"1966-F8CF-01"}) {
		t.Fatalf("day 2 claims %v, want the refunded stamp's", got)
	}
	if got := labels(file(d2, d3)); len(got) != 0 {
		t.Fatalf("day 3 claims %v, want none", got)
	}
	// The authority holds each claim once; it refuses one made twice.
	var held []string
	for _, f := range e.pa.Reports() {
		held = append(held, f.Claims...)
	}
	if len(held) != 2 || held[0] == held[1] {
		t.Fatalf("the authority holds claims %v, want two", held)
	}
	e.check()
}

// A report sent by hand for a span of periods whose answer never came
// stays pending; the scheduler sends it again as it was before any period
// of its own, which would overlap it and be refused at every tick.
func TestSchedulerResendsAPendingHandReport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	l := e.h.Ledger()
	start, err := l.ReportedUntil(ctx)
	if err != nil {
		t.Fatal(err)
	}
	from := start.Truncate(time.Hour).Add(time.Hour)
	e.clock.Set(from.Add(3 * time.Hour))
	r0, err := l.BuildReport(ctx, start, from)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.SubmitReport(ctx, r0, e.h.Postal()); err != nil {
		t.Fatal(err)
	}
	if until := tickAfterALostAnswer(t, e, from, from.Add(2*time.Hour)); !until.Equal(from.Add(2 * time.Hour)) {
		t.Fatalf("reported until %s; want the hand report's end, %s", until, from.Add(2*time.Hour))
	}
}

// tickAfterALostAnswer sends the report of [from, to) by hand (hub report
// --from --to), loses the authority's answer, runs the scheduler once and
// returns where the accepted reports reach.
func tickAfterALostAnswer(t *testing.T, e *env, from, to time.Time) time.Time {
	t.Helper()
	ctx := context.Background()
	l := e.h.Ledger()
	hand, err := l.BuildReport(ctx, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.SubmitReport(ctx, hand, lostAnswer{e.h.Postal()}); err == nil {
		t.Fatal("a lost answer was taken for acceptance")
	}
	rep := reports.New(reports.Config{Every: time.Hour, Holder: "h", Now: e.clock.Now}, l, e.h.Postal(), always{}, e.h.Alerts(), quietLog())
	if err := rep.Tick(ctx, time.Minute); err != nil {
		t.Fatalf("the scheduler behind a pending hand report: %v", err)
	}
	until, err := l.ReportedUntil(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return until
}

// lostAnswer delivers a report and loses the authority's answer.
type lostAnswer struct{ pa ledger.Submitter }

func (l lostAnswer) SubmitReport(ctx context.Context, r *hubpostal.Report) (string, error) {
	l.pa.SubmitReport(ctx, r)
	return "", errors.New("connection reset: the answer was lost")
}

// always gives the reporter its job lease.
type always struct{}

func (always) TryLease(context.Context, string, string, time.Time, time.Duration) (bool, error) {
	return true, nil
}

// The first report, sent by hand from before the GPSD was made (which a
// first report may), whose answer was lost: the scheduler sends it again,
// not a period of its own from the GPSD's making, which overlaps it.
func TestSchedulerResendsAPendingFirstReport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	l := e.h.Ledger()
	created, err := l.ReportedUntil(ctx)
	if err != nil {
		t.Fatal(err)
	}
	from := created.Truncate(time.Hour)
	to := from.Add(3 * time.Hour)
	e.clock.Set(to.Add(3 * time.Hour))
	if until := tickAfterALostAnswer(t, e, from, to); until.Before(to) {
		t.Fatalf("reported until %s; want from %s", until, to)
	}
}
