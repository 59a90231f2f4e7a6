// Package commands is ops' remote control of kiosks. It records each
// command with who gave it, hands it to the kiosk until the kiosk answers
// (a kiosk carries out a command id once, so resending is safe), and keeps
// the answer, diagnostics among them, for the console. A lock also takes
// effect at the hub at once: the fleet refuses the kiosk every sale,
// whatever the kiosk's own software does.
package commands

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Status of a command.
const (
	Pending  = "pending"  // not yet answered by the kiosk
	Done     = "ok"       // carried out
	Rejected = "rejected" // the kiosk refused it (an action it does not know)
	Expired  = "expired"  // not answered within Expiry; not sent again
)

// Expiry is how long a command waits for its kiosk. An offline kiosk that
// comes back a day later should not restart on an order nobody remembers.
const Expiry = 24 * time.Hour

// A Command is a command as the hub keeps it.
type Command struct {
	protocol.Command
	SentAt *time.Time              `json:"sent_at,omitempty"` // last handed to the broker
	DoneAt *time.Time              `json:"done_at,omitempty"` // answered
	Status string                  `json:"status"`            // Pending, Done, Rejected, Expired
	Result *protocol.CommandResult `json:"result,omitempty"`
}

// locker locks and unlocks a kiosk at the hub; the fleet.
type locker interface {
	SetLocked(ctx context.Context, kioskID, by string, locked bool) error
}

// sender hands a command to its kiosk; the MQTT front.
type sender interface {
	SendCommand(c protocol.Command)
}

// Commands is the command book.
type Commands struct {
	db   *store.DB
	lock locker
	now  func() time.Time

	mu sync.Mutex
	to sender // until SetSender, commands wait in the book for a resend
}

// SetSender sets how commands reach kiosks.
func (c *Commands) SetSender(s sender) {
	c.mu.Lock()
	c.to = s
	c.mu.Unlock()
}

// New returns the command book on db; now defaults to time.Now.
func New(db *store.DB, lock locker, now func() time.Time) *Commands {
	if now == nil {
		now = time.Now
	}
	return &Commands{db: db, lock: lock, now: now}
}

// ErrUnknown is a command id nobody issued.
var ErrUnknown = errors.New("commands: no such command")

// Issue records a command from an operator and sends it. A lock or unlock
// takes effect at the hub before the command is recorded, so a kiosk
// suspected stolen is refused sales even while it is offline.
func (c *Commands) Issue(ctx context.Context, kioskID, action, message, by string) (*Command, error) {
	message = strings.TrimSpace(message)
	switch {
	case action == protocol.ActionUpdate:
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "updates are offered by rollouts (hub rollout start)")
	case !protocol.KnownAction(action):
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "action %q: want one of %s", action, strings.Join(protocol.Actions, ", "))
	case !utf8.ValidString(message) || utf8.RuneCountInString(message) > protocol.MaxCommandMessage:
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "message: want at most %d characters", protocol.MaxCommandMessage)
	case by == "" || len(by) > 64:
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "issued_by: want 1 to 64 bytes")
	}
	switch action {
	case protocol.ActionLock, protocol.ActionUnlock:
		if err := c.lock.SetLocked(ctx, kioskID, by, action == protocol.ActionLock); err != nil {
			return nil, fmt.Errorf("commands: issue %s to %s: %w", action, kioskID, err)
		}
	}
	return c.issue(ctx, protocol.Command{KioskID: kioskID, Action: action, Message: message, IssuedBy: by}, nil)
}

// IssueUpdate offers a kiosk a release; rollouts do. link records the
// offer as the rollout's in the same transaction: an offer no rollout
// knows would outlive the rollout's abort. If link fails, nothing is
// issued and IssueUpdate returns its error.
func (c *Commands) IssueUpdate(ctx context.Context, kioskID string, offer *protocol.ReleaseOffer, by string, link func(tx *sql.Tx, commandID string) error) (*Command, error) {
	return c.issue(ctx, protocol.Command{KioskID: kioskID, Action: protocol.ActionUpdate, IssuedBy: by, Release: offer}, link)
}

func (c *Commands) issue(ctx context.Context, pc protocol.Command, link func(tx *sql.Tx, commandID string) error) (*Command, error) {
	kioskID, action := pc.KioskID, pc.Action
	pc.CommandID, pc.IssuedAt = "cmd-"+rand.Text(), c.now().UTC().Truncate(time.Microsecond)
	cmd := &Command{Command: pc, Status: Pending}
	var payload sql.NullString
	if pc.Release != nil {
		b, _ := json.Marshal(pc.Release)
		payload = sql.NullString{String: string(b), Valid: true}
	}
	insert := func(ex interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}) error {
		res, err := ex.ExecContext(ctx, c.db.Rebind(`INSERT INTO kiosk_commands (id, kiosk_id, action, message, issued_by, issued_at, payload)
			SELECT ?, kiosk_id, ?, ?, ?, ?, ? FROM kiosks WHERE kiosk_id = ? AND store IS NOT NULL AND retired_at IS NULL`),
			cmd.CommandID, action, pc.Message, pc.IssuedBy, cmd.IssuedAt.UnixMicro(), payload, kioskID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return protocol.Errorf(protocol.CodeUnknownKiosk, "kiosk %s is not a provisioned kiosk in service", kioskID)
		}
		return nil
	}
	var err error
	if link == nil {
		err = insert(c.db)
	} else {
		err = c.db.InTx(ctx, func(tx *sql.Tx) error {
			if err := insert(tx); err != nil {
				return err
			}
			return link(tx, cmd.CommandID)
		})
	}
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return nil, pe // an answer for the operator, as it is
	case err != nil:
		return nil, fmt.Errorf("commands: issue %s to %s: %w", action, kioskID, err)
	}
	c.send(ctx, []protocol.Command{cmd.Command})
	return cmd, nil
}

// send hands commands to the front and notes when.
func (c *Commands) send(ctx context.Context, cmds []protocol.Command) {
	c.mu.Lock()
	to := c.to
	c.mu.Unlock()
	if to == nil || len(cmds) == 0 {
		return
	}
	now := c.now().UnixMicro()
	for _, cmd := range cmds {
		to.SendCommand(cmd)
		// Only the resend's pacing depends on it: an error costs one
		// early resend.
		c.db.ExecContext(ctx, c.db.Rebind(`UPDATE kiosk_commands SET sent_at = ? WHERE id = ?`), now, cmd.CommandID)
	}
}

// Record keeps a kiosk's answer. kioskID is the kiosk whose topic it came
// on: a kiosk answers only its own commands. A repeated answer changes
// nothing. An update answered ok while running another firmware than the
// release offered is kept rejected (update_failed): its rollout counts it
// failed, not healthy.
func (c *Commands) Record(ctx context.Context, kioskID string, r *protocol.CommandResult) error {
	if r.KioskID != kioskID {
		return protocol.Errorf(protocol.CodeKioskMismatch, "a result for kiosk %s on kiosk %s's topic", r.KioskID, kioskID)
	}
	if r.Status == Done {
		var err error
		if r, err = c.checkUpdate(ctx, kioskID, r); err != nil {
			return fmt.Errorf("commands: record %s: %w", r.CommandID, err)
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("commands: record %s: %w", r.CommandID, err)
	}
	res, err := c.db.ExecContext(ctx, c.db.Rebind(`UPDATE kiosk_commands SET status = ?, result = ?, done_at = ?
		WHERE id = ? AND kiosk_id = ? AND status IN (?, ?)`),
		r.Status, string(b), c.now().UnixMicro(), r.CommandID, kioskID, Pending, Expired)
	if err != nil {
		return fmt.Errorf("commands: record %s: %w", r.CommandID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var known int
		if err := c.db.QueryRowContext(ctx, c.db.Rebind(`SELECT COUNT(*) FROM kiosk_commands WHERE id = ? AND kiosk_id = ?`), r.CommandID, kioskID).Scan(&known); err != nil {
			return fmt.Errorf("commands: record %s: %w", r.CommandID, err)
		}
		if known == 0 {
			return fmt.Errorf("commands: record %s from %s: %w", r.CommandID, kioskID, ErrUnknown)
		}
	}
	return nil
}

// checkUpdate returns an ok answer to an update as rejected if the
// firmware it names is not the release offered: a kiosk with a bug (or
// one that rolled back and says ok) would otherwise count healthy on a
// release it does not run. Any other answer it returns as it is.
func (c *Commands) checkUpdate(ctx context.Context, kioskID string, r *protocol.CommandResult) (*protocol.CommandResult, error) {
	var action string
	var payload sql.NullString
	err := c.db.QueryRowContext(ctx, c.db.Rebind(`SELECT action, payload FROM kiosk_commands WHERE id = ? AND kiosk_id = ?`), r.CommandID, kioskID).Scan(&action, &payload)
	if errors.Is(err, sql.ErrNoRows) || err == nil && action != protocol.ActionUpdate {
		return r, nil // unknown: Record says so
	}
	if err != nil {
		return r, err
	}
	var offer protocol.ReleaseOffer
	var m protocol.ReleaseManifest
	if err := json.Unmarshal([]byte(payload.String), &offer); err != nil {
		return r, fmt.Errorf("offer: %w", err)
	}
	if err := json.Unmarshal(offer.Manifest, &m); err != nil {
		return r, fmt.Errorf("offer's manifest: %w", err)
	}
	if r.Firmware == m.Version {
		return r, nil
	}
	bad := *r
	bad.Status = Rejected
	bad.Error = protocol.Errorf(protocol.CodeUpdateFailed, "answered ok running firmware %q, not release %s offered", r.Firmware, m.Version)
	return &bad, nil
}

// Resend sends again the pending commands last sent before the given
// time, and expires those older than Expiry.
func (c *Commands) Resend(ctx context.Context, sentBefore time.Time) error {
	return c.resend(ctx, "", sentBefore)
}

// ResendTo sends a kiosk every command it has not answered: it just came
// online.
func (c *Commands) ResendTo(ctx context.Context, kioskID string) error {
	return c.resend(ctx, kioskID, time.UnixMicro(math.MaxInt64))
}

func (c *Commands) resend(ctx context.Context, kioskID string, sentBefore time.Time) error {
	now := c.now()
	if _, err := c.db.ExecContext(ctx, c.db.Rebind(`UPDATE kiosk_commands SET status = ? WHERE status = ? AND issued_at < ?`),
		Expired, Pending, now.Add(-Expiry).UnixMicro()); err != nil {
		return fmt.Errorf("commands: resend: %w", err)
	}
	q := `SELECT id, kiosk_id, action, message, issued_by, issued_at, payload FROM kiosk_commands
		WHERE status = ? AND (sent_at IS NULL OR sent_at < ?)`
	args := []any{Pending, sentBefore.UnixMicro()}
	if kioskID != "" {
		q += ` AND kiosk_id = ?`
		args = append(args, kioskID)
	}
	rows, err := c.db.QueryContext(ctx, c.db.Rebind(q+` ORDER BY issued_at LIMIT 1000`), args...)
	if err != nil {
		return fmt.Errorf("commands: resend: %w", err)
	}
	var due []protocol.Command
	for rows.Next() {
		var cmd protocol.Command
		var at int64
		var payload sql.NullString
		if err := rows.Scan(&cmd.CommandID, &cmd.KioskID, &cmd.Action, &cmd.Message, &cmd.IssuedBy, &at, &payload); err != nil {
			rows.Close()
			return fmt.Errorf("commands: resend: %w", err)
		}
		cmd.IssuedAt = time.UnixMicro(at).UTC()
		if payload.Valid {
			cmd.Release = &protocol.ReleaseOffer{}
			if err := json.Unmarshal([]byte(payload.String), cmd.Release); err != nil {
				rows.Close()
				return fmt.Errorf("commands: resend %s: %w", cmd.CommandID, err)
			}
		}
		due = append(due, cmd)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("commands: resend: %w", err)
	}
	c.send(ctx, due)
	return nil
}

const selectCommand = `SELECT id, kiosk_id, action, message, issued_by, issued_at, sent_at, done_at, status, result FROM kiosk_commands`

// Get returns one command.
func (c *Commands) Get(ctx context.Context, id string) (*Command, error) {
	cmds, err := c.query(ctx, selectCommand+` WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(cmds) == 0 {
		return nil, fmt.Errorf("commands: get %s: %w", id, ErrUnknown)
	}
	return &cmds[0], nil
}

// Of returns a kiosk's latest commands, newest first.
func (c *Commands) Of(ctx context.Context, kioskID string, limit int) ([]Command, error) {
	return c.query(ctx, selectCommand+` WHERE kiosk_id = ? ORDER BY issued_at DESC LIMIT ?`, kioskID, limit)
}

// LastDiagnostics returns the latest diagnostics a kiosk answered, or nil.
func (c *Commands) LastDiagnostics(ctx context.Context, kioskID string) (*Command, error) {
	cmds, err := c.query(ctx, selectCommand+` WHERE kiosk_id = ? AND action = ? AND status = ? ORDER BY done_at DESC LIMIT 1`,
		kioskID, protocol.ActionDiagnostics, Done)
	if err != nil || len(cmds) == 0 {
		return nil, err
	}
	return &cmds[0], nil
}

func (c *Commands) query(ctx context.Context, q string, args ...any) ([]Command, error) {
	rows, err := c.db.QueryContext(ctx, c.db.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("commands: query: %w", err)
	}
	defer rows.Close()
	var out []Command
	for rows.Next() {
		var cmd Command
		var at int64
		var sent, done sql.NullInt64
		var result sql.NullString
		if err := rows.Scan(&cmd.CommandID, &cmd.KioskID, &cmd.Action, &cmd.Message, &cmd.IssuedBy, &at, &sent, &done, &cmd.Status, &result); err != nil {
			return nil, fmt.Errorf("commands: query: %w", err)
		}
		cmd.IssuedAt = time.UnixMicro(at).UTC()
		cmd.SentAt, cmd.DoneAt = micros(sent), micros(done)
		if result.Valid {
			var r protocol.CommandResult
			if err := json.Unmarshal([]byte(result.String), &r); err != nil {
				return nil, fmt.Errorf("commands: query: result of %s: %w", cmd.CommandID, err)
			}
			cmd.Result = &r
		}
		out = append(out, cmd)
	}
	return out, rows.Err()
}

func micros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMicro(v.Int64).UTC()
	return &t
}

// ExpireRollout is the write that withdraws a rollout's offers its kiosks
// have not answered, for the releases package to commit with the
// rollout's end. The kiosk_commands table is this package's.
func ExpireRollout(rolloutID int64) store.Write {
	return store.Write{
		Query: `UPDATE kiosk_commands SET status = ? WHERE status = ? AND id IN (SELECT command_id FROM rollout_kiosks WHERE rollout_id = ?)`,
		Args:  []any{Expired, Pending, rolloutID},
	}
}

// ExpireKiosk is the write that withdraws every command a kiosk has not
// answered, for the fleet to commit with the kiosk's retirement: a
// retired kiosk never answers, and a rollout's offer waiting for it would
// expire a day later as a failure.
func ExpireKiosk(kioskID string) store.Write {
	return store.Write{
		Query: `UPDATE kiosk_commands SET status = ? WHERE status = ? AND kiosk_id = ?`,
		Args:  []any{Expired, Pending, kioskID},
	}
}
