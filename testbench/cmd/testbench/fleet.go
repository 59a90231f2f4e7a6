package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/frank-postage/frank/testbench/fleet"
)

// runFleet runs the fleet twin: N kiosks against a hub of its own, with
// faults if asked, until its duration or Ctrl-C; then it settles and
// checks the books and the alerts, and exits 1 if a check failed.
func runFleet(ctx context.Context, args []string, log *slog.Logger) int {
	fs := flag.NewFlagSet("fleet", flag.ExitOnError)
	n := fs.Int("kiosks", 1000, "simulated kiosks")
	dir := fs.String("dir", "var/fleet", "state directory (the hub's data, the kiosks' journals); emptied first")
	https := fs.String("https", "127.0.0.1:8444", "the hub's HTTPS address, for its console")
	d := fs.Duration("duration", 0, "how long customers come (0: until Ctrl-C)")
	every := fs.Duration("sale-every", time.Minute, "mean time between one kiosk's customers")
	faults := fs.Bool("faults", true, "inject the faults (paper out, jam, door, partition, bad clock, power cut, bad release, broker restart)")
	fs.Parse(args)
	return fleetRun(ctx, log, fleet.Config{Kiosks: *n, Dir: *dir, HTTP: *https, SaleEvery: *every, Faults: *faults}, *d)
}

func fleetRun(ctx context.Context, log *slog.Logger, cfg fleet.Config, d time.Duration) int {
	if err := os.RemoveAll(cfg.Dir); err != nil {
		fmt.Fprintln(os.Stderr, "testbench fleet:", err)
		return 1
	}
	cfg.Operator, cfg.Password, cfg.Log = "ops", rand.Text(), log
	f, err := fleet.Start(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbench fleet:", err)
		return 1
	}
	defer f.Close()
	fmt.Printf("Fleet twin: %d kiosks. Console %s/console/ (login ops, password %s)\n", cfg.Kiosks, f.Hub().URL(), cfg.Password)
	fmt.Printf("Hub TLS fingerprint: %s (its device CA's, which signs its HTTPS certificate)\n", f.Hub().TLSFingerprint())
	if d == 0 {
		d = 365 * 24 * time.Hour
		fmt.Println("Running; Ctrl-C stops the customers, settles the kiosks and checks the books.")
	}
	since := time.Now()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := f.Run(runCtx, d); err != nil {
		fmt.Fprintln(os.Stderr, "testbench fleet:", err)
		return 1
	}
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer scancel()
	if err := f.Settle(sctx); err != nil {
		fmt.Fprintln(os.Stderr, "testbench fleet:", err)
		return 1
	}
	// The last alerts (a rollout's halt) come within a round of the hub.
	var res *fleet.Result
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		if res, err = f.Check(sctx, since); err != nil {
			fmt.Fprintln(os.Stderr, "testbench fleet:", err)
			return 1
		}
		if res.OK() || time.Now().After(deadline) {
			break
		}
	}
	out, _ := json.MarshalIndent(struct {
		Faults []fleet.Fault `json:"faults"`
		*fleet.Result
	}{f.Faults(), res}, "", "  ")
	fmt.Printf("sales %d, printed %d, refused %d\n%s\n", f.Stats.Sales.Load(), f.Stats.Printed.Load(), f.Stats.Refused.Load(), out)
	if !res.OK() {
		return 1
	}
	return 0
}
