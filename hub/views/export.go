package views

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/protocol"
)

// Exports the console offers as CSV: each has a header and its rows, read
// from the ledger's tables one at a time and handed to emit as they come,
// so a year's range streams out without being held in memory.
const (
	ExportSales   = "sales"   // one row per stamp sold
	ExportRefunds = "refunds" // one row per label refunded
	ExportStock   = "stock"   // one row per label sheet issued or loaded
	ExportReports = "reports" // one row per indicium in each postal report
)

// Exports are the exports Export knows.
var Exports = []string{ExportSales, ExportRefunds, ExportStock, ExportReports}

// ExportHeader is each export's header row.
var ExportHeader = map[string][]string{
	ExportSales: {"at", "kiosk", "store", "request_id", "rate_class", "postage_mills", "label", "meter", "stamp_state",
		"payment_method", "card_brand", "card_last4", "approval", "payment_state", "customer"},
	ExportRefunds: {"at", "kiosk", "store", "label", "rate_class", "amount_mills", "sale_request_id", "refund_request_id",
		"by", "reason", "payment_method", "card_brand", "card_last4", "approval"},
	ExportStock: {"sheet", "store", "kiosk", "account", "issued_at", "loaded_at", "labels_used", "labels_left", "invalidated_at"},
	ExportReports: {"report_id", "period_from", "period_to", "sent_at", "state", "pa_ref", "at", "meter", "label", "rate_class",
		"postage_mills", "voided", "channel", "kiosk", "store", "account"},
}

// Export streams one of Exports within f (its stores, kiosk and window)
// to emit, oldest first, header first; an error from emit (the client went
// away) stops it.
func (v *Views) Export(ctx context.Context, what string, f Filter, emit func(row []string) error) error {
	header, ok := ExportHeader[what]
	if !ok {
		return fmt.Errorf("views: export %q: want one of %v", what, Exports)
	}
	if err := emit(header); err != nil {
		return err
	}
	var err error
	switch what {
	case ExportSales:
		err = v.exportSales(ctx, f, emit)
	case ExportRefunds:
		err = v.exportRefunds(ctx, f, emit)
	case ExportStock:
		err = v.exportStock(ctx, f, emit)
	case ExportReports:
		err = v.exportReports(ctx, f, emit)
	}
	if err != nil {
		return fmt.Errorf("views: export %s: %w", what, err)
	}
	return nil
}

// stamp formats a time column for a CSV: RFC 3339 in the hub's zone, or
// empty.
func stamp(us sql.NullInt64) string {
	if !us.Valid {
		return ""
	}
	return time.UnixMicro(us.Int64).Local().Format(time.RFC3339)
}

func (v *Views) exportSales(ctx context.Context, f Filter, emit func([]string) error) error {
	w, wargs := window(f, "s.created_at")
	sc, sargs := scope(f, storeOf("s.kiosk_id"), "s.kiosk_id")
	// sales_created drives the range; each sale's stamps and payment come
	// by their keys.
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT s.created_at, s.kiosk_id, `+storeOf("s.kiosk_id")+`, s.request_id,
			i.rate_class, i.postage, i.label, i.mpsd, i.state, COALESCE(p.method, 'none'), COALESCE(p.brand, ''), COALESCE(p.last4, ''),
			COALESCE(p.gateway_ref, ''), COALESCE(p.state, ''), COALESCE(a.login, '')
		FROM sales s LEFT JOIN kiosks k ON k.kiosk_id = s.kiosk_id
		JOIN indicia i ON i.kiosk_id = s.kiosk_id AND i.request_id = s.request_id
		LEFT JOIN payments p ON p.kiosk_id = s.kiosk_id AND p.request_id = s.request_id
		LEFT JOIN accounts a ON a.id = p.account_id
		WHERE s.status = 'ok'`+w+sc+` ORDER BY s.created_at, s.kiosk_id, s.request_id, i.id`), append(wargs, sargs...)...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var at sql.NullInt64
		var postage int64
		var mpsd uint32
		r := make([]string, 15)
		if err := rows.Scan(&at, &r[1], &r[2], &r[3], &r[4], &postage, &r[6], &mpsd, &r[8], &r[9], &r[10], &r[11], &r[12], &r[13], &r[14]); err != nil {
			return err
		}
		r[0], r[5], r[7] = stamp(at), strconv.FormatInt(postage, 10), v.meter(mpsd)
		if err := emit(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

func (v *Views) exportRefunds(ctx context.Context, f Filter, emit func([]string) error) error {
	w, wargs := window(f, "r.at")
	sc, sargs := scope(f, storeOf("r.kiosk_id"), "r.kiosk_id")
	// The refunded label's indicium names the sale that paid for it.
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT r.at, r.kiosk_id, `+storeOf("r.kiosk_id")+`, r.label, COALESCE(i.rate_class, ''), r.amount,
			COALESCE(i.request_id, ''), r.request_id, COALESCE(r.by_operator, ''), COALESCE(r.reason, ''),
			COALESCE(p.method, ''), COALESCE(p.brand, ''), COALESCE(p.last4, ''), COALESCE(p.gateway_ref, '')
		FROM remedies r LEFT JOIN kiosks k ON k.kiosk_id = r.kiosk_id
		LEFT JOIN indicia i ON i.label = r.label AND i.kiosk_id = r.kiosk_id
		LEFT JOIN payments p ON p.kiosk_id = i.kiosk_id AND p.request_id = i.request_id
		WHERE r.kind = 'refund'`+w+sc+` ORDER BY r.at, r.label`), append(wargs, sargs...)...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var at sql.NullInt64
		var amount int64
		r := make([]string, 14)
		if err := rows.Scan(&at, &r[1], &r[2], &r[3], &r[4], &amount, &r[6], &r[7], &r[8], &r[9], &r[10], &r[11], &r[12], &r[13]); err != nil {
			return err
		}
		r[0], r[5] = stamp(at), strconv.FormatInt(amount, 10)
		if err := emit(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

func (v *Views) exportStock(ctx context.Context, f Filter, emit func([]string) error) error {
	// A sheet is in the window if it was issued or loaded in it.
	iw, iargs := window(f, "sh.issued_at")
	aw, aargs := window(f, "sh.assigned_at")
	when, args := ``, []any{}
	if iw != "" {
		when = ` AND ((1 = 1` + iw + `) OR (1 = 1` + aw + `))`
		args = append(append(args, iargs...), aargs...)
	}
	sc, sargs := scope(f, "sh.store", "sh.kiosk_id")
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT sh.serial, sh.store, COALESCE(sh.kiosk_id, ''), COALESCE(a.login, ''), sh.issued_at, sh.assigned_at, sh.used, sh.invalidated_at
		FROM sheets sh LEFT JOIN accounts a ON a.id = sh.account_id
		WHERE 1 = 1`+when+sc+` ORDER BY sh.issued_at, sh.serial`), append(args, sargs...)...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var serial uint32
		var issued, assigned, invalid sql.NullInt64
		var used int
		r := make([]string, 9)
		if err := rows.Scan(&serial, &r[1], &r[2], &r[3], &issued, &assigned, &used, &invalid); err != nil {
			return err
		}
		left := 10 - used
		if invalid.Valid {
			left = 0 // a voided sheet's labels may never carry a stamp
		}
		r[0], r[4], r[5], r[6], r[7], r[8] = protocol.SheetSerial(serial).String(), stamp(issued), stamp(assigned), strconv.Itoa(used), strconv.Itoa(left), stamp(invalid)
		if err := emit(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// exportReports lists the indicia of each postal report whose period
// starts in the window, as the authority was told of them, with the
// report's state. A report's body is one period: it is read one report at
// a time.
func (v *Views) exportReports(ctx context.Context, f Filter, emit func([]string) error) error {
	w, wargs := window(f, "period_from")
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT id FROM reports WHERE 1 = 1`+w+` ORDER BY period_from, id`), wargs...)
	if err != nil {
		return err
	}
	var ids []int64 // a few a day: read the bodies after, one at a time
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		var body []byte
		var state, ref string
		var created sql.NullInt64
		if err := v.db.QueryRowContext(ctx, v.db.Rebind(`SELECT body, state, COALESCE(pa_ref, ''), created_at FROM reports WHERE id = ?`), id).
			Scan(&body, &state, &ref, &created); err != nil {
			return err
		}
		var rep postal.Report
		if err := json.Unmarshal(body, &rep); err != nil {
			return fmt.Errorf("report %d: %w", id, err)
		}
		body = nil
		for _, x := range rep.Transactions {
			kiosk, store := x.Buyer.Kiosk, x.Buyer.Store
			if x.Buyer.Channel == "web" {
				kiosk, store = "web-"+strconv.FormatInt(x.Buyer.Account, 10), stock.WebStore
			}
			if !f.All && !slices.Contains(f.Stores, store) || f.Kiosk != "" && f.Kiosk != kiosk {
				continue
			}
			account := ""
			if x.Buyer.Account != 0 {
				account = strconv.FormatInt(x.Buyer.Account, 10)
			}
			r := []string{strconv.FormatInt(id, 10), rep.From.Local().Format(time.RFC3339), rep.To.Local().Format(time.RFC3339), stamp(created), state, ref,
				x.At.Local().Format(time.RFC3339), v.meter(x.MPSD), x.Label, x.RateClass, strconv.FormatInt(x.Postage, 10), x.Reason,
				x.Buyer.Channel, kiosk, store, account}
			if err := emit(r); err != nil {
				return err
			}
		}
	}
	return nil
}
