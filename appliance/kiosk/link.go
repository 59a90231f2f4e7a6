package kiosk

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/url"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/protocol"
)

// Link is the kiosk's session with its hub, by topic suffix (protocol's
// Topic... names under the kiosk's own topics). In the field it is the
// MQTT session to the broker; the kiosk's tests use one in memory.
type Link interface {
	// Open starts the session and keeps it up. On every connection it
	// subscribes to Subscribed, each message of which arrives on deliver,
	// and announces the kiosk online.
	Open(deliver func(suffix string, payload []byte))
	// Up reports whether the session is connected now (not merely trying
	// to reconnect).
	Up() bool
	// Send publishes payload on suffix, waiting up to wait for the broker
	// to take it (0: not at all); it reports whether it was taken.
	Send(suffix string, payload []byte, wait time.Duration) bool
	// Close announces the kiosk offline and ends the session.
	Close()
}

// Subscribed are the suffixes a kiosk receives: its config, ops'
// commands, and the hub's answers.
var Subscribed = []string{protocol.TopicConfig, protocol.TopicCommand, protocol.TopicPurchaseResult, protocol.TopicStockResult,
	protocol.TopicRefundResult, protocol.TopicPrintResult, protocol.TopicStaffResult}

// mqttLink is the MQTT session: offline as the last will, online once up,
// and the subscriptions renewed on every reconnect.
type mqttLink struct {
	id, broker string
	username   string
	password   string
	tls        *tls.Config
	dial       func(network, addr string) (net.Conn, error)
	log        *slog.Logger
	client     mqtt.Client
}

var _ Link = (*mqttLink)(nil)

func newMQTTLink(cfg Config, log *slog.Logger) *mqttLink {
	return &mqttLink{id: cfg.ID, broker: cfg.Broker, username: cfg.Username, password: cfg.Password, tls: cfg.TLS, dial: cfg.Dial, log: log}
}

func (l *mqttLink) Open(deliver func(suffix string, payload []byte)) {
	status := protocol.KioskTopic(l.id, protocol.TopicStatus)
	opts := mqtt.NewClientOptions().
		AddBroker(l.broker).
		SetClientID(l.id). // the broker makes it the user name anyway: no kiosk takes another's session
		SetUsername(l.username).
		SetPassword(l.password).
		SetCleanSession(true).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(2*time.Second).
		SetTLSConfig(l.tls).
		SetMaxReconnectInterval(30*time.Second).
		SetKeepAlive(10*time.Second).
		SetBinaryWill(status, []byte(protocol.StatusOffline), 1, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { l.log.Warn("hub connection lost", "err", err) }).
		SetOnConnectHandler(func(c mqtt.Client) {
			for _, suffix := range Subscribed {
				topic := protocol.KioskTopic(l.id, suffix)
				t := c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) { deliver(suffix, m.Payload()) })
				if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
					l.log.Error("subscribe failed", "topic", topic, "err", t.Error())
				}
			}
			c.Publish(status, 1, true, protocol.StatusOnline)
			l.log.Info("connected to hub", "broker", l.broker)
		})
	if l.dial != nil {
		opts.SetCustomOpenConnectionFn(func(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
			conn, err := l.dial("tcp", u.Host)
			if err != nil || o.TLSConfig == nil {
				return conn, err
			}
			tc := o.TLSConfig.Clone()
			if tc.ServerName == "" {
				tc.ServerName = u.Hostname()
			}
			return tls.Client(conn, tc), nil
		})
	}
	l.client = mqtt.NewClient(opts)
	l.client.Connect() // keeps retrying in the background
}

func (l *mqttLink) Up() bool { return l.client != nil && l.client.IsConnectionOpen() }

func (l *mqttLink) Send(suffix string, payload []byte, wait time.Duration) bool {
	t := l.client.Publish(protocol.KioskTopic(l.id, suffix), 1, false, payload)
	if wait <= 0 {
		return true
	}
	if !t.WaitTimeout(wait) || t.Error() != nil {
		l.log.Warn("publish not confirmed", "topic", suffix, "err", t.Error())
		return false
	}
	return true
}

func (l *mqttLink) Close() {
	if l.client == nil {
		return
	}
	if l.client.IsConnected() {
		t := l.client.Publish(protocol.KioskTopic(l.id, protocol.TopicStatus), 1, true, protocol.StatusOffline)
		t.WaitTimeout(2 * time.Second)
	}
	l.client.Disconnect(500)
}
