package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/wait"
)

// A kiosk stolen with valid credentials, and a stranger with none, attack
// the broker, against the embedded one and against mosquitto configured as
// the README says. They try every topic of other kiosks as a last will
// (retained and not), as a publish and as a subscription, take other
// clients' ids, send packets of 200 MiB, open many connections, and spend
// a customer's prepaid balance by her login alone, over MQTT and through a
// kiosk's API. Afterwards no other kiosk's state has changed (its config,
// its labels, its presence, its alerts), no money has moved but for the
// victim's own sale, nothing of the victim's reached the attackers, and
// neither the hub nor the broker grew by 64 MiB.
func TestRogueKiosk(t *testing.T) {
	for _, broker := range []string{"embedded", "mosquitto"} {
		t.Run(broker, func(t *testing.T) { rogueAttack(t, broker == "mosquitto") })
	}
}

func rogueAttack(t *testing.T, useMosquitto bool) {
	ctx := context.Background()
	var d *demo.Demo
	var m *mosquitto
	if useMosquitto {
		m = newMosquitto(t, t.TempDir(), false)
		d = m.demo(demo.Config{KioskID: "victim", Store: "victim-store", Sheets: 2})
	} else {
		// The rogue connects afresh for nearly every attack, faster than a
		// kiosk's connect budget allows; that budget has its own tests
		// (hub/broker TestKioskConnectRate), these attacks are after the rest.
		d = startDemo(t, demo.Config{KioskID: "victim", Store: "victim-store", Sheets: 2, HubArgs: []string{"--kiosk-connects", "-1"}})
	}
	addr := d.BrokerAddr()
	var setPassword func(id, pw string) // nil: kiosks hold certificates
	if m != nil {
		setPassword = m.setPasswordIf()
	}
	rogueB := provisionBare(t, d, "rogue", "rogue-store", setPassword)
	spyB := provisionBare(t, d, "rogue-spy", "rogue-store", setPassword) // a second stolen kiosk, that listens
	victim2B := provisionBare(t, d, "victim2", "victim-store", setPassword)
	if m != nil {
		m.reload()
	}
	roguePW := rogueB.password
	// A customer with a prepaid balance the rogue would like to spend.
	if out, err := d.HubWithEnv([]string{"FRANK_ACCOUNT_PASSWORD=correct horse battery"}, "account", "add", "alice", "--zip", "02134"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := d.Hub("account", "fund", "alice", "--amount", "50.00"); err != nil {
		t.Fatal(err, out)
	}

	// victim2 is a bare kiosk that must not lose its session: no reconnects
	// hide a takeover. It also listens to its own config, which must stay.
	lost := make(chan error, 1)
	configs := make(chan string, 16)
	var v2 paho.Client
	wait.For(t, 15*time.Second, "victim2 connects", func() bool {
		v2 = paho.NewClient(victim2B.options().SetAutoReconnect(false).
			SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }))
		tok := v2.Connect()
		return tok.WaitTimeout(5*time.Second) && tok.Error() == nil
	})
	defer v2.Disconnect(50)
	v2.Subscribe(protocol.KioskTopic("victim2", protocol.TopicConfig), 1, func(_ paho.Client, msg paho.Message) {
		select {
		case configs <- string(msg.Payload()):
		default:
		}
	})
	v2.Publish(protocol.KioskTopic("victim2", protocol.TopicStatus), 1, true, protocol.StatusOnline).WaitTimeout(5 * time.Second)
	beating := make(chan struct{})
	defer close(beating)
	go func() { // victim2's heartbeat, so that silence is not what marks it offline
		for {
			b, _ := json.Marshal(protocol.Telemetry{KioskID: "victim2", At: time.Now().UTC(), Firmware: "bare", LabelsLeft: 50, Paper: "ok", Printer: "ok", Scale: "ok", InService: true})
			v2.Publish(protocol.KioskTopic("victim2", protocol.TopicTelemetry), 0, false, b)
			select {
			case <-beating:
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	select {
	case <-configs:
	case <-time.After(15 * time.Second):
		t.Fatal("victim2 got no config from the hub")
	}

	before := d.Cards().Totals()
	hubRSS, brokerPID := rss(d.HubPID()), d.HubPID()
	if m != nil {
		brokerPID = m.cmd.Process.Pid
	}
	brokerRSS := rss(brokerPID)
	peakHub, peakBroker := watchRSS(d.HubPID()), watchRSS(brokerPID)

	// A stolen kiosk listens wherever it can, for anything of the victims'.
	var leaked atomic.Value
	spy := paho.NewClient(spyB.options().SetAutoReconnect(false))
	if tok := spy.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("rogue-spy connect: %v", tok.Error())
	}
	defer spy.Disconnect(50)
	for _, filter := range []string{"#", "frank/#", protocol.TopicRoot + "+/#", protocol.TopicRoot + "victim/#",
		protocol.KioskTopic("victim", protocol.TopicPurchaseResult), protocol.KioskTopic("victim", protocol.TopicConfig),
		protocol.KioskTopic("victim", protocol.TopicPurchase), protocol.HubSubscription(protocol.TopicPurchase),
		"$share/rogue/" + protocol.TopicRoot + "+/purchase", "$SYS/#"} {
		spy.Subscribe(filter, 1, func(_ paho.Client, msg paho.Message) {
			if !strings.HasPrefix(msg.Topic(), protocol.TopicRoot+"rogue-spy/") {
				leaked.Store(msg.Topic() + " " + string(msg.Payload()))
			}
		}).WaitTimeout(5 * time.Second)
	}

	victimLabel := d.Sheets()[0] + "-01"
	bogusConfig := `{"kiosk_id":"victim","heartbeat_s":5,"rates":{"version":"rogue","effective":"2020-01-01","classes":[]}}`
	payload := func(victim, suffix string) []byte {
		switch suffix {
		case protocol.TopicPurchase:
			return purchaseFor(victim, "rogue-buy", victimLabel, protocol.Payment{Method: protocol.PayCardToken, Token: "tok_approve"})
		case protocol.TopicPrint:
			b, _ := json.Marshal(protocol.PrintReport{RequestID: "rogue-print", KioskID: victim,
				Labels: []protocol.LabelOutcome{{LabelSerial: victimLabel, Outcome: protocol.PrintFailed}}})
			return b
		case protocol.TopicStock:
			b, _ := json.Marshal(protocol.StockLoad{RequestID: "rogue-stock", KioskID: victim, Sheets: d.Sheets()})
			return b
		case protocol.TopicStatus:
			return []byte(protocol.StatusOffline)
		case protocol.TopicConfig:
			return []byte(strings.ReplaceAll(bogusConfig, `"victim"`, `"`+victim+`"`))
		}
		return []byte(`{"request_id":"rogue","status":"ok","indicia":[]}`)
	}
	suffixes := append(append([]string{}, protocol.KioskPublishes...), protocol.KioskSubscribes...)
	suffixes = append(suffixes, "#", "+")

	// Last wills on every topic of both victims, retained and not; the
	// connection then dies, so a will the broker kept is published.
	for _, victim := range []string{"victim", "victim2"} {
		for _, suffix := range suffixes {
			for _, retain := range []bool{false, true} {
				c, _ := rawConnect(t, rogueB.dial, "rogue", roguePW, "rogue-will", &will{topic: protocol.KioskTopic(victim, suffix), payload: payload(victim, suffix), retain: retain})
				if c != nil {
					c.Close()
				}
			}
		}
	}
	// Publishes on every topic of the victims, QoS 0 and 1, retained and not.
	for _, victim := range []string{"victim", "victim2"} {
		for _, suffix := range suffixes {
			for _, qos := range []byte{0, 1} {
				for _, retain := range []bool{false, true} {
					c, code := rawConnect(t, rogueB.dial, "rogue", roguePW, "rogue-pub", nil)
					if c == nil || code != 0 {
						t.Fatalf("rogue cannot connect to publish: code %d", code)
					}
					writePacket(c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
						TopicName: protocol.KioskTopic(victim, suffix), PacketID: 7, Payload: payload(victim, suffix)})
					c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					io.Copy(io.Discard, c) // the PUBACK, or the close a refusal brings
					c.Close()
				}
			}
		}
	}
	// Others' client ids: the victims', their old firmware's, and a hub's.
	for _, id := range []string{"victim", "victim2", "frank-kiosk-victim", "frank-hub", "frank-hub-1"} {
		if c, code := rawConnect(t, rogueB.dial, "rogue", roguePW, id, nil); c != nil {
			if code == 0 { // held a moment, which would push someone off
				wait.Never(t, 50*time.Millisecond, "victim2 pushed off by a rogue under its client id", func() bool { return len(lost) > 0 })
			}
			c.Close()
		}
	}
	// A prepaid customer's balance, by her login alone, over MQTT.
	rogue := paho.NewClient(rogueB.options().SetAutoReconnect(false))
	if tok := rogue.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("rogue connect: %v", tok.Error())
	}
	rogueAnswers := make(chan []byte, 4)
	rogue.Subscribe(protocol.KioskTopic("rogue", protocol.TopicPurchaseResult), 1, func(_ paho.Client, msg paho.Message) { rogueAnswers <- msg.Payload() }).WaitTimeout(5 * time.Second)
	rogue.Publish(protocol.KioskTopic("rogue", protocol.TopicPurchase), 1, false,
		purchaseFor("rogue", "rogue-alice", d.Sheets()[1]+"-01", protocol.Payment{Method: protocol.PayAccount, AccountID: "alice"})).WaitTimeout(5 * time.Second)
	select {
	case raw := <-rogueAnswers:
		if res, err := protocol.DecodePurchaseResult(raw); err != nil || res.Status != protocol.ResultRejected || res.Error.Code != protocol.CodePaymentInvalid {
			t.Fatalf("alice's balance by login over MQTT: %s", raw)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no answer to the rogue's account purchase")
	}
	// Oversize packets: a stranger's 200 MiB CONNECT, the rogue's 200 MiB
	// PUBLISH; and more connections from one address than the cap.
	for _, authed := range []bool{false, true} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if authed {
			c.Close()
			if c, _ = rawConnect(t, rogueB.dial, "rogue", roguePW, "rogue-big", nil); c == nil {
				t.Fatal("rogue cannot connect")
			}
			writeHeader(c, packets.Publish, 200<<20)
		} else {
			writeHeader(c, packets.Connect, 200<<20)
		}
		if n := spray(c, 16<<20); n >= 16<<20 {
			t.Errorf("the broker read all of 16 MiB of a 200 MiB packet (authenticated %v)", authed)
		}
		c.Close()
	}
	var flood []net.Conn
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			flood = append(flood, c)
			writeHeader(c, packets.Connect, 60<<10) // a CONNECT that never comes
		}
	}
	for _, c := range flood {
		c.Close()
	}
	// A stranger: no credentials, wrong ones, a will, a PUBLISH before any
	// CONNECT; over plain TCP, and over TLS without a certificate.
	plain := func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
	tlsNoCert := func() (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	}
	for _, try := range []struct{ user, pass string }{{"", ""}, {"victim", "guess"}, {"frank-hub", "guess"}, {"alice", "correct horse battery"}} {
		for _, dial := range []func() (net.Conn, error){plain, tlsNoCert} {
			if c, code := rawConnect(t, dial, try.user, try.pass, "stranger", &will{topic: protocol.KioskTopic("victim", protocol.TopicConfig), payload: []byte(bogusConfig), retain: true}); c != nil {
				if code == 0 {
					t.Errorf("a stranger as %q connected", try.user)
				}
				c.Close()
			}
		}
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		writePacket(c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
			TopicName: protocol.KioskTopic("victim", protocol.TopicConfig), Payload: []byte(bogusConfig)})
		c.Close()
	}
	// The customer's balance by login through a kiosk's own API.
	st, body, err := d.Sell(ctx, map[string]any{"rate_class": "1100", "weight_mg": 20_000,
		"payment": map[string]string{"method": "account", "account_id": "alice"}})
	if err != nil || st == http.StatusOK || !strings.Contains(string(body), string(protocol.CodePaymentInvalid)) {
		t.Fatalf("alice's balance by login through the kiosk API: %d %s %v", st, body, err)
	}
	st, body, err = d.Sell(ctx, map[string]any{"rate_class": "1100", "weight_mg": 20_000,
		"payment": map[string]string{"method": "account", "pay_code": "PAY-AAAA-BBBB-CCCC-DDDD"}})
	if err != nil || st == http.StatusOK || !strings.Contains(string(body), string(protocol.CodeUnauthorized)) {
		t.Fatalf("alice's balance with a made-up pay code through the kiosk API: %d %s %v", st, body, err)
	}

	// The victim sells, on its first label, at the hub's rates.
	status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")})
	if status != http.StatusOK || rc.Status != "ok" || len(rc.Labels) != 1 || rc.Labels[0].LabelSerial != victimLabel {
		t.Fatalf("the victim's sale after the attack: %d %+v", status, rc)
	}
	hubPeak, brokerPeak := peakHub(), peakBroker()
	t.Logf("memory: hub %d MiB, peak %d MiB; broker %d MiB, peak %d MiB", hubRSS>>20, hubPeak>>20, brokerRSS>>20, brokerPeak>>20)
	if hubPeak-hubRSS > 64<<20 {
		t.Errorf("the hub grew by %d MiB under attack", (hubPeak-hubRSS)>>20)
	}
	if brokerPeak-brokerRSS > 64<<20 {
		t.Errorf("the broker grew by %d MiB under attack", (brokerPeak-brokerRSS)>>20)
	}
	select {
	case err := <-lost:
		t.Fatalf("victim2 lost its session: %v", err)
	default:
	}
	// victim2's retained config is the hub's, as a fresh subscriber sees it.
	fresh := make(chan string, 1)
	v2.Unsubscribe(protocol.KioskTopic("victim2", protocol.TopicConfig)).WaitTimeout(5 * time.Second)
	v2.Subscribe(protocol.KioskTopic("victim2", protocol.TopicConfig), 1, func(_ paho.Client, msg paho.Message) {
		select {
		case fresh <- string(msg.Payload()):
		default:
		}
	}).WaitTimeout(5 * time.Second)
	select {
	case c := <-fresh:
		if strings.Contains(c, "rogue") {
			t.Fatalf("victim2's retained config is the rogue's: %s", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("victim2's retained config is gone")
	}
	if v, _ := leaked.Load().(string); v != "" {
		t.Fatalf("the rogue received another kiosk's message: %.200s", v)
	}
	// No money moved but the victim's one stamp.
	wait.Until(t, 10*time.Second, "the victim's capture, which follows its answer", func() error {
		if after := d.Cards().Totals(); after.Captured-before.Captured != 780 || after.Refunded != before.Refunded || after.Open != 0 {
			return fmt.Errorf("card gateway before %+v, after %+v: want the victim's 780 mills only", before, after)
		}
		return nil
	})
	var balance int64
	if err := sqlOpen(t, filepath.Join(d.Dir(), "hub", "hub.db")).QueryRow(`SELECT balance FROM accounts WHERE login = 'alice'`).Scan(&balance); err != nil || balance != 50_000 {
		t.Fatalf("alice's balance is %d mills (%v), want 50000", balance, err)
	}
	// No alert against either victim: no fraud, no offline.
	var open []alerts.Alert
	out, err := d.Hub("alerts", "list", "--open")
	if err != nil || json.Unmarshal([]byte(out), &open) != nil {
		t.Fatalf("alerts: %v %s", err, out)
	}
	for _, a := range open {
		if (a.Kind == alerts.Fraud || a.Kind == alerts.KioskOffline || a.Kind == alerts.Unconfirmed) &&
			(strings.Contains(a.Subject, "victim") || strings.Contains(a.Subject, d.Sheets()[0]) || strings.Contains(a.Message, "victim")) {
			t.Errorf("alert against a victim: %+v", a)
		}
	}
	ledgerOK(t, d)
}

// purchaseFor is a purchase in kiosk's name for one stamp on label.
func purchaseFor(kiosk, id, label string, pay protocol.Payment) []byte {
	b, _ := json.Marshal(protocol.PurchaseRequest{RequestID: id, KioskID: kiosk, OriginZIP: "94544", RateTable: "usps-2025-07-13",
		Items: []protocol.PurchaseItem{{RateClass: "1100", WeightMg: 20_000, AmountMills: 780, LabelSerial: label}}, Payment: pay})
	return b
}

// will is a CONNECT's last will.
type will struct {
	topic   string
	payload []byte
	retain  bool
}

// rawConnect sends an MQTT 3.1.1 CONNECT over a connection dial opens, and
// reads the CONNACK's return code: -1 if the broker closed the connection
// without one. The connection is nil if it could not be made.
func rawConnect(t *testing.T, dial func() (net.Conn, error), user, pass, clientID string, w *will) (net.Conn, int) {
	t.Helper()
	c, err := dial()
	if err != nil {
		return nil, -1
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: clientID}}
	if user != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(user)
	}
	if pass != "" { // certificate kiosks have none
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(pass)
	}
	if w != nil {
		pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload, pk.Connect.WillRetain, pk.Connect.WillQos = true, w.topic, w.payload, w.retain, 1
	}
	writePacket(c, pk)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[0]>>4 != packets.Connack {
		return c, -1
	}
	c.SetReadDeadline(time.Time{})
	return c, int(ack[3])
}

func writePacket(c net.Conn, pk packets.Packet) {
	var b bytes.Buffer
	switch pk.FixedHeader.Type {
	case packets.Connect:
		pk.ConnectEncode(&b)
	case packets.Publish:
		pk.PublishEncode(&b)
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write(b.Bytes())
}

// writeHeader sends a fixed header announcing n bytes to follow.
func writeHeader(c net.Conn, kind byte, n int) {
	var b bytes.Buffer
	fh := packets.FixedHeader{Type: kind, Remaining: n}
	fh.Encode(&b)
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write(b.Bytes())
}

// spray writes up to n bytes and returns how many the peer took before it
// closed the connection (or stopped reading for 2 s).
func spray(c net.Conn, n int) int {
	chunk := make([]byte, 64<<10)
	sent := 0
	for sent < n {
		c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		k, err := c.Write(chunk)
		sent += k
		if err != nil {
			break
		}
	}
	return sent
}

// rss is a process's resident memory in bytes.
func rss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// watchRSS samples a process's memory every 10 ms; the function it returns
// stops that and gives the peak.
func watchRSS(pid int) func() int64 {
	var peak atomic.Int64
	peak.Store(rss(pid))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if r := rss(pid); r > peak.Load() {
					peak.Store(r)
				}
			}
		}
	})
	return func() int64 {
		close(stop)
		wg.Wait()
		return peak.Load()
	}
}
