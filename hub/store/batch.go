package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Batch is statements that run in order in one transaction. On PostgreSQL
// they reach the server in one round trip (pgx's pipeline): a group commit
// of many sales costs a few round trips, not a few per sale. On SQLite,
// where a statement is a function call, they run one by one.
type Batch struct {
	stmts []batchStmt
}

type batchStmt struct {
	query string
	args  []any
	n     *int64                                   // Exec: rows affected
	row   func(scan func(dest ...any) error) error // QueryRow
	each  func(scan func(dest ...any) error) error // Query: per row
}

// Exec queues a statement; n, if not nil, gets the rows it affected.
func (b *Batch) Exec(n *int64, query string, args ...any) {
	b.stmts = append(b.stmts, batchStmt{query: query, args: args, n: n})
}

// QueryRow queues a query of at most one row. row runs with the row's
// scanner, whose error is sql.ErrNoRows when there is none; an error row
// returns fails the batch.
func (b *Batch) QueryRow(row func(scan func(dest ...any) error) error, query string, args ...any) {
	b.stmts = append(b.stmts, batchStmt{query: query, args: args, row: row})
}

// Query queues a query; each runs with every row's scanner in turn.
func (b *Batch) Query(each func(scan func(dest ...any) error) error, query string, args ...any) {
	b.stmts = append(b.stmts, batchStmt{query: query, args: args, each: each})
}

// Insert queues rows into table, many to a statement: a statement's
// fixed cost (planning, executor start) is paid per chunk, not per row.
// The chunks have sizes that are powers of two, so a few statements
// serve every batch size and each is prepared once.
func (b *Batch) Insert(table string, cols []string, rows [][]any) {
	for len(rows) > 0 {
		n := 1
		for n*2 <= len(rows) && n*2 <= maxInsertRows {
			n *= 2
		}
		args := make([]any, 0, n*len(cols))
		for _, r := range rows[:n] {
			args = append(args, r...)
		}
		b.Exec(nil, insertRows(table, cols, n), args...)
		rows = rows[n:]
	}
}

// InsertQueries are the statements Insert may use for table, to prepare.
func InsertQueries(table string, cols []string) []string {
	var qs []string
	for n := 1; n <= maxInsertRows; n *= 2 {
		qs = append(qs, insertRows(table, cols, n))
	}
	return qs
}

// maxInsertRows bounds a multi-row INSERT (SQLite allows 32,766
// parameters).
const maxInsertRows = 128

// InList is "?, ?, ..." for n values, for IN lists and multi-row VALUES.
func InList(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

var insertCache sync.Map // table, columns, rows -> query

func insertRows(table string, cols []string, n int) string {
	key := fmt.Sprint(table, cols, n)
	if q, ok := insertCache.Load(key); ok {
		return q.(string)
	}
	row := "(" + InList(len(cols)) + ")"
	q := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES " +
		strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
	insertCache.Store(key, q)
	return q
}

// Len is the number of statements queued.
func (b *Batch) Len() int { return len(b.stmts) }

// Tx is a write transaction that runs batches. On PostgreSQL it is a
// session of its own: BEGIN goes with the first batch and COMMIT with the
// last (Commit), so a transaction of n batches costs n round trips.
type Tx struct {
	db *DB
	// SQLite
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
	// PostgreSQL
	conn   *sql.Conn
	begun  bool
	done   bool // committed, or rolled back by a failed commit
	failed bool // a batch failed: the transaction is aborted
}

// InBatchTx runs fn in a write transaction and commits it, unless fn did
// with Commit. An error from fn rolls it back.
func (d *DB) InBatchTx(ctx context.Context, fn func(*Tx) error) error {
	return d.inBatchTx(ctx, nil, false, fn)
}

// InBatchTxUnsynced is InBatchTx for a caller with more to commit while
// this commit goes to disk: it returns once the transaction is committed,
// and synced, if not nil, returns once it is durable (an ErrSync error if
// it may not be). On SQLite that is the WAL's fsync, shared with the
// commits made meanwhile; on PostgreSQL a commit is durable when it
// returns, and synced is nil. Nothing outside the database may act on the
// transaction before synced has returned nil.
func (d *DB) InBatchTxUnsynced(ctx context.Context, fn func(*Tx) error) (synced func() error, err error) {
	return d.inBatchTxUnsynced(ctx, nil, false, fn)
}

// inBatchTx is InBatchTx on conn (PostgreSQL), or on a connection from the
// pool; on SQLite, on the writing connection, soft or not.
func (d *DB) inBatchTx(ctx context.Context, conn *sql.Conn, soft bool, fn func(*Tx) error) error {
	synced, err := d.inBatchTxUnsynced(ctx, conn, soft, fn)
	if err != nil || synced == nil {
		return err
	}
	return synced()
}

// inBatchTxUnsynced is inBatchTx that leaves a durable SQLite commit's
// sync to synced; it is nil on PostgreSQL and for a soft commit.
func (d *DB) inBatchTxUnsynced(ctx context.Context, conn *sql.Conn, soft bool, fn func(*Tx) error) (synced func() error, err error) {
	if d.Dialect != Postgres {
		seq, err := d.sqliteCommit(ctx, func(tx *sql.Tx) error {
			// fn may have committed with t.Commit; sqliteCommit commits
			// otherwise.
			return fn(&Tx{db: d, tx: tx})
		})
		if err != nil || soft {
			return nil, err
		}
		return func() error { return d.syncWAL(seq) }, nil
	}
	if conn == nil {
		if conn, err = d.Conn(ctx); err != nil {
			return nil, fmt.Errorf("store: begin: %w", err)
		}
		defer conn.Close()
	}
	t := &Tx{db: d, conn: conn}
	if err := fn(t); err != nil || t.failed {
		t.rollback(ctx)
		if err == nil {
			err = fmt.Errorf("store: a batch failed; the transaction was rolled back")
		}
		return nil, err
	}
	if !t.done {
		return nil, t.Commit(ctx, &Batch{})
	}
	return nil, nil
}

// Run runs b's statements in t, in order, and stops at the first error.
func (t *Tx) Run(ctx context.Context, b *Batch) error {
	return t.run(ctx, b, false)
}

// Commit runs b's statements and commits t: on PostgreSQL in one round
// trip. The transaction is over either way.
func (t *Tx) Commit(ctx context.Context, b *Batch) error {
	return t.run(ctx, b, true)
}

func (t *Tx) run(ctx context.Context, b *Batch, commit bool) error {
	if t.done {
		return fmt.Errorf("store: batch after the transaction ended")
	}
	if t.conn == nil {
		if t.stmts == nil {
			t.stmts = map[string]*sql.Stmt{}
		}
		if err := t.db.runEach(ctx, t.tx, b, t.stmts); err != nil {
			return err
		}
		if commit {
			// InTx commits once fn returns; nothing more may run.
			t.done = true
		}
		return nil
	}
	if len(b.stmts) == 0 && (!commit || !t.begun) {
		t.done = t.done || commit
		return nil
	}
	err := t.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("store: batch: driver connection is %T", dc)
		}
		pb := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(b.stmts)+2)}
		if !t.begun {
			pb.Queue("BEGIN")
		}
		for _, s := range b.stmts {
			queue(pb, t.db.rebindCached(s.query), s)
		}
		if commit {
			pb.Queue("COMMIT")
		}
		return c.Conn().SendBatch(ctx, pb).Close()
	})
	t.begun = true
	if commit {
		t.done = true
	}
	if err != nil {
		t.failed = true
		return fmt.Errorf("store: batch: %w", err)
	}
	return nil
}

// queue adds s to a pipeline.
func queue(pb *pgx.Batch, query string, s batchStmt) {
	q := pb.Queue(query, s.args...)
	switch {
	case s.row != nil:
		row := s.row
		q.QueryRow(func(r pgx.Row) error {
			return row(func(dest ...any) error {
				err := r.Scan(dest...)
				if errors.Is(err, pgx.ErrNoRows) {
					return sql.ErrNoRows
				}
				return err
			})
		})
	case s.each != nil:
		each := s.each
		q.Query(func(rows pgx.Rows) error {
			for rows.Next() {
				if err := each(rows.Scan); err != nil {
					return err
				}
			}
			return rows.Err()
		})
	case s.n != nil:
		n := s.n
		q.Exec(func(ct pgconn.CommandTag) error { *n = ct.RowsAffected(); return nil })
	}
}

// rollback ends a PostgreSQL transaction that failed. A statement's error
// leaves the session in an aborted transaction until ROLLBACK; a session
// that cannot say even that is dropped, not returned to the pool.
func (t *Tx) rollback(ctx context.Context) {
	if !t.begun {
		return
	}
	t.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return driver.ErrBadConn
		}
		if _, err := c.Conn().Exec(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
			return driver.ErrBadConn
		}
		return nil
	})
}

// RunEach runs b's statements in tx one by one, in order, and stops at the
// first error.
func (d *DB) RunEach(ctx context.Context, tx *sql.Tx, b *Batch) error {
	return d.runEach(ctx, tx, b, map[string]*sql.Stmt{})
}

// runEach is RunEach with the transaction's statements kept in stmts: a
// batch repeats a few statements many times.
func (d *DB) runEach(ctx context.Context, tx *sql.Tx, b *Batch, stmts map[string]*sql.Stmt) error {
	for _, s := range b.stmts {
		st := stmts[s.query]
		if st == nil {
			var err error
			if st, err = d.TxStmt(ctx, tx, s.query); err != nil {
				return err
			}
			stmts[s.query] = st
		}
		if s.row != nil {
			if err := s.row(st.QueryRowContext(ctx, s.args...).Scan); err != nil {
				return err
			}
			continue
		}
		if s.each != nil {
			if err := eachRow(ctx, st, s.args, s.each); err != nil {
				return err
			}
			continue
		}
		res, err := st.ExecContext(ctx, s.args...)
		if err != nil {
			return fmt.Errorf("store: batch: %w", err)
		}
		if s.n != nil {
			if *s.n, err = res.RowsAffected(); err != nil {
				return fmt.Errorf("store: batch: %w", err)
			}
		}
	}
	return nil
}

func eachRow(ctx context.Context, st *sql.Stmt, args []any, each func(scan func(dest ...any) error) error) error {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return fmt.Errorf("store: batch: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

// rebindCached is Rebind, remembered: the batch's queries are few and hot.
func (d *DB) rebindCached(query string) string {
	if q, ok := d.rebound.Load(query); ok {
		return q.(string)
	}
	q := d.Rebind(query)
	d.rebound.Store(query, q)
	return q
}
