package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// Hubs that share a PostgreSQL database tell each other of changes with
// LISTEN/NOTIFY: a notification is sent with the transaction that made the
// change and reaches every listening hub once it commits. A hub that was
// not listening (its connection dropped, the primary failed over) missed
// some, so it resyncs from the tables before it trusts them again. On
// SQLite one hub has the database to itself: there is no one to tell.

// The channels hubs tell each other on.
const (
	// HeartbeatChannel carries each kiosk heartbeat a hub stores, so that
	// every console shows the whole fleet live.
	HeartbeatChannel = "frank_heartbeat"
	// CredentialsChannel carries the id of a kiosk whose password or
	// certificate was replaced, revoked or retired: every hub's broker
	// closes its sessions at once.
	CredentialsChannel = "frank_credentials"
	// ActivityChannel carries each hub's minute of purchase answers in
	// progress, every few seconds, so every console charts the cluster.
	ActivityChannel = "frank_activity"
)

// Notify queues a notification on channel. It joins the soft group
// commits (SoftExec), so it is sent within milliseconds, and costs no
// commit of its own.
func (d *DB) Notify(ctx context.Context, channel, payload string) error {
	if d.Dialect != Postgres {
		return nil
	}
	if _, err := d.SoftExec(ctx, `SELECT pg_notify(?, ?)`, channel, payload); err != nil {
		return fmt.Errorf("store: notify %s: %w", channel, err)
	}
	return nil
}

// Listener receives notifications for a hub.
type Listener struct {
	// Handlers are called, one at a time, with each notification's
	// payload, by channel.
	Handlers map[string]func(payload string)
	// Listening is called with true once the listener hears every
	// notification from then on, after a connection is made or remade
	// (the moment to resync from the tables), and with false when it
	// stops hearing them.
	Listening func(bool)
	Log       *slog.Logger
}

// Listen delivers notifications until ctx ends, reconnecting as needed.
// On SQLite it reports Listening(true) once and waits for ctx.
func (d *DB) Listen(ctx context.Context, l Listener) {
	if l.Listening == nil {
		l.Listening = func(bool) {}
	}
	if d.Dialect != Postgres {
		l.Listening(true)
		<-ctx.Done()
		return
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := d.listenOnce(ctx, l)
		l.Listening(false)
		if ctx.Err() != nil {
			return
		}
		if l.Log != nil {
			l.Log.Warn("notifications from the other hubs lost; reconnecting", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (d *DB) listenOnce(ctx context.Context, l Listener) error {
	conn, err := pgx.Connect(ctx, d.dsn)
	if err != nil {
		return fmt.Errorf("store: listen: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for ch := range l.Handlers {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return fmt.Errorf("store: listen %s: %w", ch, err)
		}
	}
	l.Listening(true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("store: listen: %w", err)
		}
		if h := l.Handlers[n.Channel]; h != nil {
			h(n.Payload)
		}
	}
}
