package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/cards"
	"github.com/frank-postage/frank/testbench/postal"
)

// ConnectFigures are how fast a freshly started hub takes back a fleet of
// kiosks over mqtts, beside the bare TLS handshakes of the same clients.
type ConnectFigures struct {
	Kiosks int
	// Took is from the first dial until every kiosk had its CONNACK, all
	// dialling at once, as a fleet does when its hub restarts.
	Took          time.Duration
	P50, P99, Max time.Duration // per kiosk, dial to CONNACK
	// Handshakes is the baseline: the same clients' TLS handshakes (P-256
	// certificates from the device CA, verified both ways) against a bare
	// Go TLS server in the same run, before the hub starts.
	Handshakes time.Duration
	// IdleBase and Idle are this process's CPU, as a share of one core,
	// over IdleWindow: the hub started with no kiosk connected, then with
	// all of them connected and idle. The kiosks' MQTT clients run in this
	// process too (they only answer keepalives).
	IdleBase, Idle float64
	IdleWindow     time.Duration
}

// idleWindow is how long the idle hub is watched (a test shortens it).
var idleWindow = 10 * time.Second

// cpuShare runs for d and returns this process's CPU time over it as a
// share of one core; with profile set it writes a CPU profile of the span.
func cpuShare(d time.Duration, profile string) (float64, error) {
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 0, err
		}
		defer pprof.StopCPUProfile()
	}
	used := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c0, t0 := used(), time.Now()
	time.Sleep(d) // the measurement is the wait
	return float64(used()-c0) / float64(time.Since(t0)), nil
}

// Connect provisions n kiosks with certificates from the device CA,
// restarts the hub, and measures them all connecting at once.
func Connect(ctx context.Context, dir string, n int, profileDir string, log *slog.Logger) (*ConnectFigures, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
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
	// The defaults a site runs: certificates, no passwords, no plain listener;
	// every kiosk dials from this one address, so no per-address cap.
	hc := hub.Config{DataDir: filepath.Join(dir, "hub"), HTTPSListen: "127.0.0.1:0", BrokerTLSListen: "127.0.0.1:0", HeartbeatS: 30,
		BrokerConnsPerIP: -1, PostalURL: paSrv.URL, Ledger: ledger.Config{Licence: postal.DemoLicence}, PaymentsURL: cardSrv.URL, MPSDs: 1}

	// Provisioning, as `hub kiosk add` and `kiosk enroll` would: each kiosk
	// makes its key and the CA signs its request.
	h, err := hub.Open(ctx, hc, quiet)
	if err != nil {
		return nil, err
	}
	if err := h.Start(ctx); err != nil {
		h.Close()
		return nil, err
	}
	host, _, _ := net.SplitHostPort(h.BrokerTLSAddr)
	roots := h.CA().Pool()
	clients := make([]*tls.Config, n)
	for i := range n {
		id := fmt.Sprintf("conn-%04d", i)
		if _, err := h.Fleet().Add(ctx, id, "bench-store"); err != nil {
			h.Close()
			return nil, err
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			h.Close()
			return nil, err
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			h.Close()
			return nil, err
		}
		der, err := h.CA().IssueKiosk(ctx, csr, id, "bench-store")
		if err != nil {
			h.Close()
			return nil, err
		}
		clients[i] = &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12,
			Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	}
	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		h.Close()
		return nil, err
	}
	serverDER, err := h.CA().IssueHub(ctx, &serverKey.PublicKey, "frank-hub-bench", []string{host})
	h.Close()
	if err != nil {
		return nil, err
	}

	f := &ConnectFigures{Kiosks: n}
	// The baseline on an idle machine: n handshakes against a bare TLS
	// server that asks for and verifies client certificates like the broker.
	if f.Handshakes, err = handshakes(clients, &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots,
		Certificates: []tls.Certificate{{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}}}); err != nil {
		return nil, fmt.Errorf("bench: handshakes: %w", err)
	}

	// A freshly started hub, and the fleet dialling at once.
	if h, err = hub.Open(ctx, hc, quiet); err != nil {
		return nil, err
	}
	defer h.Close()
	if err := h.Start(ctx); err != nil {
		return nil, err
	}
	f.IdleWindow = idleWindow
	if f.IdleBase, err = cpuShare(idleWindow, ""); err != nil {
		return nil, err
	}
	lat := make([]time.Duration, n)
	errs := make(chan error, n)
	conns := make([]mqtt.Client, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		wg.Go(func() {
			start := time.Now()
			c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("mqtts://" + h.BrokerTLSAddr).SetClientID(fmt.Sprintf("conn-%04d", i)).
				SetTLSConfig(clients[i]).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(30 * time.Second))
			tok := c.Connect()
			if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
				errs <- fmt.Errorf("kiosk %d: %v", i, tok.Error())
				return
			}
			lat[i], conns[i] = time.Since(start), c
		})
	}
	wg.Wait()
	f.Took = time.Since(t0)
	// Idle, as kiosks in a store are: subscribed to their topics, online,
	// and a heartbeat every period, at random offsets. The first heartbeat
	// of each, which the hub checks against the fleet and the alerts, is
	// sent before the window: it is a cost of the hub's start.
	heartbeat := func(c mqtt.Client, id string) mqtt.Token {
		tele, _ := json.Marshal(&protocol.Telemetry{KioskID: id, At: time.Now(), Firmware: "bench", Paper: "ok", Printer: "ok", Scale: "ok",
			LabelsLeft: 500, InService: true})
		return c.Publish(protocol.KioskTopic(id, protocol.TopicTelemetry), 1, false, tele)
	}
	for i, c := range conns {
		if c == nil {
			continue
		}
		id := fmt.Sprintf("conn-%04d", i)
		subs := map[string]byte{}
		for _, t := range protocol.KioskSubscribes {
			subs[protocol.KioskTopic(id, t)] = 1
		}
		c.SubscribeMultiple(subs, func(mqtt.Client, mqtt.Message) {}).Wait()
		c.Publish(protocol.KioskTopic(id, protocol.TopicStatus), 1, true, protocol.StatusOnline).Wait()
		heartbeat(c, id).Wait()
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		seen := 0
		for _, k := range h.Presence().List() {
			if k.Telemetry != nil {
				seen++
			}
		}
		if seen >= n {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench: idle kiosks: the hub saw %d of %d heartbeats", seen, n)
		}
	}
	stop := make(chan struct{})
	var beats sync.WaitGroup
	for i, c := range conns {
		id := fmt.Sprintf("conn-%04d", i)
		beats.Go(func() {
			period := time.Duration(hc.HeartbeatS) * time.Second
			t := time.NewTimer(time.Duration(mrand.Int64N(int64(period))))
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
				}
				heartbeat(c, id)
				t.Reset(period)
			}
		})
	}
	profile := ""
	if profileDir != "" {
		profile = filepath.Join(profileDir, "hub-idle-kiosks.pprof")
	}
	f.Idle, err = cpuShare(idleWindow, profile)
	close(stop)
	beats.Wait()
	if err != nil {
		return nil, err
	}
	for _, c := range conns {
		if c != nil {
			c.Disconnect(0)
		}
	}
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("bench: connect: %w", err)
	}
	slices.Sort(lat)
	f.P50, f.P99, f.Max = lat[n/2], lat[n*99/100], lat[n-1]
	log.Info("bench connect", "kiosks", n, "took", f.Took, "p50", f.P50, "p99", f.P99, "bare_handshakes", f.Handshakes,
		"idle_cpu_base", f.IdleBase, "idle_cpu", f.Idle)
	return f, nil
}

// handshakes times every client's TLS handshake with a bare server, all at
// once.
func handshakes(clients []*tls.Config, server *tls.Config) (time.Duration, error) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				// A byte once it verified the client: the client's side of
				// a TLS 1.3 handshake ends before the server's.
				if c.(*tls.Conn).Handshake() == nil {
					c.Write([]byte{1})
				}
				c.Close()
			}()
		}
	}()
	errs := make(chan error, len(clients))
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, cfg := range clients {
		wg.Go(func() {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", ln.Addr().String(), cfg)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	took := time.Since(t0)
	close(errs)
	return took, <-errs
}
