package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/frank-postage/frank/protocol"
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

// Funding is one movement of funds into a PSD: a purchase from the postal
// authority into the GPSD, or a GPSD → MPSD transfer.
type Funding struct {
	At     time.Time      `json:"at"`
	PSD    uint32         `json:"psd"`
	Amount protocol.Mills `json:"amount_mills"`
	Ref    string         `json:"ref"`
	State  string         `json:"state"` // done, or pending for a purchase not yet confirmed
}

// Fundings lists the latest limit fundings, newest first.
func (l *Ledger) Fundings(ctx context.Context, limit int) ([]Funding, error) {
	q := `SELECT at, psd, amount, ref, state FROM (
		SELECT created_at AS at, ` + fmt.Sprint(GPSDSerial) + ` AS psd, amount, COALESCE(pa_ref, request_id) AS ref, state FROM fund_purchases
		UNION ALL
		SELECT at, mpsd AS psd, amount, COALESCE(request_id, '') AS ref, 'done' AS state FROM fundings) AS f
		ORDER BY at DESC LIMIT ?`
	rows, err := l.db.QueryContext(ctx, l.db.Rebind(q), limit)
	if err != nil {
		return nil, fmt.Errorf("ledger: fundings: %w", err)
	}
	defer rows.Close()
	var out []Funding
	for rows.Next() {
		var f Funding
		var at int64
		if err := rows.Scan(&at, &f.PSD, &f.Amount, &f.Ref, &f.State); err != nil {
			return nil, fmt.Errorf("ledger: fundings: %w", err)
		}
		f.At = time.UnixMicro(at)
		out = append(out, f)
	}
	return out, rows.Err()
}

// SentReport is a postal report as sent, without its body.
type SentReport struct {
	ID        int64     `json:"id"`
	From      time.Time `json:"period_from"`
	To        time.Time `json:"period_to"`
	CreatedAt time.Time `json:"created_at"`
	State     string    `json:"state"`
	Ref       string    `json:"pa_ref,omitempty"`
	Answer    string    `json:"answer,omitempty"`
}

// Reports lists the latest limit postal reports, newest first.
func (l *Ledger) Reports(ctx context.Context, limit int) ([]SentReport, error) {
	rows, err := l.db.QueryContext(ctx, l.db.Rebind(`SELECT id, period_from, period_to, created_at, state, COALESCE(pa_ref, ''), COALESCE(answer, '')
		FROM reports ORDER BY id DESC LIMIT ?`), limit)
	if err != nil {
		return nil, fmt.Errorf("ledger: reports: %w", err)
	}
	defer rows.Close()
	var out []SentReport
	for rows.Next() {
		var r SentReport
		var from, to, created int64
		if err := rows.Scan(&r.ID, &from, &to, &created, &r.State, &r.Ref, &r.Answer); err != nil {
			return nil, fmt.Errorf("ledger: reports: %w", err)
		}
		r.From, r.To, r.CreatedAt = time.UnixMicro(from), time.UnixMicro(to), time.UnixMicro(created)
		out = append(out, r)
	}
	return out, rows.Err()
}

// SaleRow is one sale as ops and customers see it.
type SaleRow struct {
	KioskID   string         `json:"kiosk_id"`
	RequestID string         `json:"request_id"`
	Status    string         `json:"status"`
	Total     protocol.Mills `json:"total_mills"`
	At        time.Time      `json:"at"`
	Stamps    []StampRow     `json:"stamps,omitempty"`
}

// StampRow is one indicium of a sale.
type StampRow struct {
	Label      string         `json:"label"`
	RateClass  string         `json:"rate_class"`
	Postage    protocol.Mills `json:"postage_mills"`
	State      string         `json:"state"` // issued, printed, voided
	VoidReason string         `json:"void_reason,omitempty"`
	Refunded   bool           `json:"refunded"`
}

// SalesOf lists kioskID's latest limit sales, newest first, with their
// stamps. A web customer's sales are under their web kiosk id.
func (l *Ledger) SalesOf(ctx context.Context, kioskID string, limit int) ([]SaleRow, error) {
	return l.sales(ctx, kioskID, "", limit)
}

// SaleOf returns one of kioskID's sales with its stamps, or nil.
func (l *Ledger) SaleOf(ctx context.Context, kioskID, requestID string) (*SaleRow, error) {
	rows, err := l.sales(ctx, kioskID, requestID, 1)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	return &rows[0], nil
}

// sales lists kioskID's sales, or the one with requestID if it is given.
func (l *Ledger) sales(ctx context.Context, kioskID, requestID string, limit int) ([]SaleRow, error) {
	q := `SELECT kiosk_id, request_id, status, total, created_at FROM sales WHERE kiosk_id = ?`
	args := []any{kioskID}
	if requestID != "" {
		q += ` AND request_id = ?`
		args = append(args, requestID)
	}
	rows, err := l.db.QueryContext(ctx, l.db.Rebind(q+` ORDER BY created_at DESC LIMIT ?`), append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("ledger: sales of %s: %w", kioskID, err)
	}
	var out []SaleRow
	for rows.Next() {
		var s SaleRow
		var at int64
		if err := rows.Scan(&s.KioskID, &s.RequestID, &s.Status, &s.Total, &at); err != nil {
			rows.Close()
			return nil, fmt.Errorf("ledger: sales of %s: %w", kioskID, err)
		}
		s.At = time.UnixMicro(at)
		out = append(out, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: sales of %s: %w", kioskID, err)
	}
	if len(out) == 0 {
		return out, nil
	}
	stamps, err := l.stampsOf(ctx, kioskID, out)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Stamps = stamps[out[i].RequestID]
	}
	return out, nil
}

// stampsOf reads the stamps of sales, all in one query, by request id.
func (l *Ledger) stampsOf(ctx context.Context, kioskID string, sales []SaleRow) (map[string][]StampRow, error) {
	args := []any{kioskID}
	for _, sl := range sales {
		args = append(args, sl.RequestID)
	}
	rows, err := l.db.QueryContext(ctx, l.db.Rebind(`SELECT i.request_id, i.label, i.rate_class, i.postage, i.state, COALESCE(i.void_reason, ''),
		(SELECT COUNT(*) FROM remedies r WHERE r.label = i.label AND r.kind = 'refund')
		FROM indicia i WHERE i.kiosk_id = ? AND i.request_id IN (`+strings.TrimSuffix(strings.Repeat("?, ", len(sales)), ", ")+`)
		ORDER BY i.label`), args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: stamps of %s: %w", kioskID, err)
	}
	defer rows.Close()
	out := map[string][]StampRow{}
	for rows.Next() {
		var s StampRow
		var req string
		var refunds int
		if err := rows.Scan(&req, &s.Label, &s.RateClass, &s.Postage, &s.State, &s.VoidReason, &refunds); err != nil {
			return nil, fmt.Errorf("ledger: stamps of %s: %w", kioskID, err)
		}
		s.Refunded = refunds > 0
		out[req] = append(out[req], s)
	}
	return out, rows.Err()
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

// SalesToday counts each kiosk's ok sales since midnight of now's day.
func (l *Ledger) SalesToday(ctx context.Context) (map[string]int, error) {
	now := l.cfg.Now()
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location())
	rows, err := l.db.QueryContext(ctx, l.db.Rebind(`SELECT kiosk_id, COUNT(*) FROM sales WHERE status = 'ok' AND created_at >= ? GROUP BY kiosk_id`), micros(midnight))
	if err != nil {
		return nil, fmt.Errorf("ledger: sales today: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, fmt.Errorf("ledger: sales today: %w", err)
		}
		out[id] = n
	}
	return out, rows.Err()
}
