// Package kiosk is the appliance's brain: it keeps the session with the hub
// (link.go: MQTT, behind Link), holds the config the hub pushes (rate
// table, heartbeat), runs a sale from purchase request to printed labels
// (sale.go) on the loaded label stock (stock.go), settles what a power cut
// or a silent hub left open (recovery.go), reports telemetry
// (telemetry.go), and serves the local API that the touchscreen uses
// (api.go).
package kiosk

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/frank-postage/frank/appliance/update"
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
	// device CA; CertExpired says whether the certificate expired, by the
	// hub's clock (identity.Expired).
	TLS         *tls.Config
	CertExpired func() bool
	OriginZIP   protocol.ZIP // the store's ZIP, printed and signed into every stamp
	Listen      string       // local API for the touchscreen; default 127.0.0.1:8081
	Firmware    string       // version reported in telemetry
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
	// Restart, if set, restarts the kiosk service when ops ask: the kiosk
	// calls it once the sale in hand is over, and starts no other.
	Restart func()
	// DeviceGone, if set, is called once a device the kiosk sells with
	// (the card terminal, the head scanner) has failed for good, with its
	// status reason, after the sale in hand is over; the kiosk starts no
	// other. cmd/kiosk then exits non-zero and systemd starts it again,
	// which opens the ports anew.
	DeviceGone func(reason string)
	// Logs, if set, are the recent log lines diagnostics report.
	Logs lineSource
	// Clock, if set, is the kiosk's wall clock: its heartbeats, the
	// journal's times, the remedy window of sales from before the kiosk
	// started, staff logins and the certificate's expiry (tests move it;
	// the fleet twin gives one kiosk a bad one). Default the system's.
	// Periodic work still ticks in real time, and the remedy window of a
	// sale begun since the start runs on the monotonic clock, which no
	// step of the wall clock moves.
	Clock func() time.Time
	// monotonic, if set, is how long the kiosk has run (tests move it with
	// Clock, or step Clock alone); default the system's monotonic clock.
	monotonic func() time.Duration
	// Dial, if set, opens the connection to the broker (the fleet twin
	// cuts it to stage a partition or a power cut).
	Dial func(network, addr string) (net.Conn, error)
	// Updates, if set, is where signed releases are installed; Downloads
	// fetches them from HubURL (https://host:port).
	Updates   *update.Store
	Downloads *http.Client
	HubURL    string
}

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
	done    map[string]*saleRecord // recent sales, for reprints and refunds
	sales   int64
	lastErr string
	errLog  []ErrorEntry

	// begun holds when each open sale of this run began, by uptime.
	begun map[string]time.Duration

	stock labelStock // loaded sheets and their free labels
	cmds  commandLog // ops' commands carried out

	saleMu sync.Mutex // one sale at a time: there is one printer
	// loadMu: one stock load at a time, so each knows the sheets it
	// journaled and may forget them if the hub refuses it.
	loadMu sync.Mutex
	stop   chan struct{}
	once   sync.Once
	gone   sync.Once     // DeviceGone called
	newCfg chan struct{} // a config arrived: the heartbeat period may change

	dev   Devices
	ds    deviceState
	staff staffSessions

	progress atomic.Pointer[Progress] // the sale in hand, for the touchscreen
	// screenSeen is when the touchscreen last polled the status (unix ns;
	// 0 never), and screenUp the kiosk's uptime then (ns, plus one), which
	// its watchdog judges by: a step of the wall clock would have a hung
	// page reported live, or a live one restarted.
	screenSeen, screenUp atomic.Int64

	journal saleJournal
	// stockUnknown: the kiosk has started with a journal and not yet asked
	// the hub about the sheets it holds, so its count of labels is not one.
	stockUnknown atomic.Bool
	crash        crashPoint // power-cut tests only; empty unless built with -tags crashtest
	recovered    chan struct{}
}

// New returns a kiosk; Connect starts it.
func New(cfg Config, p LabelPrinter, log *slog.Logger) (*Kiosk, error) {
	if err := cfg.Check(); err != nil {
		return nil, fmt.Errorf("kiosk: %w", err)
	}
	k := &Kiosk{cfg: cfg, log: log, printer: p, waiting: map[string]chan []byte{}, inHand: map[string]bool{}, begun: map[string]time.Duration{},
		done: map[string]*saleRecord{}, stop: make(chan struct{}), newCfg: make(chan struct{}, 1), recovered: make(chan struct{})}
	k.started = time.Now() // uptime is elapsed time, whatever the wall clock says
	k.staff.now, k.staff.ask = k.now, k.askStaff
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
	k.restoreOps(context.Background())
	k.link.Open(k.deliver)
	go k.heartbeat()
	go k.recoverSales()
	go k.sweepAbandoned()
	if k.journal != nil {
		go k.settleLoop()
	}
	go k.checkHealth()
	k.watchDevices()
	return nil
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
	switch suffix {
	case protocol.TopicConfig:
		k.onConfig(payload)
		return
	case protocol.TopicCommand:
		k.onCommand(payload)
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
	k.staff.setCentral(c.StaffManaged, c.StaffNames, c.Store)
	select {
	case k.newCfg <- struct{}{}:
	default:
	}
	k.log.Info("config received", "rate_table", c.Rates.Version, "heartbeat_s", c.HeartbeatS,
		"staff_managed", c.StaffManaged, "staff", len(c.StaffNames), "settings", c.Settings)
}

// settings returns ops' central settings, as the last config had them.
func (k *Kiosk) settings() protocol.KioskSettings {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.config == nil {
		return protocol.KioskSettings{}
	}
	return k.config.Settings
}

// remedyWindow is how long a customer has to choose a remedy: ops'
// setting, else the kiosk's own.
func (k *Kiosk) remedyWindow() time.Duration {
	if s := k.settings().RemedyWindowS; s > 0 {
		return time.Duration(s) * time.Second
	}
	return k.cfg.RemedyWindow
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
	return k.exchange(ctx, suffix, requestID, payload, true)
}

// exchange publishes payload on suffix and waits for the answer with its
// request id, sending it again every ResendEvery if resend is set, until
// ctx ends or the Deadline passes.
func (k *Kiosk) exchange(ctx context.Context, suffix, requestID string, payload []byte, resend bool) ([]byte, error) {
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
	if !resend {
		tick.Stop()
	}
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

// staffCheckTimeout bounds a staff login's wait for the hub.
const staffCheckTimeout = 20 * time.Second

// askStaff checks a PIN or a badge at the hub. It is sent once: a
// repeat would count a wrong PIN twice against the kiosk's limit.
func (k *Kiosk) askStaff(ctx context.Context, pin, badge string) (string, time.Duration, error) {
	if k.link == nil || !k.link.Up() {
		return "", 0, protocol.Errorf(protocol.CodeServiceUnavailable, "no connection to the hub, which checks staff logins")
	}
	req := &protocol.StaffLogin{RequestID: newRequestID(), KioskID: k.cfg.ID, PIN: pin, Badge: badge}
	if err := req.Validate(); err != nil {
		return "", 0, nil // no member has a malformed PIN or badge
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return "", 0, fmt.Errorf("kiosk: staff login: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, staffCheckTimeout)
	defer cancel()
	raw, err := k.exchange(ctx, protocol.TopicStaff, req.RequestID, payload, false)
	if err != nil {
		return "", 0, err
	}
	res, err := protocol.DecodeStaffLoginResult(raw)
	switch {
	case err != nil:
		return "", 0, fmt.Errorf("kiosk: staff login: %w", err)
	case res.Status == protocol.ResultOK:
		return res.Name, 0, nil
	case res.RetryAfterS > 0:
		return "", time.Duration(res.RetryAfterS) * time.Second, nil
	case res.Error.Code == protocol.CodeUnauthorized:
		return "", 0, nil
	}
	return "", 0, res.Error
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

func (k *Kiosk) setErr(s string) {
	k.mu.Lock()
	k.lastErr = s
	k.errLog = append(k.errLog, ErrorEntry{At: k.now().UTC(), Error: s})
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
