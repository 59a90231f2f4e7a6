// Command testbench simulates everything around Frank: the postal
// authority, the kiosk's peripherals, and whole systems.
//
//	testbench run      start hub + kiosk + simulators, sell a demo stamp, keep running
//	testbench postal   run the postal authority simulator
//	testbench printer  run an ESC/POS printer emulator on a pseudo-terminal
//	testbench verify   verify label PNGs: keys certified by the postal authority, offline
//	testbench bench    measure the hub's purchase path against the raw signer
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/bench"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/fleet"
	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/printersim"
	"github.com/frank-postage/frank/testbench/verify"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var code int
	switch os.Args[1] {
	case "run":
		code = runDemo(ctx, os.Args[2:], log)
	case "postal":
		code = runPostal(ctx, os.Args[2:], log)
	case "printer":
		code = runPrinter(ctx, os.Args[2:], log)
	case "verify":
		code = runVerify(ctx, os.Args[2:], os.Stdout, os.Stderr)
	case "bench":
		code = runBench(ctx, os.Args[2:], log)
	case "fleet":
		code = runFleet(ctx, os.Args[2:], log)
	default:
		usage()
		code = 2
	}
	os.Exit(code)
}

// webDemo makes what the web pages need: an ops login for the console,
// an API token, and label sheets for the customer portal.
func webDemo(d *demo.Demo) error {
	pw := rand.Text()
	if out, err := d.HubWithEnv([]string{"FRANK_OPERATOR_PASSWORD=" + pw}, "operator", "add", "ops", "--role", "ops"); err != nil {
		return fmt.Errorf("operator add: %v: %s", err, out)
	}
	token, err := d.Hub("operator", "token", "ops", "--name", "demo")
	if err != nil {
		return fmt.Errorf("operator token: %v: %s", err, token)
	}
	sheets, err := d.Hub("stock", "issue", "--store", "web", "--sheets", "3")
	if err != nil {
		return fmt.Errorf("stock issue: %v: %s", err, sheets)
	}
	fmt.Printf("Hub TLS fingerprint: %s (its device CA's; the CA's certificate is %s: curl --cacert it, or tell the browser to trust it)\n",
		d.Fingerprint(), d.CAFile())
	fmt.Printf("Customer portal: %s/portal/ (register, top up with card 4242 4242 4242 4242, exp 12/39)\n", d.HubURL())
	fmt.Printf("  forgot a password? %s/portal/forgot shows the one-time reset link (demo: no mail server; --show-reset-links)\n", d.HubURL())
	fmt.Printf("  label sheets for web customers: %s\n", strings.Join(strings.Fields(sheets), " "))
	fmt.Printf("Ops console: %s/console/  login ops, password %s\n", d.HubURL(), pw)
	fmt.Printf("Operator API: curl --cacert %s -H 'Authorization: Bearer %s' %s/api/v1/ops/fleet  (docs/openapi.yaml)\n", d.CAFile(), strings.TrimSpace(token), d.HubURL())
	fmt.Printf("Metrics: %s/metrics (same token)\n", d.HubURL())
	return nil
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: testbench run|postal|printer|verify|bench|fleet [flags]")
}

func runDemo(ctx context.Context, args []string, log *slog.Logger) int {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	dir := fs.String("dir", "var", "state directory")
	bin := fs.String("bin", "", "directory with the hub and kiosk binaries (default: next to testbench)")
	hubHTTP := fs.String("hub-https", "127.0.0.1:8443", "hub HTTPS address")
	broker := fs.String("broker", "127.0.0.1:8883", "embedded broker's mqtts address")
	pa := fs.String("postal", "127.0.0.1:8090", "postal authority address")
	cardGW := fs.String("cards", "127.0.0.1:8091", "card gateway address")
	kioskHTTP := fs.String("kiosk-http", "127.0.0.1:8081", "kiosk local API address")
	once := fs.Bool("once", false, "exit after the demo sale instead of running until Ctrl-C")
	fleetN := fs.Int("fleet", 0, "run the fleet twin instead: this many simulated kiosks, with faults, for a busy console (testbench fleet)")
	fs.Parse(args)
	if *fleetN > 0 {
		return fleetRun(ctx, log, fleet.Config{Kiosks: *fleetN, Dir: filepath.Join(*dir, "fleet"), HTTP: *hubHTTP, Faults: true}, 0)
	}
	if *bin == "" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "testbench:", err)
			return 1
		}
		*bin = filepath.Dir(exe)
	}
	d, err := demo.Start(ctx, demo.Config{BinDir: *bin, Dir: *dir, HubHTTP: *hubHTTP, Broker: *broker, Postal: *pa,
		Cards: *cardGW, KioskHTTP: *kioskHTTP, Log: log, Output: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbench run:", err)
		return 1
	}
	defer d.Close()

	// The kiosk takes the next label of the sheets staff loaded.
	order := map[string]any{"rate_class": "1100", "weight_mg": 20_000,
		"payment": protocol.Payment{Method: protocol.PayCardToken, Token: "tok_approve", Brand: "visa", Last4: "4242"}}
	next := d.Printer().Next()
	status, body, err := d.Sell(ctx, order)
	if err != nil || status != http.StatusOK {
		fmt.Fprintf(os.Stderr, "testbench run: demo sale failed: %d %s %v\n", status, body, err)
		return 1
	}
	var png string
	select {
	case png = <-next:
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "testbench run: no label came out of the printer")
		return 1
	}
	certs, voids := filepath.Join(*dir, "certificates.json"), filepath.Join(*dir, "voided.json")
	in, err := verifyLabel(ctx, d, png, certs, voids)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbench run: the printed label does not verify:", err)
		return 1
	}
	fmt.Printf("\nDemo stamp printed: %s\n", png)
	fmt.Printf("  verified with the postal authority's key %s: it certified key %d, which %s/api/v1/certificates publishes\n",
		d.AuthorityFile(), in.CertSerial, d.HubURL())
	fmt.Printf("  offline, with no hub: testbench verify --authority %s --certificates %s --void-list %s %s\n", d.AuthorityFile(), certs, voids, png)
	fmt.Printf("  %s %s, meter %s, label %s, mailed %s from ZIP %05d; registers AR %s DR %s\n",
		in.Postage, in.RateCategory, in.MeterNumber(), in.Label, in.Date, in.OriginZIP, in.AR.Exact(), in.DR.Exact())
	fmt.Printf("Label sheets loaded into the kiosk: %s (barcodes in %s/sheets)\n", strings.Join(d.Sheets(), " "), *dir)
	fmt.Printf("Buy more: curl -X POST %s/api/v1/sales -d '{\"rate_class\":\"1100\",\"weight_mg\":20000,\"payment\":{\"method\":\"card_token\",\"token\":\"tok_approve\"}}'\n",
		d.KioskURL())
	if err := webDemo(d); err != nil {
		fmt.Fprintln(os.Stderr, "testbench run:", err)
		return 1
	}
	if *once {
		return 0
	}
	fmt.Println("Running; Ctrl-C stops.")
	<-ctx.Done()
	return 0
}

// verifyLabel checks the printed label as an inspector would: the hub's
// certificates, saved to certsFile, must carry the authority's signature,
// and the stamp must not be on its void list, saved to voidsFile.
func verifyLabel(ctx context.Context, d *demo.Demo, png, certsFile, voidsFile string) (*protocol.Indicium, error) {
	b, err := verify.ReadPNG(png)
	if err != nil {
		return nil, err
	}
	certs, err := verify.FetchCertificates(ctx, d.HubURL(), d.Client())
	if err != nil {
		return nil, err
	}
	raw, err := json.MarshalIndent(certs, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(certsFile, raw, 0o644); err != nil {
		return nil, err
	}
	keys, err := loadKeys(ctx, nil, "", certsFile, d.AuthorityFile())
	if err != nil {
		return nil, err
	}
	in, err := keys.Verify(b)
	if err != nil {
		return nil, err
	}
	rawVoids, err := verify.FetchVoidFile(ctx, d.HubURL(), d.Client())
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(voidsFile, rawVoids, 0o644); err != nil {
		return nil, err
	}
	voids, err := verify.ParseVoidList(rawVoids)
	if err != nil {
		return nil, err
	}
	if why, voided := voids.Voided(in); voided {
		return nil, fmt.Errorf("voided: %s", why)
	}
	return in, nil
}

func runPostal(ctx context.Context, args []string, log *slog.Logger) int {
	fs := flag.NewFlagSet("postal", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:8090", "address")
	state := fs.String("state", "var/postal/state.json", "state file")
	fs.Parse(args)
	a, err := postal.New(*state, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbench postal:", err)
		return 1
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbench postal:", err)
		return 1
	}
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	log.Info("postal authority listening", "addr", ln.Addr().String())
	<-ctx.Done()
	srv.Close()
	return 0
}

func runPrinter(ctx context.Context, args []string, log *slog.Logger) int {
	fs := flag.NewFlagSet("printer", flag.ExitOnError)
	link := fs.String("link", "var/dev/printer", "stable device name to create")
	out := fs.String("out", "var/labels", "directory for label PNGs")
	fs.Parse(args)
	p, err := printersim.Start(*link, *out, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbench printer:", err)
		return 1
	}
	defer p.Close()
	log.Info("printer emulator ready", "device", p.Path(), "labels", *out)
	<-ctx.Done()
	return 0
}

// Exit codes of testbench verify.
const (
	exitValid     = 0 // every stamp is postage
	exitRefused   = 1 // a stamp is refused or unreadable, or the keys or lists could not be read
	exitUsage     = 2
	exitUnchecked = 3 // every stamp verifies, but --no-void-list left its void status unknown
)

// runVerify checks label PNGs. Online (no --certificates) it asks the hub
// for keys, void list and each stamp's ledger status; offline it needs a
// saved void list, or --no-void-list, so that a refunded stamp never
// answers "valid" for want of asking.
func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hubURL := fs.String("hub", "https://127.0.0.1:8443", "hub base URL, for its /api/v1/certificates, /api/v1/voided and /api/v1/indicia")
	fingerprint := fs.String("fingerprint", "", "the hub's TLS fingerprint (hub ca show), for https")
	certsFile := fs.String("certificates", "", "the certificates as /api/v1/certificates served them, saved to a file: no hub is asked (offline; needs --void-list or --no-void-list)")
	authorityFile := fs.String("authority", "", "the postal authority's public key (PEM PUBLIC KEY or CERTIFICATE): every key must carry its signature")
	voidFile := fs.String("void-list", "", "the void list as /api/v1/voided served it, saved to a file (default online: the hub's); stamps voided after it was saved still pass")
	noVoids := fs.Bool("no-void-list", false, "offline, check signatures only: a stamp that verifies answers \"valid_unchecked\", never \"valid\", and the exit code is 3")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitValid
		}
		return exitUsage
	}
	offline := *certsFile != ""
	usage := ""
	switch {
	case *noVoids && *voidFile != "":
		usage = "--void-list and --no-void-list: give one"
	case *noVoids && !offline:
		usage = "--no-void-list is for offline checks (--certificates): online the hub's void list and ledger are always asked"
	case offline && *voidFile == "" && !*noVoids:
		usage = "offline, a refunded or voided stamp passes unless the void list is checked: give --void-list FILE (saved from the hub's /api/v1/voided), or --no-void-list to check signatures only"
	}
	if usage != "" {
		fmt.Fprintln(stderr, "testbench verify:", usage)
		return exitUsage
	}
	client, err := hubClient(*fingerprint)
	if err != nil {
		fmt.Fprintln(stderr, "testbench verify:", err)
		return exitRefused
	}
	keys, err := loadKeys(ctx, client, *hubURL, *certsFile, *authorityFile)
	if err != nil {
		fmt.Fprintln(stderr, "testbench verify:", err)
		return exitRefused
	}
	var voids verify.VoidList // nil: not checked (--no-void-list)
	switch {
	case *voidFile != "":
		b, err := os.ReadFile(*voidFile)
		if err == nil {
			voids, err = verify.ParseVoidList(b)
		}
		if err != nil {
			fmt.Fprintln(stderr, "testbench verify:", err)
			return exitRefused
		}
	case !offline:
		if voids, err = verify.FetchVoidList(ctx, *hubURL, client); err != nil {
			fmt.Fprintln(stderr, "testbench verify:", err)
			return exitRefused
		}
	}
	trust := "hub"
	if *authorityFile != "" {
		trust = "postal authority"
	}
	refused, unchecked := false, false
	enc := json.NewEncoder(stdout)
	for _, f := range fs.Args() {
		out, err := verifyFile(ctx, f, keys, voids, offline, *hubURL, client)
		if err != nil {
			refused = true
			enc.Encode(map[string]any{"file": f, "ok": false, "error": err.Error()})
			continue
		}
		out["key_trusted_by"] = trust
		switch out["status"] {
		case "valid":
		case "valid_unchecked":
			unchecked = true
		default:
			refused = true
		}
		enc.Encode(out)
	}
	switch {
	case refused:
		return exitRefused
	case unchecked:
		return exitUnchecked
	}
	return exitValid
}

// verifyFile checks one label: its signature, then, strongest last, the
// ledger (online), the void list and the key's compromise.
func verifyFile(ctx context.Context, f string, keys verify.Keys, voids verify.VoidList, offline bool, hubURL string, client *http.Client) (map[string]any, error) {
	b, err := verify.ReadPNG(f)
	if err != nil {
		return nil, err
	}
	// A compromised key's stamp is refused by Verify; it is still read
	// and checked against the ledger and void list, and reported as
	// compromised, the strongest verdict, last.
	in, err := keys.Verify(b)
	var compromised *verify.CompromisedError
	if errors.As(err, &compromised) {
		in, err = compromised.Indicium, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]any{"file": f, "ok": true, "status": "valid", "meter": in.MeterNumber(), "postage": in.Postage.String(),
		"label": in.Label.String(), "date": in.Date.String(), "ar": in.AR, "dr": in.DR, "cert": in.CertSerial,
		"void_list_checked": voids != nil, "ledger_checked": !offline}
	if voids == nil {
		out["ok"], out["status"] = false, "valid_unchecked"
	}
	if !offline {
		st, err := verify.FetchLedgerStatus(ctx, hubURL, client, in)
		if err != nil {
			return nil, err
		}
		switch st.Status {
		case verify.LedgerUnknown:
			out["ok"], out["status"] = false, "unknown"
		case verify.LedgerVoided:
			out["ok"], out["status"], out["void_reason"] = false, "voided", st.Reason
		}
	}
	if why, voided := voids.Voided(in); voided {
		out["ok"], out["status"], out["void_reason"] = false, "voided", why
	}
	if compromised != nil {
		out["ok"], out["status"], out["compromised_since"] = false, "compromised", compromised.Since.Format(time.RFC3339)
	}
	return out, nil
}

// hubClient reaches the hub over HTTPS pinned to fingerprint, if given.
func hubClient(fingerprint string) (*http.Client, error) {
	if fingerprint == "" {
		return http.DefaultClient, nil
	}
	pin, err := protocol.ParseFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: protocol.PinnedTLS(pin)}}, nil
}

// loadKeys reads the certificates from a file or the hub, and checks them
// against the authority's key if given.
func loadKeys(ctx context.Context, client *http.Client, hubURL, certsFile, authorityFile string) (verify.Keys, error) {
	var authority *ecdsa.PublicKey
	if authorityFile != "" {
		b, err := os.ReadFile(authorityFile)
		if err != nil {
			return nil, err
		}
		if authority, err = verify.ParseAuthority(b); err != nil {
			return nil, err
		}
	}
	var certs []verify.Certificate
	if certsFile != "" {
		b, err := os.ReadFile(certsFile)
		if err != nil {
			return nil, err
		}
		if certs, err = verify.ParseCertificates(b); err != nil {
			return nil, err
		}
	} else {
		var err error
		if certs, err = verify.FetchCertificates(ctx, hubURL, client); err != nil {
			return nil, err
		}
	}
	return verify.KeysOf(certs, authority)
}

func runBench(ctx context.Context, args []string, log *slog.Logger) int {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	out := fs.String("out", "", "write the figures as markdown to this file")
	d := fs.Duration("duration", 10*time.Second, "measured load per configuration")
	warm := fs.Duration("warmup", 2*time.Second, "load before measuring")
	kiosks := fs.Int("kiosks", 16, "simulated kiosk connections")
	inflight := fs.Int("inflight", 16, "requests each connection keeps outstanding")
	signers := fs.String("signers", "soft,softhsm", "signers to measure (empty: skip)")
	workers := fs.String("workers", "1,2", "worker counts to measure")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run")
	fleet := fs.Int("connect-kiosks", 1000, "kiosks that reconnect at once over mqtts to a fresh hub (0: skip)")
	clusterHubs := fs.String("cluster-hubs", "1,2,3", "hub counts to run as a cluster on PostgreSQL and mosquitto (empty: skip)")
	rounds := fs.Int("cluster-rounds", 3, "times each cluster row runs, the hub counts taken in turn; the row shows the median run")
	profiles := fs.String("profiles", "", "write a CPU profile of the first hub of each cluster run into this directory")
	sqliteHub := fs.Bool("sqlite-hub", true, "run one hub process on SQLite, beside mosquitto, and measure its CPU per sale")
	prints := fs.Bool("print-reports", true, "measure the SQLite hub again with each sale's print report, as kiosks send them")
	openKiosks := fs.Int("open-kiosks", 1000, "after the SQLite hub's closed loop, this many kiosk connections offer an open-loop Poisson load (0: skip)")
	openLoad := fs.Float64("open-load", 0.5, "the open loop's load, as a share of the SQLite hub's closed-loop sales/s")
	openRate := fs.Float64("open-rate", 0, "the open loop's load in sales/s, instead of --open-load (to compare builds at one load)")
	fs.Parse(args)
	if *out != "" && strings.TrimSpace(*signers) == "" {
		fmt.Fprintln(os.Stderr, "testbench bench: --out writes the whole report, which needs --signers")
		return 2
	}
	hub.TuneRuntime() // the hub runs in this process, tuned as bin/hub is
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	dir, err := os.MkdirTemp("", "frank-bench")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	var results []*bench.Result
	n := 0
	for _, s := range strings.Split(*signers, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		for _, w := range strings.Split(*workers, ",") {
			wn, _ := strconv.Atoi(w)
			n++
			r, err := bench.Run(ctx, bench.Config{Signer: s, Workers: wn, Kiosks: *kiosks, InFlight: *inflight,
				Warmup: *warm, Duration: *d, Dir: filepath.Join(dir, fmt.Sprint(n))}, log)
			if err != nil {
				fmt.Fprintln(os.Stderr, "testbench bench:", err)
				return 1
			}
			results = append(results, r)
		}
	}
	table := bench.Markdown(results)
	fmt.Print(table)
	exe, _ := os.Executable()
	var cluster []*bench.ClusterResult
	if *sqliteHub {
		n++
		r, err := bench.Cluster(ctx, bench.ClusterConfig{BinDir: filepath.Dir(exe), Dir: filepath.Join(dir, fmt.Sprint(n)), SQLite: true,
			Kiosks: *kiosks, InFlight: *inflight, Warmup: *warm, Duration: *d, ProfileDir: *profiles,
			OpenKiosks: *openKiosks, OpenLoad: *openLoad, OpenRate: *openRate}, log)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testbench bench: one hub on SQLite:", err)
			return 1
		}
		cluster = append(cluster, r)
		if *prints {
			// The same, with every sale's print report, as kiosks send.
			n++
			r, err := bench.Cluster(ctx, bench.ClusterConfig{BinDir: filepath.Dir(exe), Dir: filepath.Join(dir, fmt.Sprint(n)), SQLite: true,
				Kiosks: *kiosks, InFlight: *inflight, Warmup: *warm, Duration: *d, ProfileDir: *profiles, PrintReports: true}, log)
			if err != nil {
				fmt.Fprintln(os.Stderr, "testbench bench: one hub on SQLite, with print reports:", err)
				return 1
			}
			cluster = append(cluster, r)
		}
	}
	// The machine is noisy: each hub count runs several times, the counts
	// in turn, so a slow spell does not fall on one row alone.
	var hubCounts []int
	for _, h := range strings.Split(*clusterHubs, ",") {
		if hn, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && hn >= 1 {
			hubCounts = append(hubCounts, hn)
		}
	}
	runs := map[int][]*bench.ClusterResult{}
	for round := range max(1, *rounds) {
		for _, hn := range hubCounts {
			n++
			profileDir := *profiles
			if round > 0 {
				profileDir = "" // the first round's profiles are kept
			}
			r, err := bench.Cluster(ctx, bench.ClusterConfig{BinDir: filepath.Dir(exe), Dir: filepath.Join(dir, fmt.Sprint(n)), Hubs: hn,
				Kiosks: *kiosks, InFlight: *inflight, Warmup: *warm, Duration: *d, ProfileDir: profileDir}, log)
			if err != nil {
				fmt.Fprintln(os.Stderr, "testbench bench: cluster:", err)
				return 1
			}
			runs[hn] = append(runs[hn], r)
		}
	}
	for _, hn := range hubCounts {
		cluster = append(cluster, bench.Median(runs[hn]))
	}
	if len(cluster) > 0 {
		fmt.Print(bench.ClusterMarkdown(cluster))
	}
	var cf *bench.ConnectFigures
	if *fleet > 0 {
		if cf, err = bench.Connect(ctx, filepath.Join(dir, "connect"), *fleet, *profiles, log); err != nil {
			fmt.Fprintln(os.Stderr, "testbench bench:", err)
			return 1
		}
		fmt.Print(bench.ConnectMarkdown(cf))
	}
	kf, err := bench.Kiosk(ctx, filepath.Dir(exe), 50)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbench bench: kiosk footprint:", err)
		return 1
	}
	fmt.Printf("kiosk: %d sales, resident %d KiB, peak %d KiB, binaries %v\n", kf.Sales, kf.RSSKiB, kf.PeakKiB, kf.Sizes)
	if *out != "" {
		if err := bench.WriteDoc(*out, strings.Join(os.Args, " "), results, cluster, cf, kf); err != nil {
			fmt.Fprintln(os.Stderr, "testbench bench:", err)
			return 1
		}
	}
	return 0
}
