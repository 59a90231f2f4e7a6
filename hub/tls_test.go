package hub_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/appliance/identity"
	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// newTLSEnv is a hub as it runs by default: HTTPS from its device CA, the
// broker's mqtts listener, no kiosk passwords, no plain listener but
// /healthz and /metrics.
func newTLSEnv(t *testing.T) *env {
	return newEnvWith(t, func(c *hub.Config) {
		c.TLS, c.KioskPasswords, c.BrokerListen = "ca", false, ""
		c.HTTPListen = "127.0.0.1:0"
	})
}

// enrollCode provisions a kiosk and returns its enrollment code and the
// hub's fingerprint.
func (e *env) enrollCode(id, store string) (code, pin string) {
	e.t.Helper()
	pw, err := e.h.Fleet().Add(context.Background(), id, store)
	if err != nil {
		e.t.Fatal(err)
	}
	if code, err = e.h.Fleet().NewEnrollment(context.Background(), id, pw, time.Hour); err != nil {
		e.t.Fatal(err)
	}
	return code, e.h.TLSFingerprint()
}

// A kiosk enrolls over HTTPS against the fingerprint: with a wrong one
// nothing is sent and nothing is written; with the right one it gets a
// certificate for a key it made, sells over mqtts with it, and renews it
// under a fake clock once two thirds of its life have passed.
func TestEnrollOverHTTPSAndSell(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t)
	ctx := context.Background()
	code, pin := e.enrollCode("kiosk-9", "store-a")
	e.loadStock("store-a", "kiosk-9", "9999-0001")
	dir := t.TempDir()
	files := identity.In(dir)
	wrong := strings.Repeat("ab", 32)
	if _, err := identity.Enroll(ctx, e.h.URL(), code, wrong, files); err == nil {
		t.Fatal("enrolled against a wrong fingerprint")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a failed enrollment wrote %d files", len(ents))
	}
	// A request the CA would not sign is refused before the code is spent.
	pinned := &http.Client{Transport: &http.Transport{TLSClientConfig: protocol.PinnedTLS(pin)}}
	bad := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("not a request")})
	body, _ := json.Marshal(protocol.EnrollRequest{Code: code, CSR: string(bad)})
	resp, err := pinned.Post(e.h.URL()+protocol.EnrollPath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	refusal, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if pe := protocol.DecodeHTTPError(refusal); resp.StatusCode != http.StatusBadRequest || pe == nil || pe.Code != protocol.CodeInvalidRequest {
		t.Fatalf("enrollment with a bad CSR: %d %s", resp.StatusCode, refusal)
	}
	res, err := identity.Enroll(ctx, e.h.URL(), code, pin, files)
	if err != nil {
		t.Fatal(err)
	}
	if res.KioskID != "kiosk-9" || res.Password != "" || !strings.HasPrefix(res.Broker, "mqtts://") {
		t.Fatalf("enrollment %+v", res)
	}
	if fi, err := os.Stat(files.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	now := e.clock.Now()
	id, err := identity.Load(files, e.h.URL(), pin, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	// Sell over mqtts, as the kiosk the certificate names.
	host, _, _ := net.SplitHostPort(e.h.BrokerTLSAddr)
	answers := make(chan []byte, 4)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("mqtts://" + e.h.BrokerTLSAddr).SetClientID("kiosk-9").
		SetTLSConfig(id.ClientTLS(host)).SetAutoReconnect(false).SetOrderMatters(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtts with the enrolled certificate: %v", tok.Error())
	}
	defer c.Disconnect(50)
	c.Subscribe(protocol.KioskTopic("kiosk-9", protocol.TopicPurchaseResult), 1, func(_ mqtt.Client, m mqtt.Message) { answers <- m.Payload() }).Wait()
	c.Publish(protocol.KioskTopic("kiosk-9", protocol.TopicPurchase), 1, false, purchase("tls-1", "kiosk-9", "9999-0001-01", nil))
	select {
	case raw := <-answers:
		if res := decode(t, raw); res.Status != protocol.ResultOK {
			t.Fatalf("sale over mqtts: %+v", res.Error)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no answer over mqtts")
	}

	// Renewal, when due by the clock, over the authenticated channel.
	first := id.Leaf()
	if id.Due() {
		t.Fatal("a fresh certificate is due for renewal")
	}
	now = now.Add(21 * 24 * time.Hour)
	e.clock.Set(now)
	if !id.Due() || id.Expired() {
		t.Fatalf("after 21 of 30 days: due %v, expired %v", id.Due(), id.Expired())
	}
	// The kiosk's own renewal loop notices and renews, as cmd/kiosk runs it.
	runCtx, stop := context.WithCancel(ctx)
	renewed := make(chan struct{})
	go func() { defer close(renewed); id.Run(runCtx, 20*time.Millisecond, slog.New(slog.DiscardHandler)) }()
	// Polled: Run has no hook, as in the field.
	wait.For(t, 10*time.Second, "the certificate renewed", func() bool { return id.Leaf().SerialNumber.Cmp(first.SerialNumber) != 0 })
	stop()
	<-renewed
	if second := id.Leaf(); second.SerialNumber.Cmp(first.SerialNumber) == 0 || !second.NotAfter.After(first.NotAfter) ||
		second.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(first.PublicKey) {
		t.Fatalf("renewed certificate: serial %v until %v (first %v until %v), same key", second.SerialNumber, second.NotAfter, first.SerialNumber, first.NotAfter)
	}
	if id.Due() {
		t.Fatal("due again right after renewal")
	}
	// Past the first certificate's end, the console says the kiosk's newest
	// certificate holds; the first is simply superseded.
	e.clock.Set(now.Add(10 * 24 * time.Hour))
	b := e.operator("olga", "ops")
	if st, _, page := b.do("GET", "/console/kiosks/kiosk-9", nil); st != http.StatusOK || strings.Contains(page, "expired") {
		t.Fatalf("kiosk page after renewal: %d\n%s", st, page)
	}
	e.clock.Set(now.Add(31 * 24 * time.Hour))
	b = e.operator("oleg", "ops") // a month on, olga's session has long ended
	if st, _, page := b.do("GET", "/console/kiosks/kiosk-9", nil); st != http.StatusOK || !strings.Contains(page, "Certificate expired") {
		t.Fatalf("kiosk page with its certificate expired: %d\n%s", st, page)
	}
}

// A hub's --kiosk-cert-ttl is the life of the kiosk certificates it
// issues, at enrollment and at renewal, and kiosks renew after two thirds
// of it (hub/cmd/hub tests the range refused at start).
func TestKioskCertTTL(t *testing.T) {
	t.Parallel()
	const ttl = 72 * time.Hour // the default is 30 days
	e := newEnvWith(t, func(c *hub.Config) {
		c.TLS, c.KioskPasswords, c.BrokerListen = "ca", false, ""
		c.HTTPListen = "127.0.0.1:0"
		c.KioskCertTTL = ttl
	})
	ctx := context.Background()
	code, pin := e.enrollCode("kiosk-9", "store-a")
	files := identity.In(t.TempDir())
	if _, err := identity.Enroll(ctx, e.h.URL(), code, pin, files); err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	id, err := identity.Load(files, e.h.URL(), pin, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	life := func(what string) {
		t.Helper()
		// Certificate times are whole seconds.
		if left := id.Leaf().NotAfter.Sub(now); left > ttl || left < ttl-time.Minute {
			t.Fatalf("%s certificate: valid until %v, %v from the hub's now; want %v", what, id.Leaf().NotAfter, left, ttl)
		}
	}
	life("enrolled")
	first := id.Leaf()
	// Two thirds of 72 hours, give or take the CA's backdating (minutes).
	now = now.Add(ttl*2/3 - 10*time.Minute)
	if id.Due() {
		t.Fatalf("due for renewal before two thirds of %v", ttl)
	}
	now = now.Add(20 * time.Minute)
	e.clock.Set(now)
	if !id.Due() || id.Expired() {
		t.Fatalf("past two thirds of %v: due %v, expired %v", ttl, id.Due(), id.Expired())
	}
	if err := id.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if id.Leaf().SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("not renewed")
	}
	life("renewed")
}

// The public listeners take no shortcuts: mqtts refuses plain MQTT and a
// client without a certificate; no plain broker listener runs; the plain
// HTTP listener serves /healthz and /metrics only; HTTPS sends HSTS.
func TestPublicListenersWantTLS(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t)
	if e.h.BrokerAddr != "" {
		t.Fatalf("a plain broker listener runs at %s", e.h.BrokerAddr)
	}
	host, _, _ := net.SplitHostPort(e.h.BrokerTLSAddr)
	for name, opts := range map[string]*mqtt.ClientOptions{
		"plain MQTT": mqtt.NewClientOptions().AddBroker("tcp://" + e.h.BrokerTLSAddr),
		"no certificate": mqtt.NewClientOptions().AddBroker("mqtts://" + e.h.BrokerTLSAddr).SetUsername("kiosk-1").SetPassword(e.pw["kiosk-1"]).
			SetTLSConfig(&tls.Config{InsecureSkipVerify: true, ServerName: host}),
	} {
		c := mqtt.NewClient(opts.SetClientID("kiosk-1").SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
		if tok := c.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
			c.Disconnect(0)
			t.Errorf("%s connected to the mqtts listener", name)
		}
	}
	pinned := &http.Client{Transport: &http.Transport{TLSClientConfig: protocol.PinnedTLS(e.h.TLSFingerprint())}}
	resp, err := pinned.Get(e.h.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Strict-Transport-Security"), "max-age=") {
		t.Errorf("HTTPS without HSTS: %v", resp.Header)
	}
	for path, want := range map[string]int{"/healthz": 200, "/metrics": 401, "/portal/login": 404, "/console/login": 404, "/api/v1/certificates": 404} {
		resp, err := http.Get("http://" + e.h.PlainAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("plain HTTP %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	// The device CA is published for brokers.
	resp, err = pinned.Get(e.h.URL() + "/api/v1/ca")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf [64]byte
	n, _ := resp.Body.Read(buf[:])
	if !strings.Contains(string(buf[:n]), "BEGIN CERTIFICATE") {
		t.Errorf("/api/v1/ca: %q", buf[:n])
	}
}

// A hub that does not take kiosk passwords makes none: a kiosk it
// provisions has no password to leak, and an empty one opens nothing.
func TestCertificateHubsMakeNoPasswords(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t)
	pw, err := e.h.Fleet().Add(context.Background(), "kiosk-7", "store-a")
	if err != nil || pw != "" {
		t.Fatalf("kiosk add on a certificate hub: %q %v", pw, err)
	}
	if _, ok := e.h.Fleet().Authenticate("kiosk-7", "", true); ok {
		t.Fatal("an empty password opened kiosk-7")
	}
}
