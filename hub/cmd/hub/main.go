// Command hub runs the Frank vendor hub.
//
//	hub [flags]                 serve kiosks (embedded broker, API, workers)
//	hub ledger check [flags]    check every ledger invariant; exit 1 if any breaks
//	hub keys init|rotate|list   the signing-key ceremony
//	hub --check-config [flags]  validate the configuration and exit
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/frank-postage/frank/hub"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cmd := ""
	if len(args) > 0 && (args[0] == "ledger" || args[0] == "keys") {
		if len(args) < 2 {
			fmt.Fprintln(os.Stderr, "usage: hub ledger check | hub keys init|rotate|list")
			return 2
		}
		cmd, args = args[0]+" "+args[1], args[2:]
	}
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	var cfg hub.Config
	fs.StringVar(&cfg.DataDir, "data", "var/hub", "state directory (database, development keys)")
	fs.StringVar(&cfg.DB, "db", "", "database: SQLite file or postgres:// URL (default DATA/hub.db)")
	fs.StringVar(&cfg.Broker, "broker", "", "external MQTT broker, tcp://host:port (default: run the embedded broker)")
	fs.StringVar(&cfg.BrokerListen, "broker-listen", "127.0.0.1:1883", "embedded broker address")
	fs.StringVar(&cfg.HTTPListen, "http", "127.0.0.1:8080", "HTTP API address")
	fs.StringVar(&cfg.PostalURL, "postal", "http://127.0.0.1:8090", "postal authority URL")
	fs.IntVar(&cfg.Workers, "workers", 2, "PSDM workers, one HSM session each")
	fs.StringVar(&cfg.RatesDir, "rates", "", "directory of extra rate tables (*.json)")
	fs.IntVar(&cfg.HeartbeatS, "heartbeat", 30, "kiosk heartbeat period pushed in config, seconds")
	logFormat := fs.String("log", "json", "log format: json or text")
	checkConfig := fs.Bool("check-config", false, "validate the configuration and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := newLogger(*logFormat)
	if *checkConfig {
		if err := cfg.Check(); err != nil {
			fmt.Fprintln(os.Stderr, "hub: config:", err)
			return 1
		}
		fmt.Println("hub: config ok")
		return 0
	}
	if err := cfg.Check(); err != nil {
		log.Error("bad configuration", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	h, err := hub.Open(ctx, cfg, log)
	if err != nil {
		log.Error("hub did not open", "err", err)
		return 1
	}
	defer h.Close()
	switch cmd {
	case "ledger check":
		return ledgerCheck(ctx, h)
	case "keys init", "keys rotate", "keys list":
		return keysCmd(ctx, h, cmd)
	case "":
	default:
		fmt.Fprintln(os.Stderr, "hub: unknown command", cmd)
		return 2
	}
	if err := h.Start(ctx); err != nil {
		log.Error("hub did not start", "err", err)
		return 1
	}
	<-ctx.Done()
	log.Info("hub stopping")
	return 0
}

func ledgerCheck(ctx context.Context, h *hub.Hub) int {
	r, err := h.Ledger().Check(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hub ledger check:", err)
		return 1
	}
	fmt.Printf("GPSD %d: AR %s DR %s; funds bought %s; %d MPSDs; %d indicia\n",
		r.GPSD.Serial, r.GPSD.AR.Exact(), r.GPSD.DR.Exact(), r.FundsBought.Exact(), len(r.MPSDs), r.Indicia)
	for _, m := range r.MPSDs {
		state := "selling"
		if m.Locked != "" {
			state = "LOCKED: " + m.Locked
		}
		fmt.Printf("  MPSD %d: AR %s DR %s (%s)\n", m.Serial, m.AR.Exact(), m.DR.Exact(), state)
	}
	if !r.OK() {
		for _, v := range r.Violations {
			fmt.Println("VIOLATION:", v)
		}
		return 1
	}
	fmt.Println("ledger ok")
	return 0
}

func keysCmd(ctx context.Context, h *hub.Hub, cmd string) int {
	var err error
	switch cmd {
	case "keys init":
		_, err = h.Keys().Init(ctx)
	case "keys rotate":
		_, err = h.Keys().Rotate(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hub", cmd+":", err)
		return 1
	}
	all, err := h.Keys().All(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hub", cmd+":", err)
		return 1
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(all); err != nil && !errors.Is(err, os.ErrClosed) {
		return 1
	}
	return 0
}

func newLogger(format string) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, nil))
}
