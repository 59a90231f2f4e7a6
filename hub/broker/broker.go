// Package broker runs the MQTT broker embedded in the hub (mochi-mqtt), so
// one hub binary serves a store's kiosks with nothing else installed. Every
// client authenticates: the hub with its own credentials, each kiosk with
// the ones `hub kiosk add` gave it, and a kiosk may use only its own topics.
// Sites that run mosquitto or another broker point the hub and kiosks at it
// instead, with the equivalent password file and pattern ACL.
package broker

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/frank-postage/frank/protocol"
)

// Kiosks checks a kiosk's credentials.
type Kiosks interface {
	Authenticate(kioskID, password string) bool
}

// Config says who may connect.
type Config struct {
	Addr        string // host:port to listen on
	HubUser     string // the hub's own user, allowed everything
	HubPassword string
	Kiosks      Kiosks
}

// Broker is a running embedded broker.
type Broker struct {
	srv  *mqtt.Server
	addr string
}

// Start listens on cfg.Addr and serves until Close.
func Start(cfg Config, log *slog.Logger) (*Broker, error) {
	srv := mqtt.New(&mqtt.Options{Logger: log.With("component", "broker")})
	if err := srv.AddHook(&authHook{cfg: cfg, log: log}, nil); err != nil {
		return nil, fmt.Errorf("broker: start: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.Addr})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("broker: listen %s: %w", cfg.Addr, err)
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("broker: serve: %w", err)
	}
	return &Broker{srv: srv, addr: tcp.Address()}, nil
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() string { return b.addr }

// Dropped counts messages the broker could not deliver: a client's write
// queue was full, or its store of unacknowledged messages.
func (b *Broker) Dropped() int64 {
	return atomic.LoadInt64(&b.srv.Info.MessagesDropped) + atomic.LoadInt64(&b.srv.Info.InflightDropped)
}

// Close disconnects every client and stops listening.
func (b *Broker) Close() error { return b.srv.Close() }

// authHook authenticates clients and confines kiosks to their topics.
type authHook struct {
	mqtt.HookBase
	cfg Config
	log *slog.Logger
}

func (h *authHook) ID() string { return "frank-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user, pass := string(pk.Connect.Username), pk.Connect.Password
	if h.cfg.HubUser != "" && user == h.cfg.HubUser {
		return subtle.ConstantTimeCompare(pass, []byte(h.cfg.HubPassword)) == 1
	}
	ok := protocol.ValidKioskID(user) && h.cfg.Kiosks != nil && h.cfg.Kiosks.Authenticate(user, string(pass))
	if !ok {
		h.log.Warn("broker refused a client", "user", user, "remote", cl.Net.Remote)
	}
	return ok
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	user := string(cl.Properties.Username)
	if h.cfg.HubUser != "" && user == h.cfg.HubUser {
		return true
	}
	return KioskMay(user, topic, write)
}

// KioskMay reports whether kiosk id may publish (write) to, or subscribe
// to, topic: only its own topics, named exactly, no wildcards.
func KioskMay(id, topic string, write bool) bool {
	suffix, ok := strings.CutPrefix(topic, protocol.TopicRoot+id+"/")
	if !ok || !protocol.ValidKioskID(id) {
		return false
	}
	if write {
		return slices.Contains(protocol.KioskPublishes, suffix)
	}
	return slices.Contains(protocol.KioskSubscribes, suffix)
}
