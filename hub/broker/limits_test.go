package broker

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// testClock is the kiosks' budgets' clock, which stands still until the
// test moves it: no refill happens behind the test's back.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// connack sends a raw CONNECT as user (MQTT version v) and returns the
// CONNACK's reason code.
func connack(t *testing.T, addr string, v byte, user, pass string) byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pk := connectAs(user, pass, user, nil)
	pk.ProtocolVersion = v
	var out bytes.Buffer
	if err := pk.ConnectEncode(&out); err != nil {
		t.Fatal(err)
	}
	c.Write(out.Bytes())
	ack := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 {
		t.Fatalf("%s (MQTT %d): CONNACK %x %v", user, v, ack, err)
	}
	return ack[3]
}

// A kiosk's publish budget is its id's, not its connection's: reconnecting
// does not buy a fresh burst (the audit's ten connections of five
// publishes each all got through a budget of five).
func TestKioskRateOutlivesReconnect(t *testing.T) {
	clk := newTestClock()
	b := start(t, func(c *Config) { c.KioskRate, c.KioskBurst, c.KioskConnects, c.now = 0.1, 5, 100, clk.Now })
	hub, err := b.dial(t, "frank-hub", "hub-secret", "frank-hub-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	delivered := func() int { mu.Lock(); defer mu.Unlock(); return n }
	topic := protocol.KioskTopic("k1", protocol.TopicTelemetry)
	if tok := hub.Subscribe(topic, 0, func(paho.Client, paho.Message) { mu.Lock(); n++; mu.Unlock() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	burst := func(publishes int) {
		k1, err := b.dial(t, "k1", "k1-secret", "k1", nil)
		if err != nil {
			t.Fatal(err)
		}
		for range publishes {
			if tok := k1.Publish(topic, 1, false, "{}"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
		k1.Disconnect(10)
	}
	for range 10 { // ten connections, five publishes each
		burst(5)
	}
	wait.For(t, 5*time.Second, "the five of the budget delivered", func() bool { return delivered() >= 5 })
	if got, dropped := delivered(), b.Refused()["rate"]; got != 5 || dropped != 45 {
		t.Fatalf("%d of 50 publishes over 10 connections delivered, %d dropped; want 5 and 45", got, dropped)
	}
	// The budget still refills: one each 10 s.
	clk.Add(10 * time.Second)
	burst(3)
	wait.For(t, 5*time.Second, "the refilled one delivered", func() bool { return delivered() >= 6 })
	if got, dropped := delivered(), b.Refused()["rate"]; got != 6 || dropped != 47 {
		t.Fatalf("after 10 s: %d delivered, %d dropped; want 6 and 47", got, dropped)
	}
}

// One kiosk id may connect only so often: a burst, then one a while.
// Beyond it the CONNECT is refused with a code that says try later, and
// counted. Failed logins naming the kiosk do not spend its budget, other
// kiosks and the hub are not touched, and the budget refills.
func TestKioskConnectRate(t *testing.T) {
	clk := newTestClock()
	b := start(t, func(c *Config) { c.KioskConnects, c.now = 3, clk.Now }) // three a minute: one each 20 s
	for range 5 {
		if code := connack(t, b.Addr(), 4, "k1", "wrong"); code != packets.Err3NotAuthorized.Code {
			t.Fatalf("wrong password: code %d", code)
		}
	}
	for i := range 3 {
		if _, err := b.dial(t, "k1", "k1-secret", "k1", nil); err != nil {
			t.Fatalf("connect %d of a budget of 3 (after 5 failed logins as k1): %v", i+1, err)
		}
	}
	if code := connack(t, b.Addr(), 4, "k1", "k1-secret"); code != packets.Err3ServerUnavailable.Code {
		t.Fatalf("4th connect (MQTT 3.1.1): code %d, want %d (server unavailable)", code, packets.Err3ServerUnavailable.Code)
	}
	if code := connack(t, b.Addr(), 5, "k1", "k1-secret"); code != packets.ErrConnectionRateExceeded.Code {
		t.Fatalf("4th connect (MQTT 5): code %#x, want %#x (connection rate exceeded)", code, packets.ErrConnectionRateExceeded.Code)
	}
	if _, err := b.dial(t, "k1", "k1-secret", "k1", nil); err == nil {
		t.Fatal("paho connected past the budget")
	}
	if n := b.Refused()["connect_rate"]; n < 3 { // paho tries 3.1.1, then 3.1
		t.Fatalf("refused for the connect rate %d times, want 3 or more", n)
	}
	if _, err := b.dial(t, "k2", "k2-secret", "k2", nil); err != nil {
		t.Fatalf("k2, which has its own budget: %v", err)
	}
	for i := range 5 {
		if _, err := b.dial(t, "frank-hub", "hub-secret", fmt.Sprintf("frank-hub-%d", i), nil); err != nil {
			t.Fatalf("the hub, unlimited, connect %d: %v", i+1, err)
		}
	}
	clk.Add(20 * time.Second)
	if _, err := b.dial(t, "k1", "k1-secret", "k1", nil); err != nil {
		t.Fatalf("after 20 s: %v", err)
	}
	if _, err := b.dial(t, "k1", "k1-secret", "k1", nil); err == nil {
		t.Fatal("two connects after 20 s, which earns one")
	}
}

// A fleet that reconnects at once, after its link to the hub dropped or
// the hub restarted, spends one connect per kiosk: none is refused.
func TestFleetReconnectNotRefused(t *testing.T) {
	const kiosks = 100
	b := start(t, func(c *Config) { c.MaxConnsPerIP = -1 }) // the default budgets; every kiosk here is on loopback
	ids := make([]string, kiosks)
	for i := range ids {
		ids[i] = fmt.Sprintf("kiosk-%03d", i)
		b.kiosks.set(ids[i], ids[i]+"-secret")
	}
	clients := make([]paho.Client, kiosks)
	all := func(what string, do func(i int) error) {
		t.Helper()
		errs := make([]error, kiosks)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() { errs[i] = do(i) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s: %s: %v", what, ids[i], err)
			}
		}
	}
	connect := func(i int) error {
		c, err := b.dial(t, ids[i], ids[i]+"-secret", ids[i], nil)
		clients[i] = c
		return err
	}
	all("the fleet connects", connect)
	for round := range 3 { // the link drops three times
		all("the fleet drops", func(i int) error { clients[i].Disconnect(0); return nil })
		all(fmt.Sprintf("the fleet reconnects (%d)", round+1), connect)
	}
	if n := b.Refused()["connect_rate"]; n != 0 {
		t.Fatalf("%d reconnects refused for the connect rate", n)
	}
}

// The budgets are kept by kiosk id while they are spent, and dropped once
// full again, so the map holds only kiosks seen lately.
func TestKioskBudgetsPruned(t *testing.T) {
	clk := newTestClock()
	b := start(t, func(c *Config) { c.KioskRate, c.KioskBurst, c.KioskConnects, c.now = 1, 10, 6, clk.Now })
	kept := func() int { b.hook.mu.Lock(); defer b.hook.mu.Unlock(); return len(b.hook.kiosks) }
	for _, id := range []string{"k1", "k2"} {
		k, err := b.dial(t, id, id+"-secret", id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok := k.Publish(protocol.KioskTopic(id, protocol.TopicTelemetry), 1, false, "{}"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	wait.Never(t, 100*time.Millisecond, "a spent budget dropped", func() bool { return kept() != 2 })
	clk.Add(9 * time.Second) // messages full after 1 s; the connects want 10 s
	wait.Never(t, 100*time.Millisecond, "a budget dropped before it was full", func() bool { return kept() != 2 })
	clk.Add(time.Second)
	wait.For(t, 5*time.Second, "the full budgets dropped", func() bool { return kept() == 0 })
}

// A session outlives its connection by maxSessionExpiry at most, even when
// an MQTT 5 client asks for longer as it leaves (mochi caps it only at
// CONNACK); a shorter one is kept as asked.
func TestSessionExpiryHeldAtDisconnect(t *testing.T) {
	b := start(t, nil)
	for asked, want := range map[uint32]uint32{0xFFFFFFFF: maxSessionExpiry, maxSessionExpiry + 1: maxSessionExpiry, 120: 120} {
		k := openSession(t, b, "k1", "k1-secret", "k1", 5, func(pk *packets.Packet) {
			pk.Connect.Clean = false
			pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 600, true
		})
		cl, ok := b.srv.Clients.Get("k1")
		if !ok {
			t.Fatal("k1 not connected")
		}
		d := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}}
		d.Properties.SessionExpiryInterval, d.Properties.SessionExpiryIntervalFlag = asked, true
		k.send(d)
		wait.For(t, 5*time.Second, "the DISCONNECT taken", cl.Closed)
		if got := cl.Properties.Props.SessionExpiryInterval; got != want {
			t.Errorf("DISCONNECT asking %d s: session kept %d s, want %d", asked, got, want)
		}
	}
}

// addrConn is a connection from addr, for the hook alone.
type addrConn struct {
	net.Conn
	addr net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.addr }

// Failed logins are counted by source, as connections are: an IPv6 /64,
// which one subscriber holds, is one source however many of its
// addresses it uses.
func TestAuthFailuresCountedPerSlashSixtyFour(t *testing.T) {
	b := start(t, func(c *Config) { c.AuthFailures = 5 })
	pipe, _ := net.Pipe()
	defer pipe.Close()
	try := func(ip string) {
		cl := b.srv.NewClient(addrConn{Conn: pipe, addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}, "tcp", "", false)
		if b.hook.OnConnectAuthenticate(cl, connectAs("k1", "wrong", "k1", nil)) {
			t.Fatalf("a wrong password from %s let in", ip)
		}
	}
	slow := func() int { b.kiosks.mu.Lock(); defer b.kiosks.mu.Unlock(); return b.kiosks.slow }
	for i := 1; i <= 50; i++ {
		try(fmt.Sprintf("2001:db8:1:2:%x::%x", i, i))
		try(fmt.Sprintf("2001:db8:1:2::%x", i))
	}
	if n := slow(); n != 5 {
		t.Fatalf("100 failed logins from 100 addresses of one /64: %d paid for bcrypt, want 5", n)
	}
	try("2001:db8:1:3::1") // another /64
	try("198.51.100.7")    // IPv4 addresses are each their own
	try("198.51.100.8")
	if n := slow(); n != 8 {
		t.Fatalf("three more sources: %d paid for bcrypt in all, want 8", n)
	}
}
