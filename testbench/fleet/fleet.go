// Package fleet is the fleet twin: many simulated kiosks in one process,
// each the real kiosk (appliance/kiosk: its sale rules, journal, power-cut
// recovery, and its own mqtts session with its own certificate) on
// simulated devices, against a real hub with its embedded broker, postal
// authority and card gateway. Customers arrive at random; faults are
// injected on a schedule: paper out, jams, a label door left open, network
// partitions, a broker (hub) restart, power cuts mid-sale, a kiosk with a
// bad clock, and a bad release. Each fault names the alert it must raise,
// so a run can prove that every fault raised its alert and nothing else
// did. It is the bench for ops features and the demo's busy console.
package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/releases"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/cards"
	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/wait"
)

// Config configures a twin fleet.
type Config struct {
	Kiosks    int           // default 1000
	PerStore  int           // kiosks per store; default 4
	SaleEvery time.Duration // mean time between one kiosk's customers; default 60 s
	Faults    bool          // inject the faults
	Dir       string        // the hub's data and the kiosks' journals
	HTTP      string        // the hub's HTTPS address (the console); default 127.0.0.1:0
	// Operator and Password, if set, are an ops login for the console.
	Operator, Password string
	Log                *slog.Logger // the twin's own log
	HubLog             *slog.Logger // the hub's; default discarded
	KioskLog           *slog.Logger // the kiosks'; default discarded
}

func (c *Config) defaults() {
	if c.Kiosks == 0 {
		c.Kiosks = 1000
	}
	if c.PerStore == 0 {
		c.PerStore = 4
	}
	if c.SaleEvery == 0 {
		c.SaleEvery = time.Minute
	}
	if c.HTTP == "" {
		c.HTTP = "127.0.0.1:0"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.HubLog == nil {
		c.HubLog = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.KioskLog == nil {
		c.KioskLog = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Fleet is a running twin fleet.
type Fleet struct {
	cfg     Config
	hcfg    hub.Config
	h       atomic.Pointer[hub.Hub]
	servers []*httptest.Server
	kiosks  []*twin
	faults  []Fault
	mu      sync.Mutex

	stop  chan struct{}
	wg    sync.WaitGroup
	Stats Stats
}

// Stats count what customers did.
type Stats struct {
	Sales, Printed, Refused, Failed, Refunds atomic.Int64
}

// Fault is one injected fault and the alert it must raise.
type Fault struct {
	Kind    string    `json:"kind"` // paper_out, jam, door_open, partition, power_cut, bad_clock, broker_restart, bad_release
	Kiosk   string    `json:"kiosk,omitempty"`
	At      time.Time `json:"at"`
	Alert   string    `json:"alert,omitempty"` // the alert kind it must raise; "" for none
	Subject string    `json:"subject,omitempty"`
}

// twin is one simulated kiosk.
type twin struct {
	id, store string
	cfg       kiosk.Config
	journal   *journal.Journal
	skew      atomic.Int64 // its clock's error, ns

	mu      sync.Mutex
	k       *kiosk.Kiosk
	printer *twinPrinter
	panel   *twinPanel
	net     *link
	dead    chan struct{} // closed when this boot's power is cut
}

// Start starts a hub and provisions the fleet: stores of PerStore kiosks,
// certificates from the device CA, three sheets of labels each. Run
// starts the kiosks.
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	cfg.defaults()
	f := &Fleet{cfg: cfg, stop: make(chan struct{})}
	pa, err := postal.New("", cfg.HubLog)
	if err != nil {
		return nil, err
	}
	pasrv := httptest.NewServer(pa.Handler())
	cardSrv := httptest.NewServer(cards.New(cfg.HubLog).Handler())
	f.servers = []*httptest.Server{pasrv, cardSrv}
	// Fixed addresses, so that kiosks find the hub again after a restart.
	broker, err := freeAddr()
	if err != nil {
		return nil, err
	}
	f.hcfg = hub.Config{DataDir: filepath.Join(cfg.Dir, "hub"), HTTPSListen: cfg.HTTP, BrokerTLSListen: broker, HeartbeatS: 30,
		BrokerConnsPerIP: -1, KioskMsgRate: -1, PostalURL: pasrv.URL, PaymentsURL: cardSrv.URL, LabelsLow: 5,
		Ledger: ledger.Config{Licence: postal.DemoLicence}}
	if f.hcfg.HTTPSListen == "127.0.0.1:0" {
		if f.hcfg.HTTPSListen, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	h, err := f.startHub(ctx)
	if err != nil {
		f.Close()
		return nil, err
	}
	if cfg.Operator != "" {
		if _, err := h.Operators().Add(ctx, cfg.Operator, cfg.Password, "ops", nil); err != nil {
			f.Close()
			return nil, err
		}
	}
	host, _, _ := net.SplitHostPort(h.BrokerTLSAddr)
	t0 := time.Now()
	for i := range cfg.Kiosks {
		tw := &twin{id: fmt.Sprintf("twin-%04d", i), store: fmt.Sprintf("store-%03d", i/cfg.PerStore)}
		if err := f.provision(ctx, h, tw, host); err != nil {
			f.Close()
			return nil, fmt.Errorf("fleet: provision %s: %w", tw.id, err)
		}
		f.kiosks = append(f.kiosks, tw)
	}
	cfg.Log.Info("fleet provisioned", "kiosks", len(f.kiosks), "took", time.Since(t0).Round(time.Millisecond), "console", h.URL()+"/console/")
	return f, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (f *Fleet) startHub(ctx context.Context) (*hub.Hub, error) {
	h, err := hub.Open(ctx, f.hcfg, f.cfg.HubLog)
	if err != nil {
		return nil, err
	}
	if err := h.Start(ctx); err != nil {
		h.Close()
		return nil, err
	}
	f.h.Store(h)
	return h, nil
}

// Hub is the fleet's hub.
func (f *Fleet) Hub() *hub.Hub { return f.h.Load() }

func (f *Fleet) provision(ctx context.Context, h *hub.Hub, tw *twin, host string) error {
	if _, err := h.Fleet().Add(ctx, tw.id, tw.store); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	der, err := h.CA().IssueKiosk(ctx, csr, tw.id, tw.store)
	if err != nil {
		return err
	}
	if err := h.Stock().AddStore(ctx, tw.store, ""); err != nil {
		return err
	}
	sheets, err := h.Stock().Issue(ctx, tw.store, 3)
	if err != nil {
		return err
	}
	if _, err := h.Stock().Load(ctx, tw.id, sheets); err != nil {
		return err
	}
	if tw.journal, err = journal.Open(filepath.Join(f.cfg.Dir, "kiosks", tw.id+".db")); err != nil {
		return err
	}
	var serials []string
	for _, s := range sheets {
		serials = append(serials, s.String())
	}
	if err := tw.journal.AddSheets(ctx, serials); err != nil {
		return err
	}
	tw.cfg = kiosk.Config{ID: tw.id, Broker: "mqtts://" + h.BrokerTLSAddr, OriginZIP: "94544", Firmware: "twin-1",
		TLS: &tls.Config{RootCAs: h.CA().Pool(), ServerName: host, MinVersion: tls.VersionTLS12,
			Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		ResendEvery: 5 * time.Second, Deadline: 45 * time.Second, RemedyWindow: 20 * time.Second,
		Clock: func() time.Time { return time.Now().Add(time.Duration(tw.skew.Load())) }}
	return nil
}

// boot starts (or, after a power cut, restarts) a twin's kiosk.
func (f *Fleet) boot(tw *twin) error {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	tw.printer, tw.panel, tw.net, tw.dead = newTwinPrinter(), newTwinPanel(), &link{}, make(chan struct{})
	cfg := tw.cfg
	cfg.Dial = tw.net.dial
	k, err := kiosk.New(cfg, tw.printer, f.cfg.KioskLog.With("kiosk", tw.id))
	if err != nil {
		return err
	}
	k.UseJournal(tw.journal)
	k.UseDevices(kiosk.Devices{Panel: tw.panel})
	if err := k.Connect(); err != nil {
		return err
	}
	tw.k = k
	return nil
}

func (tw *twin) kiosk() *kiosk.Kiosk {
	k, _ := tw.boot()
	return k
}

// boot is the running kiosk and a channel closed if its power is cut.
func (tw *twin) boot() (*kiosk.Kiosk, <-chan struct{}) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return tw.k, tw.dead
}

// Run starts every kiosk, brings customers to them, and injects the
// faults, for d; then customers stop and every kiosk settles its sales.
func (f *Fleet) Run(ctx context.Context, d time.Duration) error {
	// Kiosks come up over a few seconds, as stores open.
	for i, tw := range f.kiosks {
		if err := f.boot(tw); err != nil {
			return err
		}
		if i%50 == 49 {
			time.Sleep(100 * time.Millisecond) // pace: stores open over a few seconds
		}
	}
	f.cfg.Log.Info("fleet running", "kiosks", len(f.kiosks), "for", d)
	end := time.After(d)
	for i, tw := range f.kiosks {
		f.wg.Go(func() { f.customers(ctx, tw, mrand.New(mrand.NewPCG(uint64(i), 7))) })
	}
	if f.cfg.Faults {
		f.wg.Go(func() { f.inject(ctx, d) })
	}
	select {
	case <-end:
	case <-ctx.Done():
	}
	close(f.stop)
	f.wg.Wait()
	f.cfg.Log.Info("customers stopped", "sales", f.Stats.Sales.Load(), "printed", f.Stats.Printed.Load(),
		"refused", f.Stats.Refused.Load(), "failed", f.Stats.Failed.Load(), "refunds", f.Stats.Refunds.Load())
	return nil
}

// customers brings one kiosk its customers: one at a time, at random, each
// buying one stamp with a card; a customer whose label fails asks for the
// refund.
func (f *Fleet) customers(ctx context.Context, tw *twin, r *mrand.Rand) {
	for {
		wait := time.Duration(r.ExpFloat64() * float64(f.cfg.SaleEvery))
		select {
		case <-f.stop:
			return
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		k, dead := tw.boot()
		type sold struct {
			rc  *kiosk.Receipt
			err error
		}
		done := make(chan sold, 1)
		go func() {
			sctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			rc, err := k.Sell(sctx, kiosk.Order{RateClass: "1100", WeightMg: 20_000,
				Payment: protocol.Payment{Method: protocol.PayCardToken, Token: "tok_approve", Brand: "visa", Last4: "4242"}})
			done <- sold{rc, err}
		}()
		var rc *kiosk.Receipt
		var err error
		select {
		case s := <-done:
			rc, err = s.rc, s.err
		case <-dead: // the power went while this customer waited: they leave
			continue
		}
		f.Stats.Sales.Add(1)
		switch {
		case err != nil || rc.Status != protocol.ResultOK:
			f.Stats.Refused.Add(1)
		default:
			for _, l := range rc.Labels {
				if l.Outcome == protocol.Printed {
					f.Stats.Printed.Add(1)
					continue
				}
				f.Stats.Failed.Add(1)
				rctx, cancel := context.WithTimeout(ctx, time.Minute)
				if res, err := k.Refund(rctx, rc.RequestID, l.LabelSerial); err == nil && res.Status == protocol.ResultOK {
					f.Stats.Refunds.Add(1)
				}
				cancel()
			}
		}
	}
}

// Faults returns the faults injected so far.
func (f *Fleet) Faults() []Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Fault{}, f.faults...)
}

func (f *Fleet) injected(ft Fault) {
	ft.At = time.Now()
	f.mu.Lock()
	f.faults = append(f.faults, ft)
	f.mu.Unlock()
	f.cfg.Log.Info("fault injected", "kind", ft.Kind, "kiosk", ft.Kiosk, "alert", ft.Alert)
}

// inject runs the fault schedule over the first half of d, each fault on
// kiosks of its own, so that each alert has one cause.
func (f *Fleet) inject(ctx context.Context, d time.Duration) {
	n := len(f.kiosks)
	pick := func(i int) *twin { return f.kiosks[(i*7919+13)%n] } // spread over stores
	step := d / 2 / 9
	sleep := func() bool {
		select {
		case <-f.stop:
			return false
		case <-ctx.Done():
			return false
		case <-time.After(step):
			return true
		}
	}
	subject := func(tw *twin) string { return "kiosk/" + tw.id }
	type action func()
	var later []action
	schedule := []func(){
		func() { // paper runs out, and staff load more 20 s later
			tw := pick(1)
			tw.printer.set(true, false)
			f.injected(Fault{Kind: "paper_out", Kiosk: tw.id, Alert: alerts.PaperOut, Subject: subject(tw)})
			later = append(later, func() { tw.printer.set(false, false) })
		},
		func() { // the cutter jams
			tw := pick(2)
			tw.printer.set(false, true)
			f.injected(Fault{Kind: "jam", Kiosk: tw.id, Alert: alerts.PrinterFault, Subject: subject(tw)})
			later = append(later, func() { tw.printer.set(false, false) })
		},
		func() { // the label door is left open
			tw := pick(3)
			tw.panel.setDoor(true)
			f.injected(Fault{Kind: "door_open", Kiosk: tw.id, Alert: alerts.DoorOpen, Subject: subject(tw)})
			later = append(later, func() { tw.panel.setDoor(false) })
		},
		func() { // the store's network goes for 30 s
			tw := pick(4)
			tw.net.cut()
			f.injected(Fault{Kind: "partition", Kiosk: tw.id, Alert: alerts.KioskOffline, Subject: subject(tw)})
			time.AfterFunc(30*time.Second, tw.net.heal)
		},
		func() { // a kiosk's clock is two hours fast
			tw := pick(5)
			tw.skew.Store(int64(2 * time.Hour))
			tw.kiosk().SetInService(true) // its next heartbeat now, not in 30 s
			f.injected(Fault{Kind: "bad_clock", Kiosk: tw.id, Alert: alerts.ClockSkew, Subject: subject(tw)})
		},
		func() { f.powerCut(ctx, pick(6), subject(pick(6))) },
		func() { f.badRelease(ctx, []*twin{pick(7), pick(8), pick(9)}) },
		func() { // the broker (the hub that embeds it) restarts
			h := f.Hub()
			h.Close()
			if _, err := f.startHub(ctx); err != nil {
				f.cfg.Log.Error("hub did not restart", "err", err)
			}
			f.injected(Fault{Kind: "broker_restart"})
		},
		func() {
			for _, a := range later {
				a()
			}
		},
	}
	for _, fn := range schedule {
		if !sleep() {
			return
		}
		fn()
	}
}

// errNotPrinting is what powerCut waits out: the label not yet printing.
var errNotPrinting = errors.New("the label is not printing yet")

// powerCut cuts a kiosk's power while it prints a label, and turns it on
// 5 s later: the kiosk restarts on its journal and settles the sale.
func (f *Fleet) powerCut(ctx context.Context, tw *twin, subject string) {
	k := tw.kiosk()
	// A customer whose label is printing when the power goes.
	sold := make(chan struct{})
	go func() {
		defer close(sold)
		k.Sell(ctx, kiosk.Order{RateClass: "1100", WeightMg: 20_000, Payment: protocol.Payment{Method: protocol.PayCardToken, Token: "tok_approve"}})
	}()
	wait.Poll(time.Minute, func() error {
		if k.Progress().Step != "printing" {
			return errNotPrinting
		}
		return nil
	})
	tw.mu.Lock()
	tw.printer.powerCut()
	tw.net.cut()
	close(tw.dead)
	tw.mu.Unlock()
	f.Stats.Sales.Add(1)
	f.injected(Fault{Kind: "power_cut", Kiosk: tw.id, Alert: alerts.KioskOffline, Subject: subject})
	k.Close()                   // its other work stops with the power; the sale in hand never returns
	time.Sleep(5 * time.Second) // pace: the power stays off a while
	if err := f.boot(tw); err != nil {
		f.cfg.Log.Error("kiosk did not come back after its power cut", "kiosk", tw.id, "err", err)
	}
}

// badRelease publishes a release that the kiosks' release key did not
// sign (the twins hold none), and rolls it out to three kiosks: each
// refuses it, and the rollout halts at its threshold.
func (f *Fleet) badRelease(ctx context.Context, tws []*twin) {
	h := f.Hub()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	bin := []byte("not a kiosk")
	sum := sha256.Sum256(bin)
	m, _ := json.Marshal(protocol.ReleaseManifest{Version: "twin-bad", Created: time.Now().UTC(),
		Artifacts: []protocol.Artifact{{Arch: "amd64", Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
	if _, err := h.Releases().Publish(ctx, pub, m, ed25519.Sign(priv, m), map[string][]byte{"amd64": bin}, "fleet-twin"); err != nil {
		f.cfg.Log.Error("bad release not published", "err", err)
		return
	}
	var ids []string
	for _, tw := range tws {
		ids = append(ids, tw.id)
	}
	ro, err := h.Releases().Start(ctx, "twin-bad", []releases.Stage{{Kiosks: ids}}, 20, 0, time.Minute, "fleet-twin")
	if err != nil {
		f.cfg.Log.Error("bad release not rolled out", "err", err)
		return
	}
	f.injected(Fault{Kind: "bad_release", Alert: alerts.RolloutHalted, Subject: fmt.Sprintf("rollout/%d", ro.ID)})
}

// Settle waits until every kiosk's journal holds no open sale.
func (f *Fleet) Settle(ctx context.Context) error {
	for _, tw := range f.kiosks {
		for {
			open, err := tw.journal.Unfinished(ctx)
			if err != nil {
				return err
			}
			if len(open) == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("fleet: kiosk %s still holds %d open sales: %w", tw.id, len(open), ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// Close stops the kiosks and the hub.
func (f *Fleet) Close() {
	for _, tw := range f.kiosks {
		if k := tw.kiosk(); k != nil {
			k.Close()
		}
	}
	if h := f.Hub(); h != nil {
		h.Close()
	}
	for _, tw := range f.kiosks {
		if tw.journal != nil {
			tw.journal.Close()
		}
	}
	for _, s := range f.servers {
		s.Close()
	}
}

// Result is what a run's end checks found.
type Result struct {
	Payments     int      `json:"payments"`      // card payments of the fleet's sales
	Captured     int      `json:"captured"`      // captured, each for exactly its printed stamps
	Voided       int      `json:"voided"`        // voided, with no stamp printed
	Violations   []string `json:"violations"`    // money or stamps out of line
	Alerts       []string `json:"alerts"`        // raised during the run: kind subject
	Unexplained  []string `json:"unexplained"`   // raised, and no fault caused them
	Missing      []string `json:"missing"`       // a fault that raised no alert
	LedgerOK     bool     `json:"ledger_ok"`     // hub ledger check
	LedgerIssues []string `json:"ledger_issues"` // its violations
}

// OK says every check passed.
func (r *Result) OK() bool {
	return r.LedgerOK && len(r.Violations) == 0 && len(r.Unexplained) == 0 && len(r.Missing) == 0
}

// Check runs the end checks, once the fleet settled: the ledger check;
// every paid sale is printed and confirmed, or voided and refunded (a
// captured payment, less its refunds, is exactly the postage of the
// stamps that printed; a voided one printed nothing; no payment or stamp
// is left open); and every fault raised its alert, and nothing else did.
func (f *Fleet) Check(ctx context.Context, since time.Time) (*Result, error) {
	h := f.Hub()
	res := &Result{}
	rep, err := h.Ledger().Check(ctx)
	if err != nil {
		return nil, err
	}
	res.LedgerOK, res.LedgerIssues = rep.OK(), rep.Violations
	db, err := openDB(filepath.Join(f.hcfg.DataDir, "hub.db"))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT p.kiosk_id, p.request_id, p.state, p.captured, p.refunded,
		(SELECT COALESCE(SUM(i.postage), 0) FROM indicia i WHERE i.kiosk_id = p.kiosk_id AND i.request_id = p.request_id AND i.state = 'printed'),
		(SELECT COUNT(*) FROM indicia i WHERE i.kiosk_id = p.kiosk_id AND i.request_id = p.request_id AND i.state = 'issued')
		FROM payments p WHERE p.kiosk_id LIKE 'twin-%'`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k, r, state string
		var captured, refunded, printed, open int64
		if err := rows.Scan(&k, &r, &state, &captured, &refunded, &printed, &open); err != nil {
			rows.Close()
			return nil, err
		}
		res.Payments++
		bad := func(format string, args ...any) {
			res.Violations = append(res.Violations, fmt.Sprintf("sale %s/%s: ", k, r)+fmt.Sprintf(format, args...))
		}
		switch {
		case open > 0:
			bad("%d stamps neither printed nor voided", open)
		case state == "captured" && captured-refunded != printed:
			bad("captured %d, refunded %d, but %d of postage printed", captured, refunded, printed)
		case state == "captured":
			res.Captured++
		case state == "voided" && printed != 0:
			bad("payment voided, but %d of postage printed", printed)
		case state == "voided":
			res.Voided++
		default:
			bad("payment left %s", state)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	as, err := h.Alerts().List(ctx, false)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, ft := range f.Faults() {
		if ft.Alert != "" {
			want[ft.Alert+" "+ft.Subject] = false
		}
	}
	for _, a := range as {
		if a.Created.Before(since) {
			continue
		}
		key := a.Kind + " " + a.Subject
		res.Alerts = append(res.Alerts, key)
		if _, ok := want[key]; ok {
			want[key] = true
		} else {
			res.Unexplained = append(res.Unexplained, key+": "+a.Message)
		}
	}
	for key, met := range want {
		if !met {
			res.Missing = append(res.Missing, key)
		}
	}
	return res, nil
}
