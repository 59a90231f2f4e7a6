// Command hub runs the Frank vendor hub.
//
//	hub [serve] [flags]         serve kiosks (embedded broker, API, workers); hub serve --help lists the server's flags
//	hub COMMAND --help          a command's own flags (each command also takes the server's: --data, --db, --config ...)
//	hub ledger check [flags]    check every ledger invariant; exit 1 if any breaks
//	hub keys init|rotate|list   the signing-key ceremony
//	hub report --from D --to D  build the postal report for [from, to) and upload it
//	hub kiosk add ID --store S  provision a kiosk; prints its enrollment code
//	hub kiosk retire ID [--lost]  revoke a kiosk, void its stock and open sales
//	hub kiosk command ID ACTION [--message TEXT] [--wait D]  ops' remote command (out_of_service, lock, diagnostics, ...)
//	hub settings show|set [--store S | --kiosk K] [key=value ...]  kiosks' central settings
//	hub staff add|revoke|list STORE [NAME] [--badge CODE]         a store's staff, at all its kiosks
//	hub release keygen|sign|publish  signed kiosk releases (the release key stays with ops)
//	hub rollout start|widen|abort|list  staged rollouts of a release
//	hub ca init|show            the device CA that issues kiosks their certificates
//	hub stock issue --store S --sheets N [--barcodes DIR]   new sheets of labels
//	hub stock import --store S SERIAL...                     sheets printed elsewhere
//	hub stock load --kiosk K SERIAL...                       sheets into a kiosk, as its staff would
//	hub stock assign --account LOGIN SERIAL...               sheets for a web customer
//	hub account add LOGIN [--zip Z]   a customer (password from FRANK_ACCOUNT_PASSWORD or stdin)
//	hub account fund LOGIN --amount DOLLARS
//	hub alerts list [--open]
//	hub --check-config [flags]  validate the configuration and exit
//
// The PKCS#11 PIN comes from --pkcs11-pin or, better, FRANK_PKCS11_PIN.
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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/protocol"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	hub.TuneRuntime()
	cmd := ""
	switch {
	case len(args) > 0 && (args[0] == "ledger" || args[0] == "keys" || args[0] == "ca" || args[0] == "psdm"):
		if len(args) < 2 {
			fmt.Fprintln(os.Stderr, "usage: hub ledger check|restored | hub keys init|rotate|rotate-mac|list|compromise | hub ca init|show|broker-cert | hub psdm list|add|drain")
			return 2
		}
		cmd, args = args[0]+" "+args[1], args[2:]
	case len(args) > 0 && args[0] == "serve":
		args = args[1:]
	case len(args) > 0 && args[0] == "report":
		cmd, args = "report", args[1:]
	case len(args) > 1 && (args[0] == "kiosk" || args[0] == "store" || args[0] == "stock" || args[0] == "account" || args[0] == "alerts" || args[0] == "operator" || args[0] == "settings" || args[0] == "staff" || args[0] == "release" || args[0] == "rollout"):
		cmd, args = args[0]+" "+args[1], args[2:]
	}
	var pos []string
	name := strings.TrimSpace("hub " + cmd)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var cfg hub.Config
	fs.StringVar(&cfg.DataDir, "data", "var/hub", "state directory (database, development keys)")
	fs.StringVar(&cfg.DB, "db", "", "database: SQLite file or postgres:// URL (default DATA/hub.db)")
	fs.StringVar(&cfg.Broker, "broker", "", "external MQTT broker, tcp://host:port (default: run the embedded broker)")
	fs.StringVar(&cfg.BrokerTLSListen, "broker-tls-listen", "127.0.0.1:8883", "embedded broker's mqtts address: kiosks log in with the device CA's certificates (off: none)")
	fs.StringVar(&cfg.BrokerListen, "broker-listen", "", "embedded broker's plain MQTT address, for password logins (default: none)")
	fs.BoolVar(&cfg.KioskPasswords, "kiosk-passwords", false, "let kiosks log in to the broker with a password, and enroll for one, instead of a certificate")
	fs.StringVar(&cfg.TLS, "tls", "ca", "how the web side is served: ca (HTTPS with a certificate from the device CA), files (--tls-cert, --tls-key) or off (plain HTTP behind a TLS proxy)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "--tls files: the server certificate chain (PEM)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "--tls files: its key (PEM)")
	tlsHosts := fs.String("tls-hosts", "", "--tls ca: comma-separated names and addresses the hub's certificate carries (default: this host's names and addresses, and loopback)")
	fs.StringVar(&cfg.HTTPSListen, "https", "127.0.0.1:8443", "HTTPS address: API, portal, console, enrollment")
	fs.DurationVar(&cfg.KioskCertTTL, "kiosk-cert-ttl", 30*24*time.Hour, "a kiosk certificate's lifetime; kiosks renew after two thirds of it")
	fs.StringVar(&cfg.CRLFile, "crl-file", "", "keep the device CA's revocation list (PEM) in this file, for an external broker's crlfile")
	fs.IntVar(&cfg.BrokerConnsPerIP, "broker-conns-per-ip", 64, "embedded broker: open connections allowed from one address (negative: no limit)")
	fs.IntVar(&cfg.HTTPConnsPerIP, "http-conns-per-ip", 64, "web server: open connections allowed from one address or IPv6 /64, trusted proxies aside (negative: no limit)")
	fs.Float64Var(&cfg.KioskMsgRate, "kiosk-msg-rate", 20, "messages per second a kiosk may publish, in bursts of ten times that: the embedded broker refuses more, and the hub drops more behind any broker (negative: no limit)")
	fs.IntVar(&cfg.KioskPurchases, "kiosk-purchases", 16, "purchases of one kiosk served at once; more are dropped and the kiosk resends (negative: no limit, for load generators)")
	fs.IntVar(&cfg.KioskInflight, "kiosk-inflight", 64, "embedded broker: messages held for one kiosk unacknowledged; more are dropped and the kiosk asks again (negative: no limit, for load generators)")
	fs.IntVar(&cfg.KioskConnects, "kiosk-connects", 10, "embedded broker: connections a kiosk may open per minute, in bursts of that many (negative: no limit)")
	fs.StringVar(&cfg.HTTPListen, "http", "", "plain HTTP address: with --tls off everything (default 127.0.0.1:8080); with TLS, only /healthz and /metrics (default: none)")
	fs.StringVar(&cfg.Ledger.Licence, "licence", os.Getenv("FRANK_LICENCE"), "required to serve: the postal licence number the authority assigned the vendor; stored with the GPSD, sent in every postal call (default $FRANK_LICENCE)")
	fs.StringVar(&cfg.PostalURL, "postal", "http://127.0.0.1:8090", "postal authority URL")
	fs.IntVar(&cfg.Workers, "workers", 0, "PSDM workers, one HSM session each (default half the CPUs)")
	fs.IntVar(&cfg.MPSDs, "mpsds", 1, "MPSDs each PSDM server checks out (1-8); psdm add: the new server's")
	fs.StringVar(&cfg.Name, "hub-name", "", "this hub's name in the stored list of PSDM servers (default: the host name)")
	fs.StringVar(&cfg.HSM, "hsm", "soft", "key store: soft (development) or pkcs11")
	fs.StringVar(&cfg.PKCS11.Module, "pkcs11-module", "/usr/lib/softhsm/libsofthsm2.so", "PKCS#11 library")
	fs.StringVar(&cfg.PKCS11.Token, "pkcs11-token", "frank", "PKCS#11 token label")
	fs.StringVar(&cfg.PKCS11.PIN, "pkcs11-pin", "", "PKCS#11 user PIN (default $FRANK_PKCS11_PIN)")
	mpsdFunding := fs.String("mpsd-funding", "1000.00", "dollars moved from the GPSD to an MPSD that runs short")
	fundsLow := fs.String("funds-low", "0", "dollars: raise funds_low when the GPSD holds less (0: when a postal purchase hangs)")
	gpsdPurchase := fs.String("gpsd-purchase", "100000.00", "dollars bought from the postal authority when the GPSD runs short")
	fs.DurationVar(&cfg.Ledger.InspectionWarn, "inspection-warn", 90*24*time.Hour, "raise inspection_due after this long without a postal report")
	fs.DurationVar(&cfg.Ledger.InspectionStop, "inspection-stop", 120*24*time.Hour, "stop selling after this long without a postal report")
	fs.DurationVar(&cfg.Ledger.LeaseTTL, "lease-ttl", 15*time.Second, "MPSD lease lifetime without renewal")
	fs.StringVar(&cfg.PaymentsURL, "payments", "http://127.0.0.1:8091", "card payment gateway URL")
	fs.StringVar(&cfg.BrokerUser, "broker-user", "frank-hub", "the hub's user on an external broker; starts with frank-hub, and each hub on one broker has its own")
	fs.StringVar(&cfg.BrokerPassword, "broker-password", "", "the hub's password on an external broker (default $FRANK_BROKER_PASSWORD)")
	fs.StringVar(&cfg.RatesDir, "rates", "", "directory of extra rate tables (*.json)")
	fs.IntVar(&cfg.HeartbeatS, "heartbeat", 30, "kiosk heartbeat period pushed in config, seconds")
	fs.IntVar(&cfg.LabelsLow, "labels-low", 20, "raise labels_low for a kiosk with fewer labels left; it clears once refilled")
	fs.StringVar(&cfg.PaperAlert, "paper-alert", "out", "raise paper_out when a kiosk's paper is out, or already near_end; it clears when paper is loaded")
	fs.DurationVar(&cfg.LedgerCheckEvery, "ledger-check-every", 10*time.Minute, "run the full ledger check this often while selling; a violation stops all sales (negative: only at start)")
	fs.DurationVar(&cfg.KeyCheckEvery, "key-check", 10*time.Second, "how often a running hub looks for a signing or control-code key rotated by another process (hub keys rotate, rotate-mac)")
	fs.DurationVar(&cfg.Reports.Every, "report-every", 24*time.Hour, "send the postal authority each period's report by itself, periods aligned to UTC (negative: only by hand, hub report); one hub of those sharing a database does it")
	fs.DurationVar(&cfg.Reports.LateAfter, "report-late", 6*time.Hour, "raise report_late for a period whose report is not accepted this long after it ended")
	fs.DurationVar(&cfg.RefundWindow, "refund-window", 28*24*time.Hour, "how long a web customer may have an unused stamp refunded")
	fs.StringVar(&cfg.KioskBroker, "kiosk-broker", "", "the broker address enrolling kiosks are told, tcp://host:port (default: the host they reached the hub by, at the embedded broker's port)")
	trustedProxies := fs.String("trusted-proxies", "", "comma-separated addresses or CIDR prefixes of the reverse proxies whose X-Forwarded-For names the client (login limits, logs); nobody else's is believed")
	fs.BoolVar(&cfg.SecureCookies, "secure-cookies", false, "mark login cookies Secure on plain HTTP (behind a TLS proxy)")
	fs.BoolVar(&cfg.ShowResetLinks, "show-reset-links", false, "demo only: show a portal password-reset link on the page that asked for it (the hub sends no mail; this tells anyone whether a login exists)")
	fs.StringVar(&cfg.PprofListen, "pprof", "", "serve net/http/pprof on this loopback address, e.g. 127.0.0.1:6060 (default: off)")
	logFormat := fs.String("log", "json", "log format: json or text")
	checkConfig := fs.Bool("check-config", false, "validate the configuration and exit")
	configFile := fs.String("config", "", "config file: a JSON object of flag names and values (keys starting with # are comments); flags win over it")
	showVersion := fs.Bool("version", false, "print the version and exit")
	readyFile := fs.String("ready-file", "", "once serving, write where it listens here, as JSON: http, url, plain, broker, broker_tls, fingerprint (for addresses on port 0)")
	// A subcommand's own flags are defined for it alone, and its --help
	// lists them apart from the server's flags, which every command takes
	// (they say where the hub's state is).
	own := flag.NewFlagSet(name, flag.ContinueOnError)
	other := flag.NewFlagSet("unused", flag.ContinueOnError)
	of := func(cmds ...string) *flag.FlagSet {
		if slices.Contains(cmds, cmd) {
			return own
		}
		return other
	}
	storeID := of("kiosk add", "stock issue", "stock import", "settings show", "settings set").String("store", "", "the store")
	sheets := of("stock issue").Int("sheets", 1, "how many sheets")
	barcodes := of("stock issue").String("barcodes", "", "also write each sheet serial as a Code 128 PNG into this directory")
	accountLogin := of("stock assign").String("account", "", "the customer's login")
	kioskID := of("stock load", "settings show", "settings set").String("kiosk", "", "stock load: the kiosk; settings: the kiosk whose own settings to show or set")
	openOnly := of("alerts list").Bool("open", false, "only alerts not acknowledged")
	brokerHosts := of("ca broker-cert").String("hosts", "", "comma-separated names and addresses kiosks reach the broker by")
	outDir := of("ca broker-cert", "release keygen", "release sign").String("out", "", "ca broker-cert: directory for broker.key, broker.crt, ca.crt and crl.pem; release keygen: for the key pair; release sign: for the signed release")
	since := of("keys compromise").String("since", "", "when the key was compromised (RFC 3339, or 2006-01-02; default now)")
	lost := of("kiosk retire").Bool("lost", false, "the kiosk was lost or stolen; the next postal report declares it")
	why := of("kiosk retire").String("why", "", "why, for the record")
	releaseKey := of("release sign", "release publish").String("key", "", "release sign: the release private key; release publish: the release public key")
	releaseVersion := of("release sign").String("release", "", "the release's version")
	var stages stageFlags
	of("rollout start").Var(&stages, "stage", "a stage, kiosks=K1,K2, stores=S1 or percent=N (repeat; the whole fleet comes last)")
	maxFailures := of("rollout start").Int("max-failures", 20, "halt when more than this share (%) of the kiosks offered the release fail")
	soak := of("rollout start").Duration("soak", 0, "widen to the next stage this long after a stage is all healthy (0: by hand, hub rollout widen)")
	health := of("rollout start").Duration("health", 2*time.Minute, "how long an updated kiosk has to pass its health check before it rolls back")
	badge := of("staff add").String("badge", "", "the code on the member's badge (STAFF-...)")
	message := of("kiosk command").String("message", "", "shown on the kiosk's screen (out_of_service, lock)")
	wait := of("kiosk command").Duration("wait", 60*time.Second, "how long to wait for the kiosk's answer (0: do not wait)")
	amount := of("account fund").String("amount", "", "dollars")
	creditRef := of("account fund").String("ref", "", "the credit's reference: the same one again credits nothing more (default: one made up and printed before crediting, for running the command again if it is cut short)")
	zip := of("account add", "kiosk add", "store set").String("zip", "", "account add: the customer's ZIP code (default 94544); kiosk add, store set: the store's ZIP, which its kiosks sign as the origin")
	zone := of("kiosk add", "store set").String("time-zone", "", "the store's IANA time zone (America/Chicago): its stamps carry its date, and new rate tables take over at its midnight (default: the hub's)")
	from := of("report").String("from", "", "the period's start (2006-01-02, midnight UTC, or RFC 3339), where the last accepted report ended")
	to := of("report").String("to", "", "its end (exclusive), a time that has passed")
	role := of("operator add").String("role", "", "ops (everything) or staff (their --stores only); default: ops for a new login, and the role it has for an existing one (a password reset keeps it)")
	stores := of("operator add").String("stores", "", "comma-separated stores of a staff operator (default for an existing staff member: the stores they have)")
	tokenName := of("operator token").String("name", "cli", "what the token is for")
	tokenWrite := of("operator token").Bool("write", false, "the token may change things (POST, PUT); without it, it may only read (GET)")
	tokenMetrics := of("operator token").Bool("metrics", false, "the token may read /metrics and nothing else: for Prometheus (an ops operator's)")
	tokenTTL := lifetime(operators.DefaultTokenTTL)
	of("operator token").Var(&tokenTTL, "ttl", "how long the token works: whole `days` (30d) or a duration (36h), at most 365d")
	enrollTTL := of("kiosk add").Duration("enroll-ttl", 7*24*time.Hour, "how long the one-time enrollment code is good for")
	own.VisitAll(func(f *flag.Flag) { fs.Var(f.Value, f.Name, f.Usage) })
	fs.Usage = func() {
		out := fs.Output()
		if cmd == "" {
			fmt.Fprintln(out, "usage: hub [serve] [flags]: serve kiosks (hub COMMAND --help: a command's own flags; the commands are in the README)")
			fs.PrintDefaults()
			return
		}
		fmt.Fprintf(out, "usage: hub %s %s\n", cmd, usageOf[cmd])
		own.PrintDefaults()
		fmt.Fprintln(out, "\nIt also takes the server's flags that say where the hub's state is (--config, --data, --db, --hsm, --pkcs11-*, --postal, --log; hub serve --help lists them all).")
	}
	// Flags and positional arguments may come in any order.
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	// Whether --stores was given at all: without it, a password reset
	// keeps a staff member's stores.
	storesSet := false
	fs.Visit(func(f *flag.Flag) { storesSet = storesSet || f.Name == "stores" })
	if *showVersion {
		fmt.Println("hub", version)
		return 0
	}
	if *configFile != "" {
		if err := applyConfig(fs, *configFile); err != nil {
			fmt.Fprintln(os.Stderr, "hub:", err)
			return 2
		}
	}
	// Secrets come from the environment after the flags, never as their
	// defaults: --help and a mistyped flag print the defaults.
	envSecret(&cfg.PKCS11.PIN, "FRANK_PKCS11_PIN")
	envSecret(&cfg.BrokerPassword, "FRANK_BROKER_PASSWORD")
	log := newLogger(*logFormat)
	var err error
	if cfg.Ledger.MPSDFunding, err = protocol.ParseMills(*mpsdFunding); err != nil {
		fmt.Fprintln(os.Stderr, "hub: --mpsd-funding:", err)
		return 2
	}
	if cfg.Ledger.GPSDPurchase, err = protocol.ParseMills(*gpsdPurchase); err != nil {
		fmt.Fprintln(os.Stderr, "hub: --gpsd-purchase:", err)
		return 2
	}
	if cfg.FundsLow, err = protocol.ParseMills(*fundsLow); err != nil {
		fmt.Fprintln(os.Stderr, "hub: --funds-low:", err)
		return 2
	}
	if *trustedProxies != "" {
		cfg.TrustedProxies = strings.Split(*trustedProxies, ",")
	}
	if *tlsHosts != "" {
		cfg.TLSHosts = strings.Split(*tlsHosts, ",")
	}
	if *checkConfig {
		if err := cfg.Check(); err != nil {
			fmt.Fprintln(os.Stderr, "hub: config:", err)
			return 1
		}
		fmt.Println("hub: config ok")
		if cfg.Ledger.Licence == "" {
			fmt.Println("hub: licence not set: the hub will not serve until it is (\"licence\" in the config file)")
		}
		return 0
	}
	if err := cfg.Check(); err != nil {
		log.Error("bad configuration", "err", err)
		return 2
	}
	if cmd == "" && cfg.Ledger.Licence == "" {
		log.Error("no postal licence: serving needs --licence (or \"licence\" in the config file), the number the postal authority assigned")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if strings.HasPrefix(cmd, "release ") { // keygen and sign open no hub
		return releaseCmd(ctx, func() (*hub.Hub, error) { return hub.Open(ctx, cfg, log) }, cmd, pos, *releaseKey, *outDir, *releaseVersion)
	}
	h, err := hub.Open(ctx, cfg, log)
	if err != nil {
		log.Error("hub did not open", "err", err)
		return 1
	}
	defer h.Close()
	switch cmd {
	case "ledger check":
		return ledgerCheck(ctx, h)
	case "ledger restored":
		locked, floor, err := h.Ledger().Restored(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hub ledger restored:", err)
			return 1
		}
		fmt.Printf("MPSDs locked for good: %v; new MPSDs are numbered from %d\n", locked, floor+1)
		fmt.Println("settle the locked MPSDs' funds, and the sales made after the backup was taken, with the postal authority and the card gateway")
		return 0
	case "keys init", "keys rotate", "keys list":
		return keysCmd(ctx, h, cmd)
	case "keys compromise":
		return compromiseCmd(ctx, h, pos, *since)
	case "psdm list", "psdm add", "psdm drain":
		return psdmCmd(ctx, h, cmd, pos)
	case "keys rotate-mac":
		gen, err := h.RotateControlKey(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hub keys rotate-mac:", err)
			return 1
		}
		fmt.Printf("control codes now made under key generation %d; every PSD resealed\n", gen)
		return 0
	case "ca init", "ca show":
		return caCmd(ctx, h, cmd)
	case "ca broker-cert":
		return brokerCert(ctx, h, *brokerHosts, *outDir)
	case "report":
		return reportCmd(ctx, h, *from, *to)
	case "kiosk command":
		return commandCmd(ctx, h, pos, *message, *wait)
	case "rollout start", "rollout widen", "rollout abort", "rollout list":
		return rolloutCmd(ctx, h, cmd, pos, stages, *maxFailures, *soak, *health)
	case "settings show", "settings set":
		return settingsCmd(ctx, h, cmd, pos, *storeID, *kioskID, cliUser())
	case "staff add", "staff revoke", "staff list":
		return staffCmd(ctx, h, cmd, pos, *badge, cliUser())
	case "kiosk add", "kiosk retire", "store set", "stock issue", "stock import", "stock load", "stock assign", "account add", "account fund", "alerts list",
		"operator add", "operator token", "operator revoke":
		return adminCmd(ctx, h, cmd, pos, admin{store: *storeID, sheets: *sheets, barcodes: *barcodes,
			account: *accountLogin, amount: *amount, ref: *creditRef, zip: *zip, zone: *zone, kiosk: *kioskID, open: *openOnly, lost: *lost, why: *why,
			role: *role, stores: *stores, storesSet: storesSet, tokenName: *tokenName, enrollTTL: *enrollTTL,
			tokenWrite: *tokenWrite, tokenMetrics: *tokenMetrics, tokenTTL: time.Duration(tokenTTL)})
	case "":
	default:
		fmt.Fprintln(os.Stderr, "hub: unknown command", cmd)
		return 2
	}
	if err := h.Start(ctx); err != nil {
		log.Error("hub did not start", "err", err)
		return 1
	}
	if *readyFile != "" {
		if err := writeReady(*readyFile, h); err != nil {
			log.Error("ready file", "err", err)
			return 1
		}
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
	switch {
	case len(r.Anchors) > 0:
		for _, a := range r.Anchors {
			fmt.Printf("audit anchor: entry %d of chain %d, from postal report %s\n", a.Seq, a.Chain, a.ReportRef)
		}
	case r.AnchorUnchecked != "":
		fmt.Println("audit anchor: NOT CHECKED, the postal authority did not answer:", r.AnchorUnchecked)
	default:
		fmt.Println("audit anchor: none yet (no accepted postal report carried one)")
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

// caCmd creates or shows the device CA: its fingerprint, which enrollment
// codes carry, and its certificate, which brokers trust.
func caCmd(ctx context.Context, h *hub.Hub, cmd string) int {
	if cmd == "ca init" {
		if err := h.CA().Init(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "hub ca init:", err)
			return 1
		}
	}
	c := h.CA().Certificate()
	if c == nil {
		fmt.Fprintln(os.Stderr, "hub", cmd+":", ca.ErrNoCA)
		return 1
	}
	fmt.Printf("device CA %q, valid until %s\nfingerprint: %s\n%s", c.Subject.CommonName, c.NotAfter.Format(time.DateOnly),
		protocol.Fingerprint(c), h.CA().CertPEM())
	return 0
}

// brokerCert gives an external broker (mosquitto) its TLS identity from the
// device CA: a key made here and written once, a server certificate for
// hosts, the CA's certificate to check kiosks against, and the current CRL.
// Run it again before the certificate ends, then reload the broker.
func brokerCert(ctx context.Context, h *hub.Hub, hosts, dir string) int {
	if hosts == "" || dir == "" {
		fmt.Fprintln(os.Stderr, "usage: hub ca broker-cert --hosts mqtt.example,203.0.113.5 --out /etc/mosquitto/frank")
		return 2
	}
	files, err := h.BrokerCert(ctx, strings.Split(hosts, ","), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hub ca broker-cert:", err)
		return 1
	}
	fmt.Println(strings.Join(files, "\n"))
	return 0
}

// psdmCmd edits the stored list of PSDM servers: hub psdm add [--mpsds N],
// hub psdm drain ID; running hubs follow within --key-check.
func psdmCmd(ctx context.Context, h *hub.Hub, cmd string, pos []string) int {
	switch cmd {
	case "psdm add":
		id, err := h.AddPSDMServer(ctx, h.Config().MPSDs)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hub psdm add:", err)
			return 1
		}
		fmt.Printf("PSDM server %d added with %d MPSDs; the running hub starts it within --key-check\n", id, h.Config().MPSDs)
	case "psdm drain":
		id, err := strconv.Atoi(strings.Join(pos, ""))
		if err != nil || len(pos) != 1 {
			return usage("hub psdm drain ID")
		}
		if err := h.DrainPSDMServer(ctx, id); err != nil {
			fmt.Fprintln(os.Stderr, "hub psdm drain:", err)
			return 1
		}
		fmt.Printf("PSDM server %d drained; the running hub finishes its stamps and returns its MPSDs within --key-check\n", id)
	}
	all, err := h.PSDMServers(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hub", cmd+":", err)
		return 1
	}
	enc := json.NewEncoder(os.Stdout)
	for _, s := range all {
		enc.Encode(s)
	}
	return 0
}

// compromiseCmd marks a signing key compromised: hub keys compromise SERIAL.
func compromiseCmd(ctx context.Context, h *hub.Hub, pos []string, since string) int {
	serial, err := strconv.ParseUint(strings.Join(pos, ""), 10, 32)
	if err != nil || len(pos) != 1 {
		return usage("hub keys compromise SERIAL [--since 2006-01-02T15:04:05Z]")
	}
	at := time.Now()
	if since != "" {
		if at, err = time.Parse(time.RFC3339, since); err != nil {
			if at, err = time.Parse(time.DateOnly, since); err != nil {
				fmt.Fprintln(os.Stderr, "hub keys compromise: --since: want RFC 3339 or 2006-01-02")
				return 2
			}
		}
	}
	if err := h.Keys().Compromise(ctx, uint32(serial), at); err != nil {
		fmt.Fprintln(os.Stderr, "hub keys compromise:", err)
		return 1
	}
	return keysCmd(ctx, h, "keys list")
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

func reportCmd(ctx context.Context, h *hub.Hub, from, to string) int {
	f, err1 := parseInstant(from)
	t, err2 := parseInstant(to)
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "hub report: want --from and --to as 2006-01-02 (midnight UTC) or RFC 3339")
		return 2
	}
	r, err := h.Ledger().BuildReport(ctx, f, t)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hub report:", err)
		return 1
	}
	fmt.Printf("report %s: %d indicia, postage %s, refund claims %s, bought %s, funded %s, %d register readings\n",
		r.ReportID, r.Totals.Indicia, protocol.Mills(r.Totals.Postage).Exact(), protocol.Mills(r.Totals.VoidedPostage).Exact(),
		protocol.Mills(r.Totals.Purchased).Exact(), protocol.Mills(r.Totals.Funded).Exact(), len(r.Registers))
	ref, err := h.Ledger().SubmitReport(ctx, r, h.Postal())
	if err != nil {
		fmt.Fprintln(os.Stderr, "hub report: the postal authority refused it:", err)
		return 1
	}
	fmt.Println("accepted by the postal authority:", ref)
	return 0
}

// parseInstant reads a day (its midnight UTC) or an RFC 3339 time.
func parseInstant(s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Parse(time.RFC3339, s)
}

func newLogger(format string) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, nil))
}

// stageFlags collects repeated --stage flags.
type stageFlags []string

func (s *stageFlags) String() string     { return strings.Join(*s, " ") }
func (s *stageFlags) Set(v string) error { *s = append(*s, v); return nil }

// envSecret sets *v from the environment variable name if no flag or
// config file did.
func envSecret(v *string, name string) {
	if *v == "" {
		*v = os.Getenv(name)
	}
}
