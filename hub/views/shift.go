package views

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// Shift is a store's figures for a window [From, To), as staff close a
// shift: what the store's kiosks (or one of them) sold and took, gave back,
// spoiled, loaded and ran into. Stamps, voids and payments count by the
// time of their sale; refunds by when they were made; labels loaded by
// when the sheet was loaded; faults by when the alert was raised.
type Shift struct {
	Store string    `json:"store"`
	Kiosk string    `json:"kiosk,omitempty"` // one kiosk, or every kiosk of the store
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	// Sales counts the sales that issued stamps.
	Sales int `json:"sales"`
	// Stamps are the stamps those sales issued, by rate class.
	Stamps []ClassTotal `json:"stamps"`
	// StampCount and Postage are the stamps' count and postage in all.
	StampCount int            `json:"stamp_count"`
	Postage    protocol.Mills `json:"postage_mills"`
	// Card and Account are what the sales' payments took, by method (a
	// free reprint takes nothing).
	Card    protocol.Mills `json:"card_mills"`
	Account protocol.Mills `json:"account_mills"`
	// Refunds counts the labels refunded and Refunded their money.
	Refunds  int            `json:"refunds"`
	Refunded protocol.Mills `json:"refunded_mills"`
	// Voids counts labels spoiled: stamps voided because their print
	// failed, and stamps signed for sales that then failed (a counter
	// refund voids a stamp too; it is under Refunds).
	Voids int `json:"voids"`
	// LabelsLoaded is the labels on the sheets loaded into the kiosks;
	// LabelsUsed the labels that got a stamp.
	LabelsLoaded int `json:"labels_loaded"`
	LabelsUsed   int `json:"labels_used"`
	// Faults counts the alerts raised about the kiosks; FaultList lists
	// them, oldest first.
	Faults    int     `json:"faults"`
	FaultList []Fault `json:"fault_list"`
}

// ClassTotal is the stamps of one rate class.
type ClassTotal struct {
	RateClass string         `json:"rate_class"`
	Count     int            `json:"count"`
	Postage   protocol.Mills `json:"postage_mills"`
}

// Fault is one alert about one of the shift's kiosks.
type Fault struct {
	At      time.Time `json:"at"`
	Kiosk   string    `json:"kiosk"`
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
}

// Shift computes store's figures (one kiosk's, if kiosk is given) for
// [from, to), from one snapshot of the ledger's tables.
func (v *Views) Shift(ctx context.Context, store, kiosk string, from, to time.Time) (Shift, error) {
	sh := Shift{Store: store, Kiosk: kiosk, From: from, To: to, Stamps: []ClassTotal{}, FaultList: []Fault{}}
	if !from.Before(to) {
		return sh, fmt.Errorf("views: shift: from %s is not before to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	f, t := from.UnixMicro(), to.UnixMicro()
	// The store's kiosks, by the kiosks table: a web customer has no shift.
	of := ` AND k.store = ?`
	args := []any{store}
	if kiosk != "" {
		of += ` AND k.kiosk_id = ?`
		args = append(args, kiosk)
	}
	sales := `FROM sales s JOIN kiosks k ON k.kiosk_id = s.kiosk_id WHERE s.status = 'ok' AND s.created_at >= ? AND s.created_at < ?` + of
	sargs := append([]any{f, t}, args...)
	err := v.db.ReadTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, v.db.Rebind(`SELECT COUNT(*) `+sales), sargs...).Scan(&sh.Sales); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, v.db.Rebind(`SELECT i.rate_class, COUNT(*), SUM(i.postage),
				SUM(CASE WHEN i.state = 'voided' AND COALESCE(i.void_reason, '') NOT IN ('refund_requested', 'key_compromised') THEN 1 ELSE 0 END)
			FROM sales s JOIN kiosks k ON k.kiosk_id = s.kiosk_id JOIN indicia i ON i.kiosk_id = s.kiosk_id AND i.request_id = s.request_id
			WHERE s.status = 'ok' AND s.created_at >= ? AND s.created_at < ?`+of+` GROUP BY i.rate_class ORDER BY i.rate_class`), sargs...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var c ClassTotal
			var voided int
			if err := rows.Scan(&c.RateClass, &c.Count, &c.Postage, &voided); err != nil {
				rows.Close()
				return err
			}
			sh.Stamps = append(sh.Stamps, c)
			sh.StampCount += c.Count
			sh.Postage += c.Postage
			sh.Voids += voided
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		sh.LabelsUsed = sh.StampCount // every stamp issued took its label, voided or not
		rows, err = tx.QueryContext(ctx, v.db.Rebind(`SELECT p.method, SUM(p.amount)
			FROM sales s JOIN kiosks k ON k.kiosk_id = s.kiosk_id JOIN payments p ON p.kiosk_id = s.kiosk_id AND p.request_id = s.request_id
			WHERE s.status = 'ok' AND s.created_at >= ? AND s.created_at < ?`+of+` AND p.state IN ('authorized', 'captured') GROUP BY p.method`), sargs...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var method string
			var sum protocol.Mills
			if err := rows.Scan(&method, &sum); err != nil {
				rows.Close()
				return err
			}
			switch method {
			case "card":
				sh.Card = sum
			case "account":
				sh.Account = sum
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var spoiled int
		if err := tx.QueryRowContext(ctx, v.db.Rebind(`SELECT COUNT(*) FROM spoiled sp JOIN kiosks k ON k.kiosk_id = sp.kiosk_id
			WHERE sp.created_at >= ? AND sp.created_at < ?`+of), sargs...).Scan(&spoiled); err != nil {
			return err
		}
		sh.Voids += spoiled
		if err := tx.QueryRowContext(ctx, v.db.Rebind(`SELECT COUNT(*), COALESCE(SUM(r.amount), 0) FROM remedies r JOIN kiosks k ON k.kiosk_id = r.kiosk_id
			WHERE r.kind = 'refund' AND r.at >= ? AND r.at < ?`+of), sargs...).Scan(&sh.Refunds, &sh.Refunded); err != nil {
			return err
		}
		var sheets int
		if err := tx.QueryRowContext(ctx, v.db.Rebind(`SELECT COUNT(*) FROM sheets x JOIN kiosks k ON k.kiosk_id = x.kiosk_id
			WHERE x.assigned_at >= ? AND x.assigned_at < ?`+of), sargs...).Scan(&sheets); err != nil {
			return err
		}
		sh.LabelsLoaded = sheets * protocol.LabelsPerSheet
		return v.faults(ctx, tx, &sh, of, args)
	})
	if err != nil {
		return sh, fmt.Errorf("views: shift of %s: %w", store, err)
	}
	return sh, nil
}

// faults lists the alerts raised in the shift about its kiosks: those
// whose subject is kiosk/ID, or a sale or payment of the kiosk.
func (v *Views) faults(ctx context.Context, tx *sql.Tx, sh *Shift, of string, args []any) error {
	rows, err := tx.QueryContext(ctx, v.db.Rebind(`SELECT k.kiosk_id FROM kiosks k WHERE 1 = 1`+of), args...)
	if err != nil {
		return err
	}
	var kiosks []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		kiosks = append(kiosks, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// A shift's alerts are few: read them by time (alerts_created) and
	// match their subjects here.
	rows, err = tx.QueryContext(ctx, v.db.Rebind(`SELECT created_at, kind, subject, message FROM alerts WHERE created_at >= ? AND created_at < ? ORDER BY created_at, id`),
		sh.From.UnixMicro(), sh.To.UnixMicro())
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var at int64
		var kind, subject, msg string
		if err := rows.Scan(&at, &kind, &subject, &msg); err != nil {
			return err
		}
		if id := faultKiosk(subject); id != "" && slices.Contains(kiosks, id) {
			sh.FaultList = append(sh.FaultList, Fault{At: time.UnixMicro(at), Kiosk: id, Kind: kind, Message: msg})
		}
	}
	sh.Faults = len(sh.FaultList)
	return rows.Err()
}

// faultKiosk is the kiosk an alert's subject names: kiosk/ID,
// kiosk/ID/..., sale/ID/REQUEST or payment/ID/REQUEST.
func faultKiosk(subject string) string {
	kind, rest, ok := strings.Cut(subject, "/")
	if !ok || kind != "kiosk" && kind != "sale" && kind != "payment" {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	return id
}
