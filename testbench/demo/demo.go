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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/printersim"
)

// Config says where things run. Empty addresses get free ports.
type Config struct {
	BinDir    string // holds the hub and kiosk binaries
	Dir       string // state: hub data, postal state, labels, device links
	HubHTTP   string
	Broker    string
	Postal    string
	KioskHTTP string
	KioskID   string
	ZIP       string
	Log       *slog.Logger
	Output    io.Writer // child processes' logs, prefixed; nil discards
	HubArgs   []string  // more flags for the hub (e.g. --hsm pkcs11)
	HubEnv    []string  // more environment for the hub (e.g. SOFTHSM2_CONF)
}

// Demo is a running system.
type Demo struct {
	cfg     Config
	pa      *postal.Authority
	paSrv   *http.Server
	printer *printersim.Printer
	procs   []proc
	outMu   sync.Mutex
	once    sync.Once
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
	for _, a := range []*string{&cfg.HubHTTP, &cfg.Broker, &cfg.Postal, &cfg.KioskHTTP} {
		if *a == "" {
			p, err := FreeAddr()
			if err != nil {
				return nil, err
			}
			*a = p
		}
	}
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
	ln, err := net.Listen("tcp", cfg.Postal)
	if err != nil {
		return fmt.Errorf("demo: postal authority: %w", err)
	}
	d.paSrv = &http.Server{Handler: d.pa.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go d.paSrv.Serve(ln)

	if d.printer, err = printersim.Start(filepath.Join(cfg.Dir, "dev", "printer"), filepath.Join(cfg.Dir, "labels"),
		cfg.Log.With("component", "printer")); err != nil {
		return err
	}
	hubArgs := append([]string{"--data", filepath.Join(cfg.Dir, "hub"), "--http", cfg.HubHTTP,
		"--broker-listen", cfg.Broker, "--postal", "http://" + cfg.Postal, "--log", "text"}, cfg.HubArgs...)
	if len(cfg.HubArgs) > 0 && cfg.HubArgs[0] == "--hsm" {
		// A real HSM needs its key ceremony before the hub serves.
		if err := d.run("hub", append([]string{"keys", "init"}, hubArgs...)...); err != nil {
			return err
		}
	}
	if err := d.spawn("hub", hubArgs...); err != nil {
		return err
	}
	if err := WaitHTTP(ctx, d.HubURL()+"/healthz", 60*time.Second); err != nil {
		return fmt.Errorf("demo: hub did not come up: %w", err)
	}
	if err := d.spawn("kiosk", "--id", cfg.KioskID, "--zip", cfg.ZIP, "--broker", "tcp://"+cfg.Broker,
		"--listen", cfg.KioskHTTP, "--printer", d.printer.Path(), "--log", "text"); err != nil {
		return err
	}
	if err := WaitHTTP(ctx, d.KioskURL()+"/healthz", 60*time.Second); err != nil {
		return fmt.Errorf("demo: kiosk did not become ready: %w", err)
	}
	return nil
}

// HubURL is the hub's HTTP base URL.
func (d *Demo) HubURL() string { return "http://" + d.cfg.HubHTTP }

// KioskURL is the kiosk's local API base URL.
func (d *Demo) KioskURL() string { return "http://" + d.cfg.KioskHTTP }

// Printer is the printer emulator.
func (d *Demo) Printer() *printersim.Printer { return d.printer }

// Authority is the postal authority simulator.
func (d *Demo) Authority() *postal.Authority { return d.pa }

// Sell posts an order to the kiosk's local API and returns the raw answer.
func (d *Demo) Sell(ctx context.Context, order any) (int, []byte, error) {
	b, err := json.Marshal(order)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.KioskURL()+"/api/v1/sales", bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("demo: sell: %w", err)
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
		if d.printer != nil {
			d.printer.Close()
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

// run runs a command to completion.
func (d *Demo) run(name string, args ...string) error {
	c := exec.Command(filepath.Join(d.cfg.BinDir, name), args...)
	c.Env = append(os.Environ(), d.cfg.HubEnv...)
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("demo: %s %v: %w: %s", name, args, err, out)
	}
	return nil
}

func (d *Demo) spawn(name string, args ...string) error {
	bin := filepath.Join(d.cfg.BinDir, name)
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("demo: %s binary: %w (run make build)", name, err)
	}
	c := exec.Command(bin, args...)
	if name == "hub" {
		c.Env = append(os.Environ(), d.cfg.HubEnv...)
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

// FreeAddr returns a free 127.0.0.1 address.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// WaitHTTP polls url until it answers 200 or the timeout passes.
func WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
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
