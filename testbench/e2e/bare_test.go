package e2e

import (
	"crypto/tls"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/appliance/identity"
	"github.com/frank-postage/frank/testbench/demo"
)

// bare is how a bare MQTT client logs in as a provisioned kiosk, for what
// the kiosk firmware would never send: with the certificate `kiosk enroll`
// got it (mqtts), as a stolen kiosk would hold it; or, on a broker that
// takes them, with its password.
type bare struct {
	id       string
	password string      // only for a password login
	tls      *tls.Config // nil for a password login
	addr     string      // the broker
}

// provisionBare provisions kiosk id in store and enrolls it the way the
// demo's broker wants: a certificate, unless the broker takes passwords
// (a mosquitto demo without TLS), when set is told the password.
func provisionBare(t *testing.T, d *demo.Demo, id, store string, set func(id, pw string)) bare {
	t.Helper()
	out, err := d.Hub("kiosk", "add", id, "--store", store)
	if err != nil {
		t.Fatal(err)
	}
	b := bare{id: id, addr: d.BrokerAddr()}
	if set != nil {
		b.password = password(t, out)
		set(id, b.password)
		return b
	}
	var code string
	for _, line := range strings.Split(out, "\n") {
		if c, ok := strings.CutPrefix(line, "enrollment code: "); ok {
			code, _, _ = strings.Cut(c, " ")
		}
	}
	dir := t.TempDir()
	if out, err := exec.Command(filepath.Join(binDir, "kiosk"), "enroll", "--hub", d.HubURL(), "--code", code,
		"--enrollment", filepath.Join(dir, "enrollment.json")).CombinedOutput(); err != nil {
		t.Fatalf("kiosk enroll %s: %v\n%s", id, err, out)
	}
	ident, err := identity.Load(identity.In(dir), d.HubURL(), d.Fingerprint(), nil)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(b.addr)
	b.tls = ident.ClientTLS(host)
	return b
}

// options are paho's options for logging in as the kiosk.
func (b bare) options() *mqtt.ClientOptions {
	scheme := "tcp://"
	if b.tls != nil {
		scheme = "mqtts://"
	}
	return mqtt.NewClientOptions().AddBroker(scheme + b.addr).SetClientID(b.id).SetUsername(b.id).SetPassword(b.password).
		SetTLSConfig(b.tls).SetOrderMatters(false)
}

// dial opens the connection a raw MQTT session runs over: TLS with the
// kiosk's certificate, or TCP.
func (b bare) dial() (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if b.tls != nil {
		return tls.DialWithDialer(d, "tcp", b.addr, b.tls)
	}
	return d.Dial("tcp", b.addr)
}
