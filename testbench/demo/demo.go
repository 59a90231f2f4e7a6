// Package demo wires a whole Frank system on one machine from the real
// binaries: the postal authority and a printer emulator run in-process, the
// hub and a kiosk run as child processes. `make run` and the end-to-end
// tests both use it.
package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/cards"
	"github.com/frank-postage/frank/testbench/gpiosim"
	"github.com/frank-postage/frank/testbench/paytermsim"
	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/printersim"
	"github.com/frank-postage/frank/testbench/scalesim"
	"github.com/frank-postage/frank/testbench/scannersim"
	"github.com/frank-postage/frank/testbench/wait"
)

// Config says where things run. Empty addresses get free ports.
type Config struct {
	BinDir    string // holds the hub and kiosk binaries
	Dir       string // state: hub data, postal state, labels, device links
	HubHTTP   string // the hub's HTTPS address
	Broker    string // the embedded broker's mqtts address, or the external broker's
	Postal    string
	Cards     string // card gateway address
	KioskHTTP string
	KioskID   string
	Store     string
	ZIP       string
	Sheets    int // label sheets issued and loaded into the kiosk; default 3
	Log       *slog.Logger
	Output    io.Writer // child processes' logs, prefixed; nil discards
	HubArgs   []string  // more flags for the hub (e.g. --hsm pkcs11)
	HubEnv    []string  // more environment for the hub (e.g. SOFTHSM2_CONF)

	// ExternalBroker says Broker is a broker the caller runs (mosquitto,
	// say): the hub connects to it rather than embedding one, with its
	// password in HubEnv as FRANK_BROKER_PASSWORD; kiosks log in with
	// passwords unless BrokerTLS says it takes certificates.
	ExternalBroker bool
	// HeadScanner gives the kiosk a fixed scanner over the print head
	// (HeadScanner() feeds it the serial of the label under the head).
	HeadScanner bool
	// BrokerTLS says the external broker speaks mqtts and takes the device
	// CA's certificates: kiosks enroll for one.
	BrokerTLS bool
	// Provisioned, if set, learns the kiosk's broker credentials before the
	// hub starts, so that an external broker can be told them.
	Provisioned func(kiosk, password string) error
	KioskEnv    []string // more environment for the kiosk (e.g. FRANK_KIOSK_CRASH_AT)
	// KioskBinary is the kiosk program's name in BinDir; default "kiosk".
	// The power-cut tests use one built with -tags crashtest.
	KioskBinary string
	KioskArgs   []string // more flags for the kiosk (e.g. --remedy-window 1s)
}

// Demo is a running system.
type Demo struct {
	cfg       Config
	pa        *postal.Authority
	passwords bool // the hub takes kiosk passwords
	paSrv     *http.Server
	cards     *cards.Gateway
	cardSrv   *http.Server
	sheets    []string
	printer   *printersim.Printer
	scale     *scalesim.Scale
	scanner   *scannersim.Scanner
	head      *scannersim.Scanner // nil without Config.HeadScanner
	terminal  *paytermsim.Terminal
	gpio      *gpiosim.Sim
	procs     []proc
	kioskEnv  []string
	kioskArgs []string
	kiosk     *proc
	hub       *proc
	hubArgs   []string
	pin       string       // the hub's TLS fingerprint, from its device CA
	client    *http.Client // pinned to it
	outMu     sync.Mutex
	once      sync.Once
}

// proc is a child and a channel closed when it has exited.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start brings the system up and waits until the kiosk is ready to sell.
func Start(ctx context.Context, cfg Config) (*Demo, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	if cfg.KioskID == "" {
		cfg.KioskID = "demo-kiosk"
	}
	if cfg.ZIP == "" {
		cfg.ZIP = "94544"
	}
	if cfg.Store == "" {
		cfg.Store = "demo-store"
	}
	if cfg.Sheets == 0 {
		cfg.Sheets = 3
	}
	if cfg.KioskBinary == "" {
		cfg.KioskBinary = "kiosk"
	}
	// The postal authority and the card gateway listen in this process,
	// the hub and the kiosk in their own, on ports the kernel picks
	// unless cfg names them (start).
	d := &Demo{cfg: cfg}
	if err := d.start(ctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Demo) start(ctx context.Context) error {
	cfg := d.cfg
	var err error
	if d.pa, err = postal.New(filepath.Join(cfg.Dir, "postal", "state.json"), cfg.Log.With("component", "postal")); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", orAny(cfg.Postal))
	if err != nil {
		return fmt.Errorf("demo: postal authority: %w", err)
	}
	cfg.Postal = ln.Addr().String()
	d.paSrv = &http.Server{Handler: d.pa.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go d.paSrv.Serve(ln)
	d.cards = cards.New(cfg.Log.With("component", "cards"))
	if ln, err = net.Listen("tcp", orAny(cfg.Cards)); err != nil {
		return fmt.Errorf("demo: card gateway: %w", err)
	}
	cfg.Cards = ln.Addr().String()
	d.cfg.Postal, d.cfg.Cards = cfg.Postal, cfg.Cards
	d.cardSrv = &http.Server{Handler: d.cards.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go d.cardSrv.Serve(ln)

	if d.printer, err = printersim.Start(filepath.Join(cfg.Dir, "dev", "printer"), filepath.Join(cfg.Dir, "labels"),
		cfg.Log.With("component", "printer")); err != nil {
		return err
	}
	broker := []string{"--broker-tls-listen", orAny(cfg.Broker)}
	if cfg.ExternalBroker {
		scheme := "tcp://"
		if cfg.BrokerTLS {
			scheme = "mqtts://"
		}
		broker = []string{"--broker", scheme + cfg.Broker}
		if !cfg.BrokerTLS {
			broker = append(broker, "--kiosk-passwords")
		}
	}
	dev := filepath.Join(cfg.Dir, "dev")
	if d.scale, err = scalesim.Start(filepath.Join(dev, "scale"), scalesim.NCI, cfg.Log.With("component", "scale")); err != nil {
		return err
	}
	d.scale.SetUnit(scalesim.OZ) // postal scales show ounces to 0.1
	d.scale.SetWeight(20_000)    // a letter is on the platter
	if d.scanner, err = scannersim.Start(filepath.Join(dev, "scanner"), cfg.Log.With("component", "scanner")); err != nil {
		return err
	}
	if d.terminal, err = paytermsim.Start(filepath.Join(dev, "terminal"), cfg.Log.With("component", "terminal")); err != nil {
		return err
	}
	if cfg.HeadScanner {
		if d.head, err = scannersim.Start(filepath.Join(dev, "head-scanner"), cfg.Log.With("component", "head-scanner")); err != nil {
			return err
		}
	}
	if d.gpio, err = gpiosim.Start(filepath.Join(dev, "gpio.sock"), cfg.Log.With("component", "gpio")); err != nil {
		return err
	}
	hubArgs := append([]string{"--data", filepath.Join(cfg.Dir, "hub"), "--https", orAny(cfg.HubHTTP),
		"--postal", "http://" + cfg.Postal, "--payments", "http://" + cfg.Cards, "--licence", postal.DemoLicence, "--log", "text"}, broker...)
	// No mail server here: the portal shows password-reset links instead.
	hubArgs = append(hubArgs, "--show-reset-links")
	hubArgs = append(hubArgs, cfg.HubArgs...)
	d.passwords = slices.Contains(hubArgs, "--kiosk-passwords")
	if cfg.ExternalBroker {
		hubArgs = append(hubArgs, "--kiosk-broker", broker[1])
	}
	if len(cfg.HubArgs) > 0 && cfg.HubArgs[0] == "--hsm" {
		// A real HSM needs its key ceremony before the hub serves.
		if _, err := d.run("hub", append([]string{"keys", "init"}, hubArgs...)...); err != nil {
			return err
		}
	}
	// The device CA first: enrollment codes carry its fingerprint.
	out, err := d.run("hub", append([]string{"ca", "show"}, hubArgs...)...)
	if err != nil {
		if out, err = d.run("hub", append([]string{"ca", "init"}, hubArgs...)...); err != nil {
			return err
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if fp, ok := strings.CutPrefix(line, "fingerprint: "); ok {
			d.pin = strings.TrimSpace(fp)
		}
	}
	if d.pin == "" {
		return fmt.Errorf("demo: hub ca printed no fingerprint: %s", out)
	}
	if _, ca, ok := strings.Cut(out, "-----BEGIN"); ok {
		if err := os.WriteFile(d.CAFile(), []byte("-----BEGIN"+ca), 0o644); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	d.client = &http.Client{Transport: &http.Transport{TLSClientConfig: protocol.PinnedTLS(d.pin)}, Timeout: 60 * time.Second}
	// Provision the kiosk and issue its store some label sheets, as ops would.
	out, err = d.run("hub", append([]string{"kiosk", "add", cfg.KioskID, "--store", cfg.Store, "--zip", cfg.ZIP}, hubArgs...)...)
	if err != nil {
		return err
	}
	password, code := "", ""
	for _, line := range strings.Split(out, "\n") {
		if p, ok := strings.CutPrefix(line, "broker password: "); ok {
			password = strings.TrimSpace(p)
		}
		if c, ok := strings.CutPrefix(line, "enrollment code: "); ok {
			code, _, _ = strings.Cut(c, " ")
		}
	}
	if code == "" || d.passwords && password == "" {
		return fmt.Errorf("demo: hub kiosk add printed no enrollment code, or no password for a broker that wants one: %s", out)
	}
	if cfg.Provisioned != nil {
		if err := cfg.Provisioned(cfg.KioskID, password); err != nil {
			return fmt.Errorf("demo: provisioning the broker: %w", err)
		}
	}
	if out, err = d.run("hub", append([]string{"stock", "issue", "--store", cfg.Store, "--sheets", fmt.Sprint(cfg.Sheets),
		"--barcodes", filepath.Join(cfg.Dir, "sheets")}, hubArgs...)...); err != nil {
		return err
	}
	d.sheets = strings.Fields(out)
	ready := filepath.Join(cfg.Dir, "hub", "ready.json")
	os.Remove(ready)
	d.hubArgs = append(hubArgs, "--ready-file", ready)
	if err := d.spawn("hub", d.hubArgs...); err != nil {
		return err
	}
	d.hub = &d.procs[len(d.procs)-1]
	if err := d.waitHub(ctx, ready, !cfg.ExternalBroker); err != nil {
		return err
	}
	// A restarted hub comes back on the same addresses, as a real one does.
	for i := range d.hubArgs {
		switch d.hubArgs[i] {
		case "--https":
			d.hubArgs[i+1] = d.cfg.HubHTTP
		case "--broker-tls-listen":
			d.hubArgs[i+1] = d.cfg.Broker
		}
	}
	cfg = d.cfg
	if err := waitHTTP(ctx, d.client, d.HubURL()+"/healthz", 60*time.Second); err != nil {
		return fmt.Errorf("demo: hub did not come up: %w", err)
	}
	// The kiosk enrolls as a field engineer would enroll it: with the
	// one-time code, which brings its id, broker and certificate (or on a
	// broker that takes passwords, its password), and pins the hub's TLS.
	enrollment := filepath.Join(cfg.Dir, "kiosk", "enrollment.json")
	enroll := []string{"enroll", "--hub", d.HubURL(), "--code", code, "--enrollment", enrollment}
	if cfg.ExternalBroker && !cfg.BrokerTLS {
		enroll = append(enroll, "--password")
	}
	if _, err := d.run("kiosk", enroll...); err != nil {
		return err
	}
	d.kioskEnv = append([]string{"FRANK_STAFF_PIN=" + StaffPIN}, cfg.KioskEnv...)
	d.kioskArgs = []string{"--enrollment", enrollment, // id, broker, password and the store's ZIP
		"--listen", orAny(cfg.KioskHTTP), "--ready-file", filepath.Join(cfg.Dir, "kiosk", "ready.json"), "--printer", d.printer.Path(), "--journal", d.JournalPath(),
		"--scale", d.scale.Path(), "--scanner", d.scanner.Path(), "--terminal", d.terminal.Path(), "--gpio", "sim:" + d.gpio.Path(),
		"--log", "text"}
	if d.head != nil {
		d.kioskArgs = append(d.kioskArgs, "--head-scanner", d.head.Path())
	}
	d.kioskArgs = append(d.kioskArgs, cfg.KioskArgs...)
	if err := d.startKiosk(ctx); err != nil {
		return err
	}
	// Staff load the sheets into the kiosk.
	status, body, err := d.LoadStock(ctx, d.sheets)
	if err != nil || status != http.StatusOK {
		return fmt.Errorf("demo: loading stock: %d %s %v", status, body, err)
	}
	return nil
}

// waitHub waits for the hub to say where it listens, and keeps that.
func (d *Demo) waitHub(ctx context.Context, path string, embeddedBroker bool) error {
	a, err := d.waitReady(ctx, "hub", path)
	if err != nil {
		return err
	}
	d.cfg.HubHTTP = a.HTTP
	if embeddedBroker {
		d.cfg.Broker = a.BrokerTLS
	}
	return nil
}

type ready struct {
	HTTP      string
	Broker    string
	BrokerTLS string `json:"broker_tls"`
}

// waitReady waits for the process just started to write its ready file.
func (d *Demo) waitReady(ctx context.Context, name, path string) (ready, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil {
			var a ready
			if err := json.Unmarshal(b, &a); err != nil {
				return a, fmt.Errorf("demo: %s ready file: %w", name, err)
			}
			return a, nil
		}
		select {
		case <-d.procs[len(d.procs)-1].exited:
			return ready{}, fmt.Errorf("demo: the %s exited before it was ready (see its log)", name)
		case <-ctx.Done():
			return ready{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return ready{}, fmt.Errorf("demo: the %s was not ready within 60 s", name)
		}
	}
}

// orAny is addr, or a port the kernel picks on loopback.
func orAny(addr string) string {
	if addr == "" {
		return "127.0.0.1:0"
	}
	return addr
}

func (d *Demo) startKiosk(ctx context.Context) error {
	readyFile := filepath.Join(d.cfg.Dir, "kiosk", "ready.json")
	os.Remove(readyFile)
	if err := d.spawnAs("kiosk", d.cfg.KioskBinary, d.kioskArgs...); err != nil {
		return err
	}
	d.kiosk = &d.procs[len(d.procs)-1]
	a, err := d.waitReady(ctx, "kiosk", readyFile)
	if err != nil {
		return err
	}
	// A restarted kiosk comes back where it was, as a real one does.
	d.cfg.KioskHTTP = a.HTTP
	for i := range d.kioskArgs {
		if d.kioskArgs[i] == "--listen" {
			d.kioskArgs[i+1] = a.HTTP
		}
	}
	if err := WaitHTTP(ctx, d.KioskURL()+"/healthz", 60*time.Second); err != nil {
		return fmt.Errorf("demo: kiosk did not become ready: %w", err)
	}
	return nil
}

// StaffPIN opens the demo kiosk's staff mode.
const StaffPIN = "2468"

// Scale, Scanner, Terminal and GPIO are the kiosk's simulated devices.
func (d *Demo) Scale() *scalesim.Scale       { return d.scale }
func (d *Demo) Scanner() *scannersim.Scanner { return d.scanner }

// HeadScanner is the scanner over the print head (Config.HeadScanner).
func (d *Demo) HeadScanner() *scannersim.Scanner { return d.head }
func (d *Demo) Terminal() *paytermsim.Terminal   { return d.terminal }
func (d *Demo) GPIO() *gpiosim.Sim               { return d.gpio }

// Dir is the demo's state directory.
func (d *Demo) Dir() string { return d.cfg.Dir }

// JournalPath is the kiosk's sale journal.
func (d *Demo) JournalPath() string { return filepath.Join(d.cfg.Dir, "kiosk", "journal.db") }

// HubPID is the hub's process id.
func (d *Demo) HubPID() int { return d.hub.cmd.Process.Pid }

// KillHub kills the hub with SIGKILL, as a power cut or the OOM killer
// would, and waits for it to be gone.
func (d *Demo) KillHub() {
	d.hub.cmd.Process.Kill()
	<-d.hub.exited
}

// RestartHub starts the hub again on its addresses, after KillHub or on
// its own death, and waits until it serves.
func (d *Demo) RestartHub(ctx context.Context) error {
	select {
	case <-d.hub.exited:
	default:
		d.hub.stop()
	}
	ready := d.hubArgs[len(d.hubArgs)-1]
	os.Remove(ready)
	if err := d.spawn("hub", d.hubArgs...); err != nil {
		return err
	}
	d.hub = &d.procs[len(d.procs)-1]
	if _, err := d.waitReady(ctx, "hub", ready); err != nil {
		return err
	}
	return waitHTTP(ctx, d.client, d.HubURL()+"/healthz", 60*time.Second)
}

// KioskPID is the running kiosk's process id.
func (d *Demo) KioskPID() int { return d.kiosk.cmd.Process.Pid }

// KioskExited is closed when the running kiosk process has exited.
func (d *Demo) KioskExited() <-chan struct{} { return d.kiosk.exited }

// RestartKiosk stops the kiosk if it still runs and starts it again, as
// after a power cut, with env replacing the extra environment it had.
func (d *Demo) RestartKiosk(ctx context.Context, env ...string) error {
	d.kiosk.stop()
	d.kioskEnv = append(d.kioskEnv[:1:1], env...) // the staff PIN stays
	return d.startKiosk(ctx)
}

// Sheets are the sheet serials issued to the demo store and loaded.
func (d *Demo) Sheets() []string { return d.sheets }

// Cards is the card gateway simulator.
func (d *Demo) Cards() *cards.Gateway { return d.cards }

// Hub runs a hub command (kiosk add, stock issue, ledger check...) against
// the demo's data directory and returns what it printed.
func (d *Demo) Hub(args ...string) (string, error) { return d.HubWithEnv(nil, args...) }

// HubWithEnv is Hub with more environment (a password, say).
func (d *Demo) HubWithEnv(env []string, args ...string) (string, error) {
	saved := d.cfg.HubEnv
	d.cfg.HubEnv = append(append([]string(nil), saved...), env...)
	defer func() { d.cfg.HubEnv = saved }()
	args = append(args, "--data", filepath.Join(d.cfg.Dir, "hub"), "--postal", "http://"+d.cfg.Postal,
		"--payments", "http://"+d.cfg.Cards, "--licence", postal.DemoLicence, "--log", "text")
	if d.passwords {
		args = append(args, "--kiosk-passwords") // so that kiosk add makes one
	}
	return d.run("hub", args...)
}

// BrokerAddr is the broker's address.
func (d *Demo) BrokerAddr() string { return d.cfg.Broker }

// HubURL is the hub's HTTPS base URL.
func (d *Demo) HubURL() string { return "https://" + d.cfg.HubHTTP }

// Client is an HTTP client that trusts the hub by its fingerprint, as a
// kiosk does.
func (d *Demo) Client() *http.Client { return d.client }

// Fingerprint is the hub's TLS fingerprint (its device CA's).
func (d *Demo) Fingerprint() string { return d.pin }

// CAFile holds the device CA's certificate, for curl --cacert.
func (d *Demo) CAFile() string { return filepath.Join(d.cfg.Dir, "ca.pem") }

// KioskURL is the kiosk's local API base URL.
func (d *Demo) KioskURL() string { return "http://" + d.cfg.KioskHTTP }

// Printer is the printer emulator.
func (d *Demo) Printer() *printersim.Printer { return d.printer }

// Authority is the postal authority simulator.
func (d *Demo) Authority() *postal.Authority { return d.pa }

// AuthorityFile holds the postal authority's public key, for verifiers.
func (d *Demo) AuthorityFile() string {
	return filepath.Join(d.cfg.Dir, "postal", postal.AuthorityFile)
}

// Sell posts an order to the kiosk's local API and returns the raw answer.
func (d *Demo) Sell(ctx context.Context, order any) (int, []byte, error) {
	return d.Post(ctx, d.KioskURL()+"/api/v1/sales", order)
}

// LoadStock loads label sheets into the kiosk as staff do: a staff login
// with StaffPIN, then POST /api/v1/staff/stock. It returns the stock
// route's status and body.
func (d *Demo) LoadStock(ctx context.Context, sheets []string) (int, []byte, error) {
	status, body, err := d.Post(ctx, d.KioskURL()+"/api/v1/staff/login", map[string]string{"pin": StaffPIN})
	if err != nil || status != http.StatusOK {
		return status, body, fmt.Errorf("demo: staff login: %d %s %v", status, body, err)
	}
	var login struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &login); err != nil || login.Token == "" {
		return status, body, fmt.Errorf("demo: staff login: no token in %s", body)
	}
	defer d.post(context.WithoutCancel(ctx), d.KioskURL()+"/api/v1/staff/logout", login.Token, struct{}{})
	return d.post(ctx, d.KioskURL()+"/api/v1/staff/stock", login.Token, map[string]any{"sheets": sheets})
}

// Post posts JSON and returns the status and body.
func (d *Demo) Post(ctx context.Context, url string, v any) (int, []byte, error) {
	return d.post(ctx, url, "", v)
}

// post posts JSON, with a staff token if one is given.
func (d *Demo) post(ctx context.Context, url, token string, v any) (int, []byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("demo: post %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// Close stops the children (SIGTERM, then SIGKILL after 5 s) and the
// in-process simulators. It may be called more than once.
func (d *Demo) Close() {
	d.once.Do(func() {
		for i := len(d.procs) - 1; i >= 0; i-- {
			d.procs[i].stop()
		}
		if d.paSrv != nil {
			d.paSrv.Close()
		}
		if d.cardSrv != nil {
			d.cardSrv.Close()
		}
		if d.printer != nil {
			d.printer.Close()
		}
		if d.scale != nil {
			d.scale.Close()
		}
		if d.scanner != nil {
			d.scanner.Close()
		}
		if d.head != nil {
			d.head.Close()
		}
		if d.terminal != nil {
			d.terminal.Close()
		}
		if d.gpio != nil {
			d.gpio.Close()
		}
	})
}

func (p proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// run runs a command to completion and returns its standard output.
func (d *Demo) run(name string, args ...string) (string, error) {
	// A command line the binary does not know could start a server on the
	// demo's data: bound it, and never leave it behind.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, filepath.Join(d.cfg.BinDir, name), args...)
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.WaitDelay = 2 * time.Second
	c.Env = append(os.Environ(), d.cfg.HubEnv...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("demo: %s %v: %w: %s%s", name, args, err, out, stderr.Bytes())
	}
	return string(out), nil
}

func (d *Demo) spawn(name string, args ...string) error { return d.spawnAs(name, name, args...) }

// spawnAs starts BinDir/program as the child called name.
func (d *Demo) spawnAs(name, program string, args ...string) error {
	bin := filepath.Join(d.cfg.BinDir, program)
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("demo: %s binary: %w (run make build)", name, err)
	}
	c := exec.Command(bin, args...)
	switch name {
	case "hub":
		c.Env = append(os.Environ(), d.cfg.HubEnv...)
	case "kiosk":
		c.Env = append(os.Environ(), d.kioskEnv...)
	}
	// Children die with us, even if we are killed.
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	pr, pw := io.Pipe()
	c.Stdout, c.Stderr = pw, pw
	go d.copyPrefixed(name, pr)
	if err := c.Start(); err != nil {
		return fmt.Errorf("demo: start %s: %w", name, err)
	}
	p := proc{cmd: c, exited: make(chan struct{})}
	go func() { c.Wait(); pw.Close(); close(p.exited) }()
	d.procs = append(d.procs, p)
	return nil
}

func (d *Demo) copyPrefixed(name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		d.outMu.Lock()
		fmt.Fprintf(d.cfg.Output, "%-6s| %s\n", name, sc.Text())
		d.outMu.Unlock()
	}
}

// FreeAddr returns a free 127.0.0.1 address outside the kernel's ephemeral
// port range. Tests restart servers on the address they were given; a port
// from that range can meanwhile become the local port of some outgoing
// connection, and the restart then fails to listen.
func FreeAddr() (string, error) {
	lo, hi := ephemeralPorts()
	for range 200 {
		p := 20000 + rand.IntN(65536-20000)
		if p >= lo && p <= hi {
			continue
		}
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			ln.Close()
			return ln.Addr().String(), nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free address: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// ephemeralPorts reads the range the kernel takes outgoing connections'
// local ports from, or Linux's default.
func ephemeralPorts() (lo, hi int) {
	lo, hi = 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &lo, &hi)
	}
	return lo, hi
}

// WaitTCP waits until something accepts connections on addr.
func WaitTCP(addr string, timeout time.Duration) error {
	err := wait.Poll(timeout, func() error {
		c, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("nothing listens on %s: %w", addr, err)
	}
	return nil
}

// WaitHTTP polls url until it answers 200 or the timeout passes.
func WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	return waitHTTP(ctx, http.DefaultClient, url, timeout)
}

// waitHTTP is WaitHTTP with a client of the caller's.
func waitHTTP(ctx context.Context, client *http.Client, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s: %s", url, resp.Status)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
