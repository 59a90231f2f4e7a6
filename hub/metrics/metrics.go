// Package metrics exposes the hub to Prometheus and keeps the last day of
// purchase activity for the ops console charts. Counters are fed by the
// sale path as it runs; register and fleet gauges are read from their
// sources at scrape time, so they are never staler than the scrape.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
)

// The sources the scrape-time gauges read, as this package needs them.
type (
	funds interface {
		PSDs(ctx context.Context) ([]ledger.PSDView, error)
		Halted() string
	}
	presence interface {
		List() []fleet.KioskState
	}
	openAlerts interface {
		List(ctx context.Context, openOnly bool) ([]alerts.Alert, error)
	}
	workers interface {
		Status() []psdm.Status
	}
)

// Sources are what the gauges are computed from. Each may be nil; a nil
// source's metrics are left out.
type Sources struct {
	Funds    funds
	Presence presence
	Alerts   openAlerts
	Workers  workers
	Now      func() time.Time // default time.Now
	Log      *slog.Logger     // default slog.Default()
}

// Channels a purchase arrives on.
const (
	ChannelKiosk = "kiosk"
	ChannelWeb   = "web"
)

// The stages of a purchase that Stage times, in the order a card sale
// passes them.
const (
	StageClaim     = "claim"     // the request's claim, with its precheck where it rides along
	StageAttempt   = "attempt"   // the look for an earlier answer and payment, or the attempt recorded durably
	StageAuthorize = "authorize" // the card gateway's or the account's hold
	StageCommit    = "commit"    // the stamps signed and the sale committed durably
	StageAnswer    = "answer"    // the answer published, until the broker confirmed it
)

// Whose card hold a sweep voided (HoldSwept).
const (
	HoldOwn  = "own"  // this hub's: it lost a commit's outcome or failed a void
	HoldDead = "dead" // a hub's whose lease lapsed mid-sale
)

// Stages lists the stages, for the exported series and their readers.
var Stages = []string{StageClaim, StageAttempt, StageAuthorize, StageCommit, StageAnswer}

// stageBuckets are finer than durationBuckets: a stage of a sale at a
// load the hub carries takes about a millisecond.
var stageBuckets = []float64{.00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, 1, 5}

// Metrics holds the hub's metrics in a registry of its own, so tests and
// several hubs in one process never collide in the global one.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger
	now func() time.Time

	sales    prometheus.Counter
	stamps   *prometheus.CounterVec
	postage  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	rejected *prometheus.CounterVec
	stages   *prometheus.HistogramVec
	swept    *prometheus.CounterVec

	// Answered runs thousands of times a second; WithLabelValues allocates,
	// so the known label values are resolved once here. The maps are never
	// written after New, so they need no lock.
	byChannel map[string]prometheus.Observer
	byCode    map[protocol.Code]prometheus.Counter
	byStage   map[string]prometheus.Observer

	activity *Activity
}

// durationBuckets span 1 ms to 5 s, the payment gateway's default
// timeout: a slower answer is a fault, not a latency to resolve.
var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// New returns the metrics with the collectors for src registered.
func New(src Sources) *Metrics {
	if src.Now == nil {
		src.Now = time.Now
	}
	if src.Log == nil {
		src.Log = slog.Default()
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: src.Log,
		now: src.Now,
		sales: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "frank_sales_total", Help: "Fresh sales committed (replays are not counted).",
		}),
		stamps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "frank_stamps_total", Help: "Stamps sold in fresh sales, by rate class.",
		}, []string{"class"}),
		postage: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "frank_postage_mills_total", Help: "Postage sold in fresh sales, in mills (1/10 cent), by rate class.",
		}, []string{"class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "frank_purchase_duration_seconds", Help: "Time to answer a purchase request, by channel.",
			Buckets: durationBuckets,
		}, []string{"channel"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "frank_rejections_total", Help: "Purchase requests refused, by protocol error code.",
		}, []string{"code"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "frank_purchase_stage_seconds", Help: "Time a purchase spent in each stage of its path through the hub (claim, attempt, authorize, commit, answer).",
			Buckets: stageBuckets,
		}, []string{"stage"}),
		swept: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "frank_card_holds_swept_total",
			Help: "Card holds found open at the gateway with no payment recorded, voided late by this hub's sweep, by whose hold: own (this hub lost a commit's outcome or a void) or dead (a hub died mid-sale).",
		}, []string{"hold"}),
		byChannel: map[string]prometheus.Observer{},
		byStage:   map[string]prometheus.Observer{},
		byCode:    map[protocol.Code]prometheus.Counter{},
		activity:  newActivity(src.Now),
	}
	// Resolving every known label value up front also exports them at 0,
	// so rate() and alerts work before the first rejection.
	for _, ch := range []string{ChannelKiosk, ChannelWeb} {
		m.byChannel[ch] = m.duration.WithLabelValues(ch)
	}
	for _, st := range Stages {
		m.byStage[st] = m.stages.WithLabelValues(st)
	}
	for _, c := range protocol.Codes {
		m.byCode[c.Code] = m.rejected.WithLabelValues(string(c.Code))
	}
	for _, w := range []string{HoldOwn, HoldDead} {
		m.swept.WithLabelValues(w)
	}
	m.reg.MustRegister(m.sales, m.stamps, m.postage, m.duration, m.rejected, m.stages, m.swept,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if src.Funds != nil {
		m.reg.MustRegister(newFundsCollector(src.Funds, src.Log))
	}
	if src.Presence != nil {
		m.reg.MustRegister(&presenceCollector{src: src.Presence})
	}
	if src.Alerts != nil {
		m.reg.MustRegister(newAlertsCollector(src.Alerts, src.Log))
	}
	if src.Workers != nil {
		m.reg.MustRegister(&workersCollector{src: src.Workers})
	}
	return m
}

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelError),
		// A collector error must cost its own metrics, not the whole
		// scrape and with it the "hub down" signal.
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// Sold counts one stamp of a fresh sale. Replays must not call it, or a
// kiosk retrying a request would inflate the takings.
func (m *Metrics) Sold(class string, postage protocol.Mills) {
	m.stamps.WithLabelValues(class).Inc()
	m.postage.WithLabelValues(class).Add(float64(postage))
}

// Sale counts one fresh sale committed.
func (m *Metrics) Sale() {
	m.sales.Inc()
}

// Answered records a purchase request answered on channel after d; code is
// empty for a sale and the refusal's code otherwise. It does not allocate
// for the known channels and codes.
func (m *Metrics) Answered(channel string, d time.Duration, code protocol.Code) {
	obs, ok := m.byChannel[channel]
	if !ok {
		obs = m.duration.WithLabelValues(channel)
	}
	obs.Observe(d.Seconds())
	if code != "" {
		c, ok := m.byCode[code]
		if !ok {
			c = m.rejected.WithLabelValues(string(code))
		}
		c.Inc()
	}
	m.activity.record(m.now(), d, code == "")
}

// Stage records that a purchase spent d in stage, one of Stages. It does
// not allocate.
func (m *Metrics) Stage(stage string, d time.Duration) {
	obs, ok := m.byStage[stage]
	if !ok {
		obs = m.stages.WithLabelValues(stage)
	}
	obs.Observe(d.Seconds())
}

// HoldSwept counts a card hold that no payment recorded, voided by the
// sweep; whose is HoldOwn or HoldDead. The customer's hold was released
// late, not at once.
func (m *Metrics) HoldSwept(whose string) {
	m.swept.WithLabelValues(whose).Inc()
}

// Activity returns the per-minute record of answers for the charts.
func (m *Metrics) Activity() *Activity {
	return m.activity
}
