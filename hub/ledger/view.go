package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// PSDView is a PSD's registers as ops see them, with whether its control
// code still matches.
type PSDView struct {
	PSD
	ControlOK  bool      `json:"control_ok"`
	CreatedAt  time.Time `json:"created_at"`
	InspectDue time.Time `json:"inspection_due"` // the warning date
	StopAt     time.Time `json:"inspection_stop"`
}

// PSDs lists the GPSD and every MPSD, GPSD first.
func (l *Ledger) PSDs(ctx context.Context) ([]PSDView, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT serial, kind, ar, dr, control, COALESCE(locked, ''), COALESCE(lease_holder, ''),
		lease_until, reported_at, created_at FROM psd ORDER BY serial`)
	if err != nil {
		return nil, fmt.Errorf("ledger: psds: %w", err)
	}
	defer rows.Close()
	var out []PSDView
	for rows.Next() {
		var v PSDView
		var until, reported, created int64
		if err := rows.Scan(&v.Serial, &v.Kind, &v.AR, &v.DR, &v.Control, &v.Locked, &v.LeaseHolder, &until, &reported, &created); err != nil {
			return nil, fmt.Errorf("ledger: psds: %w", err)
		}
		v.LeaseUntil, v.ReportedAt, v.CreatedAt = time.UnixMicro(until), time.UnixMicro(reported), time.UnixMicro(created)
		v.InspectDue, v.StopAt = v.ReportedAt.Add(l.cfg.InspectionWarn), v.ReportedAt.Add(l.cfg.InspectionStop)
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: psds: %w", err)
	}
	for i := range out {
		ok, err := verifySeal(l.mac, l.cfg.ControlKey, &out[i].PSD)
		if err != nil {
			return nil, err
		}
		out[i].ControlOK = ok
	}
	return out, nil
}

// Result returns the stored answer of a sale, or nil if there is none.
func (l *Ledger) Result(ctx context.Context, kioskID, requestID string) ([]byte, error) {
	var out []byte
	err := l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT result FROM sales WHERE kiosk_id = ? AND request_id = ?`), kioskID, requestID).Scan(&out)
	if err == sql.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: result %s/%s: %w", kioskID, requestID, err)
	}
	return out, nil
}
