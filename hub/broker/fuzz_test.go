package broker

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// invariants watches what the broker lets kiosks do: every message it
// publishes for a kiosk, its last will included, and every subscription it
// grants must be one the kiosk's ACL allows.
type invariants struct {
	mqtt.HookBase
	mu  sync.Mutex
	bad string
}

func (h *invariants) ID() string { return "fuzz-invariants" }

func (h *invariants) Provides(b byte) bool {
	return b == mqtt.OnPublished || b == mqtt.OnWillSent || b == mqtt.OnSubscribed
}

func (h *invariants) fail(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bad == "" {
		h.bad = fmt.Sprintf(format, args...)
	}
}

func kioskUser(cl *mqtt.Client) (string, bool) {
	u := string(cl.Properties.Username)
	return u, u != "frank-hub" && !cl.Net.Inline
}

func (h *invariants) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if u, ok := kioskUser(cl); ok && !pk.Ignore && !KioskMay(u, pk.TopicName, true) {
		h.fail("kiosk %q published on %q", u, pk.TopicName)
	}
	if u, ok := kioskUser(cl); ok && pk.FixedHeader.Retain && pk.TopicName != protocol.KioskTopic(u, protocol.TopicStatus) {
		h.fail("kiosk %q retained a message on %q", u, pk.TopicName)
	}
}

func (h *invariants) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if u, ok := kioskUser(cl); ok && !kioskWillMay(u, pk.TopicName, pk.FixedHeader.Retain) {
		h.fail("kiosk %q's will went to %q (retain %v)", u, pk.TopicName, pk.FixedHeader.Retain)
	}
}

func (h *invariants) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	u, ok := kioskUser(cl)
	if !ok {
		return
	}
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] < 0x80 && !KioskMay(u, f.Filter, false) {
			h.fail("kiosk %q was granted %q", u, f.Filter)
		}
	}
}

func (h *invariants) violation() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bad
}

func encode(pks ...packets.Packet) []byte {
	var b bytes.Buffer
	for _, pk := range pks {
		switch pk.FixedHeader.Type {
		case packets.Connect:
			pk.ConnectEncode(&b)
		case packets.Publish:
			pk.PublishEncode(&b)
		case packets.Subscribe:
			pk.SubscribeEncode(&b)
		case packets.Unsubscribe:
			pk.UnsubscribeEncode(&b)
		case packets.Puback:
			pk.PubackEncode(&b)
		case packets.Disconnect:
			pk.DisconnectEncode(&b)
		}
	}
	return b.Bytes()
}

func connectAs(user, pass, id string, will *packets.ConnectParams) packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(pass)}}
	if will != nil {
		pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload, pk.Connect.WillRetain, pk.Connect.WillQos =
			true, will.WillTopic, will.WillPayload, will.WillRetain, 1
	}
	return pk
}

func publish(topic string, payload []byte, qos byte, retain bool) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain}, TopicName: topic, PacketID: 1, Payload: payload}
}

// FuzzBrokerSession feeds whole client sessions, seeded from the
// protocol's vectors, through the broker's connect, authentication and
// ACL path. Whatever the bytes, the broker never lets a kiosk publish,
// retain, leave a will on or subscribe to what its ACL forbids, and it
// lets go of a connection whose peer has gone.
func FuzzBrokerSession(f *testing.F) {
	k1 := connectAs("k1", "k1-secret", "k1", nil)
	for _, v := range prototest.PurchaseRequests {
		f.Add(encode(k1, publish(protocol.KioskTopic("k1", protocol.TopicPurchase), []byte(v.JSON), 1, false)))
		f.Add(encode(k1, publish(protocol.KioskTopic("k2", protocol.TopicPurchase), []byte(v.JSON), 0, false)))
	}
	for _, suffix := range append(append([]string{}, protocol.KioskPublishes...), protocol.KioskSubscribes...) {
		f.Add(encode(connectAs("k1", "k1-secret", "k2", &packets.ConnectParams{WillTopic: protocol.KioskTopic("k2", suffix), WillPayload: []byte("x"), WillRetain: true})))
		f.Add(encode(k1, publish(protocol.KioskTopic("k2", suffix), []byte("x"), 1, true)))
		f.Add(encode(k1, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 2,
			Filters: packets.Subscriptions{{Filter: protocol.KioskTopic("k2", suffix), Qos: 1}, {Filter: "#", Qos: 1}}}))
	}
	f.Add(encode(connectAs("k1", "wrong", "k1", nil), publish(protocol.KioskTopic("k2", protocol.TopicConfig), []byte("x"), 0, true)))
	f.Add(encode(publish(protocol.KioskTopic("k2", protocol.TopicConfig), []byte("x"), 0, true)))
	f.Add(encode(connectAs("frank-hub", "hub-secret", "frank-hub-1", nil), publish(protocol.KioskTopic("k2", protocol.TopicConfig), []byte("{}"), 1, true)))
	f.Add([]byte{0x10, 0xff, 0xff, 0xff, 0x7f}) // a CONNECT of 256 MiB
	// No budgets: every session is the same k1, and a spent budget would
	// refuse the sessions before they reach the ACL.
	b := start(f, func(c *Config) { c.KioskRate, c.KioskConnects = -1, -1 })
	inv := &invariants{}
	if err := b.srv.AddHook(inv, nil); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		done := make(chan struct{})
		go func() {
			b.srv.EstablishConnection("fuzz", &scriptConn{r: bytes.NewReader(data)})
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the broker still holds a connection whose peer has gone")
		}
		if v := inv.violation(); v != "" {
			t.Fatal(v)
		}
	})
}

// scriptConn is a client that sends its bytes and then drops the line
// (the broker reads EOF, as from a dead kiosk: a will it kept is sent),
// taking whatever the broker answers.
type scriptConn struct {
	r *bytes.Reader
}

var fuzzAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1883}

func (c *scriptConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return fuzzAddr }
func (c *scriptConn) RemoteAddr() net.Addr             { return fuzzAddr }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }
