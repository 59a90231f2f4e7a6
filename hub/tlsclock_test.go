package hub_test

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/appliance/identity"
	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/testbench/wait"
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
	e := newTLSEnv(t)
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

// A kiosk judges its certificate by the hub's clock, read from the Date of
// the hub's answers. A Pi back from a store's two-week closure runs on the
// time it saved, and with NTP blocked it stays behind: by its own clock it
// renewed only after the hub's broker had refused the certificate as
// expired, and the kiosk was out of service until re-enrolled. One ahead
// asked too early and was refused every hour.
func TestKioskRenewsByTheHubsClock(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t)
	ctx := context.Background()
	start := e.clock.Now()
	for _, tc := range []struct {
		kiosk string
		skew  time.Duration // the kiosk's clock against the hub's
	}{{"kiosk-7", -12 * 24 * time.Hour}, {"kiosk-8", 12 * 24 * time.Hour}} {
		e.clock.Set(start)
		code, pin := e.enrollCode(tc.kiosk, "store-a")
		files := identity.In(t.TempDir())
		if _, err := identity.Enroll(ctx, e.h.URL(), code, pin, files); err != nil {
			t.Fatal(err)
		}
		skew := tc.skew
		id, err := identity.Load(files, e.h.URL(), pin, func() time.Time { return e.clock.Now().Add(skew) })
		if err != nil {
			t.Fatal(err)
		}
		if err := id.SyncClock(ctx); err != nil {
			t.Fatal(err)
		}
		if d := id.HubNow().Sub(e.clock.Now()); d < -2*time.Second || d > 2*time.Second {
			t.Fatalf("%s: the hub's clock read %s off", tc.kiosk, d)
		}
		// 9 days into 30: the kiosk ahead reads 21 by its own clock.
		e.clock.Set(start.Add(9 * 24 * time.Hour))
		if id.Due() {
			t.Fatalf("%s (clock %s off): due 9 days into 30", tc.kiosk, skew)
		}
		// 21 days into 30: the kiosk behind reads 9 by its own clock.
		e.clock.Set(start.Add(21 * 24 * time.Hour))
		first := id.Leaf()
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); id.Run(runCtx, 20*time.Millisecond, slog.New(slog.DiscardHandler)) }()
		wait.For(t, 10*time.Second, tc.kiosk+"'s certificate renewed", func() bool {
			return id.Leaf().SerialNumber.Cmp(first.SerialNumber) != 0
		})
		stop()
		<-done
		if id.Due() {
			t.Fatalf("%s: due again right after renewal", tc.kiosk)
		}
	}
}

// A kiosk whose certificate expired by the hub's clock while its own runs
// behind learns the hub's clock all the same (the clock read presents no
// certificate: an expired one fails the handshake), and so says on its
// screen that it needs a new enrollment code.
func TestKioskExpiredByTheHubsClockSaysSo(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t)
	ctx := context.Background()
	now := time.Now()
	e.clock.Set(now.Add(-40 * 24 * time.Hour)) // enrolled 40 days ago
	code, pin := e.enrollCode("kiosk-7", "store-a")
	files := identity.In(t.TempDir())
	if _, err := identity.Enroll(ctx, e.h.URL(), code, pin, files); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(now)
	// The Pi's clock runs 20 days behind: by it, the certificate is good.
	id, err := identity.Load(files, e.h.URL(), pin, func() time.Time { return time.Now().Add(-20 * 24 * time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	if id.Expired() {
		t.Fatal("expired by the kiosk's own clock: the test's premise is wrong")
	}
	if err := id.SyncClock(ctx); err != nil {
		t.Fatalf("the hub's clock not read with an expired certificate: %v", err)
	}
	if !id.Expired() {
		t.Fatalf("the kiosk holds its certificate good (the hub's clock read %s); by the hub's it expired %s", id.HubNow(), id.Leaf().NotAfter)
	}
}
