package hub_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/appliance/identity"
	"github.com/frank-postage/frank/hub"
)

// A kiosk whose clock is an hour behind the hub's (a Pi back from a power
// cut on the last time it saved, NTP not yet synced or blocked by the
// store's firewall) reconnects after the hub restarts. The hub's server
// certificate is issued anew at each start; it was valid from 5 minutes
// before the hub's clock, so the kiosk refused it for as long as its clock
// lagged, and could not sell. It is now valid from the CA's start.
func TestKioskBehindReconnectsAfterHubRestart(t *testing.T) {
	t.Parallel()
	// The hub first started two hours ago: its clock reads 2 h earlier
	// until the restart.
	var hubOffset atomic.Int64
	hubOffset.Store(int64(-2 * time.Hour))
	e := newEnvWith(t, func(c *hub.Config) {
		c.TLS, c.KioskPasswords, c.BrokerListen = "ca", false, ""
		c.HTTPListen = "127.0.0.1:0"
		c.Ledger.Now = func() time.Time { return time.Now().Add(time.Duration(hubOffset.Load())) }
	})
	code, pin := e.enrollCode("kiosk-9", "store-a")
	files := identity.In(t.TempDir())
	if _, err := identity.Enroll(context.Background(), e.h.URL(), code, pin, files); err != nil {
		t.Fatal(err)
	}
	kioskClock := func() time.Time { return time.Now().Add(-time.Hour) }
	id, err := identity.Load(files, e.h.URL(), pin, kioskClock)
	if err != nil {
		t.Fatal(err)
	}
	connect := func() error {
		host, _, _ := net.SplitHostPort(e.h.BrokerTLSAddr)
		tc := id.ClientTLS(host)
		tc.Time = kioskClock // what Go's verification reads: the kiosk's system clock
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("mqtts://" + e.h.BrokerTLSAddr).SetClientID("kiosk-9").
			SetTLSConfig(tc).SetAutoReconnect(false).SetConnectRetry(false))
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return context.DeadlineExceeded
		}
		if tok.Error() == nil {
			c.Disconnect(50)
		}
		return tok.Error()
	}
	if err := connect(); err != nil {
		t.Fatalf("before the hub restarts: %v", err)
	}
	e.h.Close()
	hubOffset.Store(0)
	e.start()
	if err := connect(); err != nil {
		t.Fatalf("after the hub restarted, the kiosk (clock 1 h behind) cannot reconnect: %v", err)
	}
}

// The hub's own certificates are valid from the CA's start, and renewed
// two thirds into their life from their issue, not every hour.
func TestHubCertificateRenewedAtTwoThirds(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) {
		c.TLS, c.KioskPasswords, c.BrokerListen = "ca", false, ""
		c.HTTPListen = "127.0.0.1:0"
	})
	ctx := context.Background()
	first := hub.ServerCertificate(e.h)
	if ca := e.h.CA().Certificate(); !first.NotBefore.Equal(ca.NotBefore) {
		t.Fatalf("the hub's certificate is valid from %s, want the CA's start %s", first.NotBefore, ca.NotBefore)
	}
	e.clock.Set(e.clock.Now().Add(19 * 24 * time.Hour))
	hub.RenewTLS(e.h, ctx)
	if c := hub.ServerCertificate(e.h); !c.Equal(first) {
		t.Fatalf("renewed after 19 of its 30 days: serial %s, was %s", c.SerialNumber, first.SerialNumber)
	}
	e.clock.Set(e.clock.Now().Add(2 * 24 * time.Hour))
	hub.RenewTLS(e.h, ctx)
	if c := hub.ServerCertificate(e.h); c.Equal(first) || !c.NotAfter.After(first.NotAfter) {
		t.Fatalf("not renewed after 21 of its 30 days: valid until %s", c.NotAfter)
	}
}
