package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// rawSession is an MQTT connection driven packet by packet, for what paho
// will not do: many filters in one SUBSCRIBE, no acknowledgements, MQTT 5.
type rawSession struct {
	t    *testing.T
	c    net.Conn
	v    byte
	in   chan packets.Packet
	done chan struct{}
}

// openSession connects as user over MQTT version v and returns once the
// CONNACK accepts it.
func openSession(t *testing.T, b *testBroker, user, pass, id string, v byte, edit func(*packets.Packet)) *rawSession {
	t.Helper()
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	s := &rawSession{t: t, c: c, v: v, in: make(chan packets.Packet, 1024), done: make(chan struct{})}
	t.Cleanup(func() { close(s.done); c.Close() })
	go s.read()
	pk := connectAs(user, pass, id, nil)
	if edit != nil {
		edit(&pk)
	}
	s.send(pk)
	if ack := s.next(); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("%s: %s, reason %#x", user, packets.PacketNames[ack.FixedHeader.Type], ack.ReasonCode)
	}
	return s
}

func (s *rawSession) read() {
	defer close(s.in)
	r := bufio.NewReader(s.c)
	for {
		hb, err := r.ReadByte()
		if err != nil {
			return
		}
		pk := packets.Packet{ProtocolVersion: s.v}
		if pk.FixedHeader.Decode(hb) != nil {
			return
		}
		n, _, err := packets.DecodeLength(r)
		if err != nil {
			return
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		pk.FixedHeader.Remaining = n
		switch pk.FixedHeader.Type {
		case packets.Connack:
			err = pk.ConnackDecode(body)
		case packets.Publish:
			err = pk.PublishDecode(body)
		case packets.Puback:
			err = pk.PubackDecode(body)
		case packets.Suback:
			err = pk.SubackDecode(body)
		case packets.Unsuback:
			err = pk.UnsubackDecode(body)
		}
		if err != nil {
			return
		}
		select {
		case s.in <- pk:
		case <-s.done:
			return
		}
	}
}

func (s *rawSession) send(pks ...packets.Packet) {
	s.t.Helper()
	for i := range pks {
		pks[i].ProtocolVersion = s.v
	}
	if _, err := s.c.Write(encode(pks...)); err != nil {
		s.t.Fatal(err)
	}
}

// next is the broker's next packet.
func (s *rawSession) next() packets.Packet {
	s.t.Helper()
	select {
	case pk, ok := <-s.in:
		if !ok {
			s.t.Fatal("the broker closed the connection")
		}
		return pk
	case <-time.After(5 * time.Second):
		s.t.Fatal("nothing from the broker in 5 s")
	}
	return packets.Packet{}
}

// expect fails unless the broker's next packet is of type typ, and
// returns it.
func (s *rawSession) expect(typ byte) packets.Packet {
	s.t.Helper()
	pk := s.next()
	if pk.FixedHeader.Type != typ {
		s.t.Fatalf("got %s, want %s", packets.PacketNames[pk.FixedHeader.Type], packets.PacketNames[typ])
	}
	return pk
}

// silent fails if the broker sends anything more within d, naming it.
func (s *rawSession) silent(d time.Duration, after string) {
	s.t.Helper()
	select {
	case pk, ok := <-s.in:
		if !ok {
			s.t.Fatalf("the broker closed the connection after %s", after)
		}
		s.t.Fatalf("a packet after %s, within %v: %s on %q, packet id %d", after, d,
			packets.PacketNames[pk.FixedHeader.Type], pk.TopicName, pk.PacketID)
	case <-time.After(d):
	}
}

func subscribeTo(id uint16, filters ...string) packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: id}
	for _, f := range filters {
		pk.Filters = append(pk.Filters, packets.Subscription{Filter: f, Qos: 1})
	}
	return pk
}

func unsubscribeFrom(id uint16, filters ...string) packets.Packet {
	pk := subscribeTo(id, filters...)
	pk.FixedHeader.Type = packets.Unsubscribe
	return pk
}

// ownTopics are the topics kiosk id may subscribe to.
func ownTopics(id string) []string {
	var out []string
	for _, suffix := range protocol.KioskSubscribes {
		out = append(out, protocol.KioskTopic(id, suffix))
	}
	return out
}

func codes(n int, code byte) []byte { return bytes.Repeat([]byte{code}, n) }

// publishAs publishes from c at QoS 1 and waits for the broker's PUBACK.
func publishAs(t *testing.T, c paho.Client, topic string, retain bool, payload string) {
	t.Helper()
	if tok := c.Publish(topic, 1, retain, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
	if retain {
		// mochi acknowledges a QoS 1 publish before it hands it to the
		// subscribers, so one who subscribes just after could get it live
		// as well as retained. It reads a client's packets in order: once
		// the next publish is acknowledged, this one has been handed on.
		if tok := c.Publish("frank/v1/test/flush", 1, false, "{}"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish after %s: %v", topic, tok.Error())
		}
	}
}

// One SUBSCRIBE from a kiosk names at most maxFilters filters, each once:
// mochi sends the retained config again for every filter that names it,
// so the audit's SUBSCRIBE naming it 1,900 times came back 38 times its
// size. Such a SUBSCRIBE is refused whole, and nothing retained is sent.
func TestSubscribeFiltersBounded(t *testing.T) {
	b := start(t, nil)
	hub, err := b.dial(t, "frank-hub", "hub-secret", "frank-hub-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	own := ownTopics("k1")
	cfgTopic := protocol.KioskTopic("k1", protocol.TopicConfig)
	publishAs(t, hub, cfgTopic, true, `{"kiosk_id":"k1"}`)
	k := openSession(t, b, "k1", "k1-secret", "k1", 4, nil)

	// What a kiosk does: its own topics, and the retained config once.
	k.send(subscribeTo(1, own...))
	if got := k.expect(packets.Suback).ReasonCodes; !bytes.Equal(got, codes(len(own), 1)) {
		t.Fatalf("its own %d topics: SUBACK %x", len(own), got)
	}
	if pk := k.expect(packets.Publish); pk.TopicName != cfgTopic {
		t.Fatalf("retained on %s, want its config", pk.TopicName)
	}
	k.silent(200*time.Millisecond, "the retained config")

	// maxFilters distinct filters: each judged by the ACL as ever.
	full := slices.Clone(own)
	for i := len(full); i < maxFilters; i++ {
		full = append(full, protocol.KioskTopic(fmt.Sprintf("k%d", i), protocol.TopicConfig))
	}
	k.send(subscribeTo(2, full...))
	want := append(codes(len(own), 1), codes(maxFilters-len(own), 0x80)...)
	if got := k.expect(packets.Suback).ReasonCodes; !bytes.Equal(got, want) {
		t.Fatalf("%d filters: SUBACK %x, want %x", maxFilters, got, want)
	}
	k.expect(packets.Publish)
	k.silent(200*time.Millisecond, "the retained config")

	for i, filters := range [][]string{
		append(slices.Clone(full), protocol.KioskTopic("k1", "x")), // one too many
		{own[0], cfgTopic, cfgTopic},                               // its config twice
		slices.Repeat([]string{cfgTopic}, 1900),                    // the audit's
	} {
		k.send(subscribeTo(uint16(10+i), filters...))
		if got := k.expect(packets.Suback).ReasonCodes; !bytes.Equal(got, codes(len(filters), 0x80)) {
			t.Fatalf("%d filters: SUBACK %x, want each refused", len(filters), got)
		}
		k.silent(200*time.Millisecond, "a refused SUBSCRIBE")
	}

	// An UNSUBSCRIBE of too many filters unsubscribes nothing.
	k.send(unsubscribeFrom(20, append(slices.Clone(full), protocol.KioskTopic("k1", "x"))...))
	k.expect(packets.Unsuback)
	publishAs(t, hub, protocol.KioskTopic("k1", protocol.TopicPurchaseResult), false, "{}")
	k.expect(packets.Publish)
	if n := b.Refused()["filters"]; n != 4 {
		t.Fatalf("refused for their filters %d times, want 4", n)
	}
}

// A kiosk's subscriptions and unsubscriptions spend its message budget,
// one a filter, as its publishes do: a kiosk cannot subscribe over and
// over to have its retained config sent again.
func TestSubscriptionsSpendKioskBudget(t *testing.T) {
	clk := newTestClock()
	own := ownTopics("k1") // a budget of four more has room for one SUBSCRIBE of them
	b := start(t, func(c *Config) { c.KioskRate, c.KioskBurst, c.KioskConnects, c.now = 0.1, len(own)+4, 100, clk.Now })
	hub, err := b.dial(t, "frank-hub", "hub-secret", "frank-hub-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	results := protocol.KioskTopic("k1", protocol.TopicPurchaseResult)
	if own[0] != results {
		t.Fatalf("the test unsubscribes %s first; KioskSubscribes starts with %s", results, own[0])
	}
	k := openSession(t, b, "k1", "k1-secret", "k1", 4, nil)
	k.send(subscribeTo(1, own...))
	if got := k.expect(packets.Suback).ReasonCodes; !bytes.Equal(got, codes(len(own), 1)) {
		t.Fatalf("first SUBSCRIBE: %x", got)
	}
	k.send(subscribeTo(2, own...))
	if got := k.expect(packets.Suback).ReasonCodes; !bytes.Equal(got, codes(len(own), 0x80)) {
		t.Fatalf("SUBSCRIBE over the budget: %x, want each refused", got)
	}
	k.send(unsubscribeFrom(3, own...))
	k.expect(packets.Unsuback)
	publishAs(t, hub, results, false, "{}")
	k.expect(packets.Publish) // the UNSUBSCRIBE over the budget unsubscribed nothing
	if n := b.Refused()["rate"]; n != 2 {
		t.Fatalf("refused over the budget %d times, want 2", n)
	}

	k.send(unsubscribeFrom(4, own[:4]...)) // the four left
	k.expect(packets.Unsuback)
	publishAs(t, hub, results, false, "{}")
	k.silent(200*time.Millisecond, "unsubscribing")
	k.send(publish(protocol.KioskTopic("k1", protocol.TopicTelemetry), []byte("{}"), 1, false))
	k.expect(packets.Puback) // acknowledged, and dropped: the budget is spent
	if n := b.Refused()["rate"]; n != 3 {
		t.Fatalf("refused over the budget %d times, want 3", n)
	}
	clk.Add(10 * time.Second) // earns one
	k.send(subscribeTo(5, results))
	if got := k.expect(packets.Suback).ReasonCodes; !bytes.Equal(got, []byte{1}) {
		t.Fatalf("after 10 s: SUBACK %x", got)
	}
}

// The broker holds at most KioskInflight messages a kiosk has not
// acknowledged, and sends it more as it acknowledges; the hub's own
// connection keeps mochi's large window.
func TestKioskInflightBounded(t *testing.T) {
	const sent, window = 200, 64 // the default
	b := start(t, nil)
	hub, err := b.dial(t, "frank-hub", "hub-secret", "frank-hub-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	results := protocol.KioskTopic("k1", protocol.TopicPurchaseResult)
	k := openSession(t, b, "k1", "k1-secret", "k1", 4, nil)
	k.send(subscribeTo(1, results))
	k.expect(packets.Suback)
	for range sent {
		publishAs(t, hub, results, false, "{}")
	}
	wait.For(t, 5*time.Second, "the messages past the window dropped", func() bool { return b.Refused()["inflight"] == sent-window })
	var ids []uint16
	for range window {
		ids = append(ids, k.expect(packets.Publish).PacketID)
	}
	k.silent(200*time.Millisecond, "the window's worth")
	cl, ok := b.srv.Clients.Get("k1")
	if !ok {
		t.Fatal("k1 not connected")
	}
	if n := cl.State.Inflight.Len(); n != window {
		t.Fatalf("%d messages held for k1, want %d", n, window)
	}
	if n := b.Dropped(); n != sent-window {
		t.Fatalf("Dropped() = %d, want the %d past the window", n, sent-window)
	}
	for _, id := range ids {
		k.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
	}
	wait.For(t, 5*time.Second, "k1's acknowledgements", func() bool { return cl.State.Inflight.Len() == 0 })
	publishAs(t, hub, results, false, "{}")
	k.expect(packets.Publish)

	// The hub's own connection, not acknowledging either, is not held to it.
	h := openSession(t, b, "frank-hub", "hub-secret", "frank-hub-raw", 4, nil)
	h.send(subscribeTo(1, protocol.TopicRoot+"+/"+protocol.TopicTelemetry))
	h.expect(packets.Suback)
	k2, err := b.dial(t, "k2", "k2-secret", "k2", nil)
	if err != nil {
		t.Fatal(err)
	}
	for range sent - 50 { // within k2's burst
		publishAs(t, k2, protocol.KioskTopic("k2", protocol.TopicTelemetry), false, "{}")
	}
	hcl, ok := b.srv.Clients.Get("frank-hub-raw")
	if !ok {
		t.Fatal("the hub's connection is gone")
	}
	wait.For(t, 5*time.Second, "every message held for the hub", func() bool { return hcl.State.Inflight.Len() == sent-50 })
}
