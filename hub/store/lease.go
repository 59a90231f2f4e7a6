package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// TryLease takes the lease on the job name for holder until now+ttl, or
// renews it, when it is free, expired or already holder's; it reports
// whether holder has it. Hubs sharing the database run such a job on one
// of them at a time, and another takes over once the holder stops renewing.
// On PostgreSQL the server's clock stands for now (LeaseNow).
func (d *DB) TryLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	at, args := d.LeaseNow(now)
	_, err := d.ExecContext(ctx, d.Rebind(`INSERT INTO job_leases (name, holder, until) VALUES (?, ?, `+at+` + ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
		WHERE job_leases.holder = excluded.holder OR job_leases.until < `+at),
		slices.Concat([]any{name, holder}, args, []any{ttl.Microseconds()}, args)...)
	if err != nil {
		return false, fmt.Errorf("store: lease %s: %w", name, err)
	}
	var have string
	if err := d.QueryRowContext(ctx, d.Rebind(`SELECT holder FROM job_leases WHERE name = ?`), name).Scan(&have); err != nil {
		return false, fmt.Errorf("store: lease %s: %w", name, err)
	}
	return have == holder, nil
}

// LeaseNow is the time leases are written and judged at, as SQL in the
// microseconds since the epoch the until columns of hub_leases and
// job_leases hold, with its arguments, for a query to compare an until
// with. On PostgreSQL it is the server's clock, which every hub sharing it
// reads alike: a hub whose own clock runs ahead would take live hubs'
// leases for lapsed (end a live leader's session, settle a live hub's
// payments), and one whose clock runs behind would be taken for dead. On
// SQLite, whose hubs share one machine and so one clock, it is now, the
// hub's clock, which tests move.
func (d *DB) LeaseNow(now time.Time) (string, []any) {
	if d.Dialect == Postgres {
		return serverNow, nil
	}
	return "?", []any{now.UnixMicro()}
}

// serverNow is PostgreSQL's clock in microseconds since the epoch:
// clock_timestamp, not now, which stands still for a transaction.
const serverNow = `(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint`

// RenewHubLease says hub is alive until now+ttl; started is when it
// started. On PostgreSQL the server's clock stands for now (LeaseNow).
func (d *DB) RenewHubLease(ctx context.Context, hub string, now, started time.Time, ttl time.Duration) error {
	at, args := d.LeaseNow(now)
	_, err := d.ExecContext(ctx, d.Rebind(`INSERT INTO hub_leases (hub, until, started_at) VALUES (?, `+at+` + ?, ?)
		ON CONFLICT (hub) DO UPDATE SET until = excluded.until`),
		slices.Concat([]any{hub}, args, []any{ttl.Microseconds(), started.UnixMicro()})...)
	if err != nil {
		return fmt.Errorf("store: hub lease %s: %w", hub, err)
	}
	return nil
}

// EndHubLease says hub stopped cleanly: what it left open is anyone's to
// settle now.
func (d *DB) EndHubLease(ctx context.Context, hub string) error {
	if _, err := d.ExecContext(ctx, d.Rebind(`UPDATE hub_leases SET until = 0 WHERE hub = ?`), hub); err != nil {
		return fmt.Errorf("store: end hub lease %s: %w", hub, err)
	}
	return nil
}

// HubAlive reports whether hub's lease is live at now; on PostgreSQL the
// server's clock stands for now (LeaseNow). A hub with no row, or none
// named, is not.
func (d *DB) HubAlive(ctx context.Context, hub string, now time.Time) (bool, error) {
	if hub == "" {
		return false, nil
	}
	at, args := d.LeaseNow(now)
	var alive bool
	err := d.QueryRowStmt(ctx, nil, `SELECT until >= `+at+` FROM hub_leases WHERE hub = ?`, append(args, hub)...).Scan(&alive)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: hub lease %s: %w", hub, err)
	}
	return alive, nil
}
