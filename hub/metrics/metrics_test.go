package metrics

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
)

type fakeFunds struct {
	psds   []ledger.PSDView
	err    error
	halted string
}

func (f *fakeFunds) Halted() string { return f.halted }

func (f *fakeFunds) PSDs(ctx context.Context) ([]ledger.PSDView, error) {
	if _, ok := ctx.Deadline(); !ok {
		return nil, errors.New("no deadline on the scrape-time call")
	}
	return f.psds, f.err
}

type fakePresence []fleet.KioskState

func (f fakePresence) List() []fleet.KioskState { return f }

type fakeAlerts struct {
	open []alerts.Alert
	err  error
}

func (f *fakeAlerts) List(ctx context.Context, openOnly bool) ([]alerts.Alert, error) {
	if !openOnly {
		return nil, errors.New("asked for acknowledged alerts too")
	}
	return f.open, f.err
}

type fakeWorkers []psdm.Status

func (f fakeWorkers) Status() []psdm.Status { return f }

// clock is a fake time.Now, safe for the scrape's goroutines.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func psd(serial uint32, kind string, ar, dr protocol.Mills, locked string, controlOK bool) ledger.PSDView {
	return ledger.PSDView{PSD: ledger.PSD{Serial: serial, Kind: kind, AR: ar, DR: dr, Locked: locked}, ControlOK: controlOK}
}

func allSources() Sources {
	return Sources{
		Funds: &fakeFunds{psds: []ledger.PSDView{
			psd(ledger.GPSDSerial, ledger.KindGPSD, 40_000_000, 9_500_000, "", true),
			psd(50_000_001, ledger.KindMPSD, 120_000, 80_000, "", true),
			psd(50_000_002, ledger.KindMPSD, 5_000, 1_000, "", false),      // control code broken
			psd(50_000_003, ledger.KindMPSD, 7_000, 3_000, "tamper", true), // locked
		}},
		Presence: fakePresence{
			{ID: "k1", Online: true, Telemetry: &protocol.Telemetry{KioskID: "k1", LabelsLeft: 7, Paper: "out", Printer: "paper_out"}},
			{ID: "k2", Online: false},
			{ID: "k3", Online: true, Telemetry: &protocol.Telemetry{KioskID: "k3", LabelsLeft: 30, Paper: "ok", Printer: "ok", InService: true}},
		},
		Alerts: &fakeAlerts{open: []alerts.Alert{
			{Kind: alerts.Tamper}, {Kind: alerts.Tamper}, {Kind: alerts.KioskOffline}, {Kind: "something_new"},
		}},
		Workers: fakeWorkers{
			{Worker: 0, Load: 2, InFlight: 3, Total: 1200},
			{Worker: 1, Load: 1, InFlight: 0, Total: 800, SignErrors: 4},
		},
		Log: slog.New(slog.DiscardHandler),
	}
}

// scrape fetches the handler's text exposition and parses it as
// Prometheus would.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s\n%s", res.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse scrape: %v\n%s", err, body)
	}
	return fams
}

// find returns the series of name whose labels include labels
// ("k=v" pairs), or nil.
func find(fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == k && l.GetValue() == v }) {
				continue next
			}
		}
		return m
	}
	return nil
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m := find(fams, name, labels...)
	switch {
	case m == nil:
		t.Fatalf("%s%v not exposed", name, labels)
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	t.Fatalf("%s%v is not a counter or gauge", name, labels)
	return 0
}

func TestScrape(t *testing.T) {
	m := New(allSources())
	m.Sale()
	m.Sold("first_class", 730)
	m.Sold("first_class", 730)
	m.Sale()
	m.Sold("priority", 9_650)
	m.Answered(ChannelKiosk, 20*time.Millisecond, "")
	m.Answered(ChannelKiosk, 3*time.Second, protocol.CodePaymentDeclined)
	m.Answered(ChannelWeb, 5*time.Millisecond, "")
	m.Answered(ChannelWeb, 7*time.Millisecond, protocol.CodePaymentDeclined)
	m.Stage(StageAttempt, 3*time.Millisecond)
	m.Stage(StageAttempt, 5*time.Millisecond)
	m.Stage(StageCommit, 4*time.Millisecond)
	fams := scrape(t, m)

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"frank_sales_total", nil, 2},
		{"frank_stamps_total", []string{"class=first_class"}, 2},
		{"frank_stamps_total", []string{"class=priority"}, 1},
		{"frank_postage_mills_total", []string{"class=first_class"}, 1_460},
		{"frank_postage_mills_total", []string{"class=priority"}, 9_650},
		{"frank_rejections_total", []string{"code=payment_declined"}, 2},
		{"frank_rejections_total", []string{"code=internal_error"}, 0}, // known codes start at 0

		{"frank_gpsd_funds_mills", nil, 9_500_000},
		{"frank_sales_stopped", nil, 0},
		{"frank_psd_descending_register_mills", []string{"serial=1", "kind=gpsd"}, 9_500_000},
		{"frank_psd_ascending_register_mills", []string{"serial=1", "kind=gpsd"}, 40_000_000},
		{"frank_psd_descending_register_mills", []string{"serial=50000001", "kind=mpsd"}, 80_000},
		{"frank_psd_ascending_register_mills", []string{"serial=50000001", "kind=mpsd"}, 120_000},
		{"frank_psd_locked", []string{"serial=1"}, 0},
		{"frank_psd_locked", []string{"serial=50000001"}, 0},
		{"frank_psd_locked", []string{"serial=50000002"}, 1},
		{"frank_psd_locked", []string{"serial=50000003"}, 1},
		{"frank_source_up", []string{"source=funds"}, 1},

		{"frank_kiosks", []string{"state=online"}, 2},
		{"frank_kiosks", []string{"state=offline"}, 1},
		{"frank_kiosk_online", []string{"kiosk=k2"}, 0},
		{"frank_kiosk_labels_left", []string{"kiosk=k1"}, 7},
		{"frank_kiosk_paper_out", []string{"kiosk=k1"}, 1},
		{"frank_kiosk_printer_ok", []string{"kiosk=k1"}, 0},
		{"frank_kiosk_in_service", []string{"kiosk=k1"}, 0},
		{"frank_kiosk_labels_left", []string{"kiosk=k3"}, 30},
		{"frank_kiosk_paper_out", []string{"kiosk=k3"}, 0},
		{"frank_kiosk_printer_ok", []string{"kiosk=k3"}, 1},
		{"frank_kiosk_in_service", []string{"kiosk=k3"}, 1},

		{"frank_alerts_open", []string{"kind=tamper"}, 2},
		{"frank_alerts_open", []string{"kind=kiosk_offline"}, 1},
		{"frank_alerts_open", []string{"kind=fraud"}, 0},
		{"frank_alerts_open", []string{"kind=something_new"}, 1},
		{"frank_source_up", []string{"source=alerts"}, 1},

		{"frank_psdm_worker_load", []string{"worker=0"}, 2},
		{"frank_psdm_worker_in_flight", []string{"worker=0"}, 3},
		{"frank_psdm_worker_load", []string{"worker=1"}, 1},
		{"frank_psdm_worker_in_flight", []string{"worker=1"}, 0},
		{"frank_psdm_worker_indicia_total", []string{"worker=1"}, 800},
		{"frank_psdm_worker_sign_errors_total", []string{"worker=1"}, 4},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, kind := range alertKinds {
		if find(fams, "frank_alerts_open", "kind="+kind) == nil {
			t.Errorf("frank_alerts_open{kind=%q} missing", kind)
		}
	}
	if got := len(fams["frank_psd_locked"].GetMetric()); got != 4 {
		t.Errorf("%d frank_psd_locked series, want 4", got)
	}

	for _, c := range []struct {
		channel string
		count   uint64
		sum     float64
	}{{ChannelKiosk, 2, 3.020}, {ChannelWeb, 2, 0.012}} {
		h := find(fams, "frank_purchase_duration_seconds", "channel="+c.channel).GetHistogram()
		if h.GetSampleCount() != c.count || !near(h.GetSampleSum(), c.sum, 1e-9) {
			t.Errorf("%s histogram: count %d sum %v, want %d and %v", c.channel, h.GetSampleCount(), h.GetSampleSum(), c.count, c.sum)
		}
	}
	for _, c := range []struct {
		stage string
		count uint64
		sum   float64
	}{{StageClaim, 0, 0}, {StageAttempt, 2, 0.008}, {StageAuthorize, 0, 0}, {StageCommit, 1, 0.004}, {StageAnswer, 0, 0}} {
		h := find(fams, "frank_purchase_stage_seconds", "stage="+c.stage).GetHistogram()
		if h.GetSampleCount() != c.count || !near(h.GetSampleSum(), c.sum, 1e-9) {
			t.Errorf("stage %s: count %d sum %v, want %d and %v", c.stage, h.GetSampleCount(), h.GetSampleSum(), c.count, c.sum)
		}
	}
	h := find(fams, "frank_purchase_duration_seconds", "channel=kiosk").GetHistogram()
	b := h.GetBucket()
	b = slices.DeleteFunc(b, func(b *dto.Bucket) bool { return math.IsInf(b.GetUpperBound(), 1) })
	if b[0].GetUpperBound() != 0.001 || b[len(b)-1].GetUpperBound() != 5 {
		t.Errorf("buckets run %v to %v, want 0.001 to 5", b[0].GetUpperBound(), b[len(b)-1].GetUpperBound())
	}
	if fams["go_goroutines"] == nil {
		t.Error("Go collector missing")
	}
}

func near(a, b, eps float64) bool { return a-b < eps && b-a < eps }

func TestScrapeSurvivesFailingSources(t *testing.T) {
	src := allSources()
	src.Funds = &fakeFunds{err: errors.New("database is locked")}
	src.Alerts = &fakeAlerts{err: context.DeadlineExceeded}
	m := New(src)
	m.Sale()
	fams := scrape(t, m) // fails the test on a non-200

	if got := value(t, fams, "frank_source_up", "source=funds"); got != 0 {
		t.Errorf("frank_source_up{source=funds} = %v, want 0", got)
	}
	if got := value(t, fams, "frank_source_up", "source=alerts"); got != 0 {
		t.Errorf("frank_source_up{source=alerts} = %v, want 0", got)
	}
	for _, gone := range []string{"frank_gpsd_funds_mills", "frank_psd_locked", "frank_alerts_open"} {
		if fams[gone] != nil {
			t.Errorf("%s exposed from a failed source", gone)
		}
	}
	if got := value(t, fams, "frank_sales_total"); got != 1 {
		t.Errorf("frank_sales_total = %v, want 1", got)
	}
	if got := value(t, fams, "frank_kiosks", "state=online"); got != 2 {
		t.Errorf("frank_kiosks{state=online} = %v, want 2", got)
	}
}

func TestNilSourcesLeftOut(t *testing.T) {
	m := New(Sources{})
	fams := scrape(t, m)
	for name := range fams {
		if strings.HasPrefix(name, "frank_") && name != "frank_purchase_duration_seconds" && name != "frank_purchase_stage_seconds" && name != "frank_rejections_total" && name != "frank_sales_total" && name != "frank_card_holds_swept_total" {
			t.Errorf("%s exposed without a source", name)
		}
	}
	if value(t, fams, "frank_sales_total") != 0 {
		t.Error("frank_sales_total not 0")
	}
	// Both kinds of swept hold are exported at 0, for the alert's rate.
	m.HoldSwept(HoldDead)
	fams = scrape(t, m)
	if own, dead := value(t, fams, "frank_card_holds_swept_total", "hold=own"), value(t, fams, "frank_card_holds_swept_total", "hold=dead"); own != 0 || dead != 1 {
		t.Errorf("frank_card_holds_swept_total own %v, dead %v; want 0 and 1", own, dead)
	}
}

// TestAlertSampleNames keeps docs/prometheus/alerts.yml in step with what
// the hub exports.
func TestAlertSampleNames(t *testing.T) {
	rules, err := os.ReadFile("../../docs/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	m := New(allSources())
	m.Sold("first_class", 730) // vectors show only once they have a child
	fams := scrape(t, m)
	names := regexp.MustCompile(`frank_[a-z_]+`).FindAllString(string(rules), -1)
	if len(names) == 0 {
		t.Fatal("no frank_ metric in alerts.yml")
	}
	for _, n := range names {
		base := n
		if fams[n] == nil {
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				base = strings.TrimSuffix(base, suffix)
			}
		}
		if fams[base] == nil {
			t.Errorf("alerts.yml uses %s, which the hub does not export", n)
		}
	}
}

// TestAlertKindsComplete keeps alertKinds in step with the string
// constants of package alerts, so a new kind is exported at 0 too.
func TestAlertKindsComplete(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "../alerts/alerts.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var consts []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			for _, v := range s.(*ast.ValueSpec).Values {
				if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					k, _ := strconv.Unquote(lit.Value)
					consts = append(consts, k)
				}
			}
		}
	}
	if len(consts) == 0 {
		t.Fatal("no string constants found in package alerts")
	}
	for _, k := range consts {
		if !slices.Contains(alertKinds, k) {
			t.Errorf("alert kind %q missing from alertKinds", k)
		}
	}
}

var t0 = time.Date(2026, 3, 2, 10, 0, 30, 0, time.UTC)

func TestAnsweredFeedsActivity(t *testing.T) {
	c := &clock{t: t0}
	m := New(Sources{Now: c.Now})
	m.Answered(ChannelKiosk, 10*time.Millisecond, "")
	m.Answered(ChannelWeb, 30*time.Millisecond, protocol.CodeOverweight)
	pts := m.Activity().Series(time.Hour, time.Minute)
	last := pts[len(pts)-1]
	if last.OK != 1 || last.Rejected != 1 || last.MeanMs != 20 || last.MaxMs != 30 {
		t.Errorf("last point %+v, want 1 ok, 1 rejected, mean 20 ms, max 30 ms", last)
	}
}

func TestActivitySeries(t *testing.T) {
	c := &clock{t: t0}
	a := newActivity(c.Now)
	for i := range 100 { // 10:00: 95 fast, 5 slow, 3 refused
		d := 10 * time.Millisecond
		if i >= 95 {
			d = time.Second
		}
		a.record(c.Now(), d, i%33 != 32)
	}
	c.Add(2 * time.Minute) // 10:02; 10:01 stays empty
	a.record(c.Now(), 40*time.Millisecond, true)

	pts := a.Series(time.Hour, time.Minute)
	if len(pts) != 60 {
		t.Fatalf("Series(1h, 1m): %d points, want 60", len(pts))
	}
	for i := 1; i < len(pts); i++ {
		if d := pts[i].At.Sub(pts[i-1].At); d != time.Minute {
			t.Fatalf("points %d and %d are %v apart", i-1, i, d)
		}
	}
	at := func(h, m int) time.Time { return time.Date(2026, 3, 2, h, m, 0, 0, time.UTC) }
	want := map[int]Point{
		57: {At: at(10, 0), OK: 97, Rejected: 3, MeanMs: 59.5, P95Ms: 10, MaxMs: 1000},
		58: {At: at(10, 1)},
		59: {At: at(10, 2), OK: 1, MeanMs: 40, P95Ms: 40, MaxMs: 40},
	}
	for i, p := range pts {
		w, ok := want[i]
		if !ok {
			w = Point{At: at(9, 3).Add(time.Duration(i) * time.Minute)}
		}
		if !p.At.Equal(w.At) || p.OK != w.OK || p.Rejected != w.Rejected || !near(p.MeanMs, w.MeanMs, 1e-9) ||
			!near(p.P95Ms, w.P95Ms, 1e-9) || p.MaxMs != w.MaxMs {
			t.Errorf("point %d = %+v, want %+v", i, p, w)
		}
	}

	day := a.Series(24*time.Hour, 15*time.Minute)
	if len(day) != 96 {
		t.Fatalf("Series(24h, 15m): %d points, want 96", len(day))
	}
	last := day[95]
	if !last.At.Equal(at(10, 0)) || last.OK != 98 || last.Rejected != 3 || last.MaxMs != 1000 {
		t.Errorf("last quarter %+v, want 10:00 with 98 ok, 3 rejected, max 1000 ms", last)
	}
	if !day[0].At.Equal(at(10, 0).Add(-95 * 15 * time.Minute)) {
		t.Errorf("first quarter at %v", day[0].At)
	}
	for _, p := range day[:95] {
		if p != (Point{At: p.At}) {
			t.Errorf("quarter %v not empty: %+v", p.At, p)
		}
	}
}

func TestActivityP95(t *testing.T) {
	c := &clock{t: t0}
	a := newActivity(c.Now)
	for ms := 1; ms <= 1000; ms++ { // true p95: 950 ms
		a.record(c.Now(), time.Duration(ms)*time.Millisecond, true)
	}
	p := a.Series(time.Minute, time.Minute)[0]
	if p.P95Ms < 900 || p.P95Ms > 1000 {
		t.Errorf("p95 %v ms, want about 950", p.P95Ms)
	}
	if !near(p.MeanMs, 500.5, 1e-9) || p.MaxMs != 1000 {
		t.Errorf("mean %v max %v, want 500.5 and 1000", p.MeanMs, p.MaxMs)
	}

	a.record(c.Now(), time.Minute, false) // past every bound: p95 stays ≤ max
	if p := a.Series(time.Minute, time.Minute)[0]; p.P95Ms > p.MaxMs || p.MaxMs != 60_000 {
		t.Errorf("p95 %v max %v", p.P95Ms, p.MaxMs)
	}
}

func TestActivityForgetsAfterADay(t *testing.T) {
	c := &clock{t: t0}
	a := newActivity(c.Now)
	for range 5 {
		a.record(c.Now(), time.Millisecond, true)
	}
	total := func(pts []Point) (n int) {
		for _, p := range pts {
			n += p.OK + p.Rejected
		}
		return n
	}
	if n := total(a.Series(24*time.Hour, time.Minute)); n != 5 {
		t.Fatalf("%d answers in the last day, want 5", n)
	}

	c.Add(24*time.Hour + time.Minute) // the slot is still there, but stale
	if n := total(a.Series(24*time.Hour, time.Minute)); n != 0 {
		t.Errorf("%d answers a day later, want 0", n)
	}

	c.Add(-time.Minute) // exactly a day later: same slot, reused
	a.record(c.Now(), 2*time.Millisecond, false)
	pts := a.Series(24*time.Hour, time.Minute)
	if len(pts) != 1440 || total(pts) != 1 {
		t.Fatalf("%d points with %d answers, want 1440 with 1", len(pts), total(pts))
	}
	if last := pts[1439]; last.OK != 0 || last.Rejected != 1 || last.MaxMs != 2 {
		t.Errorf("reused minute %+v, want only the new answer", last)
	}
}

func TestAnsweredDoesNotAllocate(t *testing.T) {
	m := New(Sources{})
	if n := testing.AllocsPerRun(1000, func() {
		m.Answered(ChannelKiosk, 12*time.Millisecond, "")
		m.Answered(ChannelWeb, 40*time.Millisecond, protocol.CodePaymentDeclined)
		m.Stage(StageCommit, 2*time.Millisecond)
	}); n != 0 {
		t.Errorf("Answered and Stage: %v allocations, want 0", n)
	}
}

func BenchmarkAnswered(b *testing.B) {
	m := New(Sources{})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		var code protocol.Code
		if i%20 == 0 {
			code = protocol.CodePaymentDeclined
		}
		m.Answered(ChannelKiosk, 15*time.Millisecond, code)
	}
}

func BenchmarkAnsweredParallel(b *testing.B) {
	m := New(Sources{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Answered(ChannelKiosk, 15*time.Millisecond, "")
		}
	})
}

// Stored minutes come back into the charts, and what is stored again is
// only what this process answered.
func TestActivityRestoreAndFinished(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 30, 0, time.UTC)
	a := newActivity(func() time.Time { return now })
	m := unixMinute(now)
	a.record(now, 40*time.Millisecond, true)
	a.record(now, 60*time.Millisecond, false)
	hist := make([]uint32, len(latencyBounds)+1)
	hist[9] = 5 // five answers of at most 75 ms
	a.Restore([]Minute{{At: m, OK: 5, Sum: 250 * time.Millisecond, Max: 70 * time.Millisecond, Hist: hist},
		{At: m - 2*ringMinutes, OK: 9, Hist: hist}, // too old
		{At: m - 1, OK: 1, Hist: hist[:3]}})        // another histogram shape
	if got := a.Finished(m); len(got) != 0 {
		t.Fatalf("the minute in progress was finished: %+v", got)
	}
	if p := a.Series(time.Minute, time.Minute); p[0].OK != 6 || p[0].Rejected != 1 {
		t.Fatalf("series %+v, want 6 ok and 1 rejected", p)
	}
	now = now.Add(time.Minute)
	got := a.Finished(m - 10)
	if len(got) != 1 || got[0].At != m || got[0].OK != 1 || got[0].Rejected != 1 || got[0].Sum != 100*time.Millisecond {
		t.Fatalf("finished %+v, want this process's 2 answers of minute %d", got, m)
	}
	var n uint32
	for _, c := range got[0].Hist {
		n += c
	}
	if n != 2 {
		t.Fatalf("histogram holds %d answers, want 2", n)
	}
}

// Other hubs' live minutes join the charts: each note replaces what that
// hub told of the minute, a minute already read from the store is not
// counted again, and none of it is stored as this hub's.
func TestActivityMergesOtherHubs(t *testing.T) {
	c := &clock{t: t0}
	a := newActivity(c.Now)
	a.record(c.Now(), 10*time.Millisecond, true) // this hub: 1 ok at 10:00
	cur := a.Now()
	peer := func(at int64, ok uint32) Minute {
		m := Minute{At: at, OK: ok, Sum: time.Duration(ok) * 20 * time.Millisecond, Max: 20 * time.Millisecond, Hist: make([]uint32, len(latencyBounds)+1)}
		m.Hist[6] = ok // the 20 ms slot
		return m
	}
	// hub-b restored from the store up to 09:59; hub-c not at all.
	a.Restore([]Minute{{Hub: "hub-b", At: cur - 1, OK: 4, Hist: func() []uint32 { h := make([]uint32, len(latencyBounds)+1); h[0] = 4; return h }()}})
	a.Merge("hub-b", []Minute{peer(cur-1, 9), peer(cur, 2)}) // 09:59 is in the store already
	a.Merge("hub-b", []Minute{peer(cur-1, 9), peer(cur, 5)}) // the same minute again, later: replaces
	a.Merge("hub-c", []Minute{peer(cur, 3)})
	a.Merge("hub-c", []Minute{peer(cur-2*ringMinutes, 100)}) // older than a day

	pts := a.Series(3*time.Minute, time.Minute)
	if got := pts[len(pts)-1].OK; got != 1+5+3 {
		t.Errorf("10:00: %d ok, want 9 (1 here, 5 on hub-b, 3 on hub-c)", got)
	}
	if got := pts[len(pts)-2].OK; got != 4 {
		t.Errorf("09:59: %d ok, want the 4 restored, not the note's 9 again", got)
	}
	if live := a.Live(); len(live) != 1 || live[0].OK != 1 || live[0].At != cur {
		t.Errorf("this hub's live minutes %+v, want its own 1 ok at 10:00", live)
	}
	c.Add(time.Minute)
	if fin := a.Finished(cur - 5); len(fin) != 1 || fin[0].OK != 1 {
		t.Errorf("finished %+v: other hubs' minutes must not be stored as this hub's", fin)
	}
}

func TestActivityNote(t *testing.T) {
	c := &clock{t: t0}
	a := newActivity(c.Now)
	a.record(c.Now(), 10*time.Millisecond, true)
	a.record(c.Now(), 3*time.Second, false)
	note, err := EncodeActivityNote("hub-a", a.Live())
	if err != nil {
		t.Fatal(err)
	}
	hub, ms, err := DecodeActivityNote(note)
	if err != nil || hub != "hub-a" || len(ms) != 1 || ms[0].OK != 1 || ms[0].Rejected != 1 || ms[0].Max != 3*time.Second {
		t.Fatalf("decoded %q %+v, %v", hub, ms, err)
	}
	for _, bad := range []string{``, `{}`, `{"hub":"h","minutes":[{"at":1,"ok":2,"hist":[1]}]}`,
		`{"hub":"h","minutes":[{},{},{}]}`, `{"hub":"h","minutes":[{"at":1,"ok":1,"hist":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}`} {
		if _, _, err := DecodeActivityNote(bad); err == nil {
			t.Errorf("%s: decoded", bad)
		}
	}
}

func FuzzActivityNote(f *testing.F) {
	a := newActivity((&clock{t: t0}).Now)
	a.record(t0, 10*time.Millisecond, true)
	seed, _ := EncodeActivityNote("hub-a", a.Live())
	f.Add(seed)
	f.Add(`{"hub":"h","minutes":[]}`)
	f.Fuzz(func(t *testing.T, payload string) {
		hub, ms, err := DecodeActivityNote(payload)
		if err != nil {
			return
		}
		again, err := EncodeActivityNote(hub, ms)
		if err != nil {
			t.Fatal(err)
		}
		hub2, ms2, err := DecodeActivityNote(again)
		if err != nil || hub2 != hub || len(ms2) != len(ms) {
			t.Fatalf("round trip: %q %v, %v", hub2, ms2, err)
		}
		b := newActivity((&clock{t: t0}).Now)
		b.Merge(hub, ms) // never panics on what decodes
		b.Series(24*time.Hour, time.Minute)
	})
}
