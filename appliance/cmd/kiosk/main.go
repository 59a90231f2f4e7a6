// Command kiosk is the Frank kiosk firmware: it talks to the hub over MQTT,
// drives the label printer, and serves the touchscreen on 127.0.0.1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/appliance/identity"
	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/appliance/printer"
	"github.com/frank-postage/frank/appliance/serialport"
	"github.com/frank-postage/frank/appliance/update"
	"github.com/frank-postage/frank/protocol"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// built is the packaged build's commit date, RFC 3339 in UTC, set at build
// time with -ldflags "-X main.built=..." (Makefile, images/build); empty in
// a dev build. A release signed before it is older than the package.
var built = ""

func main() {
	if len(os.Args) > 1 && os.Args[1] == "enroll" {
		os.Exit(enroll(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	var cfg kiosk.Config
	var zip string
	var pcfg serialport.Config
	flag.StringVar(&cfg.ID, "id", "", "kiosk id (required)")
	flag.StringVar(&cfg.Broker, "broker", "tcp://127.0.0.1:1883", "hub MQTT broker")
	flag.StringVar(&cfg.Username, "username", "", "broker user name (default: the kiosk id)")
	flag.StringVar(&cfg.Password, "password", "", "broker password (default $FRANK_KIOSK_PASSWORD)")
	flag.StringVar(&zip, "zip", "", "origin ZIP of the store (required)")
	flag.StringVar(&cfg.Listen, "listen", "127.0.0.1:8081", "local touchscreen/API address")
	readyFile := flag.String("ready-file", "", "once serving, write {\"http\": ADDR} here (for --listen on port 0)")
	flag.StringVar(&pcfg.Path, "printer", "/dev/frank-printer", "label printer serial device")
	flag.IntVar(&pcfg.Baud, "printer-baud", 115200, "label printer baud rate")
	var dcfg devicesConfig
	flag.StringVar(&dcfg.Scale.Path, "scale", "", "scale serial device (empty: none)")
	flag.StringVar(&dcfg.ScaleProtocol, "scale-protocol", "nci", "scale protocol: nci or sics (a serial scale at --scale), or hx711 (a load cell on GPIO, placed in the config file's devices.hx711)")
	flag.StringVar(&dcfg.Scanner.Path, "scanner", "", "barcode scanner serial device (empty: none)")
	flag.StringVar(&dcfg.HeadScanner.Path, "head-scanner", "", "fixed scanner reading the serial of the label under the print head; a stamp prints only on its own label (empty: none)")
	flag.StringVar(&dcfg.Terminal.Path, "terminal", "", "card terminal serial device (empty: none)")
	flag.StringVar(&dcfg.GPIO, "gpio", "", "GPIO panel: host, or sim:SOCKET (empty: none)")
	flag.DurationVar(&cfg.RemedyWindow, "remedy-window", 5*time.Minute, "how long a customer has to choose a reprint or refund for a label that failed to print; then the kiosk refunds it")
	staffPIN := flag.String("staff-pin", "", "staff PIN (default $FRANK_STAFF_PIN; the config file takes a bcrypt hash instead)")
	journalPath := flag.String("journal", "/var/lib/frank/kiosk-journal.db", "durable sale journal (SQLite)")
	updatesDir := flag.String("updates", "", "where signed releases are installed (default: releases/ beside the journal)")
	releaseKey := flag.String("release-key", "/etc/frank/release.pub", "the vendor's release public key (PEM); without it the kiosk installs no release")
	logFormat := flag.String("log", "json", "log format: json or text")
	checkConfig := flag.Bool("check-config", false, "validate the configuration and exit")
	configFile := flag.String("config", "", "config file (JSON; see config.go for every field and its default); flags win over it")
	showVersion := flag.Bool("version", false, "print the version and exit")
	enrollmentPath := flag.String("enrollment", defaultEnrollment, "credentials from `kiosk enroll`, used for the id, broker and password not given otherwise")
	flag.Parse()
	if *showVersion {
		fmt.Println("kiosk", version)
		return 0
	}
	// Secrets come from the environment after the flags, never as their
	// defaults: --help and a mistyped flag print the defaults.
	for v, name := range map[*string]string{&cfg.Password: "FRANK_KIOSK_PASSWORD", staffPIN: "FRANK_STAFF_PIN"} {
		if *v == "" {
			*v = os.Getenv(name)
		}
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	brokerFromFile := false
	if *configFile != "" {
		fc, err := readConfig(*configFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kiosk:", err)
			return 2
		}
		brokerFromFile = fc.Broker != ""
		pick := func(flagName string, dst *string, v string) {
			if !set[flagName] && v != "" {
				*dst = v
			}
		}
		pick("enrollment", enrollmentPath, fc.Enrollment)
		pick("id", &cfg.ID, fc.ID)
		pick("zip", &zip, fc.OriginZIP)
		pick("broker", &cfg.Broker, fc.Broker)
		pick("username", &cfg.Username, fc.Username)
		pick("listen", &cfg.Listen, fc.Listen)
		pick("log", logFormat, fc.Log)
		pick("journal", journalPath, fc.Journal)
		// A device's line settings come from the file; a flag names only its path.
		line := func(flagName string, dst *serialport.Config, from serialport.Config) {
			path := dst.Path
			*dst = from
			if set[flagName] || from.Path == "" {
				dst.Path = path
			}
		}
		line("scale", &dcfg.Scale, fc.Devices.Scale)
		line("scanner", &dcfg.Scanner, fc.Devices.Scanner)
		line("head-scanner", &dcfg.HeadScanner, fc.Devices.HeadScanner)
		line("terminal", &dcfg.Terminal, fc.Devices.Terminal)
		pick("scale-protocol", &dcfg.ScaleProtocol, fc.Devices.ScaleProtocol)
		dcfg.HX711 = fc.Devices.HX711
		pick("gpio", &dcfg.GPIO, fc.Devices.GPIO)
		cfg.StaffPINHash, cfg.StaffBadges = fc.StaffPINBcrypt, fc.StaffBadges
		if !set["remedy-window"] && fc.RemedyWindowS > 0 {
			cfg.RemedyWindow = time.Duration(fc.RemedyWindowS) * time.Second
		}
		if !set["printer"] && fc.Printer.Path != "" {
			baud := pcfg.Baud
			pcfg = fc.Printer
			if set["printer-baud"] || pcfg.Baud == 0 {
				pcfg.Baud = baud
			}
		}
		if fc.PasswordFile != "" && !set["password"] {
			b, err := os.ReadFile(fc.PasswordFile)
			if err != nil {
				fmt.Fprintln(os.Stderr, "kiosk: config: password file:", err)
				return 2
			}
			cfg.Password = strings.TrimSpace(string(b))
		}
	}
	// What `kiosk enroll` left fills in whatever flags and file did not say.
	var id *identity.Identity
	if e, err := readEnrollment(*enrollmentPath); err == nil {
		if e.CertDir != "" && (cfg.ID == "" || cfg.ID == e.KioskID) {
			if id, err = identity.Load(identity.In(e.CertDir), e.Hub, e.Fingerprint, nil); err != nil {
				fmt.Fprintln(os.Stderr, "kiosk: config:", err)
				return 2
			}
		}
		if cfg.ID == "" {
			cfg.ID = e.KioskID
		}
		if !set["broker"] && !brokerFromFile && e.Broker != "" {
			cfg.Broker = e.Broker
		}
		if cfg.Username == "" && cfg.ID == e.KioskID {
			cfg.Username = e.Username
		}
		if cfg.Password == "" && cfg.ID == e.KioskID {
			cfg.Password = e.Password
		}
		if zip == "" {
			zip = e.OriginZIP
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintln(os.Stderr, "kiosk: config:", err)
		return 2
	}
	cfg.OriginZIP = protocol.ZIP(zip)
	if cfg.Username == "" {
		cfg.Username = cfg.ID
	}
	cfg.Firmware = version
	var out slog.Handler = slog.NewJSONHandler(os.Stderr, nil)
	if *logFormat == "text" {
		out = slog.NewTextHandler(os.Stderr, nil)
	}
	ring := kiosk.NewLogRing(200) // the recent log, for ops' diagnostics
	cfg.Logs = ring
	log := slog.New(slog.NewMultiHandler(out, ring.Handler())).With("kiosk", cfg.ID)
	// Ops' restart command ends the process with exitRestart, and systemd
	// starts it again (RestartForceExitStatus in frank-kiosk.service).
	restart := make(chan struct{})
	var restartOnce sync.Once
	cfg.Restart = func() { restartOnce.Do(func() { close(restart) }) }
	// A serial device whose port failed for good (the terminal, the head
	// scanner) is opened only at start: the kiosk exits non-zero once the
	// sale in hand is over, and systemd (Restart=on-failure) starts it
	// again, which opens the ports anew.
	deviceGone := make(chan string, 1)
	cfg.DeviceGone = func(reason string) {
		select {
		case deviceGone <- reason:
		default:
		}
	}
	if err := cfg.Check(); err != nil {
		fmt.Fprintln(os.Stderr, "kiosk: config:", err)
		return 2
	}
	dcfg = dcfg.withDefaults()
	for _, c := range []serialport.Config{pcfg, dcfg.Scale, dcfg.Scanner, dcfg.HeadScanner, dcfg.Terminal} {
		if _, err := c.Mode(); err != nil {
			fmt.Fprintln(os.Stderr, "kiosk: config:", err)
			return 2
		}
	}
	if id != nil {
		u, err := url.Parse(cfg.Broker)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kiosk: config: broker:", err)
			return 2
		}
		cfg.TLS, cfg.CertExpired = id.ClientTLS(u.Hostname()), id.Expired
		cfg.Downloads, cfg.HubURL = id.HTTPClient(), id.Hub()
	} else if cfg.Password == "" {
		fmt.Fprintln(os.Stderr, "kiosk: config: no certificate (kiosk enroll) and no broker password (--password, $FRANK_KIOSK_PASSWORD or password_file)")
		return 2
	}
	// The packaged binary launches the current release, if one is installed.
	updates, err := newUpdates(*updatesDir, *journalPath, *releaseKey, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kiosk: config:", err)
		return 2
	}
	if !*checkConfig {
		if err := updates.Launch(log); err != nil {
			log.Error("release not launched; running the packaged binary", "err", err)
		}
	}
	if v := update.Launched(); v != "" && v != version {
		log.Warn("launched as a release whose version differs from the binary's", "release", v, "binary", version)
	}
	cfg.Updates = updates
	if *checkConfig {
		fmt.Printf("kiosk: config ok: id %s, zip %s, broker %s, printer %s at %d baud, listen %s\n",
			cfg.ID, zip, cfg.Broker, pcfg.Path, pcfg.Baud, cfg.Listen)
		for i, c := range []serialport.Config{dcfg.Scale, dcfg.Scanner, dcfg.Terminal} {
			if c.Path != "" {
				fmt.Printf("kiosk: %s %s\n", [...]string{"scale", "scanner", "terminal"}[i], c)
			}
		}
		return 0
	}
	port, err := serialport.Open(pcfg)
	if err != nil {
		log.Error("printer not available", "err", err)
		return 1
	}
	defer port.Close()
	if *staffPIN != "" {
		h, err := bcrypt.GenerateFromPassword([]byte(*staffPIN), bcrypt.DefaultCost)
		if err != nil {
			log.Error("staff pin", "err", err)
			return 2
		}
		cfg.StaffPINHash = string(h)
	}
	ctx0, stop0 := context.WithCancel(context.Background())
	defer stop0()
	devs, head, closers, err := openDevices(ctx0, dcfg, log)
	if err != nil {
		log.Error("devices not available", "err", err)
		return 1
	}
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	if head != nil {
		cfg.LabelCheck = head
	}
	k, err := kiosk.New(cfg, printer.Open(port, 0), log) // Open: the kiosk before may have died mid-label
	if err != nil {
		log.Error("kiosk", "err", err)
		return 2
	}
	sigCtx, stopSig := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSig()
	if err := waitForClock(sigCtx, time.Now, trustedFloor(*journalPath), time.Second, log); err != nil {
		log.Error("stopped while waiting for the clock", "err", err)
		return 1
	}
	j, err := journal.Open(*journalPath)
	if errors.Is(err, journal.ErrDamaged) {
		// Not "not available": the file is there, and must not be replaced
		// unseen, since it may hold sales not yet settled with the hub.
		log.Error("journal file damaged; the kiosk does not start on it: the sales it holds could not be settled", "path", *journalPath, "err", err)
		return 1
	}
	if err != nil {
		log.Error("journal not available; refusing to sell without one", "err", err)
		return 1
	}
	defer j.Close()
	k.UseJournal(j)
	k.UseDevices(devs)
	armCrash(k) // power-cut tests only: a no-op unless built with -tags crashtest
	ctx := sigCtx
	if id != nil {
		if id.Expired() {
			log.Error("the kiosk's certificate expired while it was off; enroll again with a new code from ops (hub kiosk add)", "expired", id.Leaf().NotAfter)
		}
		go id.Run(ctx, time.Hour, log)
	}
	breakRelease(ctx, log) // tests' broken releases only
	if err := k.Connect(); err != nil {
		log.Error("connect", "err", err)
		return 1
	}
	defer k.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	srv := &http.Server{Handler: k.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http", "err", err)
		}
	}()
	if *readyFile != "" {
		if err := writeReady(*readyFile, ln.Addr().String()); err != nil {
			log.Error("ready file", "err", err)
			return 1
		}
	}
	log.Info("kiosk running", "version", version, "listen", ln.Addr().String(), "printer", pcfg.Path)
	code := 0
	select {
	case <-ctx.Done():
		log.Info("kiosk stopping")
	case <-restart:
		log.Info("kiosk restarting on ops' command")
		code = exitRestart
	case why := <-deviceGone:
		log.Error("kiosk exiting to reopen a device that failed", "reason", why)
		code = exitDeviceGone
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	return code
}

// exitRestart is the exit status of a restart ops asked for: the service
// manager starts the kiosk again.
const exitRestart = 75

// exitDeviceGone is the exit status once a device's port failed for good:
// a failure, so that the service manager starts the kiosk again.
const exitDeviceGone = 1

// writeReady says where the kiosk listens, atomically, for whoever
// started it on port 0.
func writeReady(path, addr string) error {
	b, _ := json.Marshal(map[string]string{"http": addr})
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		return fmt.Errorf("kiosk: ready file: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("kiosk: ready file: %w", err)
	}
	return nil
}

// newUpdates is the releases directory (dir, or releases/ beside the
// journal), with the release key at keyPath if there is one, and the
// packaged build's date as the downgrade floor until a release proves
// healthy: without it every fresh image, and every kiosk after a .deb
// install (which removes current), would take any old signed release.
func newUpdates(dir, journalPath, keyPath string, log *slog.Logger) (*update.Store, error) {
	s := &update.Store{Dir: dir, Log: log}
	if s.Dir == "" {
		s.Dir = filepath.Join(filepath.Dir(journalPath), "releases")
	}
	if b, err := os.ReadFile(keyPath); err == nil {
		if s.Key, err = protocol.ParseReleasePublicKey(b); err != nil {
			return nil, fmt.Errorf("release key: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("release key: %w", err)
	}
	if built != "" {
		t, err := time.Parse(time.RFC3339, built)
		if err != nil {
			return nil, fmt.Errorf("the binary's build date %q (-X main.built): %w", built, err)
		}
		s.Packaged = t
	}
	return s, nil
}
