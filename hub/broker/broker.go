// Package broker runs the MQTT broker embedded in the hub (mochi-mqtt), so
// one hub binary serves a store's kiosks with nothing else installed. Sites
// that run mosquitto or another broker point the hub and kiosks at it
// instead and leave this off.
package broker

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Broker is a running embedded broker.
type Broker struct {
	srv  *mqtt.Server
	addr string
}

// Start listens on addr (host:port) and serves until Close.
func Start(addr string, log *slog.Logger) (*Broker, error) {
	srv := mqtt.New(&mqtt.Options{Logger: log.With("component", "broker")})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("broker: start: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("broker: listen %s: %w", addr, err)
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
