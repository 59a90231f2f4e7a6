// Package hub assembles the vendor hub: the store, the HSM, the ledger and
// key ceremony, the PSDM workers, the embedded MQTT broker and front, and
// the HTTP API. cmd/hub parses flags into a Config and calls Run.
package hub

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hsm/pkcs11"
	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/broker"
	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/hub/claims"
	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/front"
	"github.com/frank-postage/frank/hub/keys"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/metrics"
	"github.com/frank-postage/frank/hub/netlimit"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/hub/rates"
	"github.com/frank-postage/frank/hub/releases"
	"github.com/frank-postage/frank/hub/reports"
	"github.com/frank-postage/frank/hub/sale"
	"github.com/frank-postage/frank/hub/settings"
	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/hub/views"
	"github.com/frank-postage/frank/hub/web"
	"github.com/frank-postage/frank/hub/web/console"
	"github.com/frank-postage/frank/hub/web/portal"
	websession "github.com/frank-postage/frank/hub/web/session"
	"github.com/frank-postage/frank/protocol"
)

// Config is the hub's configuration. Zero values take the defaults noted.
type Config struct {
	DataDir string // state directory; default var/hub
	DB      string // SQLite path or postgres:// URL; default DataDir/hub.db
	Broker  string // external broker URL (mqtts:// or tcp://host:port); empty runs the embedded one
	// BrokerTLSListen is the embedded broker's mqtts listener, where kiosks
	// and hubs log in with the device CA's certificates; default
	// 127.0.0.1:8883 ("off" for none). BrokerListen is a plain listener for
	// password logins, off unless set (tests, and sites with KioskPasswords).
	BrokerTLSListen string
	BrokerListen    string
	// KioskPasswords lets kiosks log in to the broker with a password and
	// enroll for one, instead of a certificate. Off by default.
	KioskPasswords bool
	// PasswordCost is the bcrypt cost of the passwords and PINs the hub
	// stores; 0 is bcrypt.DefaultCost. Tests lower it: under the race
	// detector one hash at the default cost takes a good part of a second.
	PasswordCost int
	// TLS is how the hub serves its web side: "ca" (default: HTTPS on
	// HTTPSListen with a certificate from its device CA for TLSHosts),
	// "files" (TLSCert and TLSKey), or "off" (plain HTTP on HTTPListen,
	// behind a TLS-terminating proxy). With TLS on, HTTPListen serves only
	// /healthz and /metrics, and only if set.
	TLS         string
	TLSCert     string
	TLSKey      string
	TLSHosts    []string // default: localhost, loopback, this host's name and addresses
	HTTPSListen string   // default 127.0.0.1:8443
	HTTPListen  string   // see TLS; with TLS off, default 127.0.0.1:8080
	// KioskCertTTL is a kiosk certificate's lifetime; default 30 days.
	KioskCertTTL time.Duration
	// CRLFile, if set, is kept holding the device CA's current revocation
	// list (PEM), for an external broker's crlfile.
	CRLFile    string
	PostalURL  string // postal authority; default http://127.0.0.1:8090
	Workers    int    // PSDM workers, one HSM session each; default half the CPUs, at least 1
	MPSDs      int    // MPSDs each worker checks out, 1-8; default 1
	RatesDir   string // extra rate tables (*.json); the built-in USPS table is always loaded
	HeartbeatS int    // kiosk heartbeat period pushed in config; default 30
	// HSM is "soft" (development keys sealed under DataDir/keys/master.key)
	// or "pkcs11" (PKCS11 names the module, token and PIN).
	HSM    string
	PKCS11 pkcs11.Config
	// PaymentsURL is the card gateway; default http://127.0.0.1:8091.
	// PaymentsTimeout bounds each gateway call; default 5 s.
	PaymentsURL     string
	PaymentsTimeout time.Duration
	// BrokerUser and BrokerPassword are the hub's own broker credentials:
	// needed with an external broker; made up at start for the embedded one.
	BrokerUser     string
	BrokerPassword string
	// UnconfirmedAfter flags sales whose labels were not reported printed
	// or failed in this long; default 10 minutes.
	UnconfirmedAfter time.Duration
	// RefundWindow is how long a web customer may have an unused stamp
	// refunded; default 28 days.
	RefundWindow time.Duration
	// SecureCookies marks login cookies Secure even on plain HTTP: set it
	// when the hub sits behind a TLS-terminating proxy.
	SecureCookies bool
	// ShowResetLinks shows a portal customer's password-reset link on the
	// page that asked for it, for demos: the hub sends no mail, and without
	// it the link reaches no one. It tells whoever asks whether a login
	// exists, so it is off by default.
	ShowResetLinks bool
	// PprofListen serves net/http/pprof, for profiling in production, on
	// a loopback address only (default: off).
	PprofListen string
	// BrokerConnsPerIP bounds the embedded broker's connections from one
	// address (default 64; negative, no limit). KioskMsgRate bounds the
	// messages a kiosk may publish per second (default 20, bursts of 200;
	// negative, no limit, for simulated kiosks): the embedded broker
	// refuses more, and the front drops more behind any broker. KioskConnects bounds the
	// connections one kiosk id may open a minute, in bursts of as many
	// (default 10; negative, no limit).
	BrokerConnsPerIP int
	// HTTPConnsPerIP bounds the web server's open connections from one
	// address, or IPv6 /64, other than a trusted proxy (default 64;
	// negative, no limit).
	HTTPConnsPerIP int
	// HTTPIdleTimeout closes a kept-alive web connection that sends no
	// request for so long (default a minute).
	HTTPIdleTimeout time.Duration
	KioskMsgRate    float64
	KioskConnects   int
	// KioskPurchases bounds one kiosk's purchases served at once (default
	// 16; negative, no limit, for load generators): more are dropped, and
	// the kiosk sends them again.
	KioskPurchases int
	// KioskInflight bounds the messages the embedded broker holds for one
	// kiosk unacknowledged (default 64; negative, no limit, for load
	// generators): more are dropped, and the kiosk asks again.
	KioskInflight int
	// BrokerRecheck is how often the embedded broker checks open kiosk
	// sessions against the stored credentials (default 1 s). A change
	// made on another hub of the cluster is told at once (LISTEN/NOTIFY);
	// the recheck is the backstop for a lost notification.
	BrokerRecheck time.Duration
	// ActivityEvery is how often a hub on PostgreSQL tells the others its
	// minute of answers in progress, for every console's live charts
	// (0: 5 s).
	ActivityEvery time.Duration
	// TrustedProxies are the reverse proxies (addresses or CIDR prefixes)
	// in front of the HTTP API whose X-Forwarded-For names the client, for
	// login limits and logs; nobody else's is believed.
	TrustedProxies []string
	// KioskBroker is the broker address enrolling kiosks are told, like
	// tcp://hub.example:1883; empty, they use the hub's host and 1883.
	KioskBroker string
	// FundsLow raises a funds_low alert when the GPSD holds less. Without
	// it, the alert comes when a postal purchase hangs and the GPSD cannot
	// fund one more MPSD.
	FundsLow protocol.Mills
	// LabelsLow raises a labels_low alert for a kiosk whose heartbeat
	// reports fewer labels left (default 20, two sheets); it clears once
	// the kiosk has that many again. PaperAlert is when paper_out is raised:
	// "out" (default) or "near_end"; it clears when paper is back.
	LabelsLow  int
	PaperAlert string
	// LedgerCheckEvery runs the full ledger check while the hub sells; a
	// violation stops all sales and raises a tamper alert. Default 10
	// minutes; negative never (the check still runs at start).
	LedgerCheckEvery time.Duration
	// Reports schedules the postal reports (Every negative: only by hand,
	// hub report); ReportTick is how often the hub looks for an ended
	// period (default 30 s).
	Reports    reports.Config
	ReportTick time.Duration
	// Name is this hub's name in the stored list of PSDM servers (default:
	// the host name). Workers and MPSDs seed the list on the first start.
	Name string
	// KeyCheckEvery is how often a running hub looks for a signing key
	// rotated by another process (hub keys rotate); default 10 s.
	KeyCheckEvery time.Duration
	Ledger        ledger.Config
}

// Defaults fills in the zero values.
func (c *Config) Defaults() {
	if c.DataDir == "" {
		c.DataDir = "var/hub"
	}
	if c.DB == "" {
		c.DB = filepath.Join(c.DataDir, "hub.db")
	}
	if c.BrokerTLSListen == "" {
		c.BrokerTLSListen = "127.0.0.1:8883"
	}
	if c.TLS == "" {
		c.TLS = "ca"
	}
	if c.TLS == "off" && c.HTTPListen == "" {
		c.HTTPListen = "127.0.0.1:8080"
	}
	if c.HTTPSListen == "" {
		c.HTTPSListen = "127.0.0.1:8443"
	}
	if len(c.TLSHosts) == 0 {
		c.TLSHosts = defaultHosts()
	}
	if c.KioskCertTTL == 0 {
		c.KioskCertTTL = 30 * 24 * time.Hour
	}
	if c.PostalURL == "" {
		c.PostalURL = "http://127.0.0.1:8090"
	}
	if c.Workers == 0 {
		c.Workers = max(1, runtime.NumCPU()/2)
	}
	if c.MPSDs == 0 {
		c.MPSDs = 1
	}
	if c.HSM == "" {
		c.HSM = "soft"
	}
	if c.HeartbeatS == 0 {
		c.HeartbeatS = 30
	}
	if c.PaymentsURL == "" {
		c.PaymentsURL = "http://127.0.0.1:8091"
	}
	if c.BrokerUser == "" {
		c.BrokerUser = protocol.HubPrefix
	}
	if c.UnconfirmedAfter == 0 {
		c.UnconfirmedAfter = 10 * time.Minute
	}
	if c.RefundWindow == 0 {
		c.RefundWindow = 28 * 24 * time.Hour
	}
	if c.KeyCheckEvery <= 0 {
		c.KeyCheckEvery = 10 * time.Second
	}
	if c.ReportTick <= 0 {
		c.ReportTick = 30 * time.Second
	}
	if c.LedgerCheckEvery == 0 {
		c.LedgerCheckEvery = 10 * time.Minute
	}
	if c.LabelsLow == 0 {
		c.LabelsLow = 2 * protocol.LabelsPerSheet
	}
	if c.PaperAlert == "" {
		c.PaperAlert = "out"
	}
	if c.Ledger.Vendor == "" {
		c.Ledger.Vendor = "FR"
	}
}

// Check validates the configuration without touching anything.
func (c *Config) Check() error {
	c.Defaults()
	var errs []error
	if c.Workers < 1 || c.Workers > 256 {
		errs = append(errs, fmt.Errorf("workers: want 1-256, got %d", c.Workers))
	}
	if c.MPSDs < 1 || c.MPSDs > 8 {
		errs = append(errs, fmt.Errorf("mpsds: want 1-8 per worker, got %d", c.MPSDs))
	}
	switch c.HSM {
	case "soft":
	case "pkcs11":
		if c.PKCS11.Module == "" || c.PKCS11.Token == "" {
			errs = append(errs, errors.New("hsm pkcs11: want the module path and the token label"))
		}
	default:
		errs = append(errs, fmt.Errorf("hsm: want soft or pkcs11, got %q", c.HSM))
	}
	if c.Ledger.InspectionWarn > 0 && c.Ledger.InspectionStop > 0 && c.Ledger.InspectionWarn >= c.Ledger.InspectionStop {
		errs = append(errs, errors.New("inspection: the warning must come before the stop"))
	}
	if c.Ledger.MPSDFunding < 0 || c.Ledger.GPSDPurchase < 0 || c.Ledger.GPSDPurchase > 0 && c.Ledger.GPSDPurchase < c.Ledger.MPSDFunding {
		errs = append(errs, errors.New("funding: amounts must be positive, and a GPSD purchase at least one MPSD funding"))
	}
	if c.RefundWindow < 0 || c.RefundWindow > 366*24*time.Hour {
		errs = append(errs, fmt.Errorf("refund-window: want up to a year, got %s", c.RefundWindow))
	}
	if c.FundsLow < 0 {
		errs = append(errs, errors.New("funds-low: want a positive amount"))
	}
	if c.LabelsLow < 0 {
		errs = append(errs, fmt.Errorf("labels-low: want 0 or more labels, got %d", c.LabelsLow))
	}
	if c.PaperAlert != "out" && c.PaperAlert != "near_end" {
		errs = append(errs, fmt.Errorf("paper-alert: want out or near_end, got %q", c.PaperAlert))
	}
	if c.PprofListen != "" {
		host, _, err := net.SplitHostPort(c.PprofListen)
		if ip := net.ParseIP(host); err != nil || host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			errs = append(errs, fmt.Errorf("pprof: want a loopback address like 127.0.0.1:6060, got %q", c.PprofListen))
		}
	}
	if c.HeartbeatS < 1 || c.HeartbeatS > 3600 {
		errs = append(errs, fmt.Errorf("heartbeat: want 1-3600 s, got %d", c.HeartbeatS))
	}
	if !strings.HasPrefix(c.BrokerUser, protocol.HubPrefix) {
		errs = append(errs, fmt.Errorf("broker-user %q: a hub's broker user starts with %s, which no kiosk id may", c.BrokerUser, protocol.HubPrefix))
	}
	switch c.TLS {
	case "ca", "off":
	case "files":
		if c.TLSCert == "" || c.TLSKey == "" {
			errs = append(errs, errors.New("tls files: want tls-cert and tls-key"))
		}
	default:
		errs = append(errs, fmt.Errorf("tls: want ca, files or off, got %q", c.TLS))
	}
	if c.KioskCertTTL < time.Hour || c.KioskCertTTL > 397*24*time.Hour {
		errs = append(errs, fmt.Errorf("kiosk-cert-ttl: want an hour to 397 days, got %s", c.KioskCertTTL))
	}
	for name, addr := range map[string]string{"http": c.HTTPListen, "https": c.HTTPSListen, "broker-listen": c.BrokerListen, "broker-tls-listen": c.BrokerTLSListen} {
		if addr == "" || addr == "off" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if c.Broker == "" && c.BrokerListen == "" && c.BrokerTLSListen == "off" {
		errs = append(errs, errors.New("broker: the embedded broker needs broker-tls-listen or broker-listen"))
	}
	if _, err := rates.LoadDir(c.RatesDir); err != nil {
		errs = append(errs, err)
	}
	if _, err := websession.ParseProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// books is the ledger and its read models, as the console and the portal
// read them.
type books struct {
	*ledger.Ledger
	*views.Views
}

// Hub is a running hub.
type Hub struct {
	cfg       Config
	log       *slog.Logger
	db        *store.DB
	ks        hsm.Module
	session   func() (hsm.Session, error)
	alerts    *alerts.Store
	ledger    *ledger.Ledger
	fleet     *fleet.Registry
	commands  *commands.Commands
	settings  *settings.Settings
	releases  *releases.Releases
	stock     *stock.Stock
	accounts  *accounts.Accounts
	payments  *payments.Payments
	claims    *claims.Claims
	pprof     *http.Server
	leader    *store.Leader
	leading   bool // as last logged
	operators *operators.Operators
	metrics   *metrics.Metrics
	console   *console.Console
	rates     *rates.Book
	sales     *sale.Service
	bgCtx     context.Context // ends when the hub closes; the periodic loops stop
	started   time.Time       // when Start began; zero before
	bgCancel  context.CancelFunc
	bg        sync.WaitGroup // the periodic loops

	alone         func()       // releases ServeAlone's lock
	clockOff      atomic.Int32 // checkClock's last verdict
	activity      activityStore
	activitySaved int64 // the last minute stored; only saveActivity touches it after Start
	presence      *fleet.Presence
	views         *views.Views
	roundMu       sync.Mutex
	peers         peerNotes
	keys          *keys.Keys
	postal        *postal.Client
	broker        *broker.Broker
	ca            *ca.CA
	tls           *hubTLS // the hub's own key and certificates; nil until Start
	pool          *psdm.Pool
	front         *front.Front
	http          *http.Server
	plain         *http.Server // /healthz and /metrics beside HTTPS
	tickMu        sync.Mutex
	closeOnce     sync.Once
	pushedRates   map[string]string // kiosk -> the rate table version and store it was last sent (or had, at start), "version@store"
	// unclaimedRefused are failed labels whose unclaimed refund was refused
	// for good, until they are asked again (refundUnclaimed); tickMu.
	unclaimedRefused map[string]time.Time
	supplyMu         sync.Mutex
	supply           map[string]supply // what each kiosk last said it needs
	kioskSettings    sync.Map          // kiosk id -> protocol.KioskSettings, as last pushed
	configSeen       int64             // the central config's last change this hub pushed
	proxies          websession.Proxies
	// HTTPAddr and BrokerAddr are where the hub listens, after Start:
	// HTTPAddr serves the web side (HTTPS unless TLS is off; see URL),
	// PlainAddr /healthz and /metrics over HTTP beside HTTPS, BrokerAddr
	// the embedded broker's plain listener and BrokerTLSAddr its mqtts.
	HTTPAddr      string
	PlainAddr     string
	BrokerAddr    string
	BrokerTLSAddr string
}

// Open opens the store, HSM and ledger: enough for the offline commands
// (ledger check, keys) without starting any server.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Hub, error) {
	cfg.Defaults()
	h := &Hub{cfg: cfg, log: log, supply: map[string]supply{}}
	var err error
	if h.db, err = store.Open(ctx, cfg.DB); err != nil {
		return nil, err
	}
	if err := h.openHSM(); err != nil {
		h.Close()
		return nil, err
	}
	// The ledger's control-code session: reopened if the HSM loses it.
	sess, err := hsm.Reopening(h.session)
	if err != nil {
		h.Close()
		return nil, err
	}
	if err := firstMACKey(ctx, h.db, h.ks, sess, cfg.Ledger.ControlKeyLabel()); err != nil {
		h.Close()
		return nil, err
	}
	if cfg.Ledger.Licence == "" { // an admin command: the licence the GPSD holds
		if cfg.Ledger.Licence, err = ledger.StoredLicence(ctx, h.db); err != nil {
			h.Close()
			return nil, err
		}
	}
	pa := postal.New(cfg.PostalURL, cfg.Ledger.Vendor, cfg.Ledger.Licence)
	h.postal = pa
	h.alerts = alerts.New(h.db, log.With("component", "alerts"), cfg.Ledger.Now)
	if h.ledger, err = ledger.Open(ctx, h.db, cfg.Ledger, sess, pa, h.alerts, log.With("component", "ledger")); err != nil {
		h.Close()
		return nil, err
	}
	h.views = views.New(h.db, cfg.Ledger.Now)
	h.views.MeterPrefix = h.ledger.Config().Vendor + h.ledger.Config().Model
	h.activity = activityStore{db: h.db, hub: h.ledger.Holder()}
	h.keys = keys.New(h.db, h.ks, pa, log.With("component", "keys"), h.clockNow)
	h.fleet = fleet.New(h.db)
	h.fleet.Passwords, h.fleet.Cost = cfg.KioskPasswords, cfg.PasswordCost
	h.commands = commands.New(h.db, h.fleet, cfg.Ledger.Now)
	h.settings = settings.New(h.db, cfg.Ledger.Now)
	h.settings.Cost = cfg.PasswordCost
	h.releases = releases.New(h.db, h.commands, h.fleet, h.alerts, cfg.Ledger.Now)
	h.presence = fleet.NewPresence(h.clockNow)
	h.stock = stock.New(h.db, cfg.Ledger.Now)
	h.accounts = accounts.New(h.db, cfg.Ledger.Now)
	h.accounts.Cost = cfg.PasswordCost
	gw := payments.NewGateway(cfg.PaymentsURL)
	if cfg.PaymentsTimeout > 0 {
		gw.HTTP.Timeout = cfg.PaymentsTimeout
	}
	h.payments = payments.New(h.db, gw, h.accounts, log.With("component", "payments"), cfg.Ledger.Now)
	h.operators = operators.New(h.db, cfg.Ledger.Now)
	h.operators.Cost = cfg.PasswordCost
	h.ca = ca.New(h.db, h.ks, h.session, ca.Config{Vendor: cfg.Ledger.Vendor, KioskTTL: cfg.KioskCertTTL, Now: cfg.Ledger.Now})
	if err := h.ca.Load(ctx); err != nil && !errors.Is(err, ca.ErrNoCA) {
		h.Close()
		return nil, err
	}
	if h.rates, err = rates.LoadDir(cfg.RatesDir); err != nil {
		h.Close()
		return nil, err
	}
	// A hub whose tables differ from the cluster's would price them
	// differently: it does not start.
	if err := h.rates.Share(ctx, h.db, h.ledger.Holder(), h.clockNow()); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// Now is the hub's clock.
func (h *Hub) Now() time.Time {
	if h.cfg.Ledger.Now != nil {
		return h.cfg.Ledger.Now()
	}
	return time.Now()
}

// Sales returns the purchase service, after Start.
func (h *Hub) Sales() *sale.Service { return h.sales }

// Fleet returns the kiosk register.
func (h *Hub) Fleet() *fleet.Registry { return h.fleet }

// Stock returns the label stock.
func (h *Hub) Stock() *stock.Stock { return h.stock }

// Accounts returns the customer accounts.
func (h *Hub) Accounts() *accounts.Accounts { return h.accounts }

// Operators returns the console's users.
func (h *Hub) Operators() *operators.Operators { return h.operators }

// SetOperator adds an operator, or resets one (hub operator add): a reset
// is for a password forgotten or stolen, so it also revokes the
// operator's API tokens and ends its console sessions on every hub.
func (h *Hub) SetOperator(ctx context.Context, login, password, role string, stores []string) (*operators.Operator, error) {
	op, err := h.operators.Add(ctx, login, password, role, stores)
	if err != nil {
		return nil, err
	}
	if err := websession.New(h.db, "console", 0, false, nil).EndAll(ctx, op.ID); err != nil {
		return op, fmt.Errorf("hub: set operator %s: %w", login, err)
	}
	return op, nil
}

// Metrics returns the metrics, after Start.
func (h *Hub) Metrics() *metrics.Metrics { return h.metrics }

// Payments returns the payment records.
func (h *Hub) Payments() *payments.Payments { return h.payments }

func (h *Hub) openHSM() error {
	switch h.cfg.HSM {
	case "pkcs11":
		t, err := pkcs11.Open(h.cfg.PKCS11)
		if err != nil {
			return err
		}
		h.ks = t
		h.session = hsm.Opener(t.Session)
	default:
		k, err := soft.Open(filepath.Join(h.cfg.DataDir, "keys"))
		if err != nil {
			return err
		}
		h.log.Warn("signing keys are in the soft key store, with its master key beside them: for development only; a hub selling postage uses --hsm pkcs11")
		h.ks = k
		h.session = hsm.Opener(k.Session)
	}
	return nil
}

// BrokerDropped counts messages the embedded broker dropped (0 without one).
func (h *Hub) BrokerDropped() int64 {
	if h.broker == nil {
		return 0
	}
	return h.broker.Dropped()
}

// Alerts returns the alert store.
func (h *Hub) Alerts() *alerts.Store { return h.alerts }

// Postal returns the postal authority client.
func (h *Hub) Postal() *postal.Client { return h.postal }

// Ledger returns the ledger.
func (h *Hub) Ledger() *ledger.Ledger { return h.ledger }

// Keys returns the key manager.
func (h *Hub) Keys() *keys.Keys { return h.keys }

// Config is the hub's effective configuration.
func (h *Hub) Config() Config { return h.cfg }

// Pool is the PSDM workers.
func (h *Hub) Pool() *psdm.Pool { return h.pool }

// Start runs the servers: the key ceremony if no key exists yet, the
// embedded broker, the PSDM workers, the MQTT front and the HTTP API.
func (h *Hub) Start(ctx context.Context) error {
	if h.ledger.Licence() == "" {
		return fmt.Errorf("hub: start: %w: required to serve (--licence)", ledger.ErrLicence)
	}
	// One hub serves a SQLite database: it tells no other hub of anything
	// (there are no notifications), so a second would sell blind.
	alone, err := h.db.ServeAlone()
	if err != nil {
		return fmt.Errorf("hub: start: %w", err)
	}
	h.alone = alone
	// A ledger that does not add up must not sell: stop here.
	r, err := h.ledger.Check(ctx)
	if err != nil {
		return fmt.Errorf("hub: start: %w", err)
	}
	if !r.OK() {
		for _, v := range r.Violations {
			h.log.Error("LEDGER VIOLATION", "violation", v)
		}
		return fmt.Errorf("hub: start: the ledger check found %d violations; run hub ledger check", len(r.Violations))
	}
	key, err := h.keys.Active(ctx)
	if errors.Is(err, keys.ErrNoKey) && h.cfg.HSM == "soft" {
		// Development keys: run the ceremony on first start.
		key, err = h.keys.Init(ctx)
	}
	// A compromise cut short: finished now if the authority answers; if
	// not, this hub starts signing nothing, and the leader tries again.
	if errors.Is(err, keys.ErrCompromised) {
		if next, ferr := h.keys.FinishCompromise(ctx); ferr == nil {
			key, err = next, nil
		} else {
			h.log.Error("the signing key is compromised and no new one could be registered; no stamps are signed until one is", "cert_serial", key.CertSerial, "err", ferr)
			key, err = keys.Key{}, nil // the workers start signing nothing
		}
	}
	if err != nil {
		return fmt.Errorf("hub: start: %w", err)
	}
	if err := h.keys.Certify(ctx); err != nil {
		h.log.Error("a signing key has no certificate from the postal authority; tried again at the next start", "err", err)
	}
	// Alive first: then what this hub opens is its own to settle.
	h.payments.Hub = h.ledger.Holder()
	h.stock.Hub = h.ledger.Holder() // a web sheet's claim names its hub until its sale commits
	if h.db.Dialect == store.SQLite {
		// Served alone (above): a claim is this process's lock, no row.
		h.claims = claims.Alone(h.db, h.ledger.Holder(), h.clockNow)
	} else {
		h.claims = claims.New(h.db, h.ledger.Holder(), h.clockNow)
	}
	h.payments.Claims = h.claims
	h.payments.Sheets = h.stock // a dead hub's sheet claims with no sale made are dropped with its payments
	h.payments.Alerts = h.alerts
	h.leader = h.db.Leader(h.ledger.Holder(), h.hubLeaseTTL())
	h.leader.Log = h.log.With("component", "leader")
	h.started = time.Now()
	// The lease before the lead: another hub unseats a leader whose lease
	// it sees lapse.
	if err := h.db.RenewHubLease(ctx, h.ledger.Holder(), h.clockNow(), h.started, h.hubLeaseTTL()); err != nil {
		return fmt.Errorf("hub: start: %w", err)
	}
	h.lead(ctx)
	if err := h.payments.Reconcile(ctx); err != nil {
		h.log.Error("open payments not settled", "err", err)
	}
	if err := h.startTLS(ctx); err != nil {
		return err
	}
	brokerURL, brokerPass := h.cfg.Broker, h.cfg.BrokerPassword
	var brokerTLS *tls.Config
	if brokerURL == "" {
		brokerPass = rand.Text() // only this process knows it
		bc := broker.Config{Addr: h.cfg.BrokerListen, HubUser: h.cfg.BrokerUser, HubPassword: brokerPass, Kiosks: h.fleet,
			Passwords: h.cfg.KioskPasswords, MaxConnsPerIP: h.cfg.BrokerConnsPerIP, KioskRate: h.cfg.KioskMsgRate,
			KioskConnects: h.cfg.KioskConnects, KioskInflight: h.cfg.KioskInflight, RecheckEvery: h.cfg.BrokerRecheck}
		if h.cfg.BrokerTLSListen != "off" {
			bc.TLSAddr, bc.Revoked = h.cfg.BrokerTLSListen, h.ca
			bc.TLS = h.tls.serverConfig()
			bc.TLS.ClientCAs = h.ca.Pool()
		}
		if h.broker, err = broker.Start(bc, h.log); err != nil {
			return err
		}
		h.BrokerAddr, h.BrokerTLSAddr = h.broker.Addr(), h.broker.TLSAddr()
		// The hub's own connection: over mqtts with its certificate when
		// the broker has that listener.
		if h.BrokerTLSAddr != "" {
			brokerURL = "mqtts://" + h.BrokerTLSAddr
			brokerTLS = h.tls.clientConfig(hostOnly(h.BrokerTLSAddr))
		} else {
			brokerURL = "tcp://" + h.BrokerAddr
		}
	} else if u, err := url.Parse(brokerURL); err == nil && (u.Scheme == "mqtts" || u.Scheme == "ssl" || u.Scheme == "tls") {
		brokerTLS = h.tls.clientConfig(u.Hostname())
	}
	open := h.session
	servers, err := h.activeServers(ctx)
	if err != nil {
		return err
	}
	pub, err := key.Public()
	if err != nil {
		return err
	}
	if h.pool, err = psdm.Start(ctx, psdm.Config{Servers: servers, Alerts: h.alerts}, open,
		psdm.Key{Label: key.Label, CertSerial: key.CertSerial, Public: pub}, h.ledger, h.log.With("component", "psdm")); err != nil {
		return err
	}

	now := time.Now
	if h.cfg.Ledger.Now != nil {
		now = h.cfg.Ledger.Now
	}
	h.metrics = metrics.New(metrics.Sources{Funds: h.ledger, Presence: h.presence, Alerts: h.alerts, Workers: h.pool,
		Now: now, Log: h.log.With("component", "metrics")})
	h.payments.Stages, h.payments.Sweeps = h.metrics, h.metrics
	h.sales = &sale.Service{Seller: h.pool, Book: h.ledger, Kiosks: h.fleet, Rates: h.rates, Money: h.payments,
		Accounts: h.accounts, Sheets: h.stock, Alerts: h.alerts, Claimer: h.stock, Claims: h.claims, Web: h.ledger, Meter: h.metrics,
		Licence: h.ledger.Licence(), Log: h.log.With("component", "sale"), Now: now}
	host, _ := os.Hostname()
	fcfg := front.Config{
		Broker:      brokerURL,
		TLS:         brokerTLS,
		ClientID:    fmt.Sprintf("%s-%s-%d", protocol.HubPrefix, host, os.Getpid()),
		Username:    h.cfg.BrokerUser,
		Password:    brokerPass,
		ConfigFor:   h.configFor,
		Presence:    kioskWatch{h},
		Meter:       h.metrics,
		Commands:    h.commands,
		MaxPerKiosk: h.cfg.KioskPurchases,
		KioskRate:   h.cfg.KioskMsgRate,
		Staff:       newStaffDesk(h),
		Now:         h.clockNow,
	}
	if h.front, err = front.Start(fcfg, h.sales, h.stock, h.ledger, h.log.With("component", "front")); err != nil {
		return err
	}
	h.commands.SetSender(h.front)
	if h.configSeen, err = h.settings.Changed(ctx); err != nil {
		return fmt.Errorf("hub: start: %w", err)
	}
	if h.proxies, err = websession.ParseProxies(h.cfg.TrustedProxies); err != nil {
		return fmt.Errorf("hub: start: %w", err)
	}
	webAddr := h.cfg.HTTPListen
	if h.cfg.TLS != "off" {
		webAddr = h.cfg.HTTPSListen
	}
	ln, err := net.Listen("tcp", webAddr)
	if err != nil {
		return fmt.Errorf("hub: listen %s: %w", webAddr, err)
	}
	h.HTTPAddr = ln.Addr().String()
	h.console = &console.Console{People: h.operators, Kiosks: h.fleet, Presence: h.presence, Book: books{h.ledger, h.views}, Workers: h.pool,
		Alerts: h.alerts, Stock: h.stock, Activity: h.metrics.Activity(), Certs: h.ca, Commands: h.commands, Config: h.CentralConfig(), Rollouts: h.releases, Licence: h.ledger.Licence(), Retire: h.retireSummary, Refund: h.counterRefund, Log: h.log.With("component", "console"), Now: now,
		Sessions: websession.New(h.db, "console", 8*time.Hour, h.cfg.SecureCookies || h.cfg.TLS != "off", now), Logins: websession.NewLogins("console", h.proxies).Share(h.db)}
	customerPortal := &portal.Portal{Customers: h.accounts, Funds: h.payments, Shop: h.sales, History: books{h.ledger, h.views}, Rates: h.rates,
		Sessions: websession.New(h.db, "portal", 24*time.Hour, h.cfg.SecureCookies || h.cfg.TLS != "off", now), Logins: websession.NewLogins("portal", h.proxies).Share(h.db),
		RefundWindow: h.cfg.RefundWindow, Meter: h.metrics, Log: h.log.With("component", "portal"), Now: now,
		ResetRequests: websession.NewLogins("portal-reset", h.proxies).Share(h.db), ResetLinks: websession.NewCodeLimit("portal-reset-link", h.proxies).Share(h.db),
		ShowResetLinks: h.cfg.ShowResetLinks, Changes: passwordChanges(h)}
	srv := &web.Server{Keys: h.keys, DB: h.db, Ledger: h.ledger, Voids: h.ledger, Workers: h.pool, Customers: h.accounts, Stamps: h.sales,
		Enroll: h.fleet, KioskBroker: h.cfg.KioskBroker, BrokerAddr: h.BrokerAddr, BrokerTLSAddr: h.BrokerTLSAddr, CA: h.ca,
		EnrollLogins: websession.NewCodeLimit("enroll", h.proxies).Share(h.db), HSTS: h.cfg.TLS != "off", Passwords: h.cfg.KioskPasswords,
		Releases: h.releases, Portal: customerPortal.Routes(), CustomerLogins: customerPortal.Logins, Console: h.console.Routes(), OpsAPI: h.console.APIRoutes(), Metrics: h.console.ProtectMetrics(h.metrics.Handler()), OpsOnly: h.console.Protect,
		Now: now, Log: h.log.With("component", "web")}
	// Handshake failures (strangers, scanners) go to the log at debug level.
	h.http = &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: httpReadTimeout, IdleTimeout: h.httpIdleTimeout(),
		MaxHeaderBytes: web.MaxHeaderBytes, ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)}
	h.http.RegisterOnShutdown(h.console.Stop) // live streams end, so shutdown need not wait for them
	ln = netlimit.Listen(ln, h.httpConnsPerIP(), h.proxies.Trusts, h.log.With("component", "web"))
	if h.cfg.TLS != "off" {
		// A kiosk presents its certificate to renew it; browsers need none.
		tc := h.tls.serverConfig()
		tc.ClientAuth, tc.ClientCAs = tls.VerifyClientCertIfGiven, h.ca.Pool()
		ln = tls.NewListener(ln, tc)
	}
	go func() {
		if err := h.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("http server stopped", "err", err)
		}
	}()
	if h.cfg.PprofListen != "" {
		pln, err := net.Listen("tcp", h.cfg.PprofListen)
		if err != nil {
			return fmt.Errorf("hub: start: pprof: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		h.pprof = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)}
		go h.pprof.Serve(pln)
		h.log.Info("pprof served", "addr", pln.Addr().String())
	}
	if h.cfg.TLS != "off" && h.cfg.HTTPListen != "" {
		// Beside HTTPS, plain HTTP only for load balancers and Prometheus.
		pln, err := net.Listen("tcp", h.cfg.HTTPListen)
		if err != nil {
			return fmt.Errorf("hub: listen %s: %w", h.cfg.HTTPListen, err)
		}
		h.PlainAddr = pln.Addr().String()
		pln = netlimit.Listen(pln, h.httpConnsPerIP(), h.proxies.Trusts, h.log.With("component", "web"))
		h.plain = &http.Server{Handler: srv.PlainHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: httpReadTimeout, IdleTimeout: h.httpIdleTimeout(),
			MaxHeaderBytes: web.MaxHeaderBytes, ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)}
		go func() {
			if err := h.plain.Serve(pln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Error("plain http server stopped", "err", err)
			}
		}()
	}
	h.pushedRates = map[string]string{}
	h.unclaimedRefused = map[string]time.Time{}
	// Kiosks get the table in force as they come online, or with a
	// rate_table_stale refusal. A hub that leads from its start notes
	// nothing, so its first tick sends every kiosk the table, as one taking
	// the lead later does (lead): kiosks that stayed connected to the
	// broker while every hub was down do not come online again. Not here:
	// a publish a kiosk, and start would wait on every one.
	h.tickMu.Lock()
	if !h.leading {
		h.pushRates(ctx, false)
	}
	h.tickMu.Unlock()
	h.bgCtx, h.bgCancel = context.WithCancel(context.Background())
	h.bg.Go(h.watchdog)
	if h.cfg.LedgerCheckEvery > 0 {
		h.bg.Go(func() { h.checkLedger(h.cfg.LedgerCheckEvery) })
	}
	h.bg.Go(h.listen)
	h.bg.Go(h.heartbeats)
	// Liveness, and the payments of hubs whose liveness lapsed: settled by
	// whichever hub sees it first, not at the next restart.
	h.bg.Go(func() {
		h.every(h.hubLeaseTTL()/6, func() bool { h.Round(); return true })
	})
	h.bg.Go(func() {
		h.every(h.cfg.KeyCheckEvery, func() bool { h.followKey(h.bgCtx); h.followServers(h.bgCtx); return true })
	})
	if h.cfg.Reports.Every >= 0 {
		rc := h.cfg.Reports
		rc.Holder, rc.Now = h.ledger.Holder(), h.cfg.Ledger.Now
		rep := reports.New(rc, h.ledger, h.postal, leaderLease{h.leader}, h.alerts, h.log.With("component", "reports"))
		h.bg.Go(func() { rep.Run(h.bgCtx, h.cfg.ReportTick) })
	}
	h.restoreActivity(ctx)
	h.bg.Go(func() { h.every(time.Minute, func() bool { h.saveActivity(h.bgCtx); return true }) })
	if h.db.Dialect == store.Postgres {
		h.bg.Go(func() {
			h.every(cmp.Or(h.cfg.ActivityEvery, 5*time.Second), func() bool { h.tellActivity(h.bgCtx); return true })
		})
	}
	h.bg.Go(func() { h.every(time.Hour, func() bool { h.renewTLS(h.bgCtx); return true }) })
	if h.cfg.CRLFile != "" {
		crl := &crlFile{}
		crl.write(ctx, h)
		h.bg.Go(func() { h.every(2*time.Second, func() bool { crl.write(h.bgCtx, h); return true }) })
	}
	h.log.Info("hub ready", "web", h.URL(), "broker", brokerURL, "broker_tls", h.BrokerTLSAddr, "workers", h.cfg.Workers, "cert_serial", key.CertSerial)
	return nil
}

// RotateControlKey makes the next control-code key in the HSM and reseals
// every PSD under it (hub keys rotate-mac); running hubs follow within
// KeyCheckEvery.
func (h *Hub) RotateControlKey(ctx context.Context) (int, error) {
	sess, err := h.session()
	if err != nil {
		return 0, err
	}
	defer sess.Close()
	return h.ledger.RotateControlKey(ctx, func(label string) error { return ensureMACKey(h.ks, sess, label) })
}

// followKey switches the workers to the active signing key when a rotation
// (by this or any process on the database) has made another one active.
func (h *Hub) followKey(ctx context.Context) {
	if err := h.ledger.RefreshControlKey(ctx); err != nil {
		h.log.Warn("control-code key not checked", "err", err)
	}
	all, err := h.keys.All(ctx)
	if err != nil {
		h.log.Warn("signing key not checked", "err", err)
		return
	}
	for _, k := range all {
		if k.Compromised != nil {
			// Its stamps signed here and not yet committed are not sold,
			// whether or not a new key has taken over.
			h.ledger.RefuseKey(k.CertSerial)
		}
	}
	key, err := keys.ActiveOf(all)
	if errors.Is(err, keys.ErrCompromised) {
		// Marked compromised by another process, whose rotation has not
		// finished: its stamps would be void.
		if h.pool.Target().Label != "" { // not Key: zero while a worker has not confirmed, though others sign
			h.log.Error("the signing key is compromised; no stamps are signed until a new key is registered", "cert_serial", key.CertSerial)
			if err := h.pool.StopSigning(); err != nil {
				h.log.Error("signing not stopped", "err", err)
			}
		}
		return
	}
	if err != nil {
		h.log.Warn("signing key not checked", "err", err)
		return
	}
	if key.CertSerial == h.pool.Key().CertSerial {
		return
	}
	pub, err := key.Public()
	if err != nil {
		h.log.Error("rotated signing key not taken up: its certified public key is unreadable", "cert_serial", key.CertSerial, "err", err)
		return
	}
	if err := h.pool.SetKey(psdm.Key{Label: key.Label, CertSerial: key.CertSerial, Public: pub}); err != nil {
		h.log.Error("rotated signing key not taken up; no stamps signed until it is", "cert_serial", key.CertSerial, "err", err)
	}
}

// hubSkew is how far a hub's clock may be from the database's. Hubs date
// rows by their own clocks and judge each other's leases by them: a hub
// running behind writes a period's sales after the leader reported it, and
// one running ahead takes leases of hubs still alive.
const hubSkew = 2 * time.Second

// checkClock's verdicts, in Hub.clockOff (0: none yet).
const (
	clockAgrees = 1
	clockOff    = 2
)

// checkClock compares this hub's clock with the shared database's, on
// PostgreSQL (one server for every hub), and tells ops when they differ by
// more than hubSkew, and again when they agree.
func (h *Hub) checkClock(ctx context.Context, now func() time.Time) {
	if h.db.Dialect != store.Postgres {
		return
	}
	var db time.Time
	before := now()
	if err := h.db.QueryRowContext(ctx, `SELECT clock_timestamp()`).Scan(&db); err != nil {
		return
	}
	after := now()
	took := after.Sub(before)
	skew := before.Add(took / 2).Sub(db)
	subject := "hub/" + h.name() // the same after a restart
	verdict := int32(clockAgrees)
	if skew > hubSkew+took || skew < -hubSkew-took {
		verdict = clockOff
	}
	switch was := h.clockOff.Swap(verdict); {
	case verdict == clockOff:
		if was != clockOff {
			// Leases run on the database's clock (store.LeaseNow); sales'
			// dates still run on the hub's.
			h.alerts.Raise(ctx, alerts.ClockSkew, subject, fmt.Sprintf("hub %s's clock is %s off the database's: its sales are dated by it, and those near a report's period end may miss it; set its time (NTP)",
				h.name(), skew.Round(time.Millisecond)))
		}
	case was != clockAgrees: // also at the first check: an alert from before a restart
		h.alerts.Clear(ctx, alerts.ClockSkew, subject, "its clock agrees with the database's again")
	}
}

// A kiosk whose stamps voided as failed in the last hour reach
// failedPrintsMin and a quarter of its stamps is alerted: jams come now
// and then, not by the dozen. Each failed stamp is voided and refunded, so a stolen kiosk that
// prints and reports failure gives stamps away.
const (
	failedPrintsMin    = 10
	failedPrintsWindow = time.Hour
)

func (h *Hub) checkFailedPrints(ctx context.Context) {
	kiosks, err := h.ledger.FailedPrints(ctx, h.clockNow().Add(-failedPrintsWindow), failedPrintsMin)
	if err != nil {
		h.log.Error("failed prints", "err", err)
		return
	}
	for _, k := range kiosks {
		if k.Failed*4 >= k.Total {
			h.alerts.Raise(ctx, alerts.FailedPrints, "kiosk/"+k.KioskID,
				fmt.Sprintf("kiosk %s reported %d of its %d stamps of the last hour failed to print; each was voided and refunded", k.KioskID, k.Failed, k.Total))
		}
	}
}

// refundUnclaimed refunds the failed labels whose customer chose no
// remedy and whose kiosk did not refund them once the choice was over (it
// died, or lost the hub), so that nobody pays for a stamp that did not
// print. A refund that fails here is due, and finished by a later tick
// (RefundsDue).
func (h *Hub) refundUnclaimed(ctx context.Context) {
	now := h.clockNow()
	var skip []string
	for label, until := range h.unclaimedRefused {
		if now.After(until) {
			delete(h.unclaimedRefused, label)
		} else {
			skip = append(skip, label)
		}
	}
	due, err := h.ledger.RefundUnclaimed(ctx, now.Add(-max(h.cfg.RefundWindow, refundsDueFor)), now.Add(-ledger.UnclaimedAfter), skip)
	if err != nil {
		h.log.Error("unclaimed failed labels not refunded", "err", err)
		return
	}
	for _, d := range due {
		h.log.Warn("failed label nobody claimed refunded by the hub", "kiosk", d.KioskID, "request_id", d.SaleID, "label", d.Label)
		_, err := h.sales.FinishRefunds(ctx, []ledger.RefundDue{d})
		switch {
		case sale.MoneyRefused(err):
			// Refused for good (a payment never captured has nothing to
			// give back): asked again a day on, not every minute.
			h.unclaimedRefused[d.Label.String()] = now.Add(unclaimedRefusedFor)
			h.log.Error("unclaimed failed label's refund refused; asked again in a day", "kiosk", d.KioskID, "label", d.Label, "err", err)
		case err != nil:
			h.log.Error("unclaimed refund not finished; tried again at a later tick", "kiosk", d.KioskID, "label", d.Label, "err", err)
		}
	}
}

// unclaimedRefusedFor is how long the leader leaves an unclaimed failed
// label whose refund was refused for good before it asks again.
const unclaimedRefusedFor = 24 * time.Hour

// httpReadTimeout bounds the reading of a request, its body included:
// every body the hub takes is small (forms and JSON). Nothing bounds the
// writes: live streams and release downloads to a store's slow line take
// long.
const httpReadTimeout = time.Minute

func (h *Hub) httpIdleTimeout() time.Duration {
	if h.cfg.HTTPIdleTimeout > 0 {
		return h.cfg.HTTPIdleTimeout
	}
	return time.Minute
}

// httpConnsPerIP is HTTPConnsPerIP with its default; 0 is no limit.
func (h *Hub) httpConnsPerIP() int {
	switch n := h.cfg.HTTPConnsPerIP; {
	case n == 0:
		return 64
	case n < 0:
		return 0
	default:
		return n
	}
}

// hubLeaseTTL is how long a hub counts as alive without renewing: twice
// its MPSD leases, so that a hub taken for dead has lost its MPSDs too and
// cannot commit a sale whose payment another hub settles.
func (h *Hub) hubLeaseTTL() time.Duration { return 2 * h.ledger.Config().LeaseTTL }

func (h *Hub) clockNow() time.Time {
	if h.cfg.Ledger.Now != nil {
		return h.cfg.Ledger.Now()
	}
	return time.Now()
}

// refundsDueFor is how far back the leader looks for refunds recorded
// whose money did not move, however short the customers' refund window.
const refundsDueFor = 28 * 24 * time.Hour

// Round does at once what the hub does every sixth of its liveness lease:
// it renews the lease and settles stale payments and, as the leader, the
// dead hubs' payments; it pushes central config, moves rollouts on,
// resends unanswered commands and sweeps old claims and login failures.
func (h *Hub) Round() {
	h.roundMu.Lock() // a test's round and the hub's own take turns
	defer h.roundMu.Unlock()
	if err := h.db.RenewHubLease(h.bgCtx, h.ledger.Holder(), h.clockNow(), h.started, h.hubLeaseTTL()); err != nil {
		h.log.Error("hub lease not renewed", "err", err)
	}
	if h.cfg.Ledger.Now == nil { // a test's clock is meant to differ
		h.checkClock(h.bgCtx, time.Now)
	}
	// Captures and commits whose outcome was unknown, voids that
	// failed: settled as soon as a dead hub's would be.
	if err := h.payments.SettleStale(h.bgCtx, h.hubLeaseTTL()); err != nil && h.bgCtx.Err() == nil {
		h.log.Error("open payments not settled", "err", err)
	}
	if !h.lead(h.bgCtx) {
		return
	}
	if err := h.payments.SettleDead(h.bgCtx); err != nil && h.bgCtx.Err() == nil {
		h.log.Error("dead hubs' payments not settled", "err", err)
	}
	if key, err := h.keys.FinishCompromise(h.bgCtx); err != nil && !errors.Is(err, keys.ErrNoKey) && h.bgCtx.Err() == nil {
		h.log.Error("a compromised signing key is not rotated away; no stamps are signed until it is", "err", err)
	} else if err == nil && key.CertSerial != h.pool.Key().CertSerial {
		h.followKey(h.bgCtx)
	}
	h.voidCompromised(h.bgCtx)
	h.followConfig(h.bgCtx)
	if err := h.releases.Step(h.bgCtx); err != nil && h.bgCtx.Err() == nil {
		h.log.Error("rollouts not moved on", "err", err)
	}
	if err := h.commands.Resend(h.bgCtx, h.clockNow().Add(-commandResend)); err != nil && h.bgCtx.Err() == nil {
		h.log.Error("commands not resent", "err", err)
	}
	if _, err := h.claims.Sweep(h.bgCtx, 10*time.Minute); err != nil && h.bgCtx.Err() == nil {
		h.log.Error("old request claims not swept", "err", err)
	}
	now := h.clockNow()
	if err := websession.SweepFailures(h.bgCtx, h.db, now.Add(-websession.LoginWindow),
		websession.Kept{Prefix: staffDayPrefix, Before: now.Add(-staffDay)},
		websession.Kept{Prefix: websession.KnownPrefix, Before: now.Add(-websession.KnownFor)},
		websession.Kept{Prefix: portal.PasswordChangePrefix, Before: now.Add(-PasswordChangeWindow)}); err != nil && h.bgCtx.Err() == nil {
		h.log.Error("old login failures not swept", "err", err)
	}
}

// voidCompromised voids and refunds the stamps verifiers refuse for their
// key's compromise (ledger.VoidCompromised): their buyers paid for stamps
// the postal service will not take. A refund that fails here is finished
// by the leader's tick (RefundsDue).
func (h *Hub) voidCompromised(ctx context.Context) {
	due, err := h.ledger.VoidCompromised(ctx, max(compromiseSettle, 3*h.cfg.KeyCheckEvery))
	if err != nil && ctx.Err() == nil {
		h.log.Error("a compromised key's stamps not voided", "err", err)
	}
	// due holds the refunds of the chunks that committed before a failure:
	// their stamps are void now, so their buyers are paid now.
	if len(due) == 0 {
		return
	}
	total, err := h.sales.FinishRefunds(ctx, due)
	h.log.Warn("stamps of a compromised signing key voided and refunded to their buyers", "stamps", len(due), "refunded", total.String(), "err", err)
}

// compromiseSettle is how long after a compromise is recorded its key's
// stamps are still looked for: hubs stop signing with it within their key
// check (three of those if longer), and a sale signed just before may
// commit just after.
const compromiseSettle = 10 * time.Minute

// Close stops everything in reverse order of start. It may be called more
// than once.
func (h *Hub) Close() error {
	var err error
	h.closeOnce.Do(func() { err = h.close() })
	return err
}

func (h *Hub) close() error {
	if h.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h.http.Shutdown(ctx)
		cancel()
	}
	if h.pprof != nil {
		h.pprof.Close()
	}
	if h.plain != nil {
		h.plain.Close()
	}
	if h.front != nil {
		h.front.Close()
	}
	if h.sales != nil {
		h.sales.Wait() // claims released before the store closes
	}
	if h.payments != nil {
		// The captures of sales already answered; any left are settled.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h.payments.CloseCaptures(ctx)
		cancel()
	}
	if h.bgCancel != nil {
		h.bgCancel()
		h.bg.Wait() // before the store and the HSM they use close
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h.saveActivity(ctx)
		cancel()
	}
	if h.pool != nil {
		h.pool.Close()
	}
	if h.ledger != nil {
		h.ledger.Close()
		if !h.started.IsZero() {
			// Stopped cleanly: what is left open is anyone's to settle,
			// and the next hub to look leads.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			h.leader.Resign(ctx)
			h.db.EndHubLease(ctx, h.ledger.Holder())
			cancel()
		}
	}
	if h.broker != nil {
		h.broker.Close()
	}
	if h.ca != nil {
		h.ca.Close()
	}
	if h.ks != nil {
		h.ks.Close()
	}
	if h.db != nil {
		err := h.db.Close()
		if h.alone != nil {
			h.alone()
		}
		return err
	}
	return nil
}

// commandResend is how long a command waits for its kiosk's answer before
// the leading hub sends it again.
const commandResend = 15 * time.Second

// Releases is the kiosk releases and their rollouts.
func (h *Hub) Releases() *releases.Releases { return h.releases }

// Commands is ops' remote control of kiosks.
func (h *Hub) Commands() *commands.Commands { return h.commands }

// Presence is which kiosks are online, as their status and heartbeats say.
func (h *Hub) Presence() *fleet.Presence { return h.presence }

// kioskWatch feeds the presence tracker from the front and raises an
// alert when a kiosk goes offline.
type kioskWatch struct{ h *Hub }

func (w kioskWatch) Online(id string) {
	w.h.presence.Online(id)
	// Commands that waited for the kiosk go now, not at the next resend.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.h.commands.ResendTo(ctx, id); err != nil {
			w.h.log.Warn("commands not resent", "kiosk", id, "err", err)
		}
	}()
}
func (w kioskWatch) Heartbeat(t *protocol.Telemetry) {
	w.h.presence.Heartbeat(t)
	w.h.supplies(t)
	// The other hubs get the rest of this kiosk's heartbeats; they read
	// this one before they judge it silent.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.h.fleet.SaveHeartbeat(ctx, w.h.ledger.Holder(), w.h.clockNow(), t); err != nil {
		w.h.log.Warn("heartbeat not shared with the other hubs", "kiosk", t.KioskID, "err", err)
	}
}
func (w kioskWatch) Offline(id string) {
	// A repeat is not news, and the alert is open already.
	if w.h.presence.Offline(id) {
		w.h.kioskOffline(id, "its last will")
	}
}

// kioskOffline logs a kiosk gone offline and raises its alert. The line
// is within the kiosk's budget (the ledger's, shared with its other
// lines): a stolen kiosk may publish "offline" as often as it may publish.
func (h *Hub) kioskOffline(id, why string) {
	h.ledger.KioskLog(h.log, slog.LevelWarn, id, "kiosk offline", "by", why)
	h.alerts.Raise(context.Background(), alerts.KioskOffline, "kiosk/"+id, fmt.Sprintf("kiosk %s went offline (%s)", id, why))
}

// restoreActivity fills the console's charts with the last day that this
// and other hubs on the database stored.
func (h *Hub) restoreActivity(ctx context.Context) {
	a := h.metrics.Activity()
	h.activitySaved = a.Now() - 1
	ms, err := h.activity.load(ctx, a.Now()-24*60)
	if err != nil {
		h.log.Error("activity charts start empty", "err", err)
		return
	}
	a.Restore(ms)
}

// tellActivity tells the other hubs this hub's live minutes.
func (h *Hub) tellActivity(ctx context.Context) {
	ms := h.metrics.Activity().Live()
	if len(ms) == 0 {
		return
	}
	note, err := metrics.EncodeActivityNote(h.ledger.Holder(), ms)
	if err == nil {
		err = h.db.Notify(ctx, store.ActivityChannel, note)
	}
	if err != nil {
		h.log.Warn("live activity not told to the other hubs", "err", err)
	}
}

// heardActivity takes the live minutes another hub told.
func (h *Hub) heardActivity(payload string) {
	hub, ms, err := metrics.DecodeActivityNote(payload)
	if err != nil {
		h.log.Warn("activity notification not understood", "err", err)
		return
	}
	if hub != h.ledger.Holder() {
		h.metrics.Activity().Merge(hub, ms)
	}
}

// saveActivity stores the minutes finished since the last save.
func (h *Hub) saveActivity(ctx context.Context) {
	ms := h.metrics.Activity().Finished(h.activitySaved + 1)
	if err := h.activity.save(ctx, ms); err != nil {
		h.log.Error("activity not stored; tried again in a minute", "err", err)
		return
	}
	if len(ms) > 0 {
		h.activitySaved = ms[len(ms)-1].At
	}
}

// every runs fn each period until the hub stops or fn returns false.
func (h *Hub) every(period time.Duration, fn func() bool) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-h.bgCtx.Done():
			return
		case <-t.C:
			if !fn() {
				return
			}
		}
	}
}

// heartbeats marks offline the kiosks whose heartbeats stopped: after two
// and a half periods of silence, checked every quarter period, so a dead
// link is noticed within three periods of its last heartbeat. One lost
// heartbeat is not silence: a hub that dies loses the messages the broker
// was handing it, and a kiosk must not be alerted for that.
//
// The shared subscription hands each hub some of each kiosk's heartbeats;
// the others arrive as notifications from the hubs that got them, so any
// hub's console shows the whole fleet live and a kiosk is judged silent on
// all of them. While this hub does not hear the notifications (its
// connection dropped) no kiosk is judged silent; once it hears again it
// first reads what it missed from the table, and judges none silent for
// one silence window more: the heartbeats no hub could store meanwhile
// (the database was away for every hub) are lost.
func (h *Hub) heartbeats() {
	period := time.Duration(h.cfg.HeartbeatS) * time.Second
	tick := min(time.Second, period/4)
	sweepEvery := max(int(period/4/tick), 1)
	n := 0
	h.every(tick, func() bool {
		n++
		h.sweepSilent(n%sweepEvery == 0)
		return true
	})
}

// SweepSilent does at once what the hub does every quarter heartbeat
// period: it reads the other hubs' heartbeats it missed, and marks offline
// the kiosks silent for two and a half periods of the hub's clock.
func (h *Hub) SweepSilent() { h.sweepSilent(true) }

func (h *Hub) sweepSilent(sweep bool) {
	silence := time.Duration(h.cfg.HeartbeatS) * time.Second * 5 / 2
	p := &h.peers
	p.mu.Lock()
	ok, since, syncedAt := p.listening && p.synced, p.lost, p.syncedAt
	needSync := p.listening && !p.synced
	p.mu.Unlock()
	if needSync {
		// A commit of another hub may land after ours: read back a
		// little before the moment the notifications stopped.
		if !since.IsZero() {
			since = since.Add(-2 * time.Second)
		}
		if err := h.mergeHeartbeats(since); err != nil {
			if h.bgCtx.Err() == nil {
				h.log.Error("other hubs' heartbeats not read; no kiosk is judged silent until they are", "err", err)
			}
			return
		}
		p.mu.Lock()
		p.synced, p.syncedAt = p.listening, h.clockNow()
		ok, syncedAt = p.synced, p.syncedAt
		p.mu.Unlock()
	}
	// The heartbeats that no hub could store while the database was
	// away are in no table: silence counts from the resync at the
	// earliest.
	if sweep && ok && h.clockNow().Sub(syncedAt) > silence {
		for _, id := range h.presence.Sweep(silence) {
			h.kioskOffline(id, "no heartbeat")
		}
	}
}

// peerNotes is whether this hub hears the other hubs' notifications.
type peerNotes struct {
	mu        sync.Mutex
	listening bool
	synced    bool      // and has read what it missed before
	syncedAt  time.Time // when it last did
	lost      time.Time // when it last stopped hearing them
}

// listen hears the other hubs' notifications while the hub runs.
func (h *Hub) listen() {
	p := &h.peers
	h.db.Listen(h.bgCtx, store.Listener{
		Handlers: map[string]func(string){
			store.HeartbeatChannel:   h.heardHeartbeat,
			store.CredentialsChannel: h.credentialsChanged,
			store.ActivityChannel:    h.heardActivity,
		},
		Listening: func(on bool) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.listening && !on {
				p.lost = h.clockNow()
			}
			p.listening, p.synced = on, p.synced && on
		},
		Log: h.log,
	})
}

// credentialsChanged drops what this hub remembers of a kiosk whose
// credentials another hub replaced or revoked, and has the broker close
// sessions they no longer allow.
func (h *Hub) credentialsChanged(kioskID string) {
	h.fleet.Forget(kioskID)
	if h.broker != nil {
		h.broker.Recheck()
	}
}

// heardHeartbeat takes a heartbeat another hub received.
func (h *Hub) heardHeartbeat(payload string) {
	hb, err := fleet.DecodeHeartbeatNote(payload)
	if err != nil {
		h.log.Warn("heartbeat notification not understood", "err", err)
		return
	}
	if hb.Hub != h.ledger.Holder() {
		h.presence.Seen(hb.Telemetry, hb.At)
	}
}

// mergeHeartbeats adds the heartbeats other hubs stored after since.
func (h *Hub) mergeHeartbeats(since time.Time) error {
	hbs, err := h.fleet.Heartbeats(h.bgCtx, since, h.ledger.Holder())
	if err != nil {
		return err
	}
	for _, hb := range hbs {
		h.presence.Seen(hb.Telemetry, hb.At)
	}
	return nil
}

// checkLedger runs the full ledger check every period while the hub sells.
// The ledger halts itself on a violation; this says so to ops.
func (h *Hub) checkLedger(period time.Duration) {
	h.every(period, func() bool {
		if !h.leader.Held() {
			return true // one hub checks for the cluster
		}
		ctx, cancel := context.WithTimeout(h.bgCtx, max(period, time.Minute))
		defer cancel()
		start := time.Now()
		r, err := h.ledger.Check(ctx)
		switch {
		case err != nil:
			h.log.Error("ledger check", "err", err)
		case !r.OK():
			for _, v := range r.Violations {
				h.log.Error("LEDGER VIOLATION", "violation", v)
			}
			return false // the ledger halted and raised the alert
		default:
			h.log.Debug("ledger check passed", "indicia", r.Indicia, "took", time.Since(start))
		}
		return true
	})
}

// lead checks whether this hub leads the cluster, takes the lead if no
// hub has it, and logs a change.
func (h *Hub) lead(ctx context.Context) bool {
	held := h.leader.Check(ctx, h.clockNow())
	h.tickMu.Lock()
	if held != h.leading {
		h.leading = held
		h.log.Info("cluster leadership", "leader", held)
		if held {
			// What the last leader sent is not known here: a table that
			// took over after its last tick is sent at this one's first.
			clear(h.pushedRates)
		}
	}
	h.tickMu.Unlock()
	return held
}

// leaderLease lets the reporter run on the leader only.
type leaderLease struct{ l *store.Leader }

func (ll leaderLease) TryLease(context.Context, string, string, time.Time, time.Duration) (bool, error) {
	return ll.l.Held(), nil
}

// watchdog runs the periodic checks.
func (h *Hub) watchdog() {
	h.every(time.Minute, func() bool { h.Tick(h.bgCtx); return true })
}

// Tick runs the periodic checks once: inspection deadlines, sales whose
// labels were never reported, and a rate table whose day has come (every
// kiosk gets the new table at once; a kiosk still pricing on the old one is
// refused with rate_table_stale).
func (h *Hub) Tick(ctx context.Context) {
	if h.cfg.RatesDir != "" {
		// Tables dropped into the directory ahead of their date are
		// picked up here; a bad file leaves the loaded tables in force.
		if err := h.rates.Reload(h.cfg.RatesDir); err != nil {
			h.log.Error("rate tables not reloaded", "dir", h.cfg.RatesDir, "err", err)
		}
	}
	if err := h.rates.Share(ctx, h.db, h.ledger.Holder(), h.clockNow()); err != nil {
		h.log.Error("rate tables not shared with the other hubs", "err", err)
	}
	if err := h.ledger.RefreshInspection(ctx); err != nil {
		h.log.Error("inspection date not read", "err", err)
	}
	if !h.lead(ctx) { // asked again: a hub paused past its lease leads no more
		return // the leader does the rest for the cluster
	}
	h.tickMu.Lock()
	defer h.tickMu.Unlock()
	if err := h.ledger.CheckInspection(ctx); err != nil {
		h.log.Error("inspection check", "err", err)
	}
	// A kiosk refund recorded whose money never moved (its hub stopped
	// in between, or the gateway was down, and the kiosk has not asked
	// again): finished here, a minute on, for up to a refund window back
	// and never less than refundsDueFor: the customers' refund window is
	// a policy for stamps they still hold, not for money owed.
	if due, err := h.ledger.RefundsDue(ctx, h.clockNow().Add(-max(h.cfg.RefundWindow, refundsDueFor)), h.clockNow().Add(-time.Minute)); err != nil {
		h.log.Error("refunds due", "err", err)
	} else if _, err := h.sales.FinishRefunds(ctx, due); err != nil {
		h.log.Error("refunds due not finished; tried again at the next tick", "err", err)
	}
	h.finishRetirements(ctx)
	h.refundUnclaimed(ctx)
	stale, err := h.ledger.Unconfirmed(ctx, h.cfg.UnconfirmedAfter)
	if err != nil {
		h.log.Error("unconfirmed sales", "err", err)
	}
	for _, s := range stale {
		h.alerts.Raise(ctx, alerts.Unconfirmed, "sale/"+s[0]+"/"+s[1],
			fmt.Sprintf("kiosk %s never reported whether the labels of sale %s printed", s[0], s[1]))
	}
	h.checkFailedPrints(ctx)
	h.checkFunds(ctx)
	h.pushRates(ctx, true)
}

// pushRates sends a kiosk its config again when the rate table in force
// in its store's time zone is not the one it was last sent: at that zone's
// midnight, for a table that takes over that day, or when its store moves
// to another zone. So it does when the kiosk moved to another store (from
// the command line, on any hub): its config names the store, its staff and
// their settings. With push false it only notes the tables in force: at
// start, kiosks get theirs as they come online.
func (h *Hub) pushRates(ctx context.Context, push bool) {
	places, err := h.fleet.KioskPlaces(ctx)
	if err != nil {
		h.log.Error("rate tables not pushed", "err", err)
		return
	}
	now := h.clockNow()
	inForce := map[string]string{} // zone -> version
	pushed := map[string]int{}     // version -> kiosks sent it
	for id, place := range places {
		zone := place.Zone
		v, ok := inForce[zone]
		if !ok {
			at := now
			if zone != "" {
				loc, err := fleet.LoadZone(zone)
				if err != nil {
					h.log.Error("rate tables not pushed", "zone", zone, "err", err)
					inForce[zone] = ""
					continue
				}
				at = now.In(loc)
			}
			if rt, err := h.rates.Current(at); err == nil {
				v = rt.Version
			}
			inForce[zone] = v
		}
		if v == "" || h.pushedRates[id] == v+"@"+place.Store {
			continue
		}
		if push && h.front != nil {
			h.front.PushConfig(id)
			pushed[v]++
		}
		h.pushedRates[id] = v + "@" + place.Store
	}
	for v, n := range pushed {
		h.log.Info("rate table in force pushed to kiosks", "rates", v, "kiosks", n)
	}
}

// checkFunds raises funds_low when the GPSD holds less than FundsLow, or,
// without that threshold, when it could not fund one more MPSD while a
// purchase from the postal authority hangs: sales will soon stop.
func (h *Hub) checkFunds(ctx context.Context) {
	low := h.cfg.FundsLow
	if low == 0 {
		fs, err := h.views.Fundings(ctx, 20)
		if err != nil || !slices.ContainsFunc(fs, func(f views.Funding) bool { return f.State == "pending" }) {
			return // the GPSD buys on demand
		}
		low = h.ledger.Config().MPSDFunding
	}
	psds, err := h.ledger.PSDs(ctx)
	if err != nil {
		h.log.Error("funds check", "err", err)
		return
	}
	for _, p := range psds {
		if p.Kind == ledger.KindGPSD && p.DR < low {
			h.alerts.Raise(ctx, alerts.FundsLow, "gpsd", fmt.Sprintf("the GPSD holds %s, less than %s", p.DR, low))
		}
	}
}

// TuneRuntime sets the garbage collector for a server with memory to spare,
// unless GOGC or GOMEMLIMIT say otherwise: collect when the heap has grown
// eight times, but never let it pass 2 GiB. The purchase path allocates a
// little per message, and collection was a sixth of its CPU at GOGC=100.
func TuneRuntime() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(800)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(2 << 30)
	}
}

// firstMACKey makes the first control-code key on a hub's first start.
// Missing from an HSM whose database holds PSDs already, it is the wrong
// HSM (token, slot, or key store), not a first start: a new key would fail
// every PSD's seal, and the ledger check would stop all sales as tampered.
func firstMACKey(ctx context.Context, db *store.DB, ks hsm.Module, sess hsm.Session, label string) error {
	_, err := sess.MAC(label, nil)
	if !errors.Is(err, hsm.ErrNoKey) {
		return err
	}
	var psds int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM psd`).Scan(&psds); err != nil {
		return fmt.Errorf("hub: control-code key: %w", err)
	}
	if psds > 0 {
		return fmt.Errorf("hub: the HSM holds no control-code key %q, yet the database holds %d PSDs sealed with it: "+
			"this is not the hub's HSM (check --hsm, the PKCS#11 token and slot, or --data's key store): %w", label, psds, ErrWrongHSM)
	}
	return ks.GenerateMACKey(label)
}

// PasswordChanges is how many times a customer may change the password
// in PasswordChangeWindow, right or wrong, across the hubs.
const (
	PasswordChanges      = 5
	PasswordChangeWindow = time.Hour
)

func passwordChanges(h *Hub) *websession.Limiter {
	l := websession.NewLimiter(PasswordChanges, PasswordChangeWindow)
	l.DB, l.Now = h.db, h.clockNow
	return l
}

// ErrWrongHSM: the hub was started on an HSM that lacks the keys its
// database was sealed with.
var ErrWrongHSM = errors.New("not the hub's HSM")

// ensureMACKey makes a control-code key a rotation names, unless it is
// there already (a rotation tried again).
func ensureMACKey(ks hsm.Module, sess hsm.Session, label string) error {
	_, err := sess.MAC(label, nil)
	if errors.Is(err, hsm.ErrNoKey) {
		return ks.GenerateMACKey(label)
	}
	return err
}
