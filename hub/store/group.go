package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"time"
)

// groupMax bounds how many writes share one commit.
const groupMax = 256

// ErrClosed is returned for writes after Close.
var ErrClosed = errors.New("store: closed")

type groupWrite struct {
	query string // "" for a read alone
	args  []any
	read  *Read // may be nil
	n     int64
	err   error
	done  chan struct{}
}

// group commits small independent writes together. Every durable commit
// costs an fsync; concurrent sales' payment records would each pay one and
// queue for the single SQLite write lock.
type group struct {
	once   sync.Once
	mu     sync.Mutex
	closed bool
	queue  chan *groupWrite
	exited chan struct{}
	// soft groups commit without waiting for the disk, on a connection of
	// their own (see SoftExec).
	soft bool
	conn *sql.Conn
}

// GroupExec runs a write that must be durable but need not commit alone:
// it joins the writes already waiting, all committed in one transaction,
// and returns the rows it affected once that commit is done. A write that
// fails does not fail the others: the batch is then redone one by one.
func (d *DB) GroupExec(ctx context.Context, query string, args ...any) (int64, error) {
	return d.groupExec(ctx, &d.group, nil, query, args)
}

// SoftExec is GroupExec for a write that other hubs must see at once but
// that need not be on disk before the next durable commit, such as a
// request's claim: its commit does not wait for an fsync (on SQLite it skips
// the WAL's sync, on PostgreSQL synchronous_commit=off). Both
// databases write their log in order, so the next durable commit, of any
// writer, makes it durable too; only a crash of the database's machine
// before then loses it. So anything outside the database that depends on
// it must either wait for a durable commit or be found again without it:
// a card held under a request's claim is recorded by its sale's durable
// commit, or found at the gateway and voided (payments' sweep).
func (d *DB) SoftExec(ctx context.Context, query string, args ...any) (int64, error) {
	return d.groupExec(ctx, &d.soft, nil, query, args)
}

// A Read is a one-row query that a group write runs right after its
// statement, in the same transaction: a request's claim and the look at
// what the request was answered before share a round trip, and on
// PostgreSQL a transaction, instead of one each. At read committed the
// read sees every commit made before the write's row was taken.
type Read struct {
	Query string
	Args  []any
	// Row scans the row. It may run more than once (a failed batch is
	// redone one write at a time); only the last run counts.
	Row func(scan func(dest ...any) error) error
}

// SoftExecRead is SoftExec followed by r, whose outcome is known once
// SoftExecRead returns without an error.
func (d *DB) SoftExecRead(ctx context.Context, r *Read, query string, args ...any) (int64, error) {
	return d.groupExec(ctx, &d.soft, r, query, args)
}

// GroupExecRead is GroupExec followed by r in the same transaction, as
// SoftExecRead is SoftExec's.
func (d *DB) GroupExecRead(ctx context.Context, r *Read, query string, args ...any) (int64, error) {
	return d.groupExec(ctx, &d.group, r, query, args)
}

// WarmRead runs r. On SQLite it runs in the soft group's next transaction,
// on the writing connection, whose page cache survives commits: a reading
// connection drops its whole cache at every commit and reads the pages
// again from the kernel, which cost a sale's precheck three times as much.
// On PostgreSQL it is a plain query.
func (d *DB) WarmRead(ctx context.Context, r *Read) error {
	if d.Dialect != SQLite {
		return r.Row(d.QueryRowStmt(ctx, nil, r.Query, r.Args...).Scan)
	}
	_, err := d.groupExec(ctx, &d.soft, r, "", nil)
	return err
}

// WriteTimeout bounds a group commit on PostgreSQL. A server that stops
// answering (frozen, or cut off with no reset) would otherwise hold every
// write of the hub, and with the claims every sale, until the kernel gave
// up on the connection, a quarter of an hour or never: past it the write
// fails, its connection is dropped, and the next write gets another (the
// promoted standby's, after a failover).
const WriteTimeout = 15 * time.Second

// errWriteTimeout marks a group commit that ran out of WriteTimeout.
var errWriteTimeout = errors.New("store: the database did not answer in time")

// WriteContext is the context of a commit that must not wait on the
// database for ever: WriteTimeout on PostgreSQL; on SQLite, whose writes
// wait only on the local disk, none.
func (d *DB) WriteContext() (context.Context, context.CancelFunc) {
	if d.Dialect == Postgres {
		return context.WithTimeout(context.Background(), WriteTimeout)
	}
	return context.WithCancel(context.Background())
}

func (d *DB) groupExec(ctx context.Context, g *group, r *Read, query string, args []any) (int64, error) {
	g.once.Do(func() {
		g.queue = make(chan *groupWrite, groupMax)
		g.exited = make(chan struct{})
		g.soft = g == &d.soft
		go d.groupLoop(g)
	})
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	// Prepared here, outside the batch's transaction, so the batch finds
	// them cached instead of parsing them again on every commit.
	if query != "" {
		if _, err := d.Stmt(ctx, query); err != nil {
			return 0, err
		}
	}
	if r != nil {
		if _, err := d.Stmt(ctx, r.Query); err != nil {
			return 0, err
		}
	}
	w := &groupWrite{query: query, args: args, read: r, done: make(chan struct{})}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return 0, ErrClosed
	}
	select {
	case g.queue <- w:
		g.mu.Unlock()
	case <-ctx.Done():
		g.mu.Unlock()
		return 0, ctx.Err()
	}
	// Once queued the write will be tried, so wait for its outcome rather
	// than report an error for a write that may land.
	<-w.done
	return w.n, w.err
}

func (d *DB) groupLoop(g *group) {
	defer close(g.exited)
	defer func() {
		if g.conn != nil {
			g.conn.Close()
		}
	}()
	for w := range g.queue {
		batch := []*groupWrite{w}
	drain:
		for len(batch) < groupMax {
			select {
			case next, ok := <-g.queue:
				if !ok {
					break drain
				}
				batch = append(batch, next)
			default:
				break drain
			}
		}
		if err := d.commitGroup(g, batch); err != nil {
			// Redone alone, so that each gets its own answer; but a server
			// that did not answer in time is not asked again for each.
			stuck := err
			if !errors.Is(err, errWriteTimeout) {
				stuck = nil
			}
			for _, w := range batch {
				if w.err = stuck; stuck == nil {
					if w.err = d.commitGroup(g, []*groupWrite{w}); errors.Is(w.err, errWriteTimeout) {
						stuck = w.err
					}
				}
				if w.err != nil {
					w.n, w.err = 0, fmt.Errorf("store: write: %w", w.err)
				}
			}
		}
		for _, w := range batch {
			close(w.done)
		}
	}
}

func (d *DB) commitGroup(g *group, batch []*groupWrite) (err error) {
	ctx, cancel := d.WriteContext()
	defer cancel()
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", errWriteTimeout, err)
		}
	}()
	var conn *sql.Conn
	if g.soft && d.Dialect == Postgres {
		var err error
		if conn, err = d.softConn(ctx, g); err != nil {
			return err
		}
	}
	err = d.inBatchTx(ctx, conn, g.soft, func(tx *Tx) error {
		var b Batch
		for _, w := range batch {
			if w.query != "" { // "": a read alone (WarmRead)
				b.Exec(&w.n, w.query, w.args...)
			}
			if w.read != nil {
				b.QueryRow(w.read.Row, w.read.Query, w.read.Args...)
			}
		}
		return tx.Commit(ctx, &b)
	})
	if err != nil && conn != nil {
		// The connection may be the trouble (a restarted server): the next
		// commit gets another. It is closed, not put back in the pool: the
		// session holds the claims' advisory locks, which must go with it.
		conn.Raw(func(any) error { return driver.ErrBadConn })
		conn.Close()
		g.conn = nil
	}
	return err
}

// softConn is the soft group's PostgreSQL session, set not to wait for the
// disk. (SQLite's soft writes share its one writing connection.) It holds
// the request claims' advisory locks (package claims), so the server is
// told to probe an idle peer: a hub whose machine vanished lets go of its
// claims in about 11 s, not after the kernel's two hours.
func (d *DB) softConn(ctx context.Context, g *group) (*sql.Conn, error) {
	if g.conn != nil {
		return g.conn, nil
	}
	conn, err := d.connWith(ctx, `SELECT set_config('synchronous_commit', 'off', false), set_config('tcp_keepalives_idle', '5', false),
		set_config('tcp_keepalives_interval', '2', false), set_config('tcp_keepalives_count', '3', false)`)
	if err != nil {
		return nil, fmt.Errorf("store: soft writes: %w", err)
	}
	g.conn = conn
	return conn, nil
}

// Close finishes the queued group writes and closes the database.
func (d *DB) Close() error {
	for _, g := range []*group{&d.group, &d.soft} {
		g.once.Do(func() {}) // a group never started stays unstarted
		g.mu.Lock()
		wasClosed := g.closed
		g.closed = true
		g.mu.Unlock()
		if !wasClosed && g.queue != nil {
			close(g.queue)
			<-g.exited
		}
	}
	d.writer.Lock()
	d.dropWriteConn()
	d.writer.Unlock()
	d.wal.mu.Lock()
	if d.wal.f != nil {
		d.wal.f.Close()
		d.wal.f = nil // a late write's sync fails to open it, not on a closed file
	}
	d.wal.mu.Unlock()
	return d.DB.Close()
}

// Write is a statement its table's owner hands to another package to
// commit in that package's transaction, e.g. a payment's state with the
// sale it pays for. Stale is the error to give when it changed no row.
type Write struct {
	Query string
	Args  []any
	Stale error
}
