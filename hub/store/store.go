// Package store opens the hub's database and keeps its schema current. The
// default is a SQLite file (WAL, every durable commit synced before it
// returns); PostgreSQL is chosen by
// a postgres:// URL. Migrations are numbered SQL files applied in order,
// each in its own transaction.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"
)

//go:embed migrations
var migrations embed.FS

// Dialect names the SQL flavour.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is an open hub database.
type DB struct {
	*sql.DB
	Dialect Dialect
	dsn     string
	path    string   // SQLite's file
	stmts   sync.Map // query -> *sql.Stmt
	rebound sync.Map // query -> the query in the dialect's placeholders
	group   group
	soft    group      // SoftExec's
	writer  sync.Mutex // SQLite: this process's writers queue here (see InTx)
	// SQLite: the one connection this process writes on. Guarded by writer.
	wconn *sql.Conn
	// SQLite: write transactions committed on wconn, and their fsync.
	commits atomic.Uint64
	wal     walSync
}

// InTx runs fn in a write transaction and commits it. On SQLite the
// process's writers first queue on a mutex: SQLite's own busy handler
// sleeps and polls, which at sale rates costs more than the writes do.
// Writers that bypass InTx still work, through busy_timeout.
func (d *DB) InTx(ctx context.Context, fn func(*sql.Tx) error) error {
	if d.Dialect == SQLite {
		return d.sqliteTx(ctx, false, fn)
	}
	tx, err := d.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// sqliteTx runs fn in a write transaction on the process's one writing
// connection. Each SQLite connection keeps its own page cache and drops
// all of it when it sees that another connection has written; with the
// writers spread over the pool, every commit re-read the pages it touched
// (pread was a tenth of a busy hub's CPU). One connection keeps them.
//
// The connection commits without an fsync (synchronous=NORMAL), and a
// durable transaction returns only once the WAL has been synced after its
// commit (syncWAL), outside the write lock: the next writer goes on while
// the disk works, and commits that end together share one fsync. SQLite
// itself syncs the WAL before a checkpoint copies it into the database.
// soft returns without the sync (see SoftExec).
func (d *DB) sqliteTx(ctx context.Context, soft bool, fn func(*sql.Tx) error) error {
	seq, err := d.sqliteCommit(ctx, fn)
	if err != nil || soft {
		return err
	}
	return d.syncWAL(seq)
}

// sqliteCommit runs fn in a transaction on the writing connection and
// commits it, and returns its number among the connection's commits.
func (d *DB) sqliteCommit(ctx context.Context, fn func(*sql.Tx) error) (uint64, error) {
	d.writer.Lock()
	defer d.writer.Unlock()
	if err := d.wal.failed.Load(); err != nil {
		// Not even a soft write: a redo of a write whose sync failed
		// would land twice.
		return 0, *err
	}
	conn, err := d.writeConn(ctx)
	if err != nil {
		return 0, err
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		d.dropWriteConn()
		return 0, fmt.Errorf("store: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		// The connection may be the trouble: the next write opens another.
		d.dropWriteConn()
		return 0, fmt.Errorf("store: commit: %w", err)
	}
	return d.commits.Add(1), nil
}

// writeConn is the writing connection. The caller holds d.writer.
func (d *DB) writeConn(ctx context.Context) (*sql.Conn, error) {
	if d.wconn != nil {
		return d.wconn, nil
	}
	conn, err := d.connWith(ctx, `PRAGMA synchronous = NORMAL`)
	if err != nil {
		return nil, fmt.Errorf("store: writer: %w", err)
	}
	d.wconn = conn
	return conn, nil
}

// connWith takes a connection out of the pool and applies set to it.
func (d *DB) connWith(ctx context.Context, set string) (*sql.Conn, error) {
	conn, err := d.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.ExecContext(ctx, set); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (d *DB) dropWriteConn() {
	if d.wconn != nil {
		d.wconn.Close()
		d.wconn = nil
		// With every connection closed SQLite deletes the WAL, and the
		// next one makes a new file.
		d.wal.reopen.Store(true)
	}
}

// ErrSync is a failed fsync of SQLite's WAL. The writes before it are
// committed but may not be on disk, and no write succeeds after it: the
// hub must stop, and read the database again once it is reopened.
var ErrSync = errors.New("store: the database's log could not be synced; reopen it")

// walSync is the fsync of a SQLite database's WAL that makes the writing
// connection's commits durable.
type walSync struct {
	mu    sync.Mutex
	f     *os.File // the WAL, open while the database is
	done  uint64   // commits known to be on disk
	syncs uint64   // fsyncs done
	err   error    // a failed fsync: nothing written since can be trusted
	// failed is err, for writers to read without waiting for an fsync.
	failed atomic.Pointer[error]
	// reopen is set when the writing connection was closed.
	reopen atomic.Bool
	// fsync is (*os.File).Sync; tests make it fail.
	fsync func(*os.File) error
}

// SetFsync replaces the fsync of a SQLite database's WAL (nil: the real
// one), for tests of a disk that fails.
func (d *DB) SetFsync(fsync func(*os.File) error) {
	d.wal.mu.Lock()
	defer d.wal.mu.Unlock()
	d.wal.fsync = fsync
}

// syncWAL returns once commit seq is on disk. A caller that finds an
// fsync under way waits for it, and then finds its commit covered or runs
// the next one for everyone who came meanwhile.
func (d *DB) syncWAL(seq uint64) error {
	w := &d.wal
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if w.done >= seq {
		return nil
	}
	upTo := d.commits.Load() // all written to the WAL before the sync starts
	if w.reopen.Swap(false) && w.f != nil {
		w.f.Close()
		w.f = nil
	}
	if w.f == nil {
		// The WAL exists while a connection is open, and the writing
		// connection stays open: it is the same file until it closes.
		f, err := os.Open(d.path + "-wal")
		if err != nil {
			return fmt.Errorf("store: sync: %w", err)
		}
		w.f = f
	}
	fsync := w.fsync
	if fsync == nil {
		fsync = (*os.File).Sync
	}
	if err := fsync(w.f); err != nil {
		// After a failed fsync the kernel may have dropped the pages it
		// could not write, and a later fsync can succeed without them.
		// Every write fails from now on; the hub must restart.
		w.err = fmt.Errorf("%w: %s-wal: %w", ErrSync, d.path, err)
		w.failed.Store(&w.err)
		return w.err
	}
	w.done = upTo
	w.syncs++
	return nil
}

// ReadTx runs fn in a read-only transaction that sees one snapshot of the
// database while writers go on: SQLite's WAL gives a deferred transaction
// its snapshot at the first read; PostgreSQL needs repeatable read.
func (d *DB) ReadTx(ctx context.Context, fn func(*sql.Tx) error) error {
	opts := &sql.TxOptions{ReadOnly: true}
	if d.Dialect == Postgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := d.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("store: begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// IsPostgres reports whether dsn names a PostgreSQL database.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open opens dsn, a file path for SQLite or a postgres:// URL, and brings
// its schema up to date.
func Open(ctx context.Context, dsn string) (*DB, error) { return OpenVersion(ctx, dsn, 0) }

// OpenVersion is Open that stops migrating at schema version (0: latest).
// Tests use it to build databases of an older schema.
func OpenVersion(ctx context.Context, dsn string, version int) (*DB, error) {
	if IsPostgres(dsn) {
		return openPostgres(ctx, dsn, version)
	}
	return openSQLite(ctx, dsn, version)
}

func openPostgres(ctx context.Context, dsn string, version int) (*DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open postgres: %w", err)
	}
	d := &DB{DB: db, Dialect: Postgres, dsn: dsn}
	if err := d.migrate(ctx, version); err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

func openSQLite(ctx context.Context, path string, version int) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)", "temp_store(MEMORY)"} {
		q.Add("_pragma", p)
	}
	// Writers take the lock at BEGIN, so two writers never deadlock upgrading.
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// Keep connections: opening one re-reads the schema, and the default
	// keeps only two idle.
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	d := &DB{DB: db, Dialect: SQLite, path: path}
	if err := d.migrate(ctx, version); err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

// FlooredTime stands for a time argument (micros, one ?) raised to the
// report floor (schema v43): a row a postal report takes by its time,
// written by a statement that reads nothing first, is dated no earlier
// than the end of the last period a report was built for (hub/ledger's
// floor.go says why). Reading report_floor here also holds its share of
// the table's lock to the end of the transaction, which a report's build
// waits for on PostgreSQL.
const FlooredTime = `(SELECT MAX(v) FROM (SELECT CAST(? AS BIGINT) AS v UNION ALL SELECT floor FROM report_floor WHERE id = 1) f)`

// Rebind turns ? placeholders into the dialect's form.
func (d *DB) Rebind(query string) string {
	if d.Dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Stmt returns query (with ? placeholders) prepared once for the life of
// the DB. Parsing SQL is most of a small statement's cost. It takes a
// connection from the pool, so call it outside transactions (Prepare warms
// the cache at start).
func (d *DB) Stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if s, ok := d.stmts.Load(query); ok {
		return s.(*sql.Stmt), nil
	}
	s, err := d.PrepareContext(ctx, d.Rebind(query))
	if err != nil {
		return nil, fmt.Errorf("store: prepare: %w", err)
	}
	if prev, loaded := d.stmts.LoadOrStore(query, s); loaded {
		s.Close()
		return prev.(*sql.Stmt), nil
	}
	return s, nil
}

// Prepare fills the statement cache.
func (d *DB) Prepare(ctx context.Context, queries ...string) error {
	for _, q := range queries {
		if _, err := d.Stmt(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// TxStmt returns query prepared for use in tx. Inside a transaction a
// statement must not wait for a second pool connection: with SQLite the
// transaction holds the only write lock, and a connection the pool hands
// out may be waiting for that lock. So a query not yet cached is prepared
// on the transaction's own connection.
func (d *DB) TxStmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	if s, ok := d.stmts.Load(query); ok {
		return tx.StmtContext(ctx, s.(*sql.Stmt)), nil
	}
	s, err := tx.PrepareContext(ctx, d.Rebind(query))
	if err != nil {
		return nil, fmt.Errorf("store: prepare: %w", err)
	}
	return s, nil
}

// ExecStmt runs a prepared query, in tx when tx is not nil.
func (d *DB) ExecStmt(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	var s *sql.Stmt
	var err error
	if tx != nil {
		s, err = d.TxStmt(ctx, tx, query)
	} else {
		s, err = d.Stmt(ctx, query)
	}
	if err != nil {
		return nil, err
	}
	return s.ExecContext(ctx, args...)
}

// QueryRowStmt runs a prepared single-row query, in tx when tx is not nil.
func (d *DB) QueryRowStmt(ctx context.Context, tx *sql.Tx, query string, args ...any) *sql.Row {
	var s *sql.Stmt
	var err error
	if tx != nil {
		s, err = d.TxStmt(ctx, tx, query)
	} else {
		s, err = d.Stmt(ctx, query)
	}
	if err != nil {
		// A bad query is a programming error; Scan reports it.
		if tx != nil {
			return tx.QueryRowContext(ctx, d.Rebind(query), args...)
		}
		return d.QueryRowContext(ctx, d.Rebind(query), args...)
	}
	return s.QueryRowContext(ctx, args...)
}

// ForUpdate is the row-locking suffix for a SELECT inside a transaction.
// SQLite needs none: a write transaction holds the whole database.
func (d *DB) ForUpdate() string {
	if d.Dialect == Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// IsConflict reports whether err is a unique-constraint violation.
func IsConflict(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "SQLSTATE 23505")
}

// SchemaVersion returns the applied migration number.
func (d *DB) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := d.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("store: schema version: %w", err)
	}
	return v, nil
}

type migration struct {
	version int
	name    string
	sql     string
}

func (d *DB) migrations() ([]migration, error) {
	dir := "migrations/" + string(d.Dialect)
	entries, err := fs.ReadDir(migrations, dir)
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("store: migration file %s: want NNNN_name.sql", e.Name())
		}
		b, err := fs.ReadFile(migrations, dir+"/"+e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{v, e.Name(), string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("store: migrations: %s out of sequence", m.name)
		}
	}
	return out, nil
}

func (d *DB) migrate(ctx context.Context, upTo int) error {
	conn, err := d.Conn(ctx)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	defer conn.Close()
	if d.Dialect == Postgres {
		// Hubs sharing a database may start together; one migrates.
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(7070001)`); err != nil {
			return fmt.Errorf("store: migrate: lock: %w", err)
		}
		defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(7070001)`)
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)`); err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	ms, err := d.migrations()
	if err != nil {
		return err
	}
	var have int
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	if have > len(ms) {
		return fmt.Errorf("store: migrate: database is at schema %d, this hub knows %d; upgrade the hub", have, len(ms))
	}
	if upTo > 0 && upTo < len(ms) {
		ms = ms[:upTo]
	}
	for _, m := range ms[min(have, len(ms)):] {
		for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
			err := d.apply(ctx, conn, m)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != pgLockNotAvailable {
				if err != nil {
					return fmt.Errorf("store: migrate %s: %w", m.name, err)
				}
				break
			}
			slog.Warn("schema migration waits for transactions of running hubs on its tables; tried again", "migration", m.name, "in", wait)
			select {
			case <-ctx.Done():
				return fmt.Errorf("store: migrate %s: %w", m.name, ctx.Err())
			case <-time.After(wait):
			}
		}
	}
	return nil
}

// migrationLockTimeout bounds a migration's wait for a table lock on
// PostgreSQL. A lock it waits for queues every later statement on that
// table behind it: the sales of every hub of a cluster upgraded one hub at
// a time would stop for as long as the longest transaction on the table
// (the leader's ledger check reads indicia for seconds). It gives way, and
// tries again.
const migrationLockTimeout = "1s"

// pgLockNotAvailable is PostgreSQL's lock_not_available: a lock_timeout.
const pgLockNotAvailable = "55P03"

// apply runs one migration in a transaction of its own.
func (d *DB) apply(ctx context.Context, conn *sql.Conn, m migration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if d.Dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '`+migrationLockTimeout+`'`); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, d.Rebind(`INSERT INTO schema_migrations (version, name) VALUES (?, ?)`), m.version, m.name); err != nil {
		return err
	}
	return tx.Commit()
}

// ErrShared is a SQLite database another hub process is serving.
var ErrShared = errors.New("store: another hub serves this SQLite database; hubs that share a database need PostgreSQL")

// ServeAlone makes this process the only hub serving a SQLite database,
// until the returned release: an exclusive lock on a file beside it, which
// the kernel drops when the process dies. Tools that only read or
// administer the database do not take it. On PostgreSQL, where hubs
// share the database, it does nothing.
func (d *DB) ServeAlone() (release func(), err error) {
	if d.Dialect != SQLite {
		return func() {}, nil
	}
	f, err := os.OpenFile(d.path+".hub-lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: serve alone: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s)", ErrShared, d.path)
		}
		return nil, fmt.Errorf("store: serve alone: %w", err)
	}
	return func() { f.Close() }, nil
}
