// Package bench measures the hub's purchase path end to end: simulated
// kiosks send purchase requests over MQTT to a real hub (embedded broker,
// SQLite with durable commits, the chosen signer) and wait for the signed
// results. Beside each figure it measures, in the same run, the raw
// signatures per second of the same signer with the same number of
// sessions, because these machines are noisy and only the ratio travels.
package bench

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hsm/pkcs11"
	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/front"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/cards"
	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/softhsm"
)

// Config sizes a run.
type Config struct {
	Signer   string        // "soft" or "softhsm"
	Workers  int           // PSDM workers (= HSM sessions)
	Kiosks   int           // simulated kiosks
	InFlight int           // requests each kiosk keeps outstanding
	Warmup   time.Duration // load before measuring
	Duration time.Duration // measured load
	Dir      string        // scratch directory
	// MaxRate is the most sales/s the run is stocked for (default
	// 20,000): each kiosk gets the label sheets it needs at that rate.
	MaxRate int
}

// Result is one run's figures.
type Result struct {
	Config
	RawSigsPerSec float64 // the signer alone, Workers sessions in parallel
	SalesPerSec   float64 // end to end, durable
	P50, P90, P99 time.Duration
	Max           time.Duration
	Sales         int
	Rejected      int
	Commits       string        // sales per commit, from the hub's view
	Resent        int           // requests sent again after 2 s without an answer
	Dropped       int64         // messages the broker dropped
	Indicia       int           // in the ledger after the run
	CheckTook     time.Duration // the full ledger check after the run
}

// Ratio is sales per second over raw signatures per second.
func (r Result) Ratio() float64 { return r.SalesPerSec / r.RawSigsPerSec }

// signerSetup gives a way to open sessions for the chosen signer, and the
// hub configuration that uses the same keys.
type signerSetup struct {
	hubCfg  func(*hub.Config)
	session func() (crypto.Signer, func(), error)
	close   func()
}

func setupSigner(cfg Config) (*signerSetup, error) {
	switch cfg.Signer {
	case "soft":
		dir := filepath.Join(cfg.Dir, "hub", "keys")
		ks, err := soft.Open(dir)
		if err != nil {
			return nil, err
		}
		if _, err := ks.GenerateSigningKey("bench-raw"); err != nil {
			return nil, err
		}
		return &signerSetup{
			hubCfg: func(c *hub.Config) { c.HSM = "soft" },
			session: func() (crypto.Signer, func(), error) {
				s, _ := ks.Session()
				sg, err := s.Signer("bench-raw")
				return sg, func() { s.Close() }, err
			},
			close: func() { ks.Close() },
		}, nil
	case "softhsm":
		tok, err := softhsm.Setup(filepath.Join(cfg.Dir, "softhsm"), "frank-bench", "1234")
		if err != nil {
			return nil, err
		}
		pc := pkcs11.Config{Module: tok.Module, Token: tok.Label, PIN: tok.PIN}
		t, err := pkcs11.Open(pc)
		if err != nil {
			return nil, err
		}
		if _, err := t.GenerateSigningKey("bench-raw"); err != nil {
			return nil, err
		}
		return &signerSetup{
			hubCfg: func(c *hub.Config) { c.HSM = "pkcs11"; c.PKCS11 = pc },
			session: func() (crypto.Signer, func(), error) {
				s, err := t.Session()
				if err != nil {
					return nil, nil, err
				}
				sg, err := s.Signer("bench-raw")
				return sg, func() { s.Close() }, err
			},
			close: func() { t.Close() },
		}, nil
	}
	return nil, fmt.Errorf("bench: signer %q: want soft or softhsm", cfg.Signer)
}

// rawSigns measures signatures per second with n sessions in parallel.
func rawSigns(s *signerSetup, n int, d time.Duration) (float64, error) {
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	deadline := time.Now().Add(d)
	for range n {
		sg, done, err := s.session()
		if err != nil {
			return 0, err
		}
		wg.Go(func() {
			defer done()
			digest := sha256.Sum256([]byte("bench"))
			for time.Now().Before(deadline) {
				if _, err := sg.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					errs <- err
					return
				}
				total.Add(1)
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	return float64(total.Load()) / d.Seconds(), nil
}

// Run measures one configuration.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Result, error) {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	s, err := setupSigner(cfg)
	if err != nil {
		return nil, err
	}
	defer s.close()
	res := &Result{Config: cfg}
	// The baseline first, on an idle machine, as the hub's workers would sign.
	if res.RawSigsPerSec, err = rawSigns(s, cfg.Workers, cfg.Duration/2); err != nil {
		return nil, fmt.Errorf("bench: raw signatures: %w", err)
	}

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("FRANK_BENCH_DEBUG") != "" {
		quiet = log
	}
	pa, _ := postal.New("", quiet)
	paSrv := httptest.NewServer(pa.Handler())
	defer paSrv.Close()
	cardSrv := httptest.NewServer(cards.New(quiet).Handler())
	defer cardSrv.Close()
	hc := hub.Config{DataDir: filepath.Join(cfg.Dir, "hub"), HTTPListen: "127.0.0.1:0", BrokerListen: "127.0.0.1:0", BrokerConnsPerIP: -1, KioskMsgRate: -1, KioskPurchases: -1, KioskInflight: -1,
		TLS: "off", KioskPasswords: true, BrokerTLSListen: "off",
		PostalURL: paSrv.URL, Ledger: ledger.Config{Licence: postal.DemoLicence}, PaymentsURL: cardSrv.URL, Workers: cfg.Workers, MPSDs: 1}
	s.hubCfg(&hc)
	h, err := hub.Open(ctx, hc, quiet)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	if hc.HSM == "pkcs11" { // as ops run `hub keys init` and `hub ca init`
		if _, err := h.Keys().Init(ctx); err != nil {
			return nil, err
		}
		if err := h.CA().Init(ctx); err != nil {
			return nil, err
		}
	}
	if err := h.Start(ctx); err != nil {
		return nil, err
	}
	// Provision the kiosks and load each with enough label sheets for a
	// generous upper bound on what it can sell in the run.
	const store = "bench-store"
	if err := h.Stock().AddStore(ctx, store, "bench"); err != nil {
		return nil, err
	}
	if cfg.MaxRate == 0 {
		cfg.MaxRate = 20_000
	}
	perKiosk := int((cfg.Warmup+cfg.Duration).Seconds()*float64(cfg.MaxRate))/cfg.Kiosks/10 + 2 + cfg.InFlight // a part-used sheet per lane

	m := &meter{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for k := range cfg.Kiosks {
		id := fmt.Sprintf("bench-%03d", k)
		password, err := h.Fleet().Add(ctx, id, store)
		if err != nil {
			return nil, err
		}
		sheets, err := h.Stock().Issue(ctx, store, perKiosk)
		if err != nil {
			return nil, err
		}
		if _, err := h.Stock().Load(ctx, id, sheets); err != nil {
			return nil, err
		}
		c, err := loadClient(h.BrokerAddr, id, password)
		if err != nil {
			return nil, err
		}
		defer c.Disconnect(50)
		if err := m.drive(c, id, sheets, cfg.InFlight, stop, &wg, log); err != nil {
			return nil, err
		}
	}
	time.Sleep(cfg.Warmup)
	m.measuring.Store(true)
	t0 := time.Now()
	st0 := h.Ledger().Stats()
	time.Sleep(cfg.Duration)
	m.measuring.Store(false)
	elapsed := time.Since(t0)
	st1 := h.Ledger().Stats()
	if c := st1.Commits - st0.Commits; c > 0 {
		res.Commits = fmt.Sprintf("%.1f sales/commit, %.2f ms/commit, committer busy %.0f%%", float64(st1.Sales-st0.Sales)/float64(c),
			float64((st1.Busy-st0.Busy).Microseconds())/1000/float64(c), 100*(st1.Busy-st0.Busy).Seconds()/elapsed.Seconds())
	}
	close(stop)
	wg.Wait()

	res.Sales, res.Rejected, res.Resent, res.Dropped = int(m.sales.Load()), int(m.rejected.Load()), int(m.resent.Load()), h.BrokerDropped()
	res.SalesPerSec = float64(res.Sales) / elapsed.Seconds()
	res.P50, res.P90, res.P99, res.Max = m.percentiles()
	time.Sleep(500 * time.Millisecond) // let the last commits land before the check
	checkStart := time.Now()
	r, err := h.Ledger().Check(ctx)
	if err != nil {
		return nil, err
	}
	res.Indicia, res.CheckTook = r.Indicia, time.Since(checkStart)
	if !r.OK() {
		return nil, fmt.Errorf("bench: ledger invariants broken after the run: %v", r.Violations)
	}
	log.Info("bench run", "signer", cfg.Signer, "workers", cfg.Workers, "raw_sigs_per_s", int(res.RawSigsPerSec),
		"sales_per_s", int(res.SalesPerSec), "p50", res.P50, "p99", res.P99, "indicia_in_ledger", r.Indicia, "commits", res.Commits, "resent", res.Resent, "broker_dropped", res.Dropped)
	return res, nil
}

func loadClient(broker, id, password string) (mqtt.Client, error) {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetCustomOpenConnectionFn(front.DialBuffered).SetClientID("bench-" + id).
		SetUsername(id).SetPassword(password).
		SetOrderMatters(false).SetMaxResumePubInFlight(1024))
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("bench: connect: %v", t.Error())
	}
	return c, nil
}

// Machine describes where the run happened.
func Machine() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s, %d CPUs (GOMAXPROCS %d), %s %s/%s", host, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// meter counts a load's answers and their latencies while measuring.
type meter struct {
	measuring               atomic.Bool
	mu                      sync.Mutex
	lat                     []time.Duration
	sales, rejected, resent atomic.Int64
	sent                    atomic.Int64 // first sends while measuring
	// prints has each sold stamp's kiosk report it printed; printed counts
	// the reports the hub confirmed while measuring.
	prints  bool
	printed atomic.Int64
}

// percentiles are the measured latencies' p50, p90, p99 and max.
func (m *meter) percentiles() (p50, p90, p99, most time.Duration) {
	return m.quantile(0.5), m.quantile(0.9), m.quantile(0.99), m.quantile(1)
}

// mean is the measured latencies' mean.
func (m *meter) mean() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.lat) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range m.lat {
		sum += d
	}
	return sum / time.Duration(len(m.lat))
}

// quantile is the latency q of the answers fall within (1: the longest).
func (m *meter) quantile(q float64) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.lat)
	if n == 0 {
		return 0
	}
	if !slices.IsSorted(m.lat) {
		slices.Sort(m.lat)
	}
	return m.lat[min(int(q*float64(n)), n-1)]
}

// link is a simulated kiosk's connection: it publishes purchases, times
// their answers into the meter, and, like a kiosk, sends again what has
// gone unanswered for 2 s.
type link struct {
	m      *meter
	c      mqtt.Client
	id     string
	tmpl   protocol.PurchaseRequest
	sheets []protocol.SheetSerial
	lanes  int // purchases outstanding at once, each on sheets of its own
	n      int // purchases sent
	mu     sync.Mutex
	sent   map[string]time.Time
	bodies map[string][]byte
	labels map[string]string
}

// newLink subscribes id's results on c; answered, if not nil, gets a
// token per answer.
func (m *meter) newLink(c mqtt.Client, id string, sheets []protocol.SheetSerial, lanes int, answered chan struct{}, stop chan struct{}, wg *sync.WaitGroup) (*link, error) {
	l := &link{m: m, c: c, id: id, sheets: sheets, lanes: max(1, lanes), sent: map[string]time.Time{}, bodies: map[string][]byte{}, labels: map[string]string{}}
	json.Unmarshal([]byte(prototest.GoodPurchase), &l.tmpl)
	l.tmpl.KioskID = id
	tok := c.Subscribe(protocol.KioskTopic(id, protocol.TopicPurchaseResult), 1, func(_ mqtt.Client, msg mqtt.Message) {
		var r struct {
			RequestID string `json:"request_id"`
			Status    string `json:"status"`
		}
		json.Unmarshal(msg.Payload(), &r)
		l.mu.Lock()
		t0, ok := l.sent[r.RequestID]
		delete(l.sent, r.RequestID)
		delete(l.bodies, r.RequestID)
		label := l.labels[r.RequestID]
		delete(l.labels, r.RequestID)
		l.mu.Unlock()
		if !ok {
			return
		}
		if m.prints && r.Status == protocol.ResultOK {
			// The kiosk printed the stamp and says so, as kiosks do after
			// every sale.
			pb, _ := json.Marshal(protocol.PrintReport{RequestID: r.RequestID, KioskID: id,
				Labels: []protocol.LabelOutcome{{LabelSerial: label, Outcome: protocol.Printed}}})
			c.Publish(protocol.KioskTopic(id, protocol.TopicPrint), 1, false, pb)
		}
		if m.measuring.Load() {
			if r.Status == protocol.ResultOK {
				m.sales.Add(1)
			} else {
				m.rejected.Add(1)
			}
			m.mu.Lock()
			m.lat = append(m.lat, time.Since(t0))
			m.mu.Unlock()
		}
		if answered != nil {
			answered <- struct{}{}
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("bench: subscribe: %v", tok.Error())
	}
	if m.prints {
		tok := c.Subscribe(protocol.KioskTopic(id, protocol.TopicPrintResult), 1, func(_ mqtt.Client, msg mqtt.Message) {
			var r protocol.PrintResult
			if json.Unmarshal(msg.Payload(), &r) == nil && r.Status == protocol.ResultOK && m.measuring.Load() {
				m.printed.Add(1)
			}
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("bench: subscribe: %v", tok.Error())
		}
	}
	wg.Go(func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			l.mu.Lock()
			var again [][]byte
			for rid, at := range l.sent {
				if time.Since(at) > 2*time.Second {
					again = append(again, l.bodies[rid])
					l.sent[rid] = time.Now()
				}
			}
			l.mu.Unlock()
			for _, b := range again {
				m.resent.Add(1)
				c.Publish(protocol.KioskTopic(id, protocol.TopicPurchase), 1, false, b)
			}
		}
	})
	return l, nil
}

// next sends a purchase of one stamp on the next fresh label. It reports
// false when the kiosk has run out of labels.
//
// The purchases a connection keeps outstanding stand for that many kiosks
// selling at once, and a kiosk prints on a sheet of its own: purchase n
// takes the next label of lane n%lanes, whose sheets are every lanes-th.
// Consecutive labels of one sheet would have two hubs' commits update the
// same sheet rows at once, which kiosks selling one stamp at a time do
// not.
func (l *link) next() bool {
	n := l.n
	lane, k := n%l.lanes, n/l.lanes
	i := lane + l.lanes*(k/10)
	if i >= len(l.sheets) {
		return false
	}
	l.n++
	r := l.tmpl
	r.RequestID = protocol.NewRequestID() // as kiosks make them
	item := r.Items[0]
	item.LabelSerial = protocol.LabelSerial{Sheet: l.sheets[i], Position: uint8(k%10 + 1)}.String()
	r.Items = []protocol.PurchaseItem{item}
	b, _ := json.Marshal(r)
	l.mu.Lock()
	l.sent[r.RequestID] = time.Now()
	l.bodies[r.RequestID] = b
	l.labels[r.RequestID] = item.LabelSerial
	l.mu.Unlock()
	if l.m.measuring.Load() {
		l.m.sent.Add(1)
	}
	l.c.Publish(protocol.KioskTopic(l.id, protocol.TopicPurchase), 1, false, b)
	return true
}

// drive makes c a kiosk that keeps inflight purchases outstanding, each on
// the next label of sheets, until stop closes (a closed loop: the load is
// whatever the hub can answer).
func (m *meter) drive(c mqtt.Client, id string, sheets []protocol.SheetSerial, inflight int, stop chan struct{}, wg *sync.WaitGroup, log *slog.Logger) error {
	done := make(chan struct{}, inflight)
	l, err := m.newLink(c, id, sheets, inflight, done, stop, wg)
	if err != nil {
		return err
	}
	wg.Go(func() {
		for range inflight {
			done <- struct{}{}
		}
		for {
			select {
			case <-stop:
				return
			case <-done:
			}
			if !l.next() {
				log.Error("bench: a kiosk ran out of labels; the figures undercount", "kiosk", id)
				return
			}
		}
	})
	return nil
}

// driveOpen makes c a kiosk whose customers arrive at random, rate a
// second on average (a Poisson process), whether or not earlier ones were
// answered: an open loop, as a store's customers are. The first arrives
// after begin closes, once every kiosk is connected.
func (m *meter) driveOpen(c mqtt.Client, id string, sheets []protocol.SheetSerial, rate float64, seed uint64, begin, stop chan struct{}, wg *sync.WaitGroup, log *slog.Logger) error {
	l, err := m.newLink(c, id, sheets, 1, nil, stop, wg)
	if err != nil {
		return err
	}
	wg.Go(func() {
		select {
		case <-begin:
		case <-stop:
			return
		}
		rng := mrand.New(mrand.NewPCG(seed, 7))
		t := time.NewTimer(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if !l.next() {
				log.Error("bench: a kiosk ran out of labels; the figures undercount", "kiosk", id)
				return
			}
			t.Reset(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
		}
	})
	return nil
}
