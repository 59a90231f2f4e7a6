// Package alerts keeps the alerts ops must see and acknowledge: tamper,
// fraud, inspection due, kiosks offline, low funds, paper out, labels low.
// An alert is raised once per kind and subject until someone acknowledges
// it, or, for a condition the hub sees end (paper loaded), the hub clears it.
// One the hub cleared less than FlapWindow ago is reopened when raised
// again, not added anew.
package alerts

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/frank-postage/frank/hub/store"
)

// Kinds.
const (
	Tamper        = "tamper"         // a control code did not match; the PSD is locked
	Fraud         = "fraud"          // a used label was offered again
	InspectionDue = "inspection_due" // a PSD is near or past its reporting deadline
	KioskOffline  = "kiosk_offline"
	PaperOut      = "paper_out"
	LabelsLow     = "labels_low"
	FundsLow      = "funds_low"
	Unconfirmed   = "unconfirmed_sale"
	ReportRefused = "report_refused" // the postal authority refused a scheduled report
	ReportLate    = "report_late"    // a period's report is not accepted hours after it ended
	// CaptureRefused is a sold stamp whose card capture the gateway
	// refused after the customer had it: the stamp stands unpaid.
	CaptureRefused = "capture_refused"
	// RolloutHalted is a rollout stopped by itself: too many of the kiosks
	// it updated failed their health check.
	RolloutHalted = "rollout_halted"
	// PrinterFault, DoorOpen and ClockSkew come from a kiosk's heartbeat:
	// its printer jammed or stopped (not for paper), its label door stands
	// open, or its clock is more than ClockSkewLimit off the hub's.
	PrinterFault = "printer_fault"
	DoorOpen     = "door_open"
	ClockSkew    = "clock_skew"
	// FailedPrints is a kiosk that reports many of its labels failed: each
	// is voided and its postage refunded, so a stolen kiosk that prints
	// stamps and reports them failed gives them away (the stamps are on the
	// void list, which only a verifier that reads it refuses).
	FailedPrints = "failed_prints"
	// LateRemedy is a kiosk that asked a refund or reprint of a stamp
	// issued longer ago than a kiosk may say it failed (ledger.RemedyLimit):
	// refused, as the stamp may have been mailed meanwhile. A kiosk that
	// lost the hub around a failed print asks late too; staff refund its
	// customer at the counter. Acknowledged by ops, never cleared.
	LateRemedy = "late_remedy"
	// StaffGuessing is a kiosk that made a day's worth of wrong staff
	// logins: its staff forgot their PIN, or it is stolen and someone is
	// guessing.
	StaffGuessing = "staff_guessing"
	// HSMUnavailable is a PSDM server that cannot sign: its HSM call
	// failed or hung past the deadline, or its session is lost and not yet
	// reopened. Its stamps go to other servers or are refused
	// (service_unavailable, nothing charged). Cleared when it signs again.
	HSMUnavailable = "hsm_unavailable"
	// KeyMismatch is a PSDM server whose HSM key under the signing key's
	// label is not the certified key (another token or slot, a restored
	// token): it signs nothing.
	KeyMismatch = "key_mismatch"
)

// ClockSkewLimit is how far a kiosk's clock may be off the hub's before
// ops are told: its receipts and logs carry its time. (A hub's clock is held
// to the database's, within seconds.)
const ClockSkewLimit = 5 * time.Minute

// FlapWindow is how long after the hub cleared an alert the same kind and
// subject raised again reopens that alert rather than adding one, and how
// often a flapping alert is logged. A kiosk whose paper runs out, is
// loaded and runs out again, or whose heartbeats alternate (a loose
// sensor, or a stolen kiosk's credentials in a loop at the broker's 20
// messages a second), is one incident for the store: one row, not one per
// flip. Ten minutes is twenty heartbeats at the default 30 s, longer than
// a refill or a door opened to clear a jam takes, and short enough that a
// fault back the next hour is a new alert with its own time. It also
// bounds what a kiosk can add: one row per kind and subject per window.
const FlapWindow = 10 * time.Minute

// MaxMessageBytes bounds an alert's message as stored and logged; a longer
// one is cut. Messages are the hub's own sentences, but some quote what
// others sent (a kiosk's state, the postal authority's error).
const MaxMessageBytes = 1024

// Alert is one alert.
type Alert struct {
	ID      int64      `json:"id"`
	Kind    string     `json:"kind"`
	Subject string     `json:"subject"`
	Message string     `json:"message"`
	Created time.Time  `json:"created"`
	Acked   *time.Time `json:"acked,omitempty"`
	AckedBy string     `json:"acked_by,omitempty"`
}

// Store keeps alerts in the hub database.
type Store struct {
	db  *store.DB
	log *slog.Logger
	now func() time.Time

	mu    sync.Mutex
	flaps map[flapKey]*flap // alerts reopened in the last FlapWindow
}

type flapKey struct{ kind, subject string }

// flap is an alert the hub cleared and saw raised again: when it last
// reopened, when that was last logged, and how often since it was not.
type flap struct {
	reopened, logged time.Time
	unlogged         int
}

// New returns the alert store.
func New(db *store.DB, log *slog.Logger, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, log: log, now: now, flaps: map[flapKey]*flap{}}
}

// The alert kinds are this file's string constants (metrics_test reads them);
// the queries are variables.
var (
	// reopenQuery reopens the newest alert of a kind and subject if the
	// hub cleared it (not a person: what someone acknowledged stays so)
	// since the cutoff. None is open then: the newest would be it.
	// An alert's time is raised to the report floor: the postal report
	// takes tamper findings by it.
	reopenQuery = `UPDATE alerts SET acked_at = NULL, acked_by = NULL, message = ?, created_at = ` + store.FlooredTime + `
		WHERE id = (SELECT MAX(id) FROM alerts WHERE kind = ? AND subject = ?)
		AND acked_at >= ? AND acked_by LIKE 'hub: %'`
	raiseQuery = `INSERT INTO alerts (kind, subject, message, created_at) VALUES (?, ?, ?, ` + store.FlooredTime + `) ON CONFLICT DO NOTHING`
)

// Raise records an alert unless one of the same kind and subject is open.
// One the hub cleared less than FlapWindow ago is reopened, with this
// message and time, instead of a new one added. It logs, and never fails
// the caller: an alert that cannot be stored is still in the log.
func (s *Store) Raise(ctx context.Context, kind, subject, message string) {
	message = truncate(message, MaxMessageBytes)
	now := s.now()
	res, err := s.db.ExecContext(ctx, s.db.Rebind(reopenQuery), message, now.UnixMicro(), kind, subject, now.Add(-FlapWindow).UnixMicro())
	if err == nil {
		if n, _ := res.RowsAffected(); n == 1 {
			if log, unlogged := s.flapped(kind, subject, now, true); log {
				s.log.Warn("ALERT", "kind", kind, "subject", subject, "message", message, "reopened", true, "unlogged_changes", unlogged)
			}
			return
		}
		res, err = s.db.ExecContext(ctx, s.db.Rebind(raiseQuery), kind, subject, message, now.UnixMicro())
	}
	if err != nil {
		s.log.Error("alert not stored", "kind", kind, "subject", subject, "message", message, "err", err)
		return
	}
	if n, _ := res.RowsAffected(); n == 1 { // an alert already open is not news
		s.log.Warn("ALERT", "kind", kind, "subject", subject, "message", message)
	}
}

// flapped notes an alert reopened (or, if not reopened, cleared) at now,
// and says whether to log it: an alert that flaps is logged at most once
// per FlapWindow, with how many of its changes were not.
func (s *Store) flapped(kind, subject string, now time.Time, reopened bool) (log bool, unlogged int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := flapKey{kind, subject}
	f := s.flaps[k]
	if f == nil {
		if !reopened {
			return true, 0 // cleared, and not flapping
		}
		for k, old := range s.flaps { // keep only the flapping ones
			if now.Sub(old.reopened) >= FlapWindow && now.Sub(old.logged) >= FlapWindow {
				delete(s.flaps, k)
			}
		}
		f = &flap{}
		s.flaps[k] = f
	}
	if reopened {
		f.reopened = now
	} else if now.Sub(f.reopened) >= FlapWindow { // cleared long after it last reopened: it stopped flapping
		delete(s.flaps, k)
		return true, f.unlogged
	}
	if !f.logged.IsZero() && now.Sub(f.logged) < FlapWindow {
		f.unlogged++
		return false, 0
	}
	unlogged, f.logged, f.unlogged = f.unlogged, now, 0
	return true, unlogged
}

// truncate cuts s to at most max bytes, on a character's boundary.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// List returns alerts, newest first; open only if openOnly.
func (s *Store) List(ctx context.Context, openOnly bool) ([]Alert, error) {
	q := `SELECT id, kind, subject, message, created_at, acked_at, COALESCE(acked_by, '') FROM alerts`
	if openOnly {
		q += ` WHERE acked_at IS NULL`
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY id DESC`)
	if err != nil {
		return nil, fmt.Errorf("alerts: list: %w", err)
	}
	defer rows.Close()
	out := []Alert{}
	for rows.Next() {
		var a Alert
		var created int64
		var acked sql.NullInt64
		if err := rows.Scan(&a.ID, &a.Kind, &a.Subject, &a.Message, &created, &acked, &a.AckedBy); err != nil {
			return nil, fmt.Errorf("alerts: list: %w", err)
		}
		a.Created = time.UnixMicro(created).UTC()
		if acked.Valid {
			t := time.UnixMicro(acked.Int64).UTC()
			a.Acked = &t
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Clear closes the open alert of kind and subject, if any, when the hub sees
// its condition end (paper loaded, labels refilled): it is acknowledged by
// "hub" with why.
func (s *Store) Clear(ctx context.Context, kind, subject, why string) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE alerts SET acked_at = ?, acked_by = ? WHERE kind = ? AND subject = ? AND acked_at IS NULL`),
		s.now().UnixMicro(), "hub: "+why, kind, subject)
	if err != nil {
		s.log.Error("alert not cleared", "kind", kind, "subject", subject, "err", err)
		return
	}
	if n, _ := res.RowsAffected(); n > 0 {
		log, unlogged := s.flapped(kind, subject, s.now(), false)
		switch {
		case log && unlogged > 0:
			s.log.Info("alert cleared", "kind", kind, "subject", subject, "why", why, "unlogged_changes", unlogged)
		case log:
			s.log.Info("alert cleared", "kind", kind, "subject", subject, "why", why)
		}
	}
}

// Ack acknowledges an open alert.
func (s *Store) Ack(ctx context.Context, id int64, by string) error {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE alerts SET acked_at = ?, acked_by = ? WHERE id = ? AND acked_at IS NULL`),
		s.now().UnixMicro(), by, id)
	if err != nil {
		return fmt.Errorf("alerts: ack %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("alerts: ack %d: no such open alert", id)
	}
	return nil
}
