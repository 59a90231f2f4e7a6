// Package alerts keeps the alerts ops must see and acknowledge: tamper,
// fraud, inspection due, kiosks offline, low funds, paper out, labels low.
// An alert is raised once per kind and subject until someone acknowledges
// it, or, for a condition the hub sees end (paper loaded), the hub clears it.
package alerts

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

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
)

// ClockSkewLimit is how far a kiosk's clock may be off the hub's before
// ops are told: its stamps carry its date.
const ClockSkewLimit = 5 * time.Minute

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
}

// New returns the alert store.
func New(db *store.DB, log *slog.Logger, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, log: log, now: now}
}

// Raise records an alert unless one of the same kind and subject is open.
// It logs, and never fails the caller: an alert that cannot be stored is
// still in the log.
func (s *Store) Raise(ctx context.Context, kind, subject, message string) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`INSERT INTO alerts (kind, subject, message, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`),
		kind, subject, message, s.now().UnixMicro())
	if err != nil {
		s.log.Error("alert not stored", "kind", kind, "subject", subject, "message", message, "err", err)
		return
	}
	if n, _ := res.RowsAffected(); n == 1 { // an alert already open is not news
		s.log.Warn("ALERT", "kind", kind, "subject", subject, "message", message)
	}
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
		s.log.Info("alert cleared", "kind", kind, "subject", subject, "why", why)
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
