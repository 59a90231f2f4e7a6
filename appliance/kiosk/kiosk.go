// Package kiosk is the appliance's brain: it keeps the session with the hub
// (MQTT, behind Link), holds the config the hub pushes (rate table, heartbeat), runs a sale
// from purchase request to printed labels, and serves the local API that
// the touchscreen uses.
package kiosk

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/appliance/payterm"
	"github.com/frank-postage/frank/appliance/printer"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/label"
)

// Config configures a kiosk. Zero values take the defaults noted.
type Config struct {
	ID       string // kiosk id, e.g. "store12-k1"
	Link     Link   // the session with the hub; default MQTT to Broker
	Broker   string // default tcp://127.0.0.1:1883
	Username string // broker credentials: a user and password,
	Password string // or TLS's client certificate
	// TLS, for an mqtts broker, holds the kiosk's certificate and the
	// device CA; CertNotAfter says when the certificate expires.
	TLS          *tls.Config
	CertNotAfter func() time.Time
	OriginZIP    protocol.ZIP // the store's ZIP, printed and signed into every stamp
	Listen       string       // local API for the touchscreen; default 127.0.0.1:8081
	Firmware     string       // version reported in telemetry
	// ResendEvery is how long to wait for a result before sending the
	// same request again; Deadline is when to give up. Defaults 5 s, 60 s.
	ResendEvery time.Duration
	Deadline    time.Duration
	LabelSize   label.Size // default 2 in x 1 in at 203 dpi
	// StaffPINHash is the bcrypt hash of the staff PIN; StaffBadges are
	// the badge codes (STAFF-...) that open staff mode.
	StaffPINHash string
	StaffBadges  []string
	// RemedyWindow is how long a customer has to choose a reprint or a
	// refund for a label that failed to print; then, or when the next sale
	// begins, the kiosk refunds it. Default 5 minutes.
	RemedyWindow time.Duration
	// LabelCheck, if set, reads the pre-printed serial of the label under
	// the print head; a stamp is printed only on the label it was signed
	// for (a head scanner: appliance/scanner.Head).
	LabelCheck labelChecker
}

// labelChecker reads the label under the print head.
type labelChecker interface {
	UnderHead(ctx context.Context) (string, error)
}

// labelFault is a label not printed because the one under the head is not
// the one the stamp was signed for, or could not be read.
type labelFault struct{ reason, detail string }

func (e *labelFault) Error() string { return "kiosk: " + e.detail }
func (e *labelFault) Fault() string { return e.reason }

func (c *Config) defaults() {
	if c.Broker == "" {
		c.Broker = "tcp://127.0.0.1:1883"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8081"
	}
	if c.ResendEvery == 0 {
		c.ResendEvery = 5 * time.Second
	}
	if c.RemedyWindow == 0 {
		c.RemedyWindow = 5 * time.Minute
	}
	if c.Deadline == 0 {
		c.Deadline = 60 * time.Second
	}
}

// Check validates the config.
func (c *Config) Check() error {
	c.defaults()
	var errs []error
	if !protocol.ValidKioskID(c.ID) {
		errs = append(errs, fmt.Errorf("id %q: want 1-32 of [A-Za-z0-9_-]", c.ID))
	}
	if _, err := c.OriginZIP.Number(); err != nil {
		errs = append(errs, fmt.Errorf("origin zip: %w", err))
	}
	if c.RemedyWindow < time.Second {
		errs = append(errs, fmt.Errorf("remedy window %s: want at least 1s", c.RemedyWindow))
	}
	return errors.Join(errs...)
}

// saleJournal keeps every step of a sale durable before the kiosk acts on
// it; appliance/journal.
type saleJournal interface {
	Begin(ctx context.Context, requestID string, request []byte, labels []string) error
	Answer(ctx context.Context, requestID string, result []byte) error
	SetLabel(ctx context.Context, requestID, serial string, state journal.LabelState, reason string) error
	Reported(ctx context.Context, requestID string) error
	Finish(ctx context.Context, requestID string) error
	Unfinished(ctx context.Context) ([]*journal.Sale, error)
	Get(ctx context.Context, requestID string) (*journal.Sale, error)
	AddSheets(ctx context.Context, serials []string) error
	DropSheet(ctx context.Context, serial string) error
	Sheets(ctx context.Context) ([]string, error)
}

// LabelPrinter prints one label and reports faults; appliance/printer.
type LabelPrinter interface {
	Print(img image.Image) error
}

// Kiosk is a running kiosk.
type Kiosk struct {
	cfg     Config
	log     *slog.Logger
	printer LabelPrinter
	link    Link
	started time.Time

	mu      sync.Mutex
	config  *protocol.KioskConfig
	waiting map[string]chan []byte // "suffix/request id" -> its answer
	inHand  map[string]bool        // sales a customer waits on; the settler leaves them alone
	stock   []protocol.SheetState  // loaded sheets and their free labels, in load order
	done    map[string]*saleRecord // recent sales, for reprints and refunds
	sales   int64
	lastErr string
	errLog  []ErrorEntry

	saleMu sync.Mutex // one sale at a time: there is one printer
	stop   chan struct{}
	once   sync.Once
	newCfg chan struct{} // a config arrived: the heartbeat period may change

	dev   Devices
	ds    deviceState
	staff staffSessions

	progress atomic.Pointer[Progress] // the sale in hand, for the touchscreen

	journal   saleJournal
	crash     crashPoint // power-cut tests only; empty unless built with -tags crashtest
	recovered chan struct{}
}

// Progress is where the sale in hand is, so the touchscreen can say what
// the customer waits for.
type Progress struct {
	Step  string `json:"step"`            // idle, weighing, paying (on the terminal), issuing (at the hub), printing
	Label int    `json:"label,omitempty"` // printing: which label, from 1
	Of    int    `json:"of,omitempty"`    // printing: of how many
}

// Progress returns the step of the sale in hand.
func (k *Kiosk) Progress() Progress {
	if p := k.progress.Load(); p != nil {
		return *p
	}
	return Progress{Step: "idle"}
}

func (k *Kiosk) setProgress(p Progress) { k.progress.Store(&p) }

// UseJournal makes every sale step durable in j before it is acted on;
// call it before Connect, which settles what j holds unfinished.
func (k *Kiosk) UseJournal(j saleJournal) { k.journal = j }

// Recovered is closed once the sales a power cut left unfinished are
// settled.
func (k *Kiosk) Recovered() <-chan struct{} { return k.recovered }

// recover settles, once connected, every sale the journal holds open: a
// request never answered is sent again with its id to learn the outcome; a
// label that printed is reported printed; any other label (including one
// that was on its way to the printer) is reported failed, so the hub voids
// its indicium, and refunded. No label is printed again. A sale the hub
// does not answer now is left to the settler, its labels held.
func (k *Kiosk) recover() {
	defer close(k.recovered)
	if k.journal == nil {
		return
	}
	k.saleMu.Lock() // no new sale until the old ones are settled
	defer k.saleMu.Unlock()
	for !k.link.Up() || k.Rates() == nil {
		select {
		case <-k.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	ctx := context.Background()
	k.reloadStock(ctx)
	open, err := k.journal.Unfinished(ctx)
	if err != nil {
		k.log.Error("journal: cannot settle unfinished sales", "err", err)
		return
	}
	for _, s := range open {
		if err := k.settle(ctx, s, "power_cut"); err != nil {
			k.log.Error("unfinished sale not settled; the settler tries again", "request_id", s.RequestID, "err", err)
			continue
		}
		k.log.Info("unfinished sale settled", "request_id", s.RequestID)
	}
}

// settle finishes a sale nobody waits on any more: it learns the hub's
// answer if it has none (sending the request again with its id), reports
// every label (printed, or failed for why) until the hub confirms, and
// refunds every label that did not print, since the customer has gone.
func (k *Kiosk) settle(ctx context.Context, s *journal.Sale, why string) error {
	if s.Result == nil {
		raw, err := k.callRaw(ctx, protocol.TopicPurchase, s.RequestID, s.Request)
		if err != nil {
			return err
		}
		if err := k.journal.Answer(ctx, s.RequestID, raw); err != nil {
			return err
		}
		s.Result = raw
	}
	res, err := protocol.DecodePurchaseResult(s.Result)
	if err != nil {
		return err
	}
	if res.Status != protocol.ResultOK {
		k.rejected(s.Labels, res.Error)
		return k.journal.Finish(ctx, s.RequestID)
	}
	for _, in := range res.Indicia {
		k.consume(in.LabelSerial)
	}
	printed, failed := s.Settle(why)
	if !s.Reported {
		for _, l := range failed {
			if err := k.journal.SetLabel(ctx, s.RequestID, l.Serial, journal.Failed, l.Reason); err != nil {
				return err
			}
		}
		if err := k.report(ctx, s.RequestID, printed, failed); err != nil {
			return err
		}
	}
	for _, l := range failed {
		res, err := k.Refund(ctx, s.RequestID, l.Serial)
		if err != nil {
			return err
		}
		if res.Status != protocol.ResultOK && (res.Error == nil || res.Error.Code != protocol.CodeRemedyNotAllowed) {
			return fmt.Errorf("kiosk: refund of %s: %+v", l.Serial, res.Error)
		}
		if err := k.journal.SetLabel(ctx, s.RequestID, l.Serial, journal.Refunded, l.Reason); err != nil {
			return err
		}
	}
	return k.journal.Finish(ctx, s.RequestID)
}

// report sends a sale's print report and waits for the hub to confirm it;
// the journal then records it reported. A report the hub refuses outright
// is not sent again.
func (k *Kiosk) report(ctx context.Context, requestID string, printed, failed []journal.Label) error {
	rep := protocol.PrintReport{RequestID: requestID, KioskID: k.cfg.ID}
	for _, l := range printed {
		rep.Labels = append(rep.Labels, protocol.LabelOutcome{LabelSerial: l.Serial, Outcome: protocol.Printed})
	}
	for _, l := range failed {
		rep.Labels = append(rep.Labels, protocol.LabelOutcome{LabelSerial: l.Serial, Outcome: protocol.PrintFailed, Reason: l.Reason})
	}
	raw, err := k.call(ctx, protocol.TopicPrint, requestID, rep)
	if err != nil {
		return err
	}
	k.printConfirmed(ctx, raw)
	return nil
}

// printConfirmed records the hub's confirmation of a print report, and
// closes the sale once nothing more is owed on it.
func (k *Kiosk) printConfirmed(ctx context.Context, raw []byte) {
	res, err := protocol.DecodePrintResult(raw)
	if err != nil {
		k.log.Error("unreadable print confirmation from hub", "err", err)
		return
	}
	if res.Status != protocol.ResultOK {
		k.log.Error("the hub refused a print report; not sent again", "request_id", res.RequestID, "error", res.Error)
	}
	if k.journal == nil {
		return
	}
	// The hub has confirmed: the record of it must not fail for the
	// caller's deadline running out meanwhile.
	ctx = context.WithoutCancel(ctx)
	k.step("reported")
	if err := k.journal.Reported(ctx, res.RequestID); err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	s, err := k.journal.Get(ctx, res.RequestID)
	if err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	k.closeIfSettled(ctx, s)
}

// closeIfSettled closes a reported sale once no label of it is owed a
// reprint or refund.
func (k *Kiosk) closeIfSettled(ctx context.Context, s *journal.Sale) {
	for _, l := range s.Labels {
		if l.Owed() {
			return // a failed label waits for its reprint or refund
		}
	}
	k.finish(ctx, s.RequestID)
}

// settleLoop settles, every ResendEvery, the sales nobody waits on any
// more: one the hub never answered (the customer was told so) is sent again
// until the hub answers, then reported and refunded; one whose print report
// was never confirmed is reported again. Their labels stay held meanwhile.
func (k *Kiosk) settleLoop() {
	k.afterRecovery(k.cfg.ResendEvery, func() {
		if k.link.Up() {
			k.settleOpen(context.Background())
		}
	})
}

func (k *Kiosk) settleOpen(ctx context.Context) {
	open, err := k.journal.Unfinished(ctx)
	if err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	for _, s := range open {
		if k.handled(s.RequestID) {
			continue
		}
		// One try each round: a silent hub must not hold the loop.
		cctx, cancel := context.WithTimeout(ctx, k.cfg.ResendEvery)
		switch {
		case s.Result == nil:
			if err := k.settle(cctx, s, "no_answer"); err != nil {
				k.log.Warn("sale still without an answer from the hub; its labels stay held", "request_id", s.RequestID, "err", err)
			} else {
				k.log.Info("sale the hub answered late settled: nothing printed, anything charged refunded", "request_id", s.RequestID)
			}
		case !s.Reported:
			printed, failed := s.Settle("power_cut")
			if err := k.report(cctx, s.RequestID, printed, failed); err != nil {
				k.log.Warn("print report not confirmed yet; sent again later", "request_id", s.RequestID, "err", err)
			}
		default:
			// Reported, and not closed when the confirmation came (a
			// journal write failed then).
			k.closeIfSettled(ctx, s)
		}
		cancel()
	}
}

// handled reports whether a customer's sale holds requestID right now.
func (k *Kiosk) handled(requestID string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.inHand[requestID]
}

// rejected forgets labels the hub says are not ours to use.
func (k *Kiosk) rejected(labels []journal.Label, e *protocol.Error) {
	if e == nil {
		return
	}
	switch e.Code {
	case protocol.CodeLabelUsed, protocol.CodeLabelUnknown, protocol.CodeLabelNotAssigned:
		for _, l := range labels {
			k.consume(l.Serial)
		}
	}
}

// heldLabels are the labels of sales whose fate the hub has not told yet:
// they may carry an indicium, so no new sale may offer them.
func (k *Kiosk) heldLabels(ctx context.Context) map[string]bool {
	held := map[string]bool{}
	if k.journal == nil {
		return held
	}
	open, err := k.journal.Unfinished(ctx)
	if err != nil {
		k.log.Error("journal", "err", err)
		return held
	}
	for _, s := range open {
		if s.Result == nil {
			for _, l := range s.Labels {
				held[l.Serial] = true
			}
		}
	}
	return held
}

// sweepAbandoned refunds, once the start-up settling is done, the failed
// labels whose customer chose no remedy within the window.
func (k *Kiosk) sweepAbandoned() {
	k.afterRecovery(min(k.cfg.RemedyWindow/4, 30*time.Second), func() {
		k.saleMu.Lock()
		k.refundAbandoned(context.Background(), time.Now().Add(-k.cfg.RemedyWindow))
		k.saleMu.Unlock()
	})
}

// afterRecovery runs fn every period once the start-up settling is done,
// until the kiosk closes.
func (k *Kiosk) afterRecovery(period time.Duration, fn func()) {
	select {
	case <-k.recovered:
	case <-k.stop:
		return
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
			fn()
		}
	}
}

// refundAbandoned refunds every label of a sale begun before that failed
// to print and got neither a reprint nor a refund: its customer has gone,
// and must not pay for a stamp they did not get. saleMu is held.
func (k *Kiosk) refundAbandoned(ctx context.Context, before time.Time) {
	if k.journal == nil {
		return
	}
	open, err := k.journal.Unfinished(ctx)
	if err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	for _, s := range open {
		if !s.Reported || !s.Started.Before(before) {
			continue // settled at start, or still the customer's to choose
		}
		for _, l := range s.Labels {
			if l.State != journal.Failed {
				continue
			}
			res, err := k.Refund(ctx, s.RequestID, l.Serial)
			switch {
			case err != nil:
				k.log.Error("unclaimed failed label not refunded; tried again later", "request_id", s.RequestID, "label", l.Serial, "err", err)
				return // the hub is not answering
			case res.Status == protocol.ResultOK:
				k.log.Info("refunded a failed label nobody claimed", "request_id", s.RequestID, "label", l.Serial, "amount", res.AmountMills.String())
			case res.Error != nil && res.Error.Code == protocol.CodeRemedyNotAllowed:
				k.remedied(s.RequestID, l.Serial, journal.Refunded) // the hub had it remedied already
			default:
				k.log.Error("unclaimed failed label refused a refund", "request_id", s.RequestID, "label", l.Serial, "err", res.Error)
			}
		}
	}
}

// remedied records that a failed label got its reprint or refund, and
// closes its sale once nothing more is owed on it.
func (k *Kiosk) remedied(requestID, serial string, st journal.LabelState) {
	if k.journal == nil {
		return
	}
	ctx := context.Background()
	k.journalLabel(ctx, requestID, serial, st, "")
	s, err := k.journal.Get(ctx, requestID)
	if err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	for _, l := range s.Labels {
		if l.Owed() {
			return
		}
	}
	if s.Reported {
		k.finish(ctx, requestID)
	}
}

// New returns a kiosk; Connect starts it.
func New(cfg Config, p LabelPrinter, log *slog.Logger) (*Kiosk, error) {
	if err := cfg.Check(); err != nil {
		return nil, fmt.Errorf("kiosk: %w", err)
	}
	k := &Kiosk{cfg: cfg, log: log, printer: p, started: time.Now(), waiting: map[string]chan []byte{}, inHand: map[string]bool{},
		done: map[string]*saleRecord{}, stop: make(chan struct{}), newCfg: make(chan struct{}, 1), recovered: make(chan struct{})}
	k.staff.init(cfg.StaffPINHash, cfg.StaffBadges)
	return k, nil
}

// Connect opens the session with the hub (cfg.Link, or MQTT to
// cfg.Broker) and starts the kiosk's background work.
func (k *Kiosk) Connect() error {
	k.link = k.cfg.Link
	if k.link == nil {
		k.link = newMQTTLink(k.cfg, k.log)
	}
	k.link.Open(k.deliver)
	go k.heartbeat()
	go k.recover()
	go k.sweepAbandoned()
	if k.journal != nil {
		go k.settleLoop()
	}
	k.watchDevices()
	return nil
}

// heartbeat publishes telemetry every period the hub configured (30 s
// until it says), picking up a new period without a restart.
func (k *Kiosk) heartbeat() {
	for {
		period := 30 * time.Second
		k.mu.Lock()
		if k.config != nil && k.config.HeartbeatS > 0 {
			period = time.Duration(k.config.HeartbeatS) * time.Second
		}
		k.mu.Unlock()
		select {
		case <-k.stop:
			return
		case <-k.newCfg:
			continue
		case <-time.After(period):
		}
		if k.link.Up() {
			k.publishJSON(protocol.TopicTelemetry, k.Telemetry())
		}
	}
}

// Telemetry is the kiosk's state as its heartbeat reports it.
func (k *Kiosk) Telemetry() protocol.Telemetry {
	t := k.telemetry()
	t.InService = k.Status().InService
	t.Scale = k.Weight().State
	return t
}

func (k *Kiosk) telemetry() protocol.Telemetry {
	left := k.LabelsLeft()
	k.mu.Lock()
	t := protocol.Telemetry{KioskID: k.cfg.ID, At: time.Now().UTC(), Firmware: k.cfg.Firmware,
		UptimeS: int64(time.Since(k.started).Seconds()), LabelsLeft: left, Paper: "ok", Printer: "ok", Scale: "ok",
		LastError: k.lastErr, Sales: k.sales, InService: true}
	k.mu.Unlock()
	k.ds.mu.Lock()
	if k.ds.printer != "" { // the printer answers status queries
		t.Printer, t.Paper = k.ds.printer, k.ds.paper
	}
	k.ds.mu.Unlock()
	return t
}

// Close publishes offline and disconnects.
func (k *Kiosk) Close() {
	k.once.Do(func() { close(k.stop) })
	if k.link != nil {
		k.link.Close()
	}
}

// deliver takes what the hub sent on one of the Subscribed suffixes.
func (k *Kiosk) deliver(suffix string, payload []byte) {
	if suffix == protocol.TopicConfig {
		k.onConfig(payload)
		return
	}
	k.onAnswer(suffix, payload)
}

func (k *Kiosk) onConfig(payload []byte) {
	c, err := protocol.DecodeKioskConfig(payload)
	if err != nil || c.KioskID != k.cfg.ID {
		k.log.Error("bad config from hub", "err", err)
		return
	}
	k.mu.Lock()
	k.config = c
	k.mu.Unlock()
	select {
	case k.newCfg <- struct{}{}:
	default:
	}
	k.log.Info("config received", "rate_table", c.Rates.Version, "heartbeat_s", c.HeartbeatS)
}

// onAnswer hands a result to the call waiting for its topic and request
// id. A print confirmation nobody waits for (the sale's customer has their
// receipt) is recorded here.
func (k *Kiosk) onAnswer(suffix string, payload []byte) {
	var id struct {
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(payload, &id); err != nil {
		k.log.Error("unreadable answer from hub", "topic", suffix, "err", err)
		return
	}
	asked := strings.TrimSuffix(suffix, "/result")
	key := asked + "/" + id.RequestID
	k.mu.Lock()
	ch := k.waiting[key]
	delete(k.waiting, key)
	k.mu.Unlock()
	switch {
	case ch != nil:
		ch <- payload
	case asked == protocol.TopicPrint:
		k.printConfirmed(context.Background(), payload)
	default:
		k.log.Info("answer for no waiting request (a repeat)", "topic", suffix, "request_id", id.RequestID)
	}
}

// Rates returns the rate table in force, or nil before the hub sent one.
func (k *Kiosk) Rates() *protocol.RateTable {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.config == nil {
		return nil
	}
	rt := k.config.Rates
	return &rt
}

// Ready reports whether the kiosk can sell: connected now (not merely
// trying to reconnect) and configured.
func (k *Kiosk) Ready() bool {
	return k.link != nil && k.link.Up() && k.Rates() != nil
}

// PayTerminal is the touchscreen's payment method: the kiosk takes the
// card on its terminal and sends the hub the token.
const PayTerminal = "terminal"

// notSelling lists why no sale may start; labelsGiven skips the stock
// check for an order that names its labels.
func (k *Kiosk) notSelling(labelsGiven bool) []string {
	k.refreshPrinter() // a fault just cleared must not refuse this sale
	var why []string
	for _, r := range k.Status().Reasons {
		if r == "out_of_labels" && labelsGiven || r == "hub_offline" {
			continue // the hub round trip says so itself
		}
		why = append(why, r)
	}
	return why
}

// Order is what the customer chose.
type Order struct {
	RateClass string `json:"rate_class"`
	// WeightMg is what the screen showed; 0 takes the scale's reading.
	WeightMg int64            `json:"weight_mg"`
	Quantity *int             `json:"quantity,omitempty"` // stamps, 1 to protocol.MaxItems; default 1
	Labels   []string         `json:"labels,omitempty"`   // default: the next free labels of the loaded stock
	Payment  protocol.Payment `json:"payment"`
}

// Validate refuses, as invalid_request, an order no sale could come of:
// nothing reaches the scale, the card terminal or the hub for it.
func (o *Order) Validate() error {
	bad := func(format string, args ...any) error {
		return protocol.Errorf(protocol.CodeInvalidRequest, format, args...)
	}
	switch {
	case o.WeightMg < 0 || o.WeightMg > protocol.MaxWeightMg:
		return bad("weight_mg: want 1 to %d, or 0 for the scale's reading", protocol.MaxWeightMg)
	case o.Quantity != nil && (*o.Quantity < 1 || *o.Quantity > protocol.MaxItems):
		return bad("quantity: want 1 to %d stamps", protocol.MaxItems)
	case len(o.Labels) > protocol.MaxItems:
		return bad("labels: want at most %d", protocol.MaxItems)
	case o.Quantity != nil && len(o.Labels) > 0 && *o.Quantity != len(o.Labels):
		return bad("quantity %d and %d labels: give one or the other", *o.Quantity, len(o.Labels))
	}
	return nil
}

// count is how many stamps the order is for.
func (o *Order) count() int {
	if o.Quantity != nil {
		return *o.Quantity
	}
	return 1
}

// LabelResult is one label's outcome.
type LabelResult struct {
	LabelSerial string         `json:"label_serial"`
	MeterNumber string         `json:"meter_number,omitempty"`
	Amount      protocol.Mills `json:"amount_mills"`
	Outcome     string         `json:"outcome"`
	Reason      string         `json:"reason,omitempty"`
}

// Receipt is what the customer is shown.
type Receipt struct {
	RequestID string          `json:"request_id"`
	Status    string          `json:"status"`
	Error     *protocol.Error `json:"error,omitempty"`
	Total     protocol.Mills  `json:"total_mills"` // postage on labels that printed
	Labels    []LabelResult   `json:"labels,omitempty"`
}

// saleRecord is a finished sale as the kiosk remembers it.
type saleRecord struct {
	items   []protocol.PurchaseItem
	service string
	labels  []LabelResult
}

// Sell runs one sale: price, ask the hub, print each label, report.
func (k *Kiosk) Sell(ctx context.Context, o Order) (*Receipt, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	k.saleMu.Lock()
	defer k.saleMu.Unlock()
	defer k.setProgress(Progress{Step: "idle"})
	rt := k.Rates()
	if rt == nil {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no rate table from the hub yet")
	}
	if why := k.notSelling(len(o.Labels) > 0); why != nil {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "out of service: %s", strings.Join(why, ", "))
	}
	// A new sale means the last customer has left the screen. A hub slow
	// to refund must not keep the next customer waiting: the sweep retries.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	k.refundAbandoned(rctx, time.Now())
	cancel()
	price, err := rt.Price(o.RateClass, o.WeightMg)
	if k.dev.Scale != nil {
		// The scale prices the sale. A weight from the screen that prices
		// differently is stale: the customer must see the new price first.
		k.setProgress(Progress{Step: "weighing"})
		mg, werr := k.weigh(ctx)
		if werr != nil {
			return nil, werr
		}
		p, perr := rt.Price(o.RateClass, mg)
		if perr != nil {
			return nil, perr
		}
		if o.WeightMg != 0 && (err != nil || p != price) {
			return nil, protocol.Errorf(protocol.CodeInvalidRequest, "weight_mg: the scale now reads %d mg, which costs %s, not the %d mg shown; weigh again", mg, p, o.WeightMg)
		}
		o.WeightMg, price, err = mg, p, nil
	}
	if err != nil {
		return nil, err
	}
	labels := o.Labels
	if len(labels) == 0 {
		if labels, err = k.nextLabels(o.count(), k.heldLabels(ctx)); err != nil {
			return nil, err
		}
	}
	req := &protocol.PurchaseRequest{RequestID: newRequestID(), KioskID: k.cfg.ID, OriginZIP: k.cfg.OriginZIP,
		RateTable: rt.Version, Payment: o.Payment}
	for _, l := range labels {
		req.Items = append(req.Items, protocol.PurchaseItem{RateClass: o.RateClass, WeightMg: o.WeightMg, AmountMills: price, LabelSerial: l})
	}
	if o.Payment.Method == PayTerminal {
		// The customer pays on the terminal; the hub gets its token only.
		// Nothing the hub would refuse on sight may reach the card.
		if err := req.ValidateOrder(); err != nil {
			return nil, err
		}
		if k.dev.Terminal == nil {
			return nil, protocol.Errorf(protocol.CodePaymentInvalid, "this kiosk has no card terminal")
		}
		k.setProgress(Progress{Step: "paying"})
		tok, err := k.dev.Terminal.Charge(ctx, req.RequestID, int64(price)*int64(len(labels)))
		switch {
		case errors.Is(err, payterm.ErrDeclined):
			return nil, protocol.Errorf(protocol.CodePaymentDeclined, "the card was declined; nothing was charged")
		case errors.Is(err, payterm.ErrTimeout):
			return nil, protocol.Errorf(protocol.CodePaymentTimeout, "no card was presented; nothing was charged")
		case err != nil:
			k.log.Error("card terminal", "err", err)
			return nil, protocol.Errorf(protocol.CodePaymentInvalid, "the card terminal failed; nothing was charged")
		}
		req.Payment = protocol.Payment{Method: protocol.PayCardToken, Token: tok.Token, Brand: tok.Brand, Last4: tok.Last4}
	}
	svc, _ := rt.Class(o.RateClass)
	return k.buy(ctx, req, svc.Print)
}

// Reprint asks for a free reprint of a label of an earlier sale that failed
// to print, on the next free label.
func (k *Kiosk) Reprint(ctx context.Context, requestID, label string) (*Receipt, error) {
	k.saleMu.Lock()
	defer k.saleMu.Unlock()
	defer k.setProgress(Progress{Step: "idle"})
	k.mu.Lock()
	rec := k.done[requestID]
	k.mu.Unlock()
	var item *protocol.PurchaseItem
	if rec != nil {
		for i := range rec.items {
			if rec.items[i].LabelSerial == label {
				item = &rec.items[i]
			}
		}
	}
	if item == nil {
		return nil, protocol.Errorf(protocol.CodeRemedyNotAllowed, "this kiosk sold no label %s in sale %s", label, requestID)
	}
	rt := k.Rates()
	if rt == nil {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no rate table from the hub yet")
	}
	next, err := k.nextLabels(1, k.heldLabels(ctx))
	if err != nil {
		return nil, err
	}
	it := *item
	it.LabelSerial = next[0]
	req := &protocol.PurchaseRequest{RequestID: newRequestID(), KioskID: k.cfg.ID, OriginZIP: k.cfg.OriginZIP, RateTable: rt.Version,
		Items: []protocol.PurchaseItem{it}, Payment: protocol.Payment{Method: protocol.PayNone},
		ReprintOf: &protocol.LabelRef{RequestID: requestID, LabelSerial: label}}
	rc, err := k.buy(ctx, req, rec.service)
	if err == nil && rc.Status == protocol.ResultOK {
		k.remedied(requestID, label, journal.Reprinted)
	}
	return rc, err
}

// Refund asks for the money back for a label that failed to print.
func (k *Kiosk) Refund(ctx context.Context, requestID, label string) (*protocol.RefundResult, error) {
	req := &protocol.RefundRequest{RequestID: newRequestID(), KioskID: k.cfg.ID, Label: protocol.LabelRef{RequestID: requestID, LabelSerial: label}}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	raw, err := k.call(ctx, protocol.TopicRefund, req.RequestID, req)
	if err != nil {
		return nil, err
	}
	res, err := protocol.DecodeRefundResult(raw)
	if err == nil && res.Status == protocol.ResultOK {
		k.remedied(requestID, label, journal.Refunded)
	}
	return res, err
}

// buy sends a purchase, prints what comes back and reports each label.
func (k *Kiosk) buy(ctx context.Context, req *protocol.PurchaseRequest, service string) (*Receipt, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("kiosk: request: %w", err)
	}
	labels := make([]string, len(req.Items))
	for i, it := range req.Items {
		labels[i] = it.LabelSerial
	}
	// Journal writes use a context of their own: a customer walking away
	// must not leave a step half recorded.
	jctx := context.WithoutCancel(ctx)
	k.mu.Lock()
	k.inHand[req.RequestID] = true
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		delete(k.inHand, req.RequestID)
		k.mu.Unlock()
	}()
	if k.journal != nil {
		if err := k.journal.Begin(jctx, req.RequestID, payload, labels); err != nil {
			k.log.Error("journal", "err", err)
			return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "the kiosk cannot record the sale; nothing was charged")
		}
	}
	k.step("begun")
	k.setProgress(Progress{Step: "issuing"})
	raw, err := k.callRaw(ctx, protocol.TopicPurchase, req.RequestID, payload)
	if err != nil {
		// The hub may yet have sold: the settler keeps asking, holds the
		// labels meanwhile, and refunds whatever was charged.
		k.setErr("hub_no_answer")
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable,
			"no answer from the hub; nothing is printed, and anything charged for this sale is refunded once the hub answers")
	}
	res, err := protocol.DecodePurchaseResult(raw)
	if err != nil {
		return nil, fmt.Errorf("kiosk: result from hub: %w", err)
	}
	if k.journal != nil {
		if err := k.journal.Answer(jctx, req.RequestID, raw); err != nil {
			k.log.Error("journal", "err", err)
		}
	}
	k.step("answered")
	rc := &Receipt{RequestID: req.RequestID, Status: res.Status, Error: res.Error}
	if res.Status != protocol.ResultOK {
		k.finish(jctx, req.RequestID)
		k.setErr(string(res.Error.Code))
		switch res.Error.Code {
		case protocol.CodeLabelUsed, protocol.CodeLabelUnknown, protocol.CodeLabelNotAssigned:
			// Our view of the stock was wrong: never offer those labels again.
			for _, it := range req.Items {
				k.consume(it.LabelSerial)
			}
		}
		return rc, nil
	}
	report := protocol.PrintReport{RequestID: req.RequestID, KioskID: k.cfg.ID}
	for i, issued := range res.Indicia {
		k.consume(issued.LabelSerial)
		lr := LabelResult{LabelSerial: issued.LabelSerial, MeterNumber: issued.MeterNumber, Amount: issued.AmountMills}
		k.journalLabel(jctx, req.RequestID, issued.LabelSerial, journal.Printing, "")
		k.step("printing")
		k.setProgress(Progress{Step: "printing", Label: i + 1, Of: len(res.Indicia)})
		err := k.printOne(req.Items[i], issued, service)
		k.step("printed")
		if err != nil {
			lr.Outcome, lr.Reason = protocol.PrintFailed, failReason(err)
			k.setErr(lr.Reason)
			k.log.Error("label not printed", "label", issued.LabelSerial, "err", err)
			k.journalLabel(jctx, req.RequestID, issued.LabelSerial, journal.Failed, lr.Reason)
		} else {
			lr.Outcome = protocol.Printed
			rc.Total += issued.AmountMills
			k.journalLabel(jctx, req.RequestID, issued.LabelSerial, journal.Printed, "")
		}
		rc.Labels = append(rc.Labels, lr)
		report.Labels = append(report.Labels, protocol.LabelOutcome{LabelSerial: lr.LabelSerial, Outcome: lr.Outcome, Reason: lr.Reason})
	}
	// The customer does not wait for the hub to confirm the report: the
	// confirmation closes the sale when it comes (onAnswer), and the
	// settler sends the report again until it does.
	k.publishAsync(protocol.TopicPrint, report)
	k.mu.Lock()
	k.sales++
	k.done[req.RequestID] = &saleRecord{items: req.Items, service: service, labels: rc.Labels}
	k.mu.Unlock()
	return rc, nil
}

// LoadStock tells the hub staff loaded these sheets, and keeps their free
// labels for the sales to come.
func (k *Kiosk) LoadStock(ctx context.Context, sheets []string) (*protocol.StockResult, error) {
	req := &protocol.StockLoad{RequestID: newRequestID(), KioskID: k.cfg.ID, Sheets: sheets}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	raw, err := k.call(ctx, protocol.TopicStock, req.RequestID, req)
	if err != nil {
		return nil, err
	}
	res, err := protocol.DecodeStockResult(raw)
	if err != nil {
		return nil, err
	}
	if res.Status == protocol.ResultOK {
		k.mu.Lock()
		// A sheet loaded again (as after a restart, which can overlap a
		// load by staff) keeps its place: labels go out in load order.
		for _, st := range res.Sheets {
			if i := slices.IndexFunc(k.stock, func(s protocol.SheetState) bool { return s.Sheet == st.Sheet }); i >= 0 {
				k.stock[i] = st
			} else {
				k.stock = append(k.stock, st)
			}
		}
		k.stock = slices.DeleteFunc(k.stock, func(s protocol.SheetState) bool { return len(s.Free) == 0 })
		k.mu.Unlock()
		k.ds.mu.Lock()
		k.ds.wrongStock = "" // staff loaded the stock again
		k.ds.mu.Unlock()
		if k.journal != nil {
			if err := k.journal.AddSheets(context.WithoutCancel(ctx), sheets); err != nil {
				k.log.Error("journal", "err", err)
			}
		}
		k.statusChanged()
	}
	return res, nil
}

// reloadStock asks the hub again for the sheets the journal says are
// loaded, one by one, forgetting those it refuses (used up, moved).
func (k *Kiosk) reloadStock(ctx context.Context) {
	sheets, err := k.journal.Sheets(ctx)
	if err != nil {
		k.log.Error("journal", "err", err)
		return
	}
	for _, s := range sheets {
		res, err := k.LoadStock(ctx, []string{s})
		if err != nil {
			k.log.Warn("stock not reloaded", "sheet", s, "err", err)
			continue
		}
		if res.Status != protocol.ResultOK {
			k.log.Info("sheet no longer loaded", "sheet", s, "error", res.Error)
			if err := k.journal.DropSheet(ctx, s); err != nil {
				k.log.Error("journal", "err", err)
			}
		}
	}
	k.log.Info("stock reloaded after start", "labels_left", k.LabelsLeft())
}

// LabelsLeft counts the free labels of the loaded stock.
func (k *Kiosk) LabelsLeft() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, s := range k.stock {
		n += len(s.Free)
	}
	return n
}

// nextLabels takes the next n free labels, in load order, passing over
// held ones (a sale whose fate is unknown may have used them).
func (k *Kiosk) nextLabels(n int, held map[string]bool) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, s := range k.stock {
		for _, p := range s.Free {
			if len(out) == n {
				return out, nil
			}
			if l := fmt.Sprintf("%s-%02d", s.Sheet, p); !held[l] {
				out = append(out, l)
			}
		}
	}
	if len(out) < n {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "out of labels: %d left, %d wanted; staff must load stock", len(out), n)
	}
	return out, nil
}

// consume removes a label from the free stock.
func (k *Kiosk) consume(label string) {
	l, err := protocol.ParseLabelSerial(label)
	if err != nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.stock {
		if k.stock[i].Sheet == l.Sheet.String() {
			k.stock[i].Free = slices.DeleteFunc(k.stock[i].Free, func(p int) bool { return p == int(l.Position) })
		}
	}
	k.stock = slices.DeleteFunc(k.stock, func(s protocol.SheetState) bool { return len(s.Free) == 0 })
}

// printOne checks that the hub signed what was asked for, then prints it.
// A kiosk never prints an indicium for another label or amount.
func (k *Kiosk) printOne(want protocol.PurchaseItem, got protocol.IssuedIndicium, service string) error {
	in, err := protocol.ParseIndicium(got.Matrix)
	if err != nil {
		return fmt.Errorf("kiosk: indicium from hub: %w", err)
	}
	if in.Label.String() != want.Label().String() || in.Postage != want.AmountMills || in.RateCategory != want.RateClass ||
		got.LabelSerial != in.Label.String() {
		return fmt.Errorf("kiosk: indicium from hub is for %s %s %d, asked %s %s %d",
			in.Label, in.RateCategory, in.Postage, want.LabelSerial, want.RateClass, want.AmountMills)
	}
	img, err := label.Render(label.FromIndicium(in, got.Matrix, service), k.cfg.LabelSize)
	if err != nil {
		return err
	}
	if k.cfg.LabelCheck != nil {
		under, err := k.cfg.LabelCheck.UnderHead(context.Background())
		switch {
		case err != nil:
			k.wrongStock("label_unread")
			return &labelFault{"label_unread", fmt.Sprintf("label %s: the serial under the print head was not read: %v", want.LabelSerial, err)}
		case under != in.Label.String():
			k.wrongStock("wrong_label")
			return &labelFault{"wrong_label", fmt.Sprintf("label %s was signed, but %s is under the print head", want.LabelSerial, under)}
		}
	}
	return k.printer.Print(img)
}

// wrongStock stops sales until staff load stock again: the labels in the
// printer are not the ones the kiosk thinks they are.
func (k *Kiosk) wrongStock(why string) {
	k.ds.mu.Lock()
	k.ds.wrongStock = why
	k.ds.mu.Unlock()
	k.log.Error("the label under the print head is not the one to print: sales stop until staff reload the stock", "why", why)
	k.statusChanged()
}

// call publishes a request on suffix and waits for the answer with its
// request id, sending the same bytes again until one arrives: the hub
// answers a repeat with the first answer.
func (k *Kiosk) call(ctx context.Context, suffix, requestID string, req any) ([]byte, error) {
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("kiosk: request: %w", err)
	}
	return k.callRaw(ctx, suffix, requestID, payload)
}

// callRaw is call with the request already encoded, as the journal keeps it.
func (k *Kiosk) callRaw(ctx context.Context, suffix, requestID string, payload []byte) ([]byte, error) {
	ch := make(chan []byte, 1)
	key := suffix + "/" + requestID
	k.mu.Lock()
	k.waiting[key] = ch
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		delete(k.waiting, key)
		k.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, k.cfg.Deadline)
	defer cancel()
	tick := time.NewTicker(k.cfg.ResendEvery)
	defer tick.Stop()
	for attempt := 1; ; attempt++ {
		k.link.Send(suffix, payload, 0)
		select {
		case r := <-ch:
			return r, nil
		case <-ctx.Done():
			return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no answer from the hub after %d attempts", attempt)
		case <-tick.C:
			k.log.Warn("no answer yet, sending again", "request_id", requestID, "topic", suffix, "attempt", attempt+1)
		}
	}
}

// publishAsync publishes v at QoS 1 and does not wait for the broker.
func (k *Kiosk) publishAsync(suffix string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		k.log.Error("encode", "topic", suffix, "err", err)
		return
	}
	k.link.Send(suffix, b, 0)
}

// publishJSON publishes v at QoS 1 and reports whether the broker took it.
func (k *Kiosk) publishJSON(suffix string, v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		k.log.Error("encode", "topic", suffix, "err", err)
		return false
	}
	return k.link.Send(suffix, b, 5*time.Second)
}

func (k *Kiosk) journalLabel(ctx context.Context, requestID, serial string, st journal.LabelState, reason string) {
	if k.journal == nil {
		return
	}
	if err := k.journal.SetLabel(ctx, requestID, serial, st, reason); err != nil {
		k.log.Error("journal", "err", err)
	}
}

func (k *Kiosk) finish(ctx context.Context, requestID string) {
	if k.journal == nil {
		return
	}
	if err := k.journal.Finish(ctx, requestID); err != nil {
		k.log.Error("journal", "err", err)
	}
}

func (k *Kiosk) setErr(s string) {
	k.mu.Lock()
	k.lastErr = s
	k.errLog = append(k.errLog, ErrorEntry{At: time.Now().UTC(), Error: s})
	if len(k.errLog) > 20 {
		k.errLog = k.errLog[len(k.errLog)-20:]
	}
	k.mu.Unlock()
}

// ErrorEntry is one of the last errors staff see.
type ErrorEntry struct {
	At    time.Time `json:"at"`
	Error string    `json:"error"`
}

// Errors returns the last errors, oldest first.
func (k *Kiosk) Errors() []ErrorEntry {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]ErrorEntry{}, k.errLog...)
}

// failReason maps a print error to the reason a PrintReport carries.
func failReason(err error) string {
	var fe interface{ Fault() string }
	switch {
	case errors.As(err, &fe):
		return fe.Fault()
	case errors.Is(err, printer.ErrSilent):
		return "printer_silent"
	}
	return "printer_error"
}

// newRequestID returns 26 random base32 characters.
func newRequestID() string { return rand.Text() }
