package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/protocol"
)

// testCA mints certificates as the hub's device CA would.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	n    int64
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test device CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: k, n: 100}
}

func (ca *testCA) issue(t *testing.T, cn string, server bool, notAfter time.Time) tls.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca.n++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.n), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// revocations is a settable revocation list.
type revocations struct {
	mu sync.Mutex
	m  map[string]bool
}

func (r *revocations) Revoked(context.Context) (map[string]bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for k, v := range r.m {
		out[k] = v
	}
	return out, nil
}

func (r *revocations) revoke(c tls.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]bool{}
	}
	r.m[fmt.Sprintf("%x", c.Leaf.SerialNumber)] = true
}

// Over mqtts a client is who its certificate says: the device CA's
// certificate for kiosk A acts as A whatever user name it sends, and never
// as B; plain TCP, no certificate, another CA's, an expired or a revoked
// certificate are refused, and a session whose certificate is revoked is
// closed.
func TestTLSClientCertificates(t *testing.T) {
	ca := newTestCA(t)
	rev := &revocations{}
	b := start(t, func(c *Config) {
		c.Addr, c.Passwords = "", false
		c.TLSAddr = "127.0.0.1:0"
		c.TLS = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "frank-hub-1", true, time.Now().Add(time.Hour))}, ClientCAs: ca.pool()}
		c.Revoked = rev
	})
	dial := func(cert *tls.Certificate, user string, roots *x509.CertPool, edit func(*paho.ClientOptions)) (paho.Client, error) {
		tc := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		opts := paho.NewClientOptions().AddBroker("mqtts://" + b.TLSAddr()).SetClientID(user).SetUsername(user).
			SetTLSConfig(tc).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
		if edit != nil {
			edit(opts)
		}
		c := paho.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("connect: %v", tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(50) })
		return c, nil
	}
	k1 := ca.issue(t, "k1", false, time.Now().Add(time.Hour))
	hubCert := ca.issue(t, "frank-hub-1", false, time.Now().Add(time.Hour))
	hub, err := dial(&hubCert, "frank-hub-1", ca.pool(), nil)
	if err != nil {
		t.Fatalf("the hub's certificate: %v", err)
	}
	lost := make(chan struct{})
	a, err := dial(&k1, "k2", ca.pool(), func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	})
	if err != nil {
		t.Fatalf("kiosk k1's certificate: %v", err)
	}
	// k1, claiming to be k2, may use k1's topics and not k2's.
	got := make(chan string, 4)
	for _, id := range []string{"k1", "k2"} {
		hub.Subscribe(protocol.KioskTopic(id, protocol.TopicTelemetry), 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() }).WaitTimeout(5 * time.Second)
	}
	a.Publish(protocol.KioskTopic("k2", protocol.TopicTelemetry), 0, false, "{}").WaitTimeout(5 * time.Second)
	a.Publish(protocol.KioskTopic("k1", protocol.TopicTelemetry), 0, false, "{}").WaitTimeout(5 * time.Second)
	select {
	case topic := <-got:
		if topic != protocol.KioskTopic("k1", protocol.TopicTelemetry) {
			t.Fatalf("k1's certificate published on %s", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("k1 could not publish on its own topic")
	}

	other := newTestCA(t)
	stranger := other.issue(t, "k1", false, time.Now().Add(time.Hour))
	expired := ca.issue(t, "k1", false, time.Now().Add(-time.Minute))
	for name, cert := range map[string]*tls.Certificate{"no certificate": nil, "another CA's": &stranger, "an expired one": &expired} {
		if _, err := dial(cert, "k1", ca.pool(), nil); err == nil {
			t.Errorf("%s connected", name)
		}
	}
	if c, err := net.Dial("tcp", b.TLSAddr()); err == nil {
		c.Write(encode(connectAs("k1", "k1-secret", "k1", nil)))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4)
		if n, _ := c.Read(buf); n >= 4 && buf[0] == 0x20 && buf[3] == 0 {
			t.Error("plain MQTT on the TLS listener connected")
		}
		c.Close()
	}

	rev.revoke(k1)
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the session of a revoked certificate is still open")
	}
	if _, err := dial(&k1, "k1", ca.pool(), nil); err == nil {
		t.Fatal("a revoked certificate connected")
	}
}
