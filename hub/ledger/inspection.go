package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/protocol"
)

// The inspection watchdog. A postal security device must be reported to
// the postal authority regularly (the patent's meter inspections): after
// InspectionWarn without a report it raises inspection_due, and after
// InspectionStop it stops selling until a report is accepted.

// MaySell refuses a sale from an MPSD last reported at mpsdReported when it
// or the GPSD is past the stop window.
func (l *Ledger) MaySell(mpsdReported time.Time) error {
	now := l.cfg.Now()
	if g := time.UnixMicro(l.gpsdReported.Load()); now.Sub(g) > l.cfg.InspectionStop {
		return protocol.Errorf(protocol.CodeInspectionOverdue, "the GPSD was last reported %s; sales stop after %s", g.Format(time.DateOnly), l.cfg.InspectionStop)
	}
	if now.Sub(mpsdReported) > l.cfg.InspectionStop {
		return protocol.Errorf(protocol.CodeInspectionOverdue, "the MPSD was last reported %s; sales stop after %s", mpsdReported.Format(time.DateOnly), l.cfg.InspectionStop)
	}
	return nil
}

// RefreshInspection reads the GPSD's reporting date, which MaySell checks,
// as the database holds it: the leader files the reports, and every hub of
// the cluster sells by them. The hub runs it every minute.
func (l *Ledger) RefreshInspection(ctx context.Context) error {
	var at int64
	if err := l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT reported_at FROM psd WHERE serial = ?`), GPSDSerial).Scan(&at); err != nil {
		return fmt.Errorf("ledger: refresh inspection: %w", err)
	}
	l.gpsdReported.Store(at)
	return nil
}

// CheckInspection raises inspection_due for every PSD past the warn window
// and refreshes the GPSD's reporting date. The hub runs it every minute.
func (l *Ledger) CheckInspection(ctx context.Context) error {
	now := l.cfg.Now()
	rows, err := l.db.QueryContext(ctx, `SELECT serial, kind, reported_at FROM psd WHERE locked IS NULL`)
	if err != nil {
		return fmt.Errorf("ledger: inspection: %w", err)
	}
	type due struct {
		serial uint32
		kind   string
		at     time.Time
	}
	var late []due
	for rows.Next() {
		var d due
		var at int64
		if err := rows.Scan(&d.serial, &d.kind, &at); err != nil {
			rows.Close()
			return fmt.Errorf("ledger: inspection: %w", err)
		}
		d.at = time.UnixMicro(at)
		if d.kind == KindGPSD {
			l.gpsdReported.Store(at)
		}
		if now.Sub(d.at) > l.cfg.InspectionWarn {
			late = append(late, d)
		}
	}
	rows.Close()
	for _, d := range late {
		stop := d.at.Add(l.cfg.InspectionStop)
		msg := fmt.Sprintf("%s %d last reported %s; it stops selling on %s unless reported", d.kind, d.serial,
			d.at.Format(time.DateOnly), stop.Format(time.DateOnly))
		if now.After(stop) {
			msg = fmt.Sprintf("%s %d last reported %s; it has stopped selling until a report is accepted", d.kind, d.serial, d.at.Format(time.DateOnly))
		}
		l.al.Raise(ctx, alerts.InspectionDue, fmt.Sprintf("psd/%d", d.serial), msg)
	}
	return nil
}
