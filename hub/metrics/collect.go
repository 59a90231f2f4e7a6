package metrics

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
)

// sourceTimeout bounds a database read at scrape time. It is well under
// Prometheus's default 10 s scrape timeout, so a slow database costs its
// own gauges and not the whole scrape.
const sourceTimeout = 2 * time.Second

// One collector per source: the registry collects them concurrently, and a
// nil source is simply not registered.
//
// A source that fails is skipped with a warning and frank_source_up{source}
// set to 0, rather than reported with prometheus.NewInvalidMetric. An
// invalid metric makes Gather fail: by default the handler then answers
// 500 and Prometheus sees the hub as down although only the database is
// slow; with ContinueOnError the error reaches the log only and Prometheus
// sees nothing. An explicit gauge keeps the rest of the scrape and gives an
// alert something to match: the funds gauges vanishing must not read as
// "funds fine".

var (
	descDR = prometheus.NewDesc("frank_psd_descending_register_mills",
		"A PSD's descending register: postage still available, in mills.", []string{"serial", "kind"}, nil)
	descAR = prometheus.NewDesc("frank_psd_ascending_register_mills",
		"A PSD's ascending register: postage ever issued or passed on, in mills.", []string{"serial", "kind"}, nil)
	descLocked = prometheus.NewDesc("frank_psd_locked",
		"1 if a PSD no longer sells: locked, or its control code does not match its registers.", []string{"serial", "kind"}, nil)
	descGPSDFunds = prometheus.NewDesc("frank_gpsd_funds_mills",
		"Funds left in the GPSD (its descending register) to pass on to MPSDs, in mills.", nil, nil)
	descStopped = prometheus.NewDesc("frank_sales_stopped",
		"1 when a ledger check found a violation and stopped all sales until the hub restarts.", nil, nil)
	descKiosks = prometheus.NewDesc("frank_kiosks",
		"Kiosks the hub has heard of, by state.", []string{"state"}, nil)
	descKioskOnline = prometheus.NewDesc("frank_kiosk_online",
		"1 if a kiosk is online, by its status and heartbeats.", []string{"kiosk"}, nil)
	descKioskLabels = prometheus.NewDesc("frank_kiosk_labels_left",
		"Labels a kiosk has left to sell on, from its last heartbeat.", []string{"kiosk"}, nil)
	descKioskPaperOut = prometheus.NewDesc("frank_kiosk_paper_out",
		"1 if a kiosk's printer is out of paper, from its last heartbeat.", []string{"kiosk"}, nil)
	descKioskPrinterOK = prometheus.NewDesc("frank_kiosk_printer_ok",
		"1 if a kiosk's printer reports no fault, from its last heartbeat.", []string{"kiosk"}, nil)
	descKioskInService = prometheus.NewDesc("frank_kiosk_in_service",
		"1 if a kiosk can sell: stock, paper, printer, door and hub all fine and staff have it in service.", []string{"kiosk"}, nil)
	descAlertsOpen = prometheus.NewDesc("frank_alerts_open",
		"Alerts not yet acknowledged, by kind.", []string{"kind"}, nil)
	descWorkerLoad = prometheus.NewDesc("frank_psdm_worker_load",
		"MPSDs a PSDM worker has checked out.", []string{"worker"}, nil)
	descWorkerInFlight = prometheus.NewDesc("frank_psdm_worker_in_flight",
		"Stamps a PSDM worker has signed and not yet committed.", []string{"worker"}, nil)
	descWorkerIndicia = prometheus.NewDesc("frank_psdm_worker_indicia_total",
		"Indicia a PSDM worker has issued since it started.", []string{"worker"}, nil)
	descWorkerSignErrors = prometheus.NewDesc("frank_psdm_worker_sign_errors_total",
		"Stamps a PSDM worker could not sign (HSM error, timeout, lost session, no key) since it started.", []string{"worker"}, nil)
)

// sourceUp describes frank_source_up for one source. The source is a
// constant label so each collector owns a distinct descriptor.
func sourceUp(source string) *prometheus.Desc {
	return prometheus.NewDesc("frank_source_up",
		"1 if the source of the scrape-time gauges answered at the last scrape.", nil, prometheus.Labels{"source": source})
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

type fundsCollector struct {
	src funds
	log *slog.Logger
	up  *prometheus.Desc
}

func newFundsCollector(src funds, log *slog.Logger) *fundsCollector {
	return &fundsCollector{src: src, log: log, up: sourceUp("funds")}
}

func (c *fundsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDR
	ch <- descAR
	ch <- descLocked
	ch <- descGPSDFunds
	ch <- descStopped
	ch <- c.up
}

func (c *fundsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), sourceTimeout)
	defer cancel()
	ch <- prometheus.MustNewConstMetric(descStopped, prometheus.GaugeValue, boolGauge(c.src.Halted() != ""))
	psds, err := c.src.PSDs(ctx)
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, boolGauge(err == nil))
	if err != nil {
		c.log.Warn("metrics: funds left out of scrape", "err", err)
		return
	}
	for _, p := range psds {
		serial := strconv.FormatUint(uint64(p.Serial), 10)
		ch <- prometheus.MustNewConstMetric(descDR, prometheus.GaugeValue, float64(p.DR), serial, p.Kind)
		ch <- prometheus.MustNewConstMetric(descAR, prometheus.GaugeValue, float64(p.AR), serial, p.Kind)
		ch <- prometheus.MustNewConstMetric(descLocked, prometheus.GaugeValue, boolGauge(p.Locked != "" || !p.ControlOK), serial, p.Kind)
		if p.Kind == ledger.KindGPSD {
			ch <- prometheus.MustNewConstMetric(descGPSDFunds, prometheus.GaugeValue, float64(p.DR))
		}
	}
}

type presenceCollector struct{ src presence }

func (c *presenceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descKiosks
	ch <- descKioskOnline
	ch <- descKioskLabels
	ch <- descKioskPaperOut
	ch <- descKioskPrinterOK
	ch <- descKioskInService
}

func (c *presenceCollector) Collect(ch chan<- prometheus.Metric) {
	var online, offline int
	for _, k := range c.src.List() {
		if k.Online {
			online++
		} else {
			offline++
		}
		ch <- prometheus.MustNewConstMetric(descKioskOnline, prometheus.GaugeValue, boolGauge(k.Online), k.ID)
		if t := k.Telemetry; t != nil {
			ch <- prometheus.MustNewConstMetric(descKioskLabels, prometheus.GaugeValue, float64(t.LabelsLeft), k.ID)
			ch <- prometheus.MustNewConstMetric(descKioskPaperOut, prometheus.GaugeValue, boolGauge(t.Paper == "out"), k.ID)
			ch <- prometheus.MustNewConstMetric(descKioskPrinterOK, prometheus.GaugeValue, boolGauge(t.Printer == "ok"), k.ID)
			ch <- prometheus.MustNewConstMetric(descKioskInService, prometheus.GaugeValue, boolGauge(t.InService && k.Online), k.ID)
		}
	}
	ch <- prometheus.MustNewConstMetric(descKiosks, prometheus.GaugeValue, float64(online), "online")
	ch <- prometheus.MustNewConstMetric(descKiosks, prometheus.GaugeValue, float64(offline), "offline")
}

// alertKinds are exported at 0 when none is open, so an alert rule on a
// kind is evaluated from the start. A test keeps this list in step with
// the constants of package alerts.
var alertKinds = []string{
	alerts.Tamper, alerts.Fraud, alerts.InspectionDue, alerts.KioskOffline,
	alerts.PaperOut, alerts.LabelsLow, alerts.FundsLow, alerts.Unconfirmed, alerts.ReportRefused, alerts.ReportLate,
	alerts.CaptureRefused, alerts.RolloutHalted, alerts.PrinterFault, alerts.DoorOpen, alerts.ClockSkew, alerts.FailedPrints,
	alerts.StaffGuessing, alerts.HSMUnavailable, alerts.KeyMismatch, alerts.LateRemedy,
}

type alertsCollector struct {
	src openAlerts
	log *slog.Logger
	up  *prometheus.Desc
}

func newAlertsCollector(src openAlerts, log *slog.Logger) *alertsCollector {
	return &alertsCollector{src: src, log: log, up: sourceUp("alerts")}
}

func (c *alertsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAlertsOpen
	ch <- c.up
}

func (c *alertsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), sourceTimeout)
	defer cancel()
	open, err := c.src.List(ctx, true)
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, boolGauge(err == nil))
	if err != nil {
		c.log.Warn("metrics: alerts left out of scrape", "err", err)
		return
	}
	n := make(map[string]int, len(alertKinds))
	for _, k := range alertKinds {
		n[k] = 0
	}
	for _, a := range open {
		n[a.Kind]++ // a kind added later still shows, only not at 0
	}
	for kind, count := range n {
		ch <- prometheus.MustNewConstMetric(descAlertsOpen, prometheus.GaugeValue, float64(count), kind)
	}
}

type workersCollector struct{ src workers }

func (c *workersCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descWorkerLoad
	ch <- descWorkerInFlight
	ch <- descWorkerIndicia
	ch <- descWorkerSignErrors
}

func (c *workersCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.src.Status() {
		w := strconv.Itoa(s.Worker)
		ch <- prometheus.MustNewConstMetric(descWorkerLoad, prometheus.GaugeValue, float64(s.Load), w)
		ch <- prometheus.MustNewConstMetric(descWorkerInFlight, prometheus.GaugeValue, float64(s.InFlight), w)
		ch <- prometheus.MustNewConstMetric(descWorkerIndicia, prometheus.CounterValue, float64(s.Total), w)
		ch <- prometheus.MustNewConstMetric(descWorkerSignErrors, prometheus.CounterValue, float64(s.SignErrors), w)
	}
}
