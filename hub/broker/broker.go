// Package broker runs the MQTT broker embedded in the hub (mochi-mqtt), so
// one hub binary serves a store's kiosks with nothing else installed. Every
// client authenticates: the hub with its own credentials, each kiosk with
// the ones `hub kiosk add` gave it, and a kiosk may use only its own topics,
// in its publishes, its subscriptions and its last will alike. A kiosk's
// client id is its user name, so no kiosk can push another off. Memory is
// bounded before and after authentication: packet size, a CONNECT
// deadline, connections per address, each kiosk id's message and connect
// rates (a subscription is a message), the filters in a SUBSCRIBE, the
// messages a kiosk holds unacknowledged, and how long a session outlives
// its connection.
// Sites that run mosquitto or another broker point the hub and kiosks at it
// instead, with the equivalent settings (README, "Running with mosquitto").
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"

	"github.com/frank-postage/frank/hub/netlimit"
	"github.com/frank-postage/frank/protocol"
)

// Kiosks checks kiosks' credentials. A stamp names the credential a kiosk
// authenticated with; when a kiosk's stamp changes (its password was
// replaced) or it disappears, its open sessions are closed. Without slow,
// Authenticate accepts only a password it has checked before against the
// same stored hash, and never pays for bcrypt.
type Kiosks interface {
	Authenticate(kioskID, password string, slow bool) (stamp string, ok bool)
	Stamps(ctx context.Context) (map[string]string, error)
}

// MaxPacketBytes is the largest MQTT packet the broker reads: a protocol
// message at its limit plus room for the topic and headers. The length is
// checked from the fixed header, before the body is read.
const MaxPacketBytes = protocol.MaxMessageBytes + 1024

// maxSessionExpiry is the longest a session outlives its connection, in
// seconds, however the client asks (at CONNECT or, in MQTT 5, again at
// DISCONNECT). Kiosks and hubs use clean sessions: nobody parks state
// here for long.
const maxSessionExpiry = 3600

// maxFilters is the most filters one SUBSCRIBE or UNSUBSCRIBE from a kiosk
// may name. A kiosk subscribes to seven topics (protocol.KioskSubscribes);
// more is not a kiosk, and each filter may bring back a retained message.
const maxFilters = 16

// Revocations lists the certificates the device CA has revoked, by serial
// (hex, as ca.SerialHex writes it).
type Revocations interface {
	Revoked(ctx context.Context) (map[string]bool, error)
}

// Config says who may connect, and how much each may take. Zero values
// take the defaults noted.
type Config struct {
	// Addr is a plain listener, where clients log in with passwords (the
	// hub's own user, and kiosks when Passwords allows); empty for none.
	Addr        string
	HubUser     string // the hub's own user, allowed everything
	HubPassword string
	Kiosks      Kiosks
	// TLSAddr is the mqtts listener. A client presents a certificate the
	// device CA issued (TLS's ClientCAs), which names it: a kiosk id, or a
	// hub's name (starting with frank-hub). A revoked (Revoked) or expired
	// certificate is refused, and an open session whose certificate is
	// revoked or expires is closed.
	TLSAddr string
	TLS     *tls.Config
	Revoked Revocations
	// Passwords lets kiosks log in with a password: on Addr, and on
	// TLSAddr without a certificate. Off, a kiosk needs its certificate.
	Passwords bool
	// ConnectTimeout is how long a new connection has to send a CONNECT
	// that authenticates; default 10 s.
	ConnectTimeout time.Duration
	// MaxConnsPerIP bounds the open connections from one address, before
	// any CONNECT is read; default 64, negative for no limit.
	MaxConnsPerIP int
	// KioskRate and KioskBurst bound the messages a kiosk may send per
	// second: each publish, and each filter of a SUBSCRIBE or UNSUBSCRIBE
	// (a subscription makes the broker send the retained message again).
	// Beyond them a publish is dropped (the kiosk resends), and a SUBSCRIBE
	// or UNSUBSCRIBE is refused whole. A real kiosk sends a few a minute,
	// and subscribes to six topics each time it connects. Defaults 20/s
	// with bursts of 200; negative KioskRate for no limit (the benchmark's
	// simulated kiosks).
	KioskRate  float64
	KioskBurst int
	// KioskInflight bounds the QoS 1 and 2 messages the broker holds for a
	// kiosk that has not acknowledged them (mochi's own bound, for every
	// client, is 8,192: the hub's connection carries every kiosk's
	// traffic). Beyond it a message to the kiosk is dropped: a kiosk that
	// does not read must not make the broker keep its copies. A kiosk
	// acknowledges as it reads and waits on a few answers at a time.
	// Default 64; negative for no limit.
	KioskInflight int
	// KioskConnects bounds how often one kiosk id may connect: that many
	// a minute, in a burst of as many. Beyond it a CONNECT is refused as
	// over the connection rate (3.1.1: server unavailable), so it tries
	// again later. The budget, like KioskRate's, is the kiosk id's and
	// outlives its connections: reconnecting does not start either afresh.
	// A real kiosk reconnects after a lost link or a hub restart; a fleet
	// reconnecting at once spends one each. Default 10; negative for no
	// limit.
	KioskConnects int
	// AuthFailures is how many failed logins one address may make in a
	// burst before it waits (one more every 6 s): bcrypt is costly, and a
	// stranger must not be able to spend the hub's CPU on it. A kiosk whose
	// password this hub already checked still gets in. Default 20.
	AuthFailures int
	// RecheckEvery is how often open kiosk sessions are checked against
	// the current credentials; default 1 s.
	RecheckEvery time.Duration

	now func() time.Time // the kiosks' budgets' clock, for tests; default time.Now
}

func (c *Config) defaults() {
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = 64
	}
	if c.KioskRate == 0 {
		c.KioskRate = 20
	}
	if c.KioskBurst == 0 {
		c.KioskBurst = 200
	}
	if c.KioskInflight == 0 {
		c.KioskInflight = 64
	}
	if c.KioskConnects == 0 {
		c.KioskConnects = 10
	}
	if c.AuthFailures == 0 {
		c.AuthFailures = 20
	}
	if c.RecheckEvery == 0 {
		c.RecheckEvery = time.Second
	}
}

// Broker is a running embedded broker.
type Broker struct {
	srv     *mqtt.Server
	lns     []*guardedListener
	hook    *authHook
	addr    string
	tlsAddr string
	cancel  context.CancelFunc
	done    chan struct{}
	kick    chan struct{}
	log     *slog.Logger
}

// Recheck checks the open kiosk sessions now, not at the next tick: a
// kiosk's credentials changed on another hub.
func (b *Broker) Recheck() {
	select {
	case b.kick <- struct{}{}:
	default: // one is due already
	}
}

// Start listens on cfg.Addr and serves until Close.
func Start(cfg Config, log *slog.Logger) (*Broker, error) {
	cfg.defaults()
	log = log.With("component", "broker")
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxPacketBytes
	caps.TopicAliasMaximum = 0                           // every publish names its topic, and the ACL sees it
	caps.MaximumSessionExpiryInterval = maxSessionExpiry // at CONNACK; OnPacketRead holds a DISCONNECT to it
	caps.MaximumClientWritesPending = 8 * 1024           // the hub's own connection carries every kiosk's traffic
	// Payloads carry payment tokens: the broker's own log lines show
	// packets by type, topic and size only.
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(redact(log.Handler())), Capabilities: caps})
	hook := &authHook{cfg: cfg, log: log, srv: srv, stamps: map[*mqtt.Client]string{}, kiosks: map[string]*kioskLimits{},
		certs: map[*mqtt.Client]*x509.Certificate{}, failures: map[string]*rate.Limiter{}}
	if err := srv.AddHook(hook, nil); err != nil {
		return nil, fmt.Errorf("broker: start: %w", err)
	}
	b := &Broker{srv: srv, hook: hook, done: make(chan struct{}), kick: make(chan struct{}, 1), log: log}
	listen := func(id, addr string, tc *tls.Config) (string, error) {
		tcp, err := net.Listen("tcp", addr)
		if err != nil {
			return "", fmt.Errorf("broker: listen %s: %w", addr, err)
		}
		ln := &guardedListener{Listener: tcp, perIP: cfg.MaxConnsPerIP, connectTimeout: cfg.ConnectTimeout, conns: map[string]int{}, log: log}
		b.lns = append(b.lns, ln)
		var l net.Listener = ln
		if tc != nil {
			l = tls.NewListener(ln, tc)
		}
		if err := srv.AddListener(listeners.NewNet(id, l)); err != nil {
			tcp.Close()
			return "", fmt.Errorf("broker: listen %s: %w", addr, err)
		}
		return tcp.Addr().String(), nil
	}
	var err error
	if cfg.Addr != "" {
		if b.addr, err = listen("tcp", cfg.Addr, nil); err != nil {
			return nil, err
		}
	}
	if cfg.TLSAddr != "" {
		if cfg.TLS == nil {
			return nil, errors.New("broker: a TLS listener needs a TLS configuration")
		}
		tc := cfg.TLS.Clone()
		tc.MinVersion = tls.VersionTLS12
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		if cfg.Passwords {
			tc.ClientAuth = tls.VerifyClientCertIfGiven
		}
		tc.VerifyConnection = hook.verifyConnection
		if b.tlsAddr, err = listen("tls", cfg.TLSAddr, tc); err != nil {
			return nil, err
		}
	}
	if len(b.lns) == 0 {
		return nil, errors.New("broker: no listener: want Addr, TLSAddr or both")
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("broker: serve: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	hook.refreshRevoked(ctx)
	go b.recheck(ctx)
	return b, nil
}

// Addr is the plain listener's address ("" without one).
func (b *Broker) Addr() string { return b.addr }

// TLSAddr is the mqtts listener's address ("" without one).
func (b *Broker) TLSAddr() string { return b.tlsAddr }

// Dropped counts messages the broker could not deliver: a client's write
// queue was full, or its store of unacknowledged messages (for a kiosk,
// KioskInflight).
func (b *Broker) Dropped() int64 {
	return atomic.LoadInt64(&b.srv.Info.MessagesDropped) + atomic.LoadInt64(&b.srv.Info.InflightDropped) + b.hook.refusedCount("inflight")
}

// Refused counts connections and messages refused by the limits and the
// ACL, by reason, for the metrics and tests.
func (b *Broker) Refused() map[string]int64 {
	out := b.hook.refusedCounts()
	if out == nil { // nothing refused yet
		out = map[string]int64{}
	}
	for _, ln := range b.lns {
		out["conns_per_ip"] += ln.refused.Load()
	}
	return out
}

// Close disconnects every client and stops listening.
func (b *Broker) Close() error {
	b.cancel()
	<-b.done
	// mochi adds each accepted connection to a WaitGroup that its Close
	// waits on; an Add racing that Wait is a data race. So stop accepting
	// and let every accepted connection reach mochi first.
	deadline := time.After(5 * time.Second)
	for _, ln := range b.lns {
		select {
		case <-ln.drain():
		case <-deadline:
		}
	}
	// mochi v2.7.9's Close can deadlock: it takes its clients' read lock
	// twice over, and a client leaving in between queues a writer that
	// blocks the second. The connections are gone by then; do not let a
	// hub's shutdown hang on it.
	closed := make(chan error, 1)
	go func() { closed <- b.srv.Close() }()
	select {
	case err := <-closed:
		return err
	case <-time.After(10 * time.Second):
		b.log.Warn("the embedded broker did not stop within 10 s (a known mochi lock-order bug); going on")
		return nil
	}
}

// recheck closes the sessions of kiosks whose credentials were replaced or
// removed since they connected, on whichever hub did it: the store is
// read, not this process's memory.
func (b *Broker) recheck(ctx context.Context) {
	defer close(b.done)
	t := time.NewTicker(b.hook.cfg.RecheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.kick:
		}
		b.hook.refreshRevoked(ctx)
		b.hook.revoke(ctx)
		b.hook.prune()
	}
}

// guardedListener caps the connections from one address and gives each
// new connection a deadline that only a CONNECT lifts (mochi sets the
// keepalive deadline once it has read one).
type guardedListener struct {
	net.Listener
	perIP          int
	connectTimeout time.Duration
	log            *slog.Logger
	refused        atomic.Int64

	mu      sync.Mutex
	conns   map[string]int
	pending int           // accepted, not yet read, written or closed by mochi
	closed  bool          // drain began: accept nothing more
	drained chan struct{} // closed once closed and pending is 0
}

// drain stops accepting and returns a channel closed once every accepted
// connection has been taken up by mochi.
func (l *guardedListener) drain() <-chan struct{} {
	l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		l.drained = make(chan struct{})
		l.closeIfDrained()
	}
	return l.drained
}

// closeIfDrained closes drained when due; l.mu is held.
func (l *guardedListener) closeIfDrained() {
	if l.closed && l.pending == 0 {
		select {
		case <-l.drained:
		default:
			close(l.drained)
		}
	}
}

func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := netlimit.SourceOf(c.RemoteAddr())
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return nil, net.ErrClosed
		}
		over := l.perIP > 0 && l.conns[ip] >= l.perIP
		if !over {
			l.conns[ip]++
			l.pending++
		}
		l.mu.Unlock()
		if over {
			// Logged once per hundred: a flood must not flood the log too.
			if l.refused.Add(1)%100 == 1 {
				l.log.Warn("broker refused a connection: too many from one address", "remote", ip, "limit", l.perIP)
			}
			c.Close()
			continue
		}
		c.SetDeadline(time.Now().Add(l.connectTimeout))
		return &countedConn{Conn: c, taken: func() {
			l.mu.Lock()
			l.pending--
			l.closeIfDrained()
			l.mu.Unlock()
		}, release: func() {
			l.mu.Lock()
			if l.conns[ip]--; l.conns[ip] <= 0 {
				delete(l.conns, ip)
			}
			l.mu.Unlock()
		}}, nil
	}
}

// countedConn gives back its address's slot when it closes, and tells its
// listener when mochi first uses it (see Broker.Close).
type countedConn struct {
	net.Conn
	takenOnce, once sync.Once
	taken, release  func()
}

func (c *countedConn) Read(p []byte) (int, error) {
	c.takenOnce.Do(c.taken)
	return c.Conn.Read(p)
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.takenOnce.Do(c.taken)
	return c.Conn.Write(p)
}

func (c *countedConn) Close() error {
	c.takenOnce.Do(c.taken)
	c.once.Do(c.release)
	return c.Conn.Close()
}

// remoteHost is the address part of host:port.
func remoteHost(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return host
}

// redact wraps a log handler so that no MQTT packet is logged whole: mochi
// logs the packets it refuses, and a refused purchase carries a payment
// token.
func redact(h slog.Handler) slog.Handler { return redactHandler{h} }

type redactHandler struct{ slog.Handler }

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(as))
	for i, a := range as {
		clean[i] = redactAttr(a)
	}
	return redactHandler{h.Handler.WithAttrs(clean)}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h.Handler.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	var pk packets.Packet
	switch v := a.Value.Any().(type) {
	case packets.Packet:
		pk = v
	case *packets.Packet:
		if v == nil {
			return a
		}
		pk = *v
	default:
		if a.Value.Kind() == slog.KindGroup {
			g := a.Value.Group()
			clean := make([]any, len(g))
			for i, x := range g {
				clean[i] = redactAttr(x)
			}
			return slog.Group(a.Key, clean...)
		}
		return a
	}
	name, ok := packets.PacketNames[pk.FixedHeader.Type]
	if !ok {
		name = "unknown"
	}
	return slog.Group(a.Key, "type", name, "topic", pk.TopicName, "payload_bytes", len(pk.Payload))
}
