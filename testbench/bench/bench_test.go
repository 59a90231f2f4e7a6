package bench

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A short run with each signer `make bench` measures still sells: the
// bench keeps up with what the hub demands of a kiosk (credentials, loaded
// stock, payment) and of an HSM (keys and device CA made by ops).
func TestRunSells(t *testing.T) {
	for _, signer := range []string{"soft", "softhsm"} {
		t.Run(signer, func(t *testing.T) {
			r, err := Run(context.Background(), Config{Signer: signer, Workers: 1, Kiosks: 2, InFlight: 4,
				Warmup: 300 * time.Millisecond, Duration: time.Second, Dir: t.TempDir(),
				MaxRate: 5_000}, slog.New(slog.DiscardHandler)) // stocking 20,000/s is most of it under -race
			if err != nil {
				t.Fatal(err)
			}
			if r.Sales == 0 || r.Rejected != 0 {
				t.Fatalf("%d sales, %d rejected", r.Sales, r.Rejected)
			}
			t.Logf("%.0f sales/s beside %.0f raw signatures/s", r.SalesPerSec, r.RawSigsPerSec)
		})
	}
}

// A small fleet connects over mqtts to a restarted hub with the device
// CA's certificates; the bench times it beside the bare handshakes.
func TestConnectFleet(t *testing.T) {
	defer func(w time.Duration) { idleWindow = w }(idleWindow)
	idleWindow = time.Second
	prof := t.TempDir()
	f, err := Connect(context.Background(), t.TempDir(), 20, prof, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if f.Kiosks != 20 || f.Took <= 0 || f.Handshakes <= 0 || f.Max < f.P50 || f.Idle <= 0 || f.IdleWindow != time.Second {
		t.Fatalf("figures %+v", f)
	}
	if st, err := os.Stat(filepath.Join(prof, "hub-idle-kiosks.pprof")); err != nil || st.Size() == 0 {
		t.Fatalf("no profile of the idle hub: %v", err)
	}
	if md := ConnectMarkdown(f); !strings.Contains(md, "all connected and idle") {
		t.Fatalf("no idle row:\n%s", md)
	}
	t.Logf("20 kiosks in %v beside %v of bare handshakes", f.Took, f.Handshakes)
}

// Two hub processes on one PostgreSQL and one mosquitto split a load and
// sell it; the figures the cluster rows need are all measured.
func TestClusterSells(t *testing.T) {
	bin := hubBinary(t)
	prof := t.TempDir()
	r, err := Cluster(context.Background(), ClusterConfig{BinDir: bin, Dir: t.TempDir(), Hubs: 2, Kiosks: 4, InFlight: 4,
		Warmup: 500 * time.Millisecond, Duration: 2 * time.Second, ProfileDir: prof}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// The first hub served its profile on its --pprof address.
	if st, err := os.Stat(filepath.Join(prof, "hub1-of-2.pprof")); err != nil || st.Size() == 0 {
		t.Fatalf("no profile of the first hub: %v", err)
	}
	if r.Sales == 0 || r.HubCPUPerSale <= 0 || r.PGCPUPerSale <= 0 || r.WALPerSale <= 0 || r.CommitsPerSale <= 0 {
		t.Fatalf("figures %+v", r)
	}
	t.Logf("2 hubs: %.0f sales/s, p99 %v, hub CPU %v/sale, PostgreSQL CPU %v/sale, %.0f B WAL/sale, %.1f commits/sale, %d deadlocks, %d lock waits",
		r.SalesPerSec, r.P99, r.HubCPUPerSale, r.PGCPUPerSale, r.WALPerSale, r.CommitsPerSale, r.Deadlocks, r.LockWaits)
}

// The one-hub SQLite run's open loop reads where its purchases' time went
// from the hub's /metrics, and the report shows it.
func TestOpenLoopStages(t *testing.T) {
	bin := hubBinary(t)
	r, err := Cluster(context.Background(), ClusterConfig{BinDir: bin, Dir: t.TempDir(), SQLite: true, Kiosks: 2, InFlight: 2,
		Warmup: 300 * time.Millisecond, Duration: time.Second, OpenKiosks: 20, OpenRate: 40}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if r.Open == nil || r.Open.Mean <= 0 {
		t.Fatalf("open loop %+v", r.Open)
	}
	got := map[string]StageMean{}
	for _, st := range r.Open.Stages {
		got[st.Stage] = st
	}
	for _, st := range []string{"claim", "attempt", "authorize", "commit", "answer"} {
		if got[st].Count == 0 || got[st].Mean <= 0 || got[st].Mean > r.Open.Max {
			t.Errorf("stage %s: %+v (kiosks' max %v)", st, got[st], r.Open.Max)
		}
	}
	if md := ClusterMarkdown([]*ClusterResult{r}); !strings.Contains(md, "| attempt | ") {
		t.Errorf("the report has no stages:\n%s", md)
	}
}

// With print reports on, every sold stamp's kiosk reports it printed and
// the hub confirms the reports; the report shows both rows.
func TestPrintReportsConfirmed(t *testing.T) {
	bin := hubBinary(t)
	cfg := ClusterConfig{BinDir: bin, Dir: t.TempDir(), SQLite: true, Kiosks: 2, InFlight: 2,
		Warmup: 300 * time.Millisecond, Duration: time.Second, PrintReports: true}
	r, err := Cluster(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// Reports confirmed in the window are for sales answered in it or
	// just before it, so about as many.
	if r.Sales == 0 || r.Printed < r.Sales/2 || r.Printed > 2*r.Sales {
		t.Fatalf("%d sales, %d print reports confirmed", r.Sales, r.Printed)
	}
	md := ClusterMarkdown([]*ClusterResult{{ClusterConfig: ClusterConfig{SQLite: true}, Sales: 10}, r})
	if !strings.Contains(md, "| SQLite | no | ") || !strings.Contains(md, "| SQLite | yes | ") {
		t.Errorf("the report lacks a row:\n%s", md)
	}
}

// hubBinary builds the hub into a directory of the test's and returns it.
// The hub is built without -race, so -short (the race pass) skips its
// callers; the full pass runs them.
func hubBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("hub binaries built without -race: the full pass runs them, not -short")
	}
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/", "../../hub/cmd/hub").CombinedOutput(); err != nil {
		t.Fatalf("go build hub: %v\n%s", err, out)
	}
	return bin
}

// The latency quantiles the reports print: p99.9 of 2,000 answers is the
// second longest, max the longest.
func TestQuantiles(t *testing.T) {
	var m meter
	for i := 2000; i >= 1; i-- {
		m.lat = append(m.lat, time.Duration(i)*time.Millisecond)
	}
	p50, p90, p99, most := m.percentiles()
	if p50 != 1001*time.Millisecond || p90 != 1801*time.Millisecond || p99 != 1981*time.Millisecond || most != 2000*time.Millisecond {
		t.Fatalf("p50 %v p90 %v p99 %v max %v", p50, p90, p99, most)
	}
	if p := m.quantile(0.999); p != 1999*time.Millisecond {
		t.Fatalf("p99.9 %v", p)
	}
	var none meter
	if none.quantile(0.5) != 0 {
		t.Fatal("a quantile of no answers")
	}
}

// A row that stands for several runs is the median run, lists them all in
// order, and counts every run's deadlocks and long lock waits; the report
// prints them.
func TestMedianRun(t *testing.T) {
	runs := []*ClusterResult{
		{ClusterConfig: ClusterConfig{Hubs: 2}, SalesPerSec: 1800, Sales: 18000, Deadlocks: 1},
		{ClusterConfig: ClusterConfig{Hubs: 2}, SalesPerSec: 1500, Sales: 15000, LockWaits: 2},
		{ClusterConfig: ClusterConfig{Hubs: 2}, SalesPerSec: 2100, Sales: 21000},
	}
	m := Median(runs)
	if m.SalesPerSec != 1800 || m.Sales != 18000 || !slices.Equal(m.Runs, []float64{1800, 1500, 2100}) || m.Deadlocks != 1 || m.LockWaits != 2 {
		t.Fatalf("median %+v", m)
	}
	if runs[0].Runs != nil || runs[1].LockWaits != 2 {
		t.Fatal("Median changed the runs it was given")
	}
	one := Median([]*ClusterResult{{ClusterConfig: ClusterConfig{Hubs: 1}, SalesPerSec: 2000}})
	md := ClusterMarkdown([]*ClusterResult{one, m})
	for _, want := range []string{"| 2 | 1800 | 0.90× | 1800, 1500, 2100 |", "| 1 | 2000 | 1.00× | 2000 |", "measured 3 times"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
