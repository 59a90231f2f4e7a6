package bench

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/front"
	"github.com/frank-postage/frank/hub/metrics"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/cards"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/postal"
)

// ClusterConfig is one run of hubs sharing a PostgreSQL and a broker.
type ClusterConfig struct {
	BinDir   string // the hub binary
	Dir      string
	Hubs     int
	Kiosks   int
	InFlight int
	Warmup   time.Duration
	Duration time.Duration
	// ProfileDir, if set, gets a CPU profile of the first hub over the
	// measured window (hub1-of-N.pprof).
	ProfileDir string
	// SQLite runs one hub on its own SQLite file instead of PostgreSQL.
	SQLite bool
	// OpenKiosks, if set, adds an open-loop run after the closed one: as
	// many more kiosk connections, whose purchases arrive at random
	// (Poisson) at OpenLoad times the sales/s the closed loop reached.
	OpenKiosks int
	OpenLoad   float64
	// OpenRate, if set, is the open loop's sales/s instead, for comparing
	// two builds at the same load.
	OpenRate float64
	// PrintReports has each sold stamp's kiosk report it printed, as
	// kiosks do: a second message, and a second write, for every sale.
	PrintReports bool
}

// OpenResult is an open-loop run: latency as customers would feel it at a
// load the hub can carry, not at saturation.
type OpenResult struct {
	Kiosks             int
	Load               float64 // the share of the closed loop's sales/s offered
	Offered            float64 // purchases a second, as asked of the load generator
	Sent, Answered     float64 // purchases a second, as measured
	P50, P90, P99, Max time.Duration
	P999               time.Duration // p99.9: one customer in a thousand waits longer
	Resent             int
	HubCPUPerSale      time.Duration
	// Mean is the mean latency, and Stages the mean time a sale spent in
	// each of the hub's stages (metrics.Stages, from its /metrics), over
	// the measured window.
	Mean   time.Duration
	Stages []StageMean
}

// StageMean is the mean time the purchases of a window spent in a stage.
type StageMean struct {
	Stage string
	Mean  time.Duration
	Count uint64
}

// ClusterResult is what a cluster run measured. CPU is from /proc, for
// the hub processes together and for every PostgreSQL process.
type ClusterResult struct {
	ClusterConfig
	Sales          int
	SalesPerSec    float64
	P50, P99       time.Duration
	HubCPUPerSale  time.Duration
	PGCPUPerSale   time.Duration
	WALPerSale     float64 // bytes
	CommitsPerSale float64 // PostgreSQL transactions committed
	Deadlocks      int64
	LockWaits      int // waits longer than deadlock_timeout (100 ms)
	Resent         int
	Printed        int // print reports the hub confirmed while measuring
	Open           *OpenResult
	// Runs is the sales/s of every run of this configuration, in order,
	// when the result stands for several (Median).
	Runs []float64
}

// Median is the run of rs with the median sales/s, standing for them all:
// it lists every run's sales/s, and counts the deadlocks and long lock
// waits of all of them.
func Median(rs []*ClusterResult) *ClusterResult {
	sorted := slices.SortedFunc(slices.Values(rs), func(a, b *ClusterResult) int { return cmp.Compare(a.SalesPerSec, b.SalesPerSec) })
	m := *sorted[len(sorted)/2]
	m.Runs, m.Deadlocks, m.LockWaits = nil, 0, 0
	for _, r := range rs {
		m.Runs = append(m.Runs, r.SalesPerSec)
		m.Deadlocks += r.Deadlocks
		m.LockWaits += r.LockWaits
	}
	return &m
}

// Cluster runs cfg.Hubs hub processes on one PostgreSQL and one mosquitto
// and offers them the same load as Run, from this process.
func Cluster(ctx context.Context, cfg ClusterConfig, log *slog.Logger) (*ClusterResult, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	var pg *pgtest.Server
	dsn := filepath.Join(cfg.Dir, "hub.db")
	if cfg.SQLite {
		cfg.Hubs = 1
	} else {
		// Lock waits over 100 ms are logged, so they can be counted.
		var err error
		if pg, err = pgtest.Start("log_lock_waits=on", "deadlock_timeout=100ms", "log_min_error_statement=log"); err != nil {
			return nil, err
		}
		defer pg.Stop()
		if dsn, err = pg.NewDatabase("frank"); err != nil {
			return nil, err
		}
	}
	db, err := store.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	st, reg := stock.New(db, nil), fleet.New(db)
	if err := st.AddStore(ctx, "bench-store", "bench"); err != nil {
		return nil, err
	}
	brokerAddr, err := demo.FreeAddr()
	if err != nil {
		return nil, err
	}
	broker, err := startMosquitto(cfg.Dir, brokerAddr)
	if err != nil {
		return nil, err
	}
	defer func() { broker.Process.Kill(); broker.Wait() }()

	pa, _ := postal.New("", quiet)
	paSrv := httptest.NewServer(pa.Handler())
	defer paSrv.Close()
	cardSrv := httptest.NewServer(cards.New(quiet).Handler())
	defer cardSrv.Close()
	data := filepath.Join(cfg.Dir, "hub") // shared, as an HSM is
	var hubs []*exec.Cmd
	var pprofAddr, metricsURL string
	// /metrics wants an operator's token, as Prometheus has one.
	ops := operators.New(db, nil)
	ops.Cost = bcrypt.MinCost
	if _, err := ops.Add(ctx, "bench", "bench operator password", operators.RoleOps, nil); err != nil {
		return nil, err
	}
	token, err := ops.NewToken(ctx, "bench", "metrics", operators.ReadOnly, operators.DefaultTokenTTL)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, h := range hubs {
			h.Process.Signal(syscall.SIGTERM)
			h.Wait()
		}
	}()
	for i := range cfg.Hubs {
		addr, _ := demo.FreeAddr()
		user := "frank-hub"
		if i > 0 {
			user = fmt.Sprintf("frank-hub-%d", i+1)
		}
		args := []string{"--data", data, "--db", dsn, "--http", addr, "--tls", "off",
			"--broker", "tcp://" + brokerAddr, "--broker-user", user, "--hub-name", user, "--broker-tls-listen", "off",
			"--postal", paSrv.URL, "--payments", cardSrv.URL, "--licence", postal.DemoLicence, "--report-every", "-1s", "--log", "text",
			"--kiosk-purchases", "-1", "--kiosk-msg-rate", "-1"} // load kiosks keep many purchases outstanding
		if i == 0 {
			metricsURL = "http://" + addr + "/metrics"
		}
		if i == 0 && cfg.ProfileDir != "" {
			pprofAddr, _ = demo.FreeAddr()
			args = append(args, "--pprof", pprofAddr)
		}
		cmd := exec.Command(filepath.Join(cfg.BinDir, "hub"), args...)
		// Hubs that share a machine share its cores, as they would each
		// have their own on their own machines.
		cmd.Env = append(os.Environ(), "FRANK_BROKER_PASSWORD=bench", fmt.Sprintf("GOMAXPROCS=%d", max(1, runtime.NumCPU()/cfg.Hubs)))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		hubs = append(hubs, cmd)
		if err := demo.WaitHTTP(ctx, "http://"+addr+"/healthz", 60*time.Second); err != nil {
			return nil, fmt.Errorf("bench: hub %d did not start: %w\n%s", i+1, err, out.String())
		}
	}

	m := &meter{prints: cfg.PrintReports}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	perKiosk := int((cfg.Warmup+cfg.Duration).Seconds()*5_000)/cfg.Kiosks/10 + 2 + cfg.InFlight // a part-used sheet per lane
	for k := range cfg.Kiosks {
		id := fmt.Sprintf("bench-%03d", k)
		if _, err := reg.Add(ctx, id, "bench-store"); err != nil {
			return nil, err
		}
		sheets, err := st.Issue(ctx, "bench-store", perKiosk)
		if err != nil {
			return nil, err
		}
		if _, err := st.Load(ctx, id, sheets); err != nil {
			return nil, err
		}
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetCustomOpenConnectionFn(front.DialBuffered).SetClientID(id).SetUsername(id).
			SetOrderMatters(false))
		if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			return nil, fmt.Errorf("bench: connect %s: %v", id, t.Error())
		}
		defer c.Disconnect(50)
		if err := m.drive(c, id, sheets, cfg.InFlight, stop, &wg, log); err != nil {
			return nil, err
		}
	}
	pids := func() []int {
		var out []int
		for _, h := range hubs {
			out = append(out, h.Process.Pid)
		}
		return out
	}
	time.Sleep(cfg.Warmup)
	if pg != nil {
		// A PostgreSQL in service has statistics from autovacuum; this
		// one started seconds ago, and the plans its sessions cached for
		// the then empty tables scan them whole as they grow, until
		// autovacuum's first pass (a minute) replans them. Measure what a
		// running system does.
		if _, err := db.ExecContext(ctx, "ANALYZE"); err != nil {
			return nil, fmt.Errorf("bench: analyze: %w", err)
		}
	}
	pgPIDs := func() []int {
		if pg == nil {
			return nil
		}
		return children(pg.PID())
	}
	hubCPU0, pgCPU0 := cpuOf(pids()), cpuOf(pgPIDs())
	wal0, xact0, dl0, err := pgCounters(ctx, db)
	if err != nil {
		return nil, err
	}
	waits0 := lockWaits(pg)
	m.measuring.Store(true)
	t0 := time.Now()
	profiled := make(chan error, 1)
	if pprofAddr != "" {
		go func() {
			profiled <- profile(pprofAddr, cfg.Duration, filepath.Join(cfg.ProfileDir, cfg.profileName()))
		}()
	} else {
		profiled <- nil
	}
	time.Sleep(cfg.Duration)
	m.measuring.Store(false)
	elapsed := time.Since(t0)
	hubCPU1, pgCPU1 := cpuOf(pids()), cpuOf(pgPIDs())
	wal1, xact1, dl1, err := pgCounters(ctx, db)
	if err != nil {
		return nil, err
	}
	close(stop)
	wg.Wait()
	if err := <-profiled; err != nil {
		log.Warn("bench: no profile of the hub", "err", err)
	}

	res := &ClusterResult{ClusterConfig: cfg, Sales: int(m.sales.Load()), Resent: int(m.resent.Load()), Printed: int(m.printed.Load())}
	res.SalesPerSec = float64(res.Sales) / elapsed.Seconds()
	res.P50, _, res.P99, _ = m.percentiles()
	if res.Sales > 0 {
		n := time.Duration(res.Sales)
		res.HubCPUPerSale, res.PGCPUPerSale = (hubCPU1-hubCPU0)/n, (pgCPU1-pgCPU0)/n
		res.WALPerSale = float64(wal1-wal0) / float64(res.Sales)
		res.CommitsPerSale = float64(xact1-xact0) / float64(res.Sales)
	}
	res.Deadlocks, res.LockWaits = dl1-dl0, lockWaits(pg)-waits0
	if pg != nil && (res.LockWaits > 0 || res.Deadlocks > 0) {
		b, _ := os.ReadFile(pg.LogPath())
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "still waiting for") || strings.Contains(l, "deadlock") || strings.Contains(l, "STATEMENT:") || strings.Contains(l, "DETAIL") {
				log.Warn("bench cluster: postgres", "hubs", cfg.Hubs, "line", l)
			}
		}
	}
	if cfg.OpenKiosks > 0 && res.SalesPerSec > 0 {
		var prof func(time.Duration) error
		if pprofAddr != "" {
			prof = func(d time.Duration) error {
				return profile(pprofAddr, d, filepath.Join(cfg.ProfileDir, "hub-sqlite-open.pprof"))
			}
		}
		rate := res.SalesPerSec * cfg.OpenLoad
		if cfg.OpenRate > 0 {
			rate = cfg.OpenRate
		}
		if res.Open, err = openLoop(ctx, cfg, rate, brokerAddr, metricsURL, token, reg, st, pids, prof, log); err != nil {
			return nil, err
		}
		if res.SalesPerSec > 0 {
			res.Open.Load = rate / res.SalesPerSec
		}
	}
	out, err := exec.Command(filepath.Join(cfg.BinDir, "hub"), "ledger", "check", "--data", data, "--db", dsn, "--log", "text").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ledger ok") {
		return nil, fmt.Errorf("bench: ledger check after %d hubs: %v\n%s", cfg.Hubs, err, out)
	}
	log.Info("bench cluster run", "hubs", cfg.Hubs, "sales_per_s", int(res.SalesPerSec), "p99", res.P99,
		"hub_cpu_per_sale", res.HubCPUPerSale, "pg_cpu_per_sale", res.PGCPUPerSale, "wal_per_sale", int(res.WALPerSale),
		"deadlocks", res.Deadlocks, "lock_waits", res.LockWaits)
	return res, nil
}

func (c ClusterConfig) profileName() string {
	if c.SQLite && c.PrintReports {
		return "hub-sqlite-prints.pprof"
	}
	if c.SQLite {
		return "hub-sqlite.pprof"
	}
	return fmt.Sprintf("hub1-of-%d.pprof", c.Hubs)
}

// openLoop offers rate purchases a second from cfg.OpenKiosks new kiosk
// connections, each a Poisson process, and measures the answers.
func openLoop(ctx context.Context, cfg ClusterConfig, rate float64, brokerAddr, metricsURL, token string, reg *fleet.Registry, st *stock.Stock,
	hubPIDs func() []int, prof func(time.Duration) error, log *slog.Logger) (*OpenResult, error) {
	per := rate / float64(cfg.OpenKiosks)
	// Labels for the expected purchases and then some: Poisson arrivals
	// bunch up.
	labels := per*(cfg.Warmup+cfg.Duration).Seconds()*1.5 + 10
	sheetsEach := int(labels)/10 + 1
	m := &meter{}
	begin, stop := make(chan struct{}), make(chan struct{})
	halt := sync.OnceFunc(func() { close(stop) })
	defer halt() // a kiosk that could not be set up: the others stop too
	var wg sync.WaitGroup
	var clients []mqtt.Client
	defer func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	}()
	for k := range cfg.OpenKiosks {
		id := fmt.Sprintf("open-%04d", k)
		if _, err := reg.Add(ctx, id, "bench-store"); err != nil {
			return nil, err
		}
		sheets, err := st.Issue(ctx, "bench-store", sheetsEach)
		if err != nil {
			return nil, err
		}
		if _, err := st.Load(ctx, id, sheets); err != nil {
			return nil, err
		}
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetCustomOpenConnectionFn(front.DialBuffered).SetClientID(id).SetUsername(id).
			SetOrderMatters(false))
		if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			return nil, fmt.Errorf("bench: connect %s (%d kiosk connections need as many open files in mosquitto): %v", id, cfg.OpenKiosks, t.Error())
		}
		clients = append(clients, c)
		if err := m.driveOpen(c, id, sheets, per, uint64(k), begin, stop, &wg, log); err != nil {
			return nil, err
		}
	}
	close(begin) // every kiosk connected: the customers start arriving
	time.Sleep(cfg.Warmup)
	cpu0 := cpuOf(hubPIDs())
	stages0, err := stageTotals(metricsURL, token)
	if err != nil {
		return nil, err
	}
	m.measuring.Store(true)
	t0 := time.Now()
	profiled := make(chan error, 1)
	if prof != nil {
		go func() { profiled <- prof(cfg.Duration) }()
	} else {
		profiled <- nil
	}
	time.Sleep(cfg.Duration)
	m.measuring.Store(false)
	elapsed := time.Since(t0)
	cpu1 := cpuOf(hubPIDs())
	stages1, err := stageTotals(metricsURL, token)
	if err != nil {
		return nil, err
	}
	halt()
	wg.Wait()
	if err := <-profiled; err != nil {
		log.Warn("bench: no profile of the hub under the open loop", "err", err)
	}
	o := &OpenResult{Kiosks: cfg.OpenKiosks, Load: cfg.OpenLoad, Offered: rate, Resent: int(m.resent.Load())}
	answered := m.sales.Load() + m.rejected.Load()
	o.Answered = float64(answered) / elapsed.Seconds()
	o.Sent = float64(m.sent.Load()) / elapsed.Seconds()
	o.P50, o.P90, o.P99, o.Max = m.percentiles()
	o.P999 = m.quantile(0.999)
	o.Mean = m.mean()
	for _, st := range metrics.Stages {
		a, b := stages0[st], stages1[st]
		if n := b.n - a.n; n > 0 {
			o.Stages = append(o.Stages, StageMean{Stage: st, Count: n, Mean: time.Duration((b.sum - a.sum) / float64(n) * float64(time.Second))})
		}
	}
	if n := m.sales.Load(); n > 0 {
		o.HubCPUPerSale = (cpu1 - cpu0) / time.Duration(n)
	}
	if r := m.rejected.Load(); r > 0 {
		return nil, fmt.Errorf("bench: open loop: %d purchases refused", r)
	}
	log.Info("bench open loop", "kiosks", o.Kiosks, "offered", int(o.Offered), "answered", int(o.Answered), "p50", o.P50, "p99", o.P99)
	return o, nil
}

// stageTotal is a stage's sum and count in a hub's
// frank_purchase_stage_seconds.
type stageTotal struct {
	sum float64 // seconds
	n   uint64
}

// stageTotals reads the stages' totals from a hub's /metrics.
func stageTotals(url, token string) (map[string]stageTotal, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("bench: metrics: %w", err)
	}
	out := map[string]stageTotal{}
	for _, m := range fams["frank_purchase_stage_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "stage" {
				h := m.GetHistogram()
				out[l.GetValue()] = stageTotal{sum: h.GetSampleSum(), n: h.GetSampleCount()}
			}
		}
	}
	return out, nil
}

// startMosquitto runs a bare mosquitto for the bench: anonymous, no ACL,
// the queue limits the README sets.
func startMosquitto(dir, addr string) (*exec.Cmd, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/mosquitto"); err != nil {
			return nil, fmt.Errorf("bench: mosquitto not found; install Debian package mosquitto (make bench does, as root)")
		}
	}
	host, port, _ := strings.Cut(addr, ":")
	// set_tcp_nodelay: mosquitto leaves Nagle on by default, and a lone
	// message then waits out the peer's delayed ACK (40 ms).
	conf := fmt.Sprintf("listener %s %s\nallow_anonymous true\npersistence false\nlog_dest none\nmax_inflight_messages 1000\nmax_queued_messages 10000\nset_tcp_nodelay true\n", port, host)
	if os.Geteuid() == 0 {
		conf = "user root\n" + conf
	}
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := demo.WaitTCP(addr, 10*time.Second); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	return cmd, nil
}

// pgCounters reads WAL position, commits and deadlocks of the database.
func pgCounters(ctx context.Context, db *store.DB) (wal, commits, deadlocks int64, err error) {
	if db.Dialect != store.Postgres {
		return 0, 0, 0, nil
	}
	err = db.QueryRowContext(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, xact_commit, deadlocks
		FROM pg_stat_database WHERE datname = current_database()`).Scan(&wal, &commits, &deadlocks)
	if err != nil {
		err = fmt.Errorf("bench: postgres counters: %w", err)
	}
	return
}

// lockWaits counts the lock waits PostgreSQL logged (log_lock_waits).
func lockWaits(pg *pgtest.Server) int {
	if pg == nil {
		return 0
	}
	b, _ := os.ReadFile(pg.LogPath())
	return bytes.Count(b, []byte("still waiting for"))
}

// children returns pid and its child processes.
func children(pid int) []int {
	out := []int{pid}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := procStat(p); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// cpuOf is the user and system CPU the processes have used.
func cpuOf(pids []int) time.Duration {
	var ticks int64
	for _, p := range pids {
		if f := procStat(p); len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// procStat returns /proc/pid/stat's fields after the command name: [0] is
// the state, [1] the parent, [11] utime, [12] stime.
func procStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// profile fetches a CPU profile of d from a hub's pprof address.
func profile(addr string, d time.Duration, path string) error {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds())))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
