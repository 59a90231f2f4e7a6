// Package hub assembles the vendor hub: the store, the HSM, the ledger and
// key ceremony, the PSDM workers, the embedded MQTT broker and front, and
// the HTTP API. cmd/hub parses flags into a Config and calls Run.
package hub

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hsm/pkcs11"
	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/broker"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/front"
	"github.com/frank-postage/frank/hub/keys"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/hub/rates"
	"github.com/frank-postage/frank/hub/sale"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/hub/web"
	"github.com/frank-postage/frank/protocol"
)

// Config is the hub's configuration. Zero values take the defaults noted.
type Config struct {
	DataDir      string // state directory; default var/hub
	DB           string // SQLite path or postgres:// URL; default DataDir/hub.db
	Broker       string // external broker URL (tcp://host:port); empty runs the embedded one
	BrokerListen string // embedded broker address; default 127.0.0.1:1883
	HTTPListen   string // API address; default 127.0.0.1:8080
	PostalURL    string // postal authority; default http://127.0.0.1:8090
	Workers      int    // PSDM workers, one HSM session each; default half the CPUs, at least 1
	MPSDs        int    // MPSDs each worker checks out, 1-8; default 1
	RatesDir     string // extra rate tables (*.json); the built-in USPS table is always loaded
	HeartbeatS   int    // kiosk heartbeat period pushed in config; default 30
	// HSM is "soft" (development keys sealed under DataDir/keys/master.key)
	// or "pkcs11" (PKCS11 names the module, token and PIN).
	HSM    string
	PKCS11 pkcs11.Config
	Ledger ledger.Config
}

// Defaults fills in the zero values.
func (c *Config) Defaults() {
	if c.DataDir == "" {
		c.DataDir = "var/hub"
	}
	if c.DB == "" {
		c.DB = filepath.Join(c.DataDir, "hub.db")
	}
	if c.BrokerListen == "" {
		c.BrokerListen = "127.0.0.1:1883"
	}
	if c.HTTPListen == "" {
		c.HTTPListen = "127.0.0.1:8080"
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
	if c.HeartbeatS < 1 || c.HeartbeatS > 3600 {
		errs = append(errs, fmt.Errorf("heartbeat: want 1-3600 s, got %d", c.HeartbeatS))
	}
	for name, addr := range map[string]string{"http": c.HTTPListen, "broker-listen": c.BrokerListen} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if _, err := rates.LoadDir(c.RatesDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// keyStore is the HSM as the hub uses it: soft or PKCS#11.
type keyStore interface {
	GenerateSigningKey(label string) (*ecdsa.PublicKey, error)
	GenerateMACKey(label string) error
	Public(label string) (*ecdsa.PublicKey, error)
	Close() error
}

// session is one goroutine's HSM session.
type session interface {
	Signer(label string) (crypto.Signer, error)
	MAC(label string, data []byte) ([]byte, error)
	Close() error
}

// Hub is a running hub.
type Hub struct {
	cfg     Config
	log     *slog.Logger
	db      *store.DB
	ks      keyStore
	session func() (session, error)
	alerts  *alerts.Store
	ledger  *ledger.Ledger
	stopBg  chan struct{}
	keys    *keys.Keys
	postal  *postal.Client
	broker  *broker.Broker
	pool    *psdm.Pool
	front   *front.Front
	http    *http.Server
	// HTTPAddr and BrokerAddr are where the hub listens, after Start.
	HTTPAddr   string
	BrokerAddr string
}

// Open opens the store, HSM and ledger: enough for the offline commands
// (ledger check, keys) without starting any server.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Hub, error) {
	cfg.Defaults()
	h := &Hub{cfg: cfg, log: log}
	var err error
	if h.db, err = store.Open(ctx, cfg.DB); err != nil {
		return nil, err
	}
	if err := h.openHSM(); err != nil {
		h.Close()
		return nil, err
	}
	sess, err := h.session()
	if err != nil {
		h.Close()
		return nil, err
	}
	if err := ensureMACKey(h.ks, sess, cfg.Ledger.ControlKeyLabel()); err != nil {
		h.Close()
		return nil, err
	}
	pa := postal.New(cfg.PostalURL, cfg.Ledger.Vendor)
	h.postal = pa
	h.alerts = alerts.New(h.db, log.With("component", "alerts"), cfg.Ledger.Now)
	if h.ledger, err = ledger.Open(ctx, h.db, cfg.Ledger, sess, pa, h.alerts, log.With("component", "ledger")); err != nil {
		h.Close()
		return nil, err
	}
	h.keys = keys.New(h.db, h.ks, pa, log.With("component", "keys"))
	return h, nil
}

func (h *Hub) openHSM() error {
	switch h.cfg.HSM {
	case "pkcs11":
		t, err := pkcs11.Open(h.cfg.PKCS11)
		if err != nil {
			return err
		}
		h.ks = t
		h.session = func() (session, error) { return t.Session() }
	default:
		k, err := soft.Open(filepath.Join(h.cfg.DataDir, "keys"))
		if err != nil {
			return err
		}
		h.ks = k
		h.session = func() (session, error) { return k.Session() }
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

// Start runs the servers: the key ceremony if no key exists yet, the
// embedded broker, the PSDM workers, the MQTT front and the HTTP API.
func (h *Hub) Start(ctx context.Context) error {
	// A ledger that does not add up must not sell: stop here.
	r, err := h.ledger.Check(ctx)
	if err != nil {
		return fmt.Errorf("hub: start: %w", err)
	}
	if !r.OK() {
		for _, v := range r.Violations {
			h.log.Error("LEDGER VIOLATION", "violation", v)
		}
		h.alerts.Raise(ctx, alerts.Tamper, "ledger", fmt.Sprintf("ledger check failed at start: %s", r.Violations[0]))
		return fmt.Errorf("hub: start: the ledger check found %d violations; run hub ledger check", len(r.Violations))
	}
	key, err := h.keys.Active(ctx)
	if errors.Is(err, keys.ErrNoKey) && h.cfg.HSM == "soft" {
		// Development keys: run the ceremony on first start.
		key, err = h.keys.Init(ctx)
	}
	if err != nil {
		return fmt.Errorf("hub: start: %w", err)
	}
	brokerURL := h.cfg.Broker
	if brokerURL == "" {
		if h.broker, err = broker.Start(h.cfg.BrokerListen, h.log); err != nil {
			return err
		}
		h.BrokerAddr = h.broker.Addr()
		brokerURL = "tcp://" + h.BrokerAddr
	}
	open := func() (psdm.Session, error) { return h.session() }
	if h.pool, err = psdm.Start(ctx, psdm.Config{Workers: h.cfg.Workers, MPSDsPerWorker: h.cfg.MPSDs}, open,
		psdm.Key{Label: key.Label, CertSerial: key.CertSerial}, h.ledger, h.log.With("component", "psdm")); err != nil {
		return err
	}
	h.stopBg = make(chan struct{})
	go h.watchdog()
	book, err := rates.LoadDir(h.cfg.RatesDir)
	if err != nil {
		return err
	}
	svc := &sale.Service{Seller: h.pool, Book: h.ledger, Kiosks: fleet.New(h.db), Rates: book,
		Log: h.log.With("component", "sale"), Now: time.Now}
	host, _ := os.Hostname()
	fcfg := front.Config{
		Broker:   brokerURL,
		ClientID: fmt.Sprintf("frank-hub-%s-%d", host, os.Getpid()),
		ConfigFor: func(kioskID string) (protocol.KioskConfig, error) {
			rt, err := book.Current(time.Now())
			return protocol.KioskConfig{KioskID: kioskID, HeartbeatS: h.cfg.HeartbeatS, Rates: rt}, err
		},
	}
	if h.front, err = front.Start(fcfg, svc, h.ledger, h.log.With("component", "front")); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", h.cfg.HTTPListen)
	if err != nil {
		return fmt.Errorf("hub: listen %s: %w", h.cfg.HTTPListen, err)
	}
	h.HTTPAddr = ln.Addr().String()
	srv := &web.Server{Keys: h.keys, DB: h.db, Workers: h.pool, Log: h.log.With("component", "web")}
	h.http = &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := h.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("http server stopped", "err", err)
		}
	}()
	h.log.Info("hub ready", "http", h.HTTPAddr, "broker", brokerURL, "workers", h.cfg.Workers, "cert_serial", key.CertSerial)
	return nil
}

// Close stops everything in reverse order of start.
func (h *Hub) Close() error {
	if h.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h.http.Shutdown(ctx)
		cancel()
	}
	if h.front != nil {
		h.front.Close()
	}
	if h.stopBg != nil {
		close(h.stopBg)
	}
	if h.pool != nil {
		h.pool.Close()
	}
	if h.ledger != nil {
		h.ledger.Close()
	}
	if h.broker != nil {
		h.broker.Close()
	}
	if h.ks != nil {
		h.ks.Close()
	}
	if h.db != nil {
		return h.db.Close()
	}
	return nil
}

// watchdog checks inspection deadlines every minute.
func (h *Hub) watchdog() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-h.stopBg:
			return
		case <-t.C:
			if err := h.ledger.CheckInspection(context.Background()); err != nil {
				h.log.Error("inspection check", "err", err)
			}
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

// ensureMACKey creates the control-code key on first start.
func ensureMACKey(ks keyStore, sess session, label string) error {
	_, err := sess.MAC(label, nil)
	if errors.Is(err, hsm.ErrNoKey) {
		return ks.GenerateMACKey(label)
	}
	return err
}
