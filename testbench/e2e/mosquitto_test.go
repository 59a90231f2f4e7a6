package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"github.com/frank-postage/frank/hsm"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/wait"
)

// mosquittoTool finds a mosquitto program, which Debian puts in /usr/sbin.
func mosquittoTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := osexec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	t.Fatalf("%s not found: install the Debian package mosquitto (make test does, as root)", name)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// readmeBlock returns the README code block whose first line is the comment
// "# " + name, so that the test runs the configuration the README gives.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)```conf\n# " + regexp.QuoteMeta(name) + "\n(.*?)```")
	m := re.FindSubmatch(b)
	if m == nil {
		t.Fatalf("README.md has no conf block starting with # %s", name)
	}
	return string(m[1])
}

// mosquitto is a mosquitto server configured as the README says: kiosks
// by the device CA's certificates (the default), or by passwords. One more
// hub identity, frank-hub-spy, is in the ACL for tests that watch with a
// hub's rights.
type mosquitto struct {
	t                 *testing.T
	etc, addr, passwd string
	bin               string
	passwords         bool
	hubPassword       string
	spyPassword       string
	dir               string // the demo's, once it runs
	cmd               *osexec.Cmd
}

// newMosquitto writes the README's configuration into dir; start runs it.
func newMosquitto(t *testing.T, dir string, passwords bool) *mosquitto {
	t.Helper()
	m := &mosquitto{t: t, bin: mosquittoTool(t, "mosquitto"), passwd: mosquittoTool(t, "mosquitto_passwd"), etc: filepath.Join(dir, "mosquitto"),
		passwords: passwords, dir: filepath.Join(dir, "demo")}
	if err := os.MkdirAll(m.etc, 0o700); err != nil {
		t.Fatal(err)
	}
	// The ACL grants a kiosk exactly the protocol's topics.
	acl := readmeBlock(t, "/etc/mosquitto/frank.acl")
	var pub, sub []string
	for _, line := range strings.Split(acl, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "pattern" {
			suffix := strings.TrimPrefix(f[2], protocol.TopicRoot+"%u/")
			switch f[1] {
			case "write":
				pub = append(pub, suffix)
			case "read":
				sub = append(sub, suffix)
			}
		}
	}
	if !sameSet(pub, protocol.KioskPublishes) || !sameSet(sub, protocol.KioskSubscribes) {
		t.Fatalf("README ACL lets kiosks write %v and read %v; the protocol says %v and %v",
			pub, sub, protocol.KioskPublishes, protocol.KioskSubscribes)
	}
	acl += "\nuser frank-hub-spy\ntopic readwrite frank/v1/#\n"
	block, must := "/etc/mosquitto/conf.d/frank.conf", []string{"require_certificate true", "use_identity_as_username true",
		"use_username_as_clientid true", "crlfile", "max_packet_size", "max_inflight_messages", "max_queued_messages", "set_tcp_nodelay true"}
	if passwords {
		block, must = "/etc/mosquitto/conf.d/frank-passwords.conf", []string{"password_file", "use_username_as_clientid true", "max_packet_size", "set_tcp_nodelay true"}
	}
	conf := strings.ReplaceAll(readmeBlock(t, block), "/etc/mosquitto/", m.etc+"/")
	for _, w := range must {
		if !strings.Contains(conf, w) {
			t.Fatalf("README's mosquitto config lacks %s", w)
		}
	}
	var err error
	if m.addr, err = demo.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(m.addr, ":")
	if passwords {
		conf = fmt.Sprintf("listener %s %s\n%s", port, host, conf)
	} else if !strings.Contains(conf, "\nlistener 8883\n") {
		t.Fatal("README's mosquitto config has no listener 8883")
	} else {
		conf = strings.Replace(conf, "\nlistener 8883\n", fmt.Sprintf("\nlistener %s %s\n", port, host), 1)
	}
	conf = "persistence false\nlog_dest stderr\n" + conf
	if os.Geteuid() == 0 {
		// Otherwise mosquitto drops to its own user, who cannot read our temp dir.
		conf = "user root\n" + conf
	}
	m.write("frank.conf", conf)
	m.write("frank.acl", acl)
	m.hubPassword, m.spyPassword = randomPassword(t), randomPassword(t)
	if passwords {
		m.setPassword("frank-hub", m.hubPassword)
		m.setPassword("frank-hub-spy", m.spyPassword)
	}
	t.Cleanup(func() {
		if m.cmd != nil {
			m.cmd.Process.Signal(syscall.SIGTERM)
			m.cmd.Wait()
		}
	})
	return m
}

func (m *mosquitto) write(name, text string) {
	if err := os.WriteFile(filepath.Join(m.etc, name), []byte(text), 0o600); err != nil {
		m.t.Fatal(err)
	}
}

// setPassword adds or replaces a user in the password file; with
// certificates it has nothing to do.
func (m *mosquitto) setPassword(user, pw string) {
	if !m.passwords {
		return
	}
	args := []string{"-b", filepath.Join(m.etc, "frank.passwd"), user, pw}
	if !fileExists(filepath.Join(m.etc, "frank.passwd")) {
		args = append([]string{"-c"}, args...)
	}
	if out, err := osexec.Command(m.passwd, args...).CombinedOutput(); err != nil {
		m.t.Fatalf("mosquitto_passwd %s: %v: %s", user, err, out)
	}
}

// start runs mosquitto and waits for its port.
func (m *mosquitto) start() error {
	m.cmd = osexec.Command(m.bin, "-c", filepath.Join(m.etc, "frank.conf"))
	m.cmd.Stdout, m.cmd.Stderr = output(m.t), output(m.t)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := m.cmd.Start(); err != nil {
		return err
	}
	return demo.WaitTCP(m.addr, 10*time.Second)
}

// kill kills mosquitto with SIGKILL and waits for it to be gone.
func (m *mosquitto) kill() {
	m.cmd.Process.Kill()
	m.cmd.Wait()
	m.cmd = nil
}

// reload makes mosquitto reread its password file and ACL.
func (m *mosquitto) reload() {
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		m.t.Fatal(err)
	}
}

// demo starts the whole system on this mosquitto, which starts once the
// demo kiosk is provisioned: with certificates, as the README's installer
// does it, after `hub ca broker-cert` gave it its own.
func (m *mosquitto) demo(cfg demo.Config) *demo.Demo {
	m.t.Helper()
	cfg.Dir = m.dir
	cfg.Broker, cfg.ExternalBroker, cfg.BrokerTLS = m.addr, true, !m.passwords
	cfg.HubEnv = append(cfg.HubEnv, "FRANK_BROKER_PASSWORD="+m.hubPassword)
	if !m.passwords {
		cfg.HubArgs = append(cfg.HubArgs, "--crl-file", filepath.Join(m.etc, "frank", "crl.pem"))
	}
	cfg.Provisioned = func(kiosk, password string) error {
		m.setPassword(kiosk, password)
		if !m.passwords {
			host, _, _ := strings.Cut(m.addr, ":")
			out, err := osexec.Command(filepath.Join(binDir, "hub"), "ca", "broker-cert", "--hosts", host, "--out", filepath.Join(m.etc, "frank"),
				"--data", filepath.Join(m.dir, "hub")).CombinedOutput()
			if err != nil {
				return fmt.Errorf("hub ca broker-cert: %v: %s", err, out)
			}
		}
		return m.start()
	}
	return startDemo(m.t, cfg)
}

// spyTLS is a client certificate for frank-hub-spy, a watcher with a
// hub's rights, from the demo's device CA.
func (m *mosquitto) spyTLS() *tls.Config {
	m.t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(m.dir, "hub", "hub.db"))
	if err != nil {
		m.t.Fatal(err)
	}
	defer db.Close()
	ks, err := soft.Open(filepath.Join(m.dir, "hub", "keys"))
	if err != nil {
		m.t.Fatal(err)
	}
	defer ks.Close()
	c := ca.New(db, ks, hsm.Opener(ks.Session), ca.Config{})
	defer c.Close()
	if err := c.Load(ctx); err != nil {
		m.t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := c.IssueHub(ctx, &key.PublicKey, "frank-hub-spy", nil)
	if err != nil {
		m.t.Fatal(err)
	}
	host, _, _ := strings.Cut(m.addr, ":")
	return &tls.Config{RootCAs: c.Pool(), ServerName: host, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// The hub and a kiosk run against a real mosquitto configured exactly as
// the README says, by certificates and, as the README's alternative, by
// passwords: the sale goes through, and one kiosk cannot read another's
// results, speak for it, or push it off by taking its client id. With
// certificates, a retired kiosk is refused once mosquitto reloads the CRL
// the hub keeps.
func TestMosquitto(t *testing.T) {
	for _, passwords := range []bool{false, true} {
		name := "certificates"
		if passwords {
			name = "passwords"
		}
		t.Run(name, func(t *testing.T) { mosquittoSale(t, passwords) })
	}
}

func mosquittoSale(t *testing.T, passwords bool) {
	m := newMosquitto(t, t.TempDir(), passwords)
	d := m.demo(demo.Config{KioskID: "mq-k1", Store: "mq-store"})
	status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "quantity": 2, "payment": card("tok_approve")})
	if status != http.StatusOK || len(rc.Labels) != 2 || rc.Total != 2*780 {
		t.Fatalf("sale through mosquitto: %d %+v", status, rc)
	}

	// A second kiosk, provisioned while mosquitto runs (SIGHUP rereads a
	// password file). It connects with mq-k1's client id: mosquitto must
	// make it mq-k2's own, or the demo kiosk and it would push each other off.
	k2 := provisionBare(t, d, "mq-k2", "mq-store", m.setPasswordIf())
	m.reload()
	var c mqtt.Client
	wait.Until(t, 10*time.Second, "mq-k2 to connect", func() error {
		c = mqtt.NewClient(k2.options().SetClientID("mq-k1").SetAutoReconnect(false))
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return fmt.Errorf("no CONNACK")
		}
		return tok.Error()
	})
	defer c.Disconnect(50)

	// Wrong credentials are refused outright: a wrong password, or no
	// certificate from the device CA.
	wrong := k2.options().SetClientID("bad").SetAutoReconnect(false).SetPassword("guess")
	if !passwords {
		wrong.SetTLSConfig(&tls.Config{InsecureSkipVerify: true})
	}
	if bad := mqtt.NewClient(wrong); func() bool { tok := bad.Connect(); return tok.WaitTimeout(10*time.Second) && tok.Error() == nil }() {
		bad.Disconnect(50)
		t.Fatal("mosquitto took wrong credentials")
	}

	// mq-k2 may not read mq-k1's results. Mosquitto 2.0 answers an MQTT
	// 3.1.1 subscription the ACL denies with a grant but delivers nothing on
	// it, so the proof is that nothing arrives when mq-k1 buys again.
	filter := protocol.KioskTopic("mq-k1", protocol.TopicPurchaseResult)
	leaked := make(chan []byte, 1)
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { leaked <- m.Payload() })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Logf("mosquitto's SUBACK for mq-k2 on mq-k1's results: %#x", tok.(*mqtt.SubscribeToken).Result()[filter])
	// Nor may it place an order in mq-k1's name: a listener with the hub's
	// rights sees its own probe on that topic but never the forgery.
	spyOpts := mqtt.NewClientOptions().SetClientID("frank-hub-spy").SetUsername("frank-hub-spy").SetAutoReconnect(false)
	if passwords {
		spyOpts.AddBroker("tcp://" + m.addr).SetPassword(m.spyPassword)
	} else {
		spyOpts.AddBroker("mqtts://" + m.addr).SetTLSConfig(m.spyTLS())
	}
	spy := mqtt.NewClient(spyOpts)
	if tok := spy.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer spy.Disconnect(50)
	heard := make(chan string, 4)
	purchase := protocol.KioskTopic("mq-k1", protocol.TopicPurchase)
	if tok := spy.Subscribe(purchase, 1, func(_ mqtt.Client, m mqtt.Message) { heard <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	c.Publish(purchase, 1, false, `{"forged":"by mq-k2"}`).WaitTimeout(5 * time.Second)
	spy.Publish(purchase, 1, false, `{"probe":true}`).WaitTimeout(5 * time.Second)
	for got := range heard {
		if strings.Contains(got, "forged") {
			t.Fatalf("mosquitto let mq-k2 publish on mq-k1's purchase topic")
		}
		if strings.Contains(got, "probe") {
			break
		}
	}

	// The spy, with the hub's rights, is the control: it does get the result.
	control := make(chan []byte, 4)
	if tok := spy.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { control <- m.Payload() }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	status, rc = sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")})
	if status != http.StatusOK || rc.RequestID == "" {
		t.Fatalf("second sale: %d %+v", status, rc)
	}
	for got := false; !got; {
		select {
		case b := <-control:
			got = strings.Contains(string(b), rc.RequestID)
		case <-time.After(10 * time.Second):
			t.Fatal("the control subscriber never saw mq-k1's result")
		}
	}
	select {
	case b := <-leaked:
		t.Fatalf("mq-k2 read mq-k1's result: %s", b)
	case <-time.After(500 * time.Millisecond):
	}
	if !c.IsConnectionOpen() {
		t.Fatal("mq-k2, connected with mq-k1's client id, was pushed off")
	}
	if !passwords {
		// Retired: the hub writes the CRL within seconds; after a reload
		// mosquitto refuses mq-k2's certificate.
		if out, err := d.Hub("kiosk", "retire", "mq-k2"); err != nil {
			t.Fatalf("retire: %v %s", err, out)
		}
		c.Disconnect(50)
		wait.For(t, 30*time.Second, "mosquitto refusing the retired kiosk", func() bool {
			m.reload()
			again := mqtt.NewClient(k2.options().SetAutoReconnect(false))
			tok := again.Connect()
			if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				again.Disconnect(0)
				return false
			}
			return true
		})
	}
	if out, err := d.Hub("ledger", "check"); err != nil {
		t.Fatalf("ledger check: %v\n%s", err, out)
	}
}

// setPasswordIf is how provisionBare tells this broker a kiosk's password:
// nil when kiosks hold certificates.
func (m *mosquitto) setPasswordIf() func(id, pw string) {
	if m.passwords {
		return m.setPassword
	}
	return nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func randomPassword(t *testing.T) string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
