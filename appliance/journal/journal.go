// Package journal is the kiosk's durable sale log. Every step of a sale is
// written (SQLite, WAL, synchronous=FULL) before the kiosk acts on it, so
// that after a power cut at any point the kiosk knows how far each sale got:
// whether its request may have reached the hub, what the hub answered, and
// for each label whether it printed, failed, or was on its way to the
// printer when the power went.
package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// LabelState is where one label of a sale is.
type LabelState string

const (
	Pending   LabelState = "pending"  // not yet sent to the printer
	Printing  LabelState = "printing" // sent; the outcome is not known yet
	Printed   LabelState = "printed"
	Failed    LabelState = "failed"
	Refunded  LabelState = "refunded"  // failed, and its refund confirmed by the hub
	Reprinted LabelState = "reprinted" // failed, and reprinted free on another label
	// Refused is a failed label whose refund the hub refused for good
	// (remedy_not_allowed: asked too late, or remedied another way). Nothing
	// more is asked; its customer is owed what staff decide at the counter.
	Refused LabelState = "refused"
)

// Sale is one sale as the journal knows it.
type Sale struct {
	RequestID string
	Request   []byte // the request as sent, resent byte for byte
	Result    []byte // the hub's answer; nil until it came
	Reported  bool   // the hub confirmed the print report
	Closed    bool
	Labels    []Label
	Started   time.Time
}

// Label is one label of a sale.
type Label struct {
	Serial string
	State  LabelState
	Reason string // why it failed
}

// ErrUnknownSale is a step for a sale never begun.
var ErrUnknownSale = errors.New("journal: unknown sale")

// ErrDamaged is a journal file that fails SQLite's check: a kiosk must not
// sell on it, since the open sales it cannot read would go unsettled.
var ErrDamaged = errors.New("journal: the file is damaged")

// Journal is an open journal.
type Journal struct {
	db  *sql.DB
	now func() time.Time

	mu   sync.Mutex
	last time.Time // the latest time recorded, which no later one precedes
}

// SetClock makes now the journal's clock for the times it records (the
// kiosk's, so that a sale's start and the remedy window agree); call it
// before the journal is used. Default the system's.
func (j *Journal) SetClock(now func() time.Time) { j.now = now }

// Now is the time the journal records next: its clock, but never earlier
// than a time it recorded or was told of (NotBefore). A Pi's clock steps
// back (NTP pulling back a fast one, a start on a saved time); a sale it
// dated before the shift that staff had just ended was in neither shift's
// report.
func (j *Journal) Now() time.Time {
	t := j.now()
	j.mu.Lock()
	defer j.mu.Unlock()
	if !t.After(j.last) {
		t = j.last.Add(time.Microsecond) // what a row holds
	}
	j.last = t
	return t
}

// NotBefore tells the journal of a time it must record nothing before,
// such as the end of a shift.
func (j *Journal) NotBefore(t time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if t.After(j.last) {
		j.last = t
	}
}

const schema = `
CREATE TABLE IF NOT EXISTS sales (
  request_id TEXT PRIMARY KEY,
  request    BLOB NOT NULL,
  result     BLOB,
  reported   INTEGER NOT NULL DEFAULT 0,
  closed     INTEGER NOT NULL DEFAULT 0,
  started_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
  request_id TEXT NOT NULL REFERENCES sales (request_id),
  serial     TEXT NOT NULL,
  pos        INTEGER NOT NULL,
  state      TEXT NOT NULL,
  reason     TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (request_id, serial)
);
CREATE INDEX IF NOT EXISTS sales_open ON sales (closed);
CREATE TABLE IF NOT EXISTS sheets (
  serial    TEXT PRIMARY KEY,
  loaded_at INTEGER NOT NULL
);
-- Every sheet loaded, kept after the sheet is used up: the shift report
-- counts the labels staff loaded.
CREATE TABLE IF NOT EXISTS loads (
  serial    TEXT NOT NULL,
  loaded_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
  command_id TEXT PRIMARY KEY,
  result     BLOB NOT NULL,
  done_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
  key   TEXT PRIMARY KEY,
  value BLOB NOT NULL
);`

// Open opens or creates the journal at path.
func Open(path string) (*Journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("journal: open: %w", err)
	}
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(5000)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("journal: open: %w", err)
	}
	db.SetMaxOpenConns(1) // one kiosk, one writer: no lock contention to manage
	if err := check(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	var last int64
	if err := db.QueryRow(`SELECT MAX(t) FROM (SELECT COALESCE(MAX(started_at), 0) AS t FROM sales
		UNION ALL SELECT COALESCE(MAX(loaded_at), 0) FROM loads)`).Scan(&last); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	return &Journal{db: db, now: time.Now, last: time.UnixMicro(last)}, nil
}

// check runs SQLite's quick_check: a damaged page opens fine and fails
// only the query that reaches it, too late to stop the kiosk selling.
func check(db *sql.DB) error {
	rows, err := db.Query(`PRAGMA quick_check`)
	if err != nil {
		return fmt.Errorf("%w: quick_check: %w", ErrDamaged, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("%w: quick_check: %w", ErrDamaged, err)
		}
		problems = append(problems, line)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%w: quick_check: %w", ErrDamaged, err)
	}
	if len(problems) != 1 || problems[0] != "ok" {
		return fmt.Errorf("%w: quick_check: %s", ErrDamaged, strings.Join(problems, "; "))
	}
	return nil
}

// CommandDone records a command carried out, with the result the hub gets
// for every repeat of it. Commands older than a week are forgotten: the
// hub stops sending a command after a day.
func (j *Journal) CommandDone(ctx context.Context, commandID string, result []byte) error {
	now := j.now()
	if _, err := j.db.ExecContext(ctx, `INSERT INTO commands (command_id, result, done_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		commandID, result, now.UnixMicro()); err != nil {
		return fmt.Errorf("journal: command %s: %w", commandID, err)
	}
	if _, err := j.db.ExecContext(ctx, `DELETE FROM commands WHERE done_at < ?`, now.Add(-7*24*time.Hour).UnixMicro()); err != nil {
		return fmt.Errorf("journal: command %s: %w", commandID, err)
	}
	return nil
}

// CommandResult returns the result of a command carried out, or nil.
func (j *Journal) CommandResult(ctx context.Context, commandID string) ([]byte, error) {
	var b []byte
	err := j.db.QueryRowContext(ctx, `SELECT result FROM commands WHERE command_id = ?`, commandID).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: command %s: %w", commandID, err)
	}
	return b, nil
}

// SetSetting keeps a value that must survive a restart, such as a lock.
func (j *Journal) SetSetting(ctx context.Context, key string, value []byte) error {
	if _, err := j.db.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
		key, value); err != nil {
		return fmt.Errorf("journal: setting %s: %w", key, err)
	}
	return nil
}

// Setting returns a kept value, or nil.
func (j *Journal) Setting(ctx context.Context, key string) ([]byte, error) {
	var b []byte
	err := j.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: setting %s: %w", key, err)
	}
	return b, nil
}

// Close closes the journal.
func (j *Journal) Close() error { return j.db.Close() }

// Begin records a sale's request and its labels before it is first sent.
func (j *Journal) Begin(ctx context.Context, requestID string, request []byte, labels []string) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("journal: begin %s: %w", requestID, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO sales (request_id, request, started_at) VALUES (?, ?, ?)`,
		requestID, request, j.Now().UnixMicro()); err != nil {
		return fmt.Errorf("journal: begin %s: %w", requestID, err)
	}
	for i, l := range labels {
		if _, err := tx.ExecContext(ctx, `INSERT INTO labels (request_id, serial, pos, state) VALUES (?, ?, ?, ?)`,
			requestID, l, i, Pending); err != nil {
			return fmt.Errorf("journal: begin %s: label %s: %w", requestID, l, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("journal: begin %s: %w", requestID, err)
	}
	return nil
}

// Answer records the hub's answer.
func (j *Journal) Answer(ctx context.Context, requestID string, result []byte) error {
	return j.exec(ctx, "answer", requestID, `UPDATE sales SET result = ? WHERE request_id = ?`, result, requestID)
}

// SetLabel records a label's new state; reason says why it failed.
func (j *Journal) SetLabel(ctx context.Context, requestID, serial string, state LabelState, reason string) error {
	return j.exec(ctx, "label "+serial, requestID, `UPDATE labels SET state = ?, reason = ? WHERE request_id = ? AND serial = ?`,
		state, reason, requestID, serial)
}

// Reported records that the hub took the sale's print report.
func (j *Journal) Reported(ctx context.Context, requestID string) error {
	return j.exec(ctx, "reported", requestID, `UPDATE sales SET reported = 1 WHERE request_id = ?`, requestID)
}

// Finish closes a sale: nothing more is owed on it.
func (j *Journal) Finish(ctx context.Context, requestID string) error {
	return j.exec(ctx, "finish", requestID, `UPDATE sales SET closed = 1 WHERE request_id = ?`, requestID)
}

func (j *Journal) exec(ctx context.Context, op, requestID, query string, args ...any) error {
	res, err := j.db.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("journal: %s %s: %w", op, requestID, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("journal: %s %s: %w", op, requestID, ErrUnknownSale)
	}
	return nil
}

// AddSheets remembers label sheets loaded into the kiosk, so that a
// restart knows its stock.
func (j *Journal) AddSheets(ctx context.Context, serials []string) error {
	for _, s := range serials {
		now := j.Now().UnixMicro()
		res, err := j.db.ExecContext(ctx, `INSERT INTO sheets (serial, loaded_at) VALUES (?, ?) ON CONFLICT DO NOTHING`, s, now)
		if err != nil {
			return fmt.Errorf("journal: add sheet %s: %w", s, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			if _, err := j.db.ExecContext(ctx, `INSERT INTO loads (serial, loaded_at) VALUES (?, ?)`, s, now); err != nil {
				return fmt.Errorf("journal: add sheet %s: %w", s, err)
			}
		}
	}
	return nil
}

// LoadedSince counts the sheets loaded at or after from.
func (j *Journal) LoadedSince(ctx context.Context, from time.Time) (int, error) {
	var n int
	if err := j.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM loads WHERE loaded_at >= ?`, from.UnixMicro()).Scan(&n); err != nil {
		return 0, fmt.Errorf("journal: loads: %w", err)
	}
	return n, nil
}

// Since returns the sales begun at or after from, oldest first.
func (j *Journal) Since(ctx context.Context, from time.Time) ([]*Sale, error) {
	return j.sales(ctx, "since", `SELECT request_id FROM sales WHERE started_at >= ? ORDER BY started_at`, from.UnixMicro())
}

// DropSheet forgets a sheet the hub says is used up or no longer ours.
func (j *Journal) DropSheet(ctx context.Context, serial string) error {
	if _, err := j.db.ExecContext(ctx, `DELETE FROM sheets WHERE serial = ?`, serial); err != nil {
		return fmt.Errorf("journal: drop sheet %s: %w", serial, err)
	}
	return nil
}

// UndoLoad forgets a sheet AddSheets recorded that the hub then refused
// to load: it is not loaded, and its load is not counted.
func (j *Journal) UndoLoad(ctx context.Context, serial string) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("journal: undo load %s: %w", serial, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM loads WHERE serial = ? AND loaded_at = (SELECT loaded_at FROM sheets WHERE serial = ?)`, serial, serial); err != nil {
		return fmt.Errorf("journal: undo load %s: %w", serial, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM sheets WHERE serial = ?`, serial); err != nil {
		return fmt.Errorf("journal: undo load %s: %w", serial, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("journal: undo load %s: %w", serial, err)
	}
	return nil
}

// Sheets lists the loaded sheets, in load order.
func (j *Journal) Sheets(ctx context.Context) ([]string, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT serial FROM sheets ORDER BY loaded_at, serial`)
	if err != nil {
		return nil, fmt.Errorf("journal: sheets: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("journal: sheets: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Get reads one sale.
func (j *Journal) Get(ctx context.Context, requestID string) (*Sale, error) {
	s := &Sale{RequestID: requestID}
	var started int64
	err := j.db.QueryRowContext(ctx, `SELECT request, result, reported, closed, started_at FROM sales WHERE request_id = ?`, requestID).
		Scan(&s.Request, &s.Result, &s.Reported, &s.Closed, &started)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("journal: get %s: %w", requestID, ErrUnknownSale)
	}
	if err != nil {
		return nil, fmt.Errorf("journal: get %s: %w", requestID, err)
	}
	s.Started = time.UnixMicro(started)
	rows, err := j.db.QueryContext(ctx, `SELECT serial, state, reason FROM labels WHERE request_id = ? ORDER BY pos`, requestID)
	if err != nil {
		return nil, fmt.Errorf("journal: get %s: %w", requestID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var l Label
		if err := rows.Scan(&l.Serial, &l.State, &l.Reason); err != nil {
			return nil, fmt.Errorf("journal: get %s: %w", requestID, err)
		}
		s.Labels = append(s.Labels, l)
	}
	return s, rows.Err()
}

// Owed reports whether a label still needs something: a print outcome, or
// a remedy for a failure.
func (l Label) Owed() bool {
	return l.State != Printed && l.State != Refunded && l.State != Reprinted && l.State != Refused
}

// Unfinished returns the sales not yet closed, oldest first: what a
// restart must settle.
func (j *Journal) Unfinished(ctx context.Context) ([]*Sale, error) {
	return j.sales(ctx, "unfinished", `SELECT request_id FROM sales WHERE closed = 0 ORDER BY started_at`)
}

// sales reads each sale whose request id query selects, in its order.
func (j *Journal) sales(ctx context.Context, op, query string, args ...any) ([]*Sale, error) {
	rows, err := j.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("journal: %s: %w", op, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("journal: %s: %w", op, err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("journal: %s: %w", op, err)
	}
	// The ids are read first: the journal has one connection, and Get
	// needs it.
	out := make([]*Sale, 0, len(ids))
	for _, id := range ids {
		s, err := j.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Settle decides what a restart owes each label of an unfinished sale:
// a label that printed is reported printed; any other label, including
// one that was on its way to the printer when the power went, is reported
// failed (so its indicium is voided) and refunded, for why if it had no
// outcome of its own (power_cut, no_answer). A label is never sent to the
// printer again, so no stamp prints twice.
func (s *Sale) Settle(why string) (printed, failed []Label) {
	for _, l := range s.Labels {
		switch l.State {
		case Printed:
			printed = append(printed, l)
		case Refunded, Reprinted, Refused:
		default:
			if l.State != Failed {
				l.Reason = why
			}
			failed = append(failed, l)
		}
	}
	return printed, failed
}
