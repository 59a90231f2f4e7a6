// Package front is the hub's MQTT face. It subscribes to every kiosk's
// purchase, print, status and telemetry topics through a shared subscription
// (so several hub processes split the load), hands purchases to the sale
// service, publishes results, and keeps each kiosk's retained config
// current.
package front

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/time/rate"

	"github.com/frank-postage/frank/hub/metrics"
	"github.com/frank-postage/frank/protocol"
)

// purchaser answers purchase and refund requests; the sale service.
type purchaser interface {
	Purchase(ctx context.Context, kioskID string, payload []byte) ([]byte, *protocol.Error)
	Refund(ctx context.Context, kioskID string, payload []byte) ([]byte, *protocol.Error)
}

// stocker answers stock loads; the label stock.
type stocker interface {
	Answer(ctx context.Context, kioskID string, payload []byte) ([]byte, *protocol.Error)
}

// printBook records print outcomes; the ledger.
type printBook interface {
	RecordPrint(ctx context.Context, r *protocol.PrintReport) error
}

// commandBook keeps kiosks' answers to ops' commands; hub/commands.
type commandBook interface {
	Record(ctx context.Context, kioskID string, r *protocol.CommandResult) error
}

// presence learns which kiosks are online; fleet.Presence.
type presence interface {
	Online(kioskID string)
	Offline(kioskID string)
	Heartbeat(t *protocol.Telemetry)
}

// Config configures the front.
type Config struct {
	Broker   string      // mqtts://host:port, or tcp:// for a password login
	TLS      *tls.Config // with mqtts: the hub's client certificate and the broker's CA
	ClientID string      // shared by nobody: two clients with one id knock each other off
	Username string
	Password string
	// ConfigFor builds the retained config for a kiosk.
	ConfigFor func(kioskID string) (protocol.KioskConfig, error)
	// MaxInFlight bounds concurrent purchases; default 256.
	MaxInFlight int
	// MaxPerKiosk bounds one kiosk's share of them; default 16, negative
	// none. A kiosk
	// sells one sale at a time and resends it now and then: a stolen one
	// that sends more, slow ones, must not take every kiosk's slots. (The
	// benchmark's load kiosks keep 16 outstanding.)
	MaxPerKiosk int
	// KioskRate and KioskBurst bound the messages of one kiosk the hub
	// handles, per second and at once; more are dropped unread. Default 20
	// and ten times KioskRate, the embedded broker's; negative KioskRate,
	// none (load generators).
	KioskRate  float64
	KioskBurst int
	// Presence, if set, is told of kiosk status and heartbeats.
	Presence presence
	// Meter, if set, times every purchase answered.
	Meter meter
	// Commands, if set, takes kiosks' answers to commands.
	Commands commandBook
	// Now is the clock of the kiosks' log budgets (nil: time.Now).
	Now func() time.Time
	// Staff, if set, answers kiosks' staff logins.
	Staff staffDesk
}

// staffDesk checks a kiosk's staff login and answers it.
type staffDesk interface {
	Answer(ctx context.Context, kioskID string, payload []byte) ([]byte, *protocol.Error)
}

// meter times answers for the metrics.
type meter interface {
	Answered(channel string, d time.Duration, code protocol.Code)
	Stage(stage string, d time.Duration)
}

// Front is a connected MQTT front.
type Front struct {
	cfg    Config
	sales  purchaser
	stock  stocker
	prints printBook
	log    *slog.Logger
	client mqtt.Client
	sem    chan struct{}
	// busy counts each kiosk's purchases in flight; shed, the purchases
	// dropped over MaxPerKiosk (the kiosk sends them again).
	busyMu sync.Mutex
	busy   map[string]int
	shed   atomic.Int64
	// over counts the kiosk messages dropped over their KioskRate.
	over   atomic.Int64
	msgs   msgBudget
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	lines  logBudget // what each kiosk's messages may write to the log
	// pushing serialises the config pushes of each kiosk (striped by its
	// id): a push reads the config and publishes it retained under the
	// lock, so a push that read the config before a change cannot publish
	// after one that read it after, and leave the old config retained.
	pushing [64]sync.Mutex
}

// Start connects to the broker and begins serving. It returns once the
// first connection is up and subscribed.
func Start(cfg Config, sales purchaser, stock stocker, prints printBook, log *slog.Logger) (*Front, error) {
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 256
	}
	if cfg.MaxPerKiosk == 0 {
		cfg.MaxPerKiosk = 16
	}
	if cfg.KioskRate == 0 {
		cfg.KioskRate = 20
	}
	if cfg.KioskBurst <= 0 {
		cfg.KioskBurst = max(1, int(10*cfg.KioskRate))
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Front{cfg: cfg, sales: sales, stock: stock, prints: prints, log: log, sem: make(chan struct{}, cfg.MaxInFlight), busy: map[string]int{}, ctx: ctx, cancel: cancel,
		lines: logBudget{now: cfg.Now, by: map[string]*lineWindow{}},
		msgs:  msgBudget{now: cfg.Now, limit: rate.Limit(cfg.KioskRate), burst: cfg.KioskBurst, by: map[string]*rate.Limiter{}}}
	if f.lines.now == nil {
		f.lines.now = time.Now
	}
	if f.msgs.now == nil {
		f.msgs.now = time.Now
	}
	subscribed := make(chan error, 1)
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetCleanSession(true). // kiosks resend until answered; nothing waits in the broker for us
		SetOrderMatters(false).
		// Acknowledged on arrival, not when the sale ends: a slow sale must
		// not hold one of the broker's in-flight slots for this client.
		// Kiosks resend whatever goes unanswered.
		SetAutoAckDisabled(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetKeepAlive(15 * time.Second).
		SetTLSConfig(cfg.TLS).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { log.Warn("broker connection lost", "err", err) }).
		SetOnConnectHandler(func(c mqtt.Client) {
			err := f.subscribe(c)
			if err != nil {
				log.Error("subscribe failed", "err", err)
			} else {
				log.Info("front connected and subscribed", "broker", cfg.Broker)
			}
			select {
			case subscribed <- err:
			default:
			}
		})
	if u, err := url.Parse(cfg.Broker); err == nil && (u.Scheme == "tcp" || u.Scheme == "mqtt") {
		opts.SetCustomOpenConnectionFn(DialBuffered)
	}
	f.client = mqtt.NewClient(opts)
	f.client.Connect() // retries in the background until it connects
	select {
	case err := <-subscribed:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("front: start: %w", err)
		}
	case <-time.After(30 * time.Second):
		f.Close()
		return nil, fmt.Errorf("front: start: no connection to %s after 30s", cfg.Broker)
	}
	return f, nil
}

// DialBuffered opens a plain TCP connection to the broker that reads
// through a buffer, for paho's SetCustomOpenConnectionFn. paho reads each
// packet's header a byte at a time: on a bare socket that is three or four
// system calls a packet, two packets a sale. (A TLS connection buffers its
// records already.)
func DialBuffered(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: o.ConnectTimeout}
	}
	c, err := d.Dial("tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("front: dial broker: %w", err)
	}
	return buffered(c), nil
}

// buffered returns c reading through a buffer.
func buffered(c net.Conn) net.Conn { return bufferedConn{Conn: c, r: bufio.NewReaderSize(c, 16<<10)} }

// bufferedConn is a connection read through r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (f *Front) subscribe(c mqtt.Client) error {
	subs := map[string]mqtt.MessageHandler{
		protocol.HubSubscription(protocol.TopicPurchase):      f.onPurchase,
		protocol.HubSubscription(protocol.TopicPrint):         f.onPrint,
		protocol.HubSubscription(protocol.TopicTelemetry):     f.onTelemetry,
		protocol.HubSubscription(protocol.TopicStock):         f.answer(protocol.TopicStockResult, f.stock.Answer),
		protocol.HubSubscription(protocol.TopicRefund):        f.answer(protocol.TopicRefundResult, f.sales.Refund),
		protocol.HubSubscription(protocol.TopicCommandResult): f.onCommandResult,
		// Status is retained and every hub needs it, so not shared.
		protocol.TopicRoot + "+/" + protocol.TopicStatus: f.onStatus,
	}
	if f.cfg.Staff != nil {
		subs[protocol.HubSubscription(protocol.TopicStaff)] = f.answer(protocol.TopicStaffResult, f.cfg.Staff.Answer)
	}
	for topic, h := range subs {
		t := c.Subscribe(topic, 1, func(c mqtt.Client, m mqtt.Message) {
			m.Ack()
			if kiosk, suffix, err := protocol.ParseKioskTopic(m.Topic()); err == nil && !f.msgs.admit(kiosk, suffix, m.Payload()) {
				f.over.Add(1)
				f.kioskLog(slog.LevelWarn, kiosk, "message dropped: the kiosk is over its message budget", "topic", suffix, "rate", f.cfg.KioskRate)
				return
			}
			h(c, m)
		})
		if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			if t.Error() == nil {
				return fmt.Errorf("front: subscribe %s: no answer from the broker", topic)
			}
			return fmt.Errorf("front: subscribe %s: %w", topic, t.Error())
		}
	}
	return nil
}

// Close stops taking messages, waits for purchases in progress, and
// disconnects.
func (f *Front) Close() {
	f.cancel()
	f.wg.Wait()
	f.client.Disconnect(1000)
}

func (f *Front) begin() bool {
	f.wg.Add(1)
	if f.ctx.Err() != nil {
		f.wg.Done()
		return false
	}
	return true
}

func (f *Front) onPurchase(c mqtt.Client, m mqtt.Message) {
	kiosk, _, err := protocol.ParseKioskTopic(m.Topic())
	if err != nil {
		f.log.Warn("message on a bad topic dropped", "topic", m.Topic())
		return
	}
	if !f.begin() {
		return
	}
	defer f.wg.Done()
	if !f.enter(kiosk) {
		// Dropped, not answered: a request has one answer, and this one's
		// copy in flight gives it. A kiosk resends after its deadline.
		f.shed.Add(1)
		f.kioskLog(slog.LevelWarn, kiosk, "purchase dropped: the kiosk has too many in flight", "max", f.cfg.MaxPerKiosk)
		return
	}
	defer f.leave(kiosk)
	f.sem <- struct{}{}
	defer func() { <-f.sem }()
	ctx, cancel := context.WithTimeout(f.ctx, 60*time.Second)
	defer cancel()
	start := time.Now()
	out, perr := f.sales.Purchase(ctx, kiosk, m.Payload())
	if f.cfg.Meter != nil { // before the kiosk hears it, so the charts never lag an answer
		var code protocol.Code
		if perr != nil {
			code = perr.Code
		}
		f.cfg.Meter.Answered("kiosk", time.Since(start), code)
	}
	if perr != nil && perr.Code == protocol.CodeRateTableStale {
		// The kiosk missed the table that took over (its leader died at
		// midnight, or every hub was down then), and reconnecting is the
		// only other way it hears of it: sent before the refusal, so it
		// has the table to re-price on when the refusal comes.
		f.PushConfig(kiosk)
	}
	sent := time.Now()
	f.publish(protocol.KioskTopic(kiosk, protocol.TopicPurchaseResult), 1, false, out)
	if f.cfg.Meter != nil {
		f.cfg.Meter.Stage(metrics.StageAnswer, time.Since(sent))
	}
	if perr != nil {
		f.kioskLog(slog.LevelInfo, kiosk, "purchase rejected", "code", perr.Code, "msg", perr.Message, "took", time.Since(start))
	} else {
		f.log.Debug("purchase answered", "kiosk", kiosk, "took", time.Since(start))
	}
}

// enter counts a purchase of kiosk in flight, unless it has its most.
func (f *Front) enter(kiosk string) bool {
	f.busyMu.Lock()
	defer f.busyMu.Unlock()
	if f.cfg.MaxPerKiosk > 0 && f.busy[kiosk] >= f.cfg.MaxPerKiosk {
		return false
	}
	f.busy[kiosk]++
	return true
}

func (f *Front) leave(kiosk string) {
	f.busyMu.Lock()
	defer f.busyMu.Unlock()
	if f.busy[kiosk]--; f.busy[kiosk] == 0 {
		delete(f.busy, kiosk)
	}
}

// Shed is how many purchases were dropped over MaxPerKiosk.
func (f *Front) Shed() int64 { return f.shed.Load() }

// OverBudget counts the kiosk messages dropped over their KioskRate.
func (f *Front) OverBudget() int64 { return f.over.Load() }

// answer serves a request topic whose answer goes to resultSuffix.
func (f *Front) answer(resultSuffix string, fn func(ctx context.Context, kioskID string, payload []byte) ([]byte, *protocol.Error)) mqtt.MessageHandler {
	return func(c mqtt.Client, m mqtt.Message) {
		kiosk, _, err := protocol.ParseKioskTopic(m.Topic())
		if err != nil || !f.begin() {
			return
		}
		defer f.wg.Done()
		ctx, cancel := context.WithTimeout(f.ctx, 60*time.Second)
		defer cancel()
		out, perr := fn(ctx, kiosk, m.Payload())
		f.publish(protocol.KioskTopic(kiosk, resultSuffix), 1, false, out)
		if perr != nil {
			f.kioskLog(slog.LevelInfo, kiosk, "request refused", "topic", m.Topic(), "code", perr.Code, "msg", perr.Message)
		}
	}
}

// onPrint records a print report and confirms it on print/result; the
// kiosk sends it again until confirmed. A report that cannot be recorded
// now (the store is down) is not confirmed, so it comes again.
func (f *Front) onPrint(c mqtt.Client, m mqtt.Message) {
	kiosk, _, err := protocol.ParseKioskTopic(m.Topic())
	if err != nil {
		return
	}
	result := protocol.KioskTopic(kiosk, protocol.TopicPrintResult)
	r, err := protocol.DecodePrintReport(m.Payload())
	if err == nil && r.KioskID != kiosk {
		err = protocol.Errorf(protocol.CodeKioskMismatch, "kiosk_id %s in a report on kiosk %s's topic", r.KioskID, kiosk)
	}
	if err != nil {
		f.kioskLog(slog.LevelWarn, kiosk, "bad print report", "err", err)
		if r != nil && protocol.ValidRequestID(r.RequestID) {
			f.publishJSON(result, protocol.PrintResult{RequestID: r.RequestID, Status: protocol.ResultRejected, Error: protocol.AsError(err)})
		}
		return
	}
	if !f.begin() {
		return
	}
	defer f.wg.Done()
	if err := f.prints.RecordPrint(f.ctx, r); err != nil {
		f.log.Error("print report not recorded; the kiosk sends it again", "kiosk", kiosk, "request_id", r.RequestID, "err", err)
		return
	}
	f.publishJSON(result, protocol.PrintResult{RequestID: r.RequestID, Status: protocol.ResultOK})
}

// publishJSON publishes v at QoS 1.
func (f *Front) publishJSON(topic string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		f.log.Error("encode", "topic", topic, "err", err)
		return
	}
	f.publish(topic, 1, false, b)
}

func (f *Front) onTelemetry(c mqtt.Client, m mqtt.Message) {
	kiosk, _, err := protocol.ParseKioskTopic(m.Topic())
	if err != nil {
		return
	}
	t, err := protocol.DecodeTelemetry(m.Payload())
	if err != nil {
		f.kioskLog(slog.LevelWarn, kiosk, "bad telemetry", "err", err)
		return
	}
	if kiosk != t.KioskID {
		f.kioskLog(slog.LevelWarn, kiosk, "telemetry for another kiosk", "kiosk_id", t.KioskID)
		return
	}
	f.log.Debug("telemetry", "kiosk", t.KioskID, "labels_left", t.LabelsLeft, "paper", t.Paper, "printer", t.Printer)
	if f.cfg.Presence != nil {
		f.cfg.Presence.Heartbeat(t)
	}
}

func (f *Front) onStatus(c mqtt.Client, m mqtt.Message) {
	kiosk, _, err := protocol.ParseKioskTopic(m.Topic())
	if err != nil {
		return
	}
	status := string(m.Payload())
	// Anything but online or offline is logged by its length and first
	// bytes, quoted: the payload is the kiosk's, up to 64 KiB of it.
	shown := status
	if status != protocol.StatusOnline && status != protocol.StatusOffline {
		shown = fmt.Sprintf("%q", status[:min(len(status), 32)])
	}
	f.kioskLog(slog.LevelInfo, kiosk, "kiosk status", "status", shown, "bytes", len(status))
	switch status {
	case protocol.StatusOnline:
		if f.cfg.Presence != nil {
			f.cfg.Presence.Online(kiosk)
		}
		f.PushConfig(kiosk)
	case protocol.StatusOffline:
		if f.cfg.Presence != nil {
			f.cfg.Presence.Offline(kiosk)
		}
	}
}

// SendCommand publishes a command to its kiosk; the command book sends it
// again until the kiosk answers.
func (f *Front) SendCommand(c protocol.Command) {
	f.publishJSON(protocol.KioskTopic(c.KioskID, protocol.TopicCommand), c)
}

// onCommandResult records a kiosk's answer to a command. One that cannot
// be recorded now is not lost: the command is sent again, and the kiosk
// answers with the same result.
func (f *Front) onCommandResult(c mqtt.Client, m mqtt.Message) {
	kiosk, _, err := protocol.ParseKioskTopic(m.Topic())
	if err != nil || f.cfg.Commands == nil || !f.begin() {
		return
	}
	defer f.wg.Done()
	r, err := protocol.DecodeCommandResult(m.Payload())
	if err == nil {
		err = f.cfg.Commands.Record(f.ctx, kiosk, r)
	}
	if err != nil {
		f.kioskLog(slog.LevelWarn, kiosk, "command result not recorded", "err", err)
		return
	}
	f.log.Info("command answered", "kiosk", kiosk, "command_id", r.CommandID, "status", r.Status)
}

// PushConfig publishes kioskID's current config, retained.
func (f *Front) PushConfig(kioskID string) {
	mu := &f.pushing[stripe(kioskID, len(f.pushing))]
	mu.Lock()
	defer mu.Unlock()
	cfg, err := f.cfg.ConfigFor(kioskID)
	if err != nil {
		f.log.Error("no config for kiosk", "kiosk", kioskID, "err", err)
		return
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		f.log.Error("config not encoded", "kiosk", kioskID, "err", err)
		return
	}
	f.publish(protocol.KioskTopic(kioskID, protocol.TopicConfig), 1, true, b)
}

func (f *Front) publish(topic string, qos byte, retained bool, payload []byte) {
	t := f.client.Publish(topic, qos, retained, payload)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		// The kiosk resends its request and gets the stored result then.
		f.log.Warn("publish not confirmed", "topic", topic, "err", t.Error())
	}
}

// stripe is the lock stripe of id among n.
func stripe(id string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}
