package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// leaderKey is the advisory lock that names the leader hub: "frank" in
// ASCII, far from anything else a shared server might lock.
const leaderKey = 0x6672616e6b

// Leader is this hub's claim to the duties one hub of a cluster does: the
// periodic ledger check, postal reports and fund purchases, inspection
// alerts, rate table pushes and settling dead hubs' payments. On
// PostgreSQL it is a session advisory lock, held on a connection of its
// own: when the hub dies or loses the server, the session ends, the lock
// goes with it, and the next hub to check takes it. On SQLite, whose hubs
// share one machine, it is a job lease the holder renews.
type Leader struct {
	Log    *slog.Logger // may be nil: slog's default
	db     *DB
	holder string
	ttl    time.Duration // SQLite's lease

	mu   sync.Mutex
	conn *sql.Conn // PostgreSQL: the session holding the lock
	held bool
}

// Leader returns holder's leadership, not yet taken; Check takes it.
// ttl is how long a SQLite lease lasts without renewal.
func (d *DB) Leader(holder string, ttl time.Duration) *Leader {
	return &Leader{db: d, holder: holder, ttl: ttl}
}

// Check takes the leadership if it is free, or confirms this hub still
// holds it, and reports whether it does. Call it more often than ttl. now
// is this hub's clock, which SQLite's lease runs on; on PostgreSQL the
// other hubs' leases are judged by the server's clock (unseat).
func (l *Leader) Check(ctx context.Context, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.db.Dialect != Postgres {
		ok, err := l.db.TryLease(ctx, "leader", l.holder, now, l.ttl)
		l.held = ok && err == nil
		return l.held
	}
	if l.conn != nil {
		// Still our session? If not, the server dropped the lock with it.
		if err := l.conn.PingContext(ctx); err == nil {
			return l.held
		}
		l.conn.Close()
		l.conn, l.held = nil, false
	}
	conn, err := l.db.Conn(ctx)
	if err != nil {
		return false
	}
	var got bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, int64(leaderKey)).Scan(&got); err != nil || !got {
		conn.Close()
		l.unseat(ctx)
		return false
	}
	// Named after its hub, so that the others can tell whose it is
	// (unseat). A session the server would not name still leads.
	if _, err := conn.ExecContext(ctx, `SELECT set_config('application_name', $1, false)`, sessionName(l.holder)); err != nil {
		l.log().Warn("the leader's session is not named; a pause of this hub will not be noticed", "err", err)
	}
	l.conn, l.held = conn, true
	return true
}

// sessionName is the application_name of holder's leader session: short
// and ASCII, as PostgreSQL keeps application names (63 bytes, other bytes
// as ?), whatever the hub's name.
func sessionName(holder string) string {
	h := sha256.Sum256([]byte(holder))
	return sessionPrefix + hex.EncodeToString(h[:8])
}

const sessionPrefix = "frank-leader "

func (l *Leader) log() *slog.Logger {
	if l.Log != nil {
		return l.Log
	}
	return slog.Default()
}

// unseat ends the session of a leader whose hub's lease has lapsed. A hub
// that is paused (SIGSTOP, a frozen VM) keeps its session, and the lock,
// for as long as its kernel answers, and no duty of the leader's would
// run meanwhile: refunds due, dead hubs' payments, reports. Its lease
// lapses in the hub lease TTL, and the next hub to check takes over. A
// session not named after a hub with a lease is left alone, and so is
// another database's leader on the same server.
func (l *Leader) unseat(ctx context.Context) {
	var pid int64
	var name string
	err := l.db.QueryRowContext(ctx, `SELECT a.pid, a.application_name FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid
		WHERE k.locktype = 'advisory' AND k.classid = $1 AND k.objid = $2 AND k.objsubid = 1 AND k.granted
		AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		int64(leaderKey>>32), int64(leaderKey&0xffffffff)).Scan(&pid, &name)
	if err != nil || !strings.HasPrefix(name, sessionPrefix) || name == sessionName(l.holder) {
		return
	}
	// Only a lease seen to lapse (a hub writes its lease before it first
	// checks); a session of a hub with no lease row is left alone. Lapsed
	// by the server's clock, not this hub's: were this hub's clock ahead,
	// it would end a live leader's session (LeaseNow).
	rows, err := l.db.QueryContext(ctx, `SELECT hub FROM hub_leases WHERE until < `+serverNow)
	if err != nil {
		return
	}
	lapsed := ""
	for rows.Next() {
		var hub string
		if rows.Scan(&hub) == nil && sessionName(hub) == name {
			lapsed = hub
		}
	}
	rows.Close()
	if lapsed == "" {
		return
	}
	if _, err := l.db.ExecContext(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		l.log().Error("the leader's hub lease lapsed, and its session could not be ended; no other hub leads until it ends", "hub", lapsed, "pid", pid, "err", err)
		return
	}
	l.log().Warn("the leader's hub lease lapsed: its session ended, so that another hub leads", "hub", lapsed, "pid", pid)
}

// Held reports whether this hub led at its last Check.
func (l *Leader) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// Resign gives the leadership up at once, for a clean stop.
func (l *Leader) Resign(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		l.conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, int64(leaderKey))
		l.conn.Close()
		l.conn = nil
	} else if l.held {
		l.db.ExecContext(ctx, l.db.Rebind(`UPDATE job_leases SET until = 0 WHERE name = 'leader' AND holder = ?`), l.holder)
	}
	l.held = false
}

// Lock holds the cluster-wide lock name until the returned unlock is
// called, for work one hub at a time must do (buying postage). On
// PostgreSQL it is a session advisory lock on a connection of its own, so
// it goes with a hub that dies holding it. On SQLite it is a job lease of
// a minute, renewed by nobody: a hub that dies holding it holds it that
// long.
func (d *DB) Lock(ctx context.Context, name string) (func(), error) {
	if d.Dialect != Postgres {
		return d.leaseLock(ctx, "lock:"+name, time.Minute)
	}
	conn, err := d.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", name, err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(hashtext($1))`, name); err != nil {
		conn.Close()
		return nil, fmt.Errorf("store: lock %s: %w", name, err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.ExecContext(ctx, `SELECT pg_advisory_unlock(hashtext($1))`, name)
		conn.Close()
	}, nil
}

// leaseLock waits for the job lease name, taken for ttl under a name of
// its own, and returns its release.
func (d *DB) leaseLock(ctx context.Context, name string, ttl time.Duration) (func(), error) {
	holder := rand.Text()
	for {
		ok, err := d.TryLease(ctx, name, holder, time.Now(), ttl)
		if err != nil {
			return nil, err
		}
		if ok {
			return func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				d.ExecContext(ctx, d.Rebind(`UPDATE job_leases SET until = 0 WHERE name = ? AND holder = ?`), name, holder)
			}, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("store: lock %s: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
