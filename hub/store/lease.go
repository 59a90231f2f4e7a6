package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// TryLease takes the lease on the job name for holder until now+ttl, or
// renews it, when it is free, expired or already holder's; it reports
// whether holder has it. Hubs sharing the database run such a job on one
// of them at a time, and another takes over once the holder stops renewing.
func (d *DB) TryLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	until := now.Add(ttl).UnixMicro()
	_, err := d.ExecContext(ctx, d.Rebind(`INSERT INTO job_leases (name, holder, until) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
		WHERE job_leases.holder = excluded.holder OR job_leases.until < ?`), name, holder, until, now.UnixMicro())
	if err != nil {
		return false, fmt.Errorf("store: lease %s: %w", name, err)
	}
	var have string
	if err := d.QueryRowContext(ctx, d.Rebind(`SELECT holder FROM job_leases WHERE name = ?`), name).Scan(&have); err != nil {
		return false, fmt.Errorf("store: lease %s: %w", name, err)
	}
	return have == holder, nil
}

// RenewHubLease says hub is alive until now+ttl; started is when it started.
func (d *DB) RenewHubLease(ctx context.Context, hub string, now, started time.Time, ttl time.Duration) error {
	_, err := d.ExecContext(ctx, d.Rebind(`INSERT INTO hub_leases (hub, until, started_at) VALUES (?, ?, ?)
		ON CONFLICT (hub) DO UPDATE SET until = excluded.until`), hub, now.Add(ttl).UnixMicro(), started.UnixMicro())
	if err != nil {
		return fmt.Errorf("store: hub lease %s: %w", hub, err)
	}
	return nil
}

// EndHubLease says hub stopped cleanly: what it left open is anyone's to
// settle now.
func (d *DB) EndHubLease(ctx context.Context, hub string) error {
	_, err := d.ExecContext(ctx, d.Rebind(`UPDATE hub_leases SET until = 0 WHERE hub = ?`), hub)
	return err
}

// HubAlive reports whether hub's lease is live at now. A hub with no row,
// or none named, is not.
func (d *DB) HubAlive(ctx context.Context, hub string, now time.Time) (bool, error) {
	if hub == "" {
		return false, nil
	}
	var until int64
	err := d.QueryRowStmt(ctx, nil, `SELECT until FROM hub_leases WHERE hub = ?`, hub).Scan(&until)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: hub lease %s: %w", hub, err)
	}
	return until >= now.UnixMicro(), nil
}
