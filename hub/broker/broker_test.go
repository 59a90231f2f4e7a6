package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// fleet is an in-memory kiosk register whose passwords can be replaced.
type fleet struct {
	mu   sync.Mutex
	pw   map[string]string
	slow int // checks that would have paid for bcrypt
}

func (f *fleet) Authenticate(id, pw string, slow bool) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if slow {
		f.slow++
	}
	return f.pw[id], f.pw[id] != "" && f.pw[id] == pw
}

func (f *fleet) Stamps(context.Context) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for k, v := range f.pw {
		out[k] = v
	}
	return out, nil
}

func (f *fleet) set(id, pw string) {
	f.mu.Lock()
	f.pw[id] = pw
	f.mu.Unlock()
}

// syncBuffer is a log sink that tests read while the broker writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testBroker struct {
	*Broker
	kiosks *fleet
	log    *syncBuffer
}

func start(t testing.TB, edit func(*Config)) *testBroker {
	t.Helper()
	f := &fleet{pw: map[string]string{"k1": "k1-secret", "k2": "k2-secret"}}
	cfg := Config{Addr: "127.0.0.1:0", HubUser: "frank-hub", HubPassword: "hub-secret", Kiosks: f, Passwords: true, RecheckEvery: 20 * time.Millisecond}
	if edit != nil {
		edit(&cfg)
	}
	buf := &syncBuffer{}
	b, err := Start(cfg, slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &testBroker{Broker: b, kiosks: f, log: buf}
}

func (b *testBroker) dial(t *testing.T, user, pass, clientID string, edit func(*paho.ClientOptions)) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(clientID).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetOrderMatters(false).SetConnectTimeout(5 * time.Second)
	if edit != nil {
		edit(opts)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

// A kiosk's last will is held to the ACL: every topic of another kiosk,
// retained or not, is refused at CONNECT, and so is a retained will on the
// kiosk's own topics other than its status.
func TestWillObeysACL(t *testing.T) {
	b := start(t, nil)
	all := append(append([]string{}, protocol.KioskPublishes...), protocol.KioskSubscribes...)
	all = append(all, "config/x", "#", "+")
	for _, suffix := range all {
		for _, retain := range []bool{false, true} {
			topic := protocol.KioskTopic("k2", suffix)
			_, err := b.dial(t, "k1", "k1-secret", "k1", func(o *paho.ClientOptions) { o.SetBinaryWill(topic, []byte("x"), 1, retain) })
			if err == nil || !strings.Contains(err.Error(), "not Authorized") {
				t.Errorf("will on %s (retain %v): connected or refused for another reason: %v", topic, retain, err)
			}
		}
	}
	for _, suffix := range protocol.KioskSubscribes {
		topic := protocol.KioskTopic("k1", suffix)
		if _, err := b.dial(t, "k1", "k1-secret", "k1", func(o *paho.ClientOptions) { o.SetBinaryWill(topic, []byte("x"), 1, false) }); err == nil {
			t.Errorf("will on its own %s, which only the hub publishes: connected", topic)
		}
	}
	for _, suffix := range protocol.KioskPublishes {
		topic := protocol.KioskTopic("k1", suffix)
		_, err := b.dial(t, "k1", "k1-secret", "k1", func(o *paho.ClientOptions) { o.SetBinaryWill(topic, []byte("x"), 1, true) })
		if ok := suffix == protocol.TopicStatus; ok != (err == nil) {
			t.Errorf("retained will on its own %s: err %v", suffix, err)
		}
		if _, err := b.dial(t, "k1", "k1-secret", "k1", func(o *paho.ClientOptions) { o.SetBinaryWill(topic, []byte("x"), 1, false) }); err != nil {
			t.Errorf("will on its own %s: %v", suffix, err)
		}
	}
	if n := b.Refused()["will_topic"]; n < int64(len(all)*2) {
		t.Errorf("refused wills counted %d", n)
	}
}

// A refused will leaves the victim's retained config as the hub set it.
func TestWillCannotOverwriteRetained(t *testing.T) {
	b := start(t, nil)
	hub, err := b.dial(t, "frank-hub", "hub-secret", "frank-hub-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfgTopic := protocol.KioskTopic("k2", protocol.TopicConfig)
	if tok := hub.Publish(cfgTopic, 1, true, "good config"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// The rogue connects with a will on k2's config, then its connection dies.
	raw, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "k1",
			UsernameFlag: true, Username: []byte("k1"), PasswordFlag: true, Password: []byte("k1-secret"),
			WillFlag: true, WillTopic: cfgTopic, WillPayload: []byte("evil"), WillRetain: true, WillQos: 1}}
	var out bytes.Buffer
	if err := connect.ConnectEncode(&out); err != nil {
		t.Fatal(err)
	}
	raw.Write(out.Bytes())
	ack := make([]byte, 4)
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(raw, ack); err != nil || ack[3] != 0x05 {
		t.Fatalf("CONNACK %x %v: want return code 5, not authorized", ack, err)
	}
	raw.Close()
	got := make(chan string, 1)
	k2, err := b.dial(t, "k2", "k2-secret", "k2", nil)
	if err != nil {
		t.Fatal(err)
	}
	k2.Subscribe(cfgTopic, 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	select {
	case s := <-got:
		if s != "good config" {
			t.Fatalf("k2's retained config is %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no retained config")
	}
}

// A kiosk cannot push another off by connecting with its client id: a
// kiosk's client id is its user name, whatever it sends.
func TestNoSessionTakeover(t *testing.T) {
	b := start(t, nil)
	lost := make(chan error, 1)
	victim, err := b.dial(t, "k2", "k2-secret", "k2", func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"k2", "frank-kiosk-k2", "frank-hub-1"} {
		if _, err := b.dial(t, "k1", "k1-secret", id, nil); err != nil {
			t.Fatalf("k1 as client id %s: %v", id, err)
		}
	}
	// k1's later connections take over k1's own earlier ones, never k2's.
	got := make(chan struct{}, 1)
	// Subscribed before the hub publishes: the ping is not retained.
	if tok := victim.Subscribe(protocol.KioskTopic("k2", protocol.TopicConfig), 1, func(paho.Client, paho.Message) { got <- struct{}{} }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("k2 could not subscribe: %v", tok.Error())
	}
	hub, err := b.dial(t, "frank-hub", "hub-secret", "frank-hub-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	hub.Publish(protocol.KioskTopic("k2", protocol.TopicConfig), 1, false, "ping")
	select {
	case <-got:
	case err := <-lost:
		t.Fatalf("k2 was pushed off: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("k2 heard nothing")
	}
	if !victim.IsConnectionOpen() {
		t.Fatal("k2 is not connected")
	}
}

// connectHeader is a CONNECT's fixed header announcing n bytes to follow.
func connectHeader(n int) []byte {
	var b bytes.Buffer
	fh := packets.FixedHeader{Type: packets.Connect, Remaining: n}
	fh.Encode(&b)
	return b.Bytes()
}

// A packet longer than the limit is refused from its fixed header: the
// connection closes before its body is read.
func TestPacketSizeBoundBeforeAuth(t *testing.T) {
	b := start(t, nil)
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(connectHeader(200 << 20))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("connection announcing 200 MiB: read %v, want it closed", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A connection that never sends a CONNECT is closed at the deadline.
func TestConnectDeadline(t *testing.T) {
	b := start(t, func(c *Config) { c.ConnectTimeout = 100 * time.Millisecond })
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x10}) // the first byte of a CONNECT, then nothing
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("silent connection: read %v, want it closed by the broker", err)
	}
}

// One address holds at most MaxConnsPerIP connections; the next one is
// closed at once, and a slot comes back when one closes.
func TestConnsPerAddress(t *testing.T) {
	b := start(t, func(c *Config) { c.MaxConnsPerIP = 3 })
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	extra, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("4th connection: read %v, want it closed", err)
	}
	held[0].Close()
	wait.For(t, 5*time.Second, "a free slot", func() bool {
		_, err := b.dial(t, "k1", "k1-secret", "k1", nil)
		return err == nil
	})
}

// Packets the broker refuses are logged without their payloads, which can
// carry payment tokens.
func TestRefusedPayloadsNotLogged(t *testing.T) {
	b := start(t, nil)
	k1, err := b.dial(t, "k1", "k1-secret", "k1", nil)
	if err != nil {
		t.Fatal(err)
	}
	secret := `{"payment":{"method":"card_token","token":"tok_SECRET_4242"}}`
	// Another kiosk's topic at QoS 1: MQTT 3.1.1 has no refusal but to
	// disconnect, and mochi logs the packet it refused.
	k1.Publish(protocol.KioskTopic("k2", protocol.TopicPurchase), 1, false, secret).WaitTimeout(2 * time.Second)
	wait.For(t, 5*time.Second, "the refusal", func() bool { return b.Refused()["acl"] > 0 && strings.Contains(b.log.String(), "payload_bytes") })
	if strings.Contains(b.log.String(), "SECRET") {
		t.Fatalf("a refused payload reached the log:\n%s", b.log.String())
	}
}

// A kiosk that publishes faster than its budget has the excess dropped.
func TestKioskRate(t *testing.T) {
	b := start(t, func(c *Config) { c.KioskRate, c.KioskBurst = 0.1, 5 }) // one more each 10 s: a slow run cannot earn many
	hub, err := b.dial(t, "frank-hub", "hub-secret", "frank-hub-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	hub.Subscribe(protocol.KioskTopic("k1", protocol.TopicTelemetry), 0, func(paho.Client, paho.Message) { mu.Lock(); n++; mu.Unlock() })
	k1, err := b.dial(t, "k1", "k1-secret", "k1", nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		k1.Publish(protocol.KioskTopic("k1", protocol.TopicTelemetry), 1, false, "{}").WaitTimeout(2 * time.Second)
	}
	wait.For(t, 5*time.Second, "the drops counted", func() bool { return b.Refused()["rate"] >= 40 })
	mu.Lock()
	defer mu.Unlock()
	if n > 8 {
		t.Fatalf("%d of 50 publishes got through a budget of 5 and one each 10 s", n)
	}
}

// Replacing a kiosk's password closes its open session and refuses the old
// password from then on.
func TestReplacedPasswordClosesSession(t *testing.T) {
	b := start(t, nil)
	lost := make(chan error, 1)
	if _, err := b.dial(t, "k1", "k1-secret", "k1", func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	}); err != nil {
		t.Fatal(err)
	}
	other, err := b.dial(t, "k2", "k2-secret", "k2", nil)
	if err != nil {
		t.Fatal(err)
	}
	b.kiosks.set("k1", "new-secret")
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the session with the old password is still open")
	}
	if _, err := b.dial(t, "k1", "k1-secret", "k1", nil); err == nil {
		t.Fatal("the old password still connects")
	}
	if _, err := b.dial(t, "k1", "new-secret", "k1", nil); err != nil {
		t.Fatalf("the new password: %v", err)
	}
	if !other.IsConnectionOpen() {
		t.Fatal("k2, whose password did not change, was disconnected")
	}
}

// Failed logins from one address are limited before bcrypt is paid.
func TestAuthFailuresLimited(t *testing.T) {
	b := start(t, func(c *Config) { c.AuthFailures = 3 })
	for range 6 {
		b.dial(t, "k1", "wrong", "k1", nil)
	}
	if n := b.Refused()["auth_rate"]; n < 2 {
		t.Fatalf("refused by the failure limit %d times, want the attempts past 3", n)
	}
	if b.kiosks.slow > 3 {
		t.Fatalf("%d slow checks, want at most 3", b.kiosks.slow)
	}
}
