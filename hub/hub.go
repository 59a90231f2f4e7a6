// Package hub assembles the vendor hub: the store, the HSM, the ledger and
// key ceremony, the PSDM workers, the embedded MQTT broker and front, and
// the HTTP API. cmd/hub parses flags into a Config and calls Run.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hsm/soft"
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
	Workers      int    // PSDM workers; default 2
	RatesDir     string // extra rate tables (*.json); the built-in USPS table is always loaded
	HeartbeatS   int    // kiosk heartbeat period pushed in config; default 30
	Ledger       ledger.Config
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
		c.Workers = 2
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

// Hub is a running hub.
type Hub struct {
	cfg    Config
	log    *slog.Logger
	db     *store.DB
	ks     *soft.Keystore
	ledger *ledger.Ledger
	keys   *keys.Keys
	broker *broker.Broker
	pool   *psdm.Pool
	front  *front.Front
	http   *http.Server
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
	if h.ks, err = soft.Open(filepath.Join(cfg.DataDir, "keys")); err != nil {
		h.Close()
		return nil, err
	}
	sess, err := h.ks.Session()
	if err != nil {
		h.Close()
		return nil, err
	}
	if err := ensureMACKey(h.ks, sess, cfg.Ledger.ControlKeyLabel()); err != nil {
		h.Close()
		return nil, err
	}
	pa := postal.New(cfg.PostalURL, cfg.Ledger.Vendor)
	if h.ledger, err = ledger.Open(ctx, h.db, cfg.Ledger, sess, pa, log.With("component", "ledger")); err != nil {
		h.Close()
		return nil, err
	}
	h.keys = keys.New(h.db, h.ks, pa, log.With("component", "keys"))
	return h, nil
}

// Ledger returns the ledger.
func (h *Hub) Ledger() *ledger.Ledger { return h.ledger }

// Keys returns the key manager.
func (h *Hub) Keys() *keys.Keys { return h.keys }

// Start runs the servers: the key ceremony if no key exists yet, the
// embedded broker, the PSDM workers, the MQTT front and the HTTP API.
func (h *Hub) Start(ctx context.Context) error {
	key, err := h.keys.Init(ctx)
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
	open := func() (psdm.Session, error) { return h.ks.Session() }
	if h.pool, err = psdm.Start(ctx, h.cfg.Workers, open, psdm.Key{Label: key.Label, CertSerial: key.CertSerial},
		h.ledger, h.log.With("component", "psdm")); err != nil {
		return err
	}
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
	if h.pool != nil {
		h.pool.Close()
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

// ensureMACKey creates the control-code key on first start.
func ensureMACKey(ks *soft.Keystore, sess *soft.Session, label string) error {
	_, err := sess.MAC(label, nil)
	if errors.Is(err, hsm.ErrNoKey) {
		return ks.GenerateMACKey(label)
	}
	return err
}
