// Package views is the ledger's read models for the console, the portal
// and the metrics: what was sold, funded and reported, read from the
// ledger's tables. The ledger core keeps what it guards (registers,
// control codes, the audit chains, the postal report's readings).
package views

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Views reads the ledger's tables for people.
type Views struct {
	// MeterPrefix is the vendor and model ids a meter number starts with
	// (ledger.Config's Vendor and Model); default "FR2N".
	MeterPrefix string
	db          *store.DB
	now         func() time.Time
}

// New returns the read models on db; now defaults to time.Now.
func New(db *store.DB, now func() time.Time) *Views {
	if now == nil {
		now = time.Now
	}
	return &Views{MeterPrefix: "FR2N", db: db, now: now}
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
func (v *Views) Fundings(ctx context.Context, limit int) ([]Funding, error) {
	q := `SELECT at, psd, amount, ref, state FROM (
		SELECT created_at AS at, ` + fmt.Sprint(ledger.GPSDSerial) + ` AS psd, amount, COALESCE(pa_ref, request_id) AS ref, state FROM fund_purchases
		UNION ALL
		SELECT at, mpsd AS psd, amount, COALESCE(request_id, '') AS ref, 'done' AS state FROM fundings) AS f
		ORDER BY at DESC LIMIT ?`
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(q), limit)
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
func (v *Views) Reports(ctx context.Context, limit int) ([]SentReport, error) {
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT id, period_from, period_to, created_at, state, COALESCE(pa_ref, ''), COALESCE(answer, '')
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
func (v *Views) SalesOf(ctx context.Context, kioskID string, limit int) ([]SaleRow, error) {
	return v.sales(ctx, kioskID, "", limit)
}

// SaleOf returns one of kioskID's sales with its stamps, or nil.
func (v *Views) SaleOf(ctx context.Context, kioskID, requestID string) (*SaleRow, error) {
	rows, err := v.sales(ctx, kioskID, requestID, 1)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	return &rows[0], nil
}

// sales lists kioskID's sales, or the one with requestID if it is given.
func (v *Views) sales(ctx context.Context, kioskID, requestID string, limit int) ([]SaleRow, error) {
	q := `SELECT kiosk_id, request_id, status, total, created_at FROM sales WHERE kiosk_id = ?`
	args := []any{kioskID}
	if requestID != "" {
		q += ` AND request_id = ?`
		args = append(args, requestID)
	}
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(q+` ORDER BY created_at DESC LIMIT ?`), append(args, limit)...)
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
	stamps, err := v.stampsOf(ctx, kioskID, out)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Stamps = stamps[out[i].RequestID]
	}
	return out, nil
}

// stampsOf reads the stamps of sales, all in one query, by request id.
func (v *Views) stampsOf(ctx context.Context, kioskID string, sales []SaleRow) (map[string][]StampRow, error) {
	args := []any{kioskID}
	for _, sl := range sales {
		args = append(args, sl.RequestID)
	}
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT i.request_id, i.label, i.rate_class, i.postage, i.state, COALESCE(i.void_reason, ''),
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

// SalesToday counts each kiosk's ok sales since midnight of now's day.
func (v *Views) SalesToday(ctx context.Context) (map[string]int, error) {
	now := v.now()
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location())
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT kiosk_id, COUNT(*) FROM sales WHERE status = 'ok' AND created_at >= ? GROUP BY kiosk_id`), midnight.UnixMicro())
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
