package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/protocol"
)

// BuildReport assembles the postal report for [from, to): transactions,
// refund claims, funding and register readings from the audit trail.
func (l *Ledger) BuildReport(ctx context.Context, from, to time.Time) (*postal.Report, error) {
	if !from.Before(to) {
		return nil, fmt.Errorf("ledger: report: from %s is not before to %s", from, to)
	}
	if now := l.cfg.Now(); to.After(now) {
		return nil, fmt.Errorf("ledger: report: the period ends at %s, after now (%s): only a period that has ended is reported",
			to.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	// Rows written from here on are dated from to: into the next report.
	if err := l.raiseFloor(ctx, to); err != nil {
		return nil, fmt.Errorf("ledger: report: %w", err)
	}
	r := &postal.Report{ReportID: fmt.Sprintf("%s-%d-%d", l.cfg.Vendor, from.UnixMicro(), to.UnixMicro()), Vendor: l.cfg.Vendor,
		Licence: l.cfg.Licence, From: from.UTC(), To: to.UTC(), Transactions: []postal.Transaction{}, Voided: []postal.Transaction{},
		Purchases: []postal.Bought{}, Fundings: []postal.Funding{}}
	f, t := micros(from), micros(to)
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		// The period's indicia, each with its void reason if it was voided
		// in the period too: a report built again later says the same.
		err := scanIndicia(ctx, tx, l.db.Rebind(`SELECT i.mpsd, i.label, i.rate_class, i.postage, i.ar, i.dr, i.created_at, i.data,
				CASE WHEN i.voided_at < ? THEN COALESCE(i.void_reason, '') ELSE '' END, i.kiosk_id, COALESCE(k.store, ''), COALESCE(p.account_id, 0)
			FROM indicia i LEFT JOIN kiosks k ON k.kiosk_id = i.kiosk_id
			LEFT JOIN payments p ON p.kiosk_id = i.kiosk_id AND p.request_id = i.request_id
			WHERE i.created_at >= ? AND i.created_at < ? ORDER BY i.id`), []any{t, f, t}, func(x postal.Transaction) {
			r.Transactions = append(r.Transactions, x)
			r.Totals.Indicia++
			r.Totals.Postage += x.Postage
		})
		if err != nil {
			return err
		}
		// Refund claims: the indicia voided in the period, whenever they
		// were issued. A stamp refunded after its own period was reported
		// is claimed in the next report, and each void in one report only.
		err = scanIndicia(ctx, tx, l.db.Rebind(`SELECT i.mpsd, i.label, i.rate_class, i.postage, i.ar, i.dr, i.created_at, i.data,
				COALESCE(i.void_reason, ''), i.kiosk_id, COALESCE(k.store, ''), COALESCE(p.account_id, 0)
			FROM indicia i LEFT JOIN kiosks k ON k.kiosk_id = i.kiosk_id
			LEFT JOIN payments p ON p.kiosk_id = i.kiosk_id AND p.request_id = i.request_id
			WHERE i.voided_at >= ? AND i.voided_at < ? ORDER BY i.id`), []any{f, t}, func(x postal.Transaction) {
			r.Voided = append(r.Voided, x)
			r.Totals.VoidedPostage += x.Postage
		})
		if err != nil {
			return err
		}
		// Spoiled indicia were never live: each is claimed with its sale.
		err = scanIndicia(ctx, tx, l.db.Rebind(`SELECT s.mpsd, s.label, s.rate_class, s.postage, s.ar, s.dr, s.created_at, s.data, s.reason,
				s.kiosk_id, COALESCE(k.store, ''), COALESCE(p.account_id, 0)
			FROM spoiled s LEFT JOIN kiosks k ON k.kiosk_id = s.kiosk_id
			LEFT JOIN payments p ON p.kiosk_id = s.kiosk_id AND p.request_id = s.request_id
			WHERE s.created_at >= ? AND s.created_at < ? ORDER BY s.id`), []any{f, t}, func(x postal.Transaction) {
			x.Reason = "spoiled: " + x.Reason
			r.Transactions = append(r.Transactions, x)
			r.Voided = append(r.Voided, x)
			r.Totals.Indicia++
			r.Totals.Postage += x.Postage
			r.Totals.VoidedPostage += x.Postage
		})
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, l.db.Rebind(`SELECT pa_ref, amount FROM fund_purchases WHERE state = 'done' AND done_at >= ? AND done_at < ? ORDER BY done_at`), f, t)
		if err != nil {
			return err
		}
		for rows.Next() {
			var b postal.Bought
			if err := rows.Scan(&b.PurchaseID, &b.Amount); err != nil {
				rows.Close()
				return err
			}
			r.Purchases = append(r.Purchases, b)
			r.Totals.Purchased += b.Amount
		}
		rows.Close()
		if err := tx.QueryRowContext(ctx, l.db.Rebind(`SELECT COALESCE(SUM(amount), 0) FROM fund_purchases WHERE state = 'done' AND done_at < ?`), t).
			Scan(&r.Totals.PurchasedToDate); err != nil {
			return err
		}
		rows, err = tx.QueryContext(ctx, l.db.Rebind(`SELECT mpsd, amount, at FROM fundings WHERE at >= ? AND at < ? ORDER BY id`), f, t)
		if err != nil {
			return err
		}
		for rows.Next() {
			var x postal.Funding
			var at int64
			if err := rows.Scan(&x.MPSD, &x.Amount, &at); err != nil {
				rows.Close()
				return err
			}
			x.At = time.UnixMicro(at).UTC()
			r.Fundings = append(r.Fundings, x)
			r.Totals.Funded += x.Amount
		}
		rows.Close()
		rows, err = tx.QueryContext(ctx, l.db.Rebind(`SELECT kind, subject, detail, at FROM device_events WHERE at >= ? AND at < ? ORDER BY id`), f, t)
		if err != nil {
			return err
		}
		for rows.Next() {
			var e postal.Event
			var at int64
			if err := rows.Scan(&e.Kind, &e.Subject, &e.Detail, &at); err != nil {
				rows.Close()
				return err
			}
			e.At = time.UnixMicro(at).UTC()
			r.Events = append(r.Events, e)
		}
		rows.Close()
		// Tamper findings, and the PSDs they locked, from the alerts raised.
		rows, err = tx.QueryContext(ctx, l.db.Rebind(`SELECT subject, message, created_at FROM alerts WHERE kind = ? AND created_at >= ? AND created_at < ? ORDER BY id`),
			alerts.Tamper, f, t)
		if err != nil {
			return err
		}
		for rows.Next() {
			e := postal.Event{Kind: postal.EventTamper}
			var at int64
			if err := rows.Scan(&e.Subject, &e.Detail, &at); err != nil {
				rows.Close()
				return err
			}
			if strings.HasPrefix(e.Subject, "psd/") {
				e.Kind = postal.EventPSDLocked
			}
			e.At = time.UnixMicro(at).UTC()
			r.Events = append(r.Events, e)
		}
		rows.Close()
		// Key rotations: keys put in service and retired.
		// A compromise is reported in the period it was declared in; its
		// detail names the day the key's stamps are void from.
		rows, err = tx.QueryContext(ctx, l.db.Rebind(`SELECT cert_serial, created_at, COALESCE(retired_at, 0), COALESCE(compromised_at, 0), COALESCE(compromise_noted_at, 0) FROM signing_keys
			WHERE (created_at >= ? AND created_at < ?) OR (retired_at >= ? AND retired_at < ?) OR (compromise_noted_at >= ? AND compromise_noted_at < ?)
			ORDER BY cert_serial`), f, t, f, t, f, t)
		if err != nil {
			return err
		}
		for rows.Next() {
			var serial uint32
			var created, retired, compromised, noted int64
			if err := rows.Scan(&serial, &created, &retired, &compromised, &noted); err != nil {
				rows.Close()
				return err
			}
			subject := fmt.Sprintf("key/%d", serial)
			if created >= f && created < t {
				r.Events = append(r.Events, postal.Event{Kind: postal.EventKeyActivated, Subject: subject, Detail: "indicium signing key in service", At: time.UnixMicro(created).UTC()})
			}
			if retired >= f && retired < t && retired != 0 {
				r.Events = append(r.Events, postal.Event{Kind: postal.EventKeyRetired, Subject: subject, Detail: "indicium signing key retired", At: time.UnixMicro(retired).UTC()})
			}
			if noted >= f && noted < t && noted != 0 {
				at := time.UnixMicro(compromised).UTC()
				r.Events = append(r.Events, postal.Event{Kind: postal.EventKeyCompromised, Subject: subject,
					Detail: "indicium signing key compromised at " + at.Format(time.RFC3339) + ": stamps it signed dated " +
						protocol.CompromiseDate(at).String() + " or later are void", At: time.UnixMicro(noted).UTC()})
			}
		}
		rows.Close()
		slices.SortStableFunc(r.Events, func(a, b postal.Event) int { return a.At.Compare(b.At) })
		if r.AuditHeads, err = l.auditHeads(ctx, tx, t); err != nil {
			return err
		}
		return l.readings(ctx, tx, r, f, t)
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: report: %w", err)
	}
	return r, nil
}

// scanIndicia runs query for indicia as report lines and hands each to add.
func scanIndicia(ctx context.Context, tx *sql.Tx, query string, args []any, add func(postal.Transaction)) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var x postal.Transaction
		var at int64
		if err := rows.Scan(&x.MPSD, &x.Label, &x.RateClass, &x.Postage, &x.AR, &x.DR, &at, &x.Indicium, &x.Reason,
			&x.Buyer.Kiosk, &x.Buyer.Store, &x.Buyer.Account); err != nil {
			return err
		}
		x.Buyer = buyer(x.Buyer)
		x.At = time.UnixMicro(at).UTC()
		add(x)
	}
	return rows.Err()
}

// readings takes each PSD's registers at the start and end of the period
// from the audit trail: a few index lookups per PSD, however long the
// trail.
func (l *Ledger) readings(ctx context.Context, tx *sql.Tx, r *postal.Report, from, to int64) error {
	serials, err := psdSerials(ctx, tx)
	if err != nil {
		return err
	}
	for _, s := range serials {
		end, ok, err := l.registersAt(ctx, tx, s, to)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		start, _, err := l.registersAt(ctx, tx, s, from)
		if err != nil {
			return err
		}
		kind := KindMPSD
		if s == GPSDSerial {
			kind = KindGPSD
		}
		r.Registers = append(r.Registers, postal.Reading{Serial: s, Kind: kind,
			ARStart: int64(start.ar), DRStart: int64(start.dr), AR: int64(end.ar), DR: int64(end.dr)})
	}
	return nil
}

// registersAt is a PSD's registers as its last audit entry before t left
// them: its own chain's, or before that chain began, chain 0's. ok is
// false when it had no entry yet.
func (l *Ledger) registersAt(ctx context.Context, tx *sql.Tx, serial uint32, t int64) (registers, bool, error) {
	var r registers
	err := tx.QueryRowContext(ctx, l.db.Rebind(`SELECT ar, dr FROM audit WHERE chain = ? AND at < ? ORDER BY n DESC LIMIT 1`), serial, t).Scan(&r.ar, &r.dr)
	if errors.Is(err, sql.ErrNoRows) {
		err = tx.QueryRowContext(ctx, l.db.Rebind(`SELECT ar, dr FROM audit WHERE chain = 0 AND psd = ? AND at < ? ORDER BY n DESC LIMIT 1`), serial, t).Scan(&r.ar, &r.dr)
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return r, false, nil
	case err != nil:
		return r, false, err
	}
	return r, true, nil
}

// psdSerials lists every PSD, GPSD first.
func psdSerials(ctx context.Context, tx *sql.Tx) ([]uint32, error) {
	rows, err := tx.QueryContext(ctx, `SELECT serial FROM psd ORDER BY serial`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []uint32
	for rows.Next() {
		var s uint32
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Submitter uploads reports; the postal client.
type Submitter interface {
	SubmitReport(ctx context.Context, r *postal.Report) (string, error)
}

// SubmitReport records the report, uploads it, and on acceptance marks
// every PSD as reported now, which resets the inspection watchdog.
//
// The authority keeps the first report it accepts under a report id and
// answers a resubmission with that one's reference. So a period sent
// before that it may hold (accepted, or the answer never came) is sent
// again as it was first sent, not as built again: *r becomes that report,
// and ops are alerted if the two differ, since the authority holds the
// first whatever this hub records.
func (l *Ledger) SubmitReport(ctx context.Context, r *postal.Report, pa Submitter) (string, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("ledger: submit report: %w", err)
	}
	from, to := micros(r.From), micros(r.To)
	var first []byte
	err = l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT body FROM reports WHERE period_from = ? AND period_to = ? AND state IN ('pending', 'accepted')
		ORDER BY id LIMIT 1`), from, to).Scan(&first)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if err := l.newPeriod(ctx, r.From, r.To); err != nil {
			return "", fmt.Errorf("ledger: submit report: %w", err)
		}
	case err != nil:
		return "", fmt.Errorf("ledger: submit report: the period sent before: %w", err)
	case !bytes.Equal(first, body):
		var sent postal.Report
		if err := json.Unmarshal(first, &sent); err != nil {
			return "", fmt.Errorf("ledger: submit report: the period sent before: %w", err)
		}
		l.reportChanged(ctx, &sent, r)
		*r, body = sent, first
	}
	now := l.cfg.Now()
	var id int64
	if err := l.db.QueryRowContext(ctx, l.db.Rebind(`INSERT INTO reports (period_from, period_to, created_at, body, state) VALUES (?, ?, ?, ?, 'pending') RETURNING id`),
		from, to, micros(now), body).Scan(&id); err != nil {
		return "", fmt.Errorf("ledger: submit report: %w", err)
	}
	// Earlier tries of the same body share its answer.
	same := `(id = ? OR (period_from = ? AND period_to = ? AND state = 'pending' AND body = ?))`
	ref, err := pa.SubmitReport(ctx, r)
	if err != nil {
		// Only a refusal says the authority did not keep it; after any
		// other failure it may have, and it stays pending.
		var refused *postal.RefusedError
		if errors.As(err, &refused) && refused.Status/100 == 4 {
			l.db.ExecContext(ctx, l.db.Rebind(`UPDATE reports SET state = 'refused', answer = ? WHERE `+same), err.Error(), id, from, to, body)
		} else {
			l.db.ExecContext(ctx, l.db.Rebind(`UPDATE reports SET answer = ? WHERE id = ?`), err.Error(), id)
		}
		return "", err
	}
	err = l.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, l.db.Rebind(`UPDATE reports SET state = 'accepted', pa_ref = ? WHERE `+same), ref, id, from, to, body); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, l.db.Rebind(`UPDATE psd SET reported_at = ? WHERE locked IS NULL`), micros(now))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("ledger: submit report: record acceptance: %w", err)
	}
	l.log.Info("postal report accepted", "ref", ref, "from", r.From, "to", r.To, "indicia", r.Totals.Indicia)
	return ref, l.CheckInspection(ctx)
}

// ErrReportPeriod is a report for a period that would leave a gap after the
// last one accepted, or overlap one sent: the stamps of a gap are in no
// report, and those of an overlap in two.
var ErrReportPeriod = errors.New("ledger: the report's period must start where the last accepted one ended, and overlap none sent")

// newPeriod checks that [from, to), never sent before, follows the periods
// reported: from at or before where the last accepted one ended (the first
// report may start before the GPSD was made), and no period sent (accepted,
// or pending an answer) overlapping it.
func (l *Ledger) newPeriod(ctx context.Context, from, to time.Time) error {
	until, err := l.ReportedUntil(ctx)
	if err != nil {
		return err
	}
	if micros(from) > micros(until) { // periods are kept in microseconds
		return fmt.Errorf("%w: from %s would leave %s to %s in no report", ErrReportPeriod,
			from.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339), from.UTC().Format(time.RFC3339))
	}
	var f, t sql.NullInt64
	err = l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT period_from, period_to FROM reports WHERE state IN ('pending', 'accepted')
		AND period_from < ? AND period_to > ? ORDER BY id LIMIT 1`), micros(to), micros(from)).Scan(&f, &t)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%w: %s to %s overlaps the period %s to %s sent before", ErrReportPeriod,
		from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339),
		time.UnixMicro(f.Int64).UTC().Format(time.RFC3339), time.UnixMicro(t.Int64).UTC().Format(time.RFC3339))
}

// reportChanged tells ops that a period's report, built again, differs
// from the one sent first, which goes again in its place: what the
// authority holds lacks the difference, and only ops can settle it.
func (l *Ledger) reportChanged(ctx context.Context, sent, built *postal.Report) {
	msg := fmt.Sprintf("the report for %s to %s differs from the one sent first, whose answer was lost or which was accepted; "+
		"the first was sent again, as the authority keeps it: it has %d indicia and %d refund claims (%s), built again %d and %d (%s)",
		sent.From.Format(time.RFC3339), sent.To.Format(time.RFC3339), sent.Totals.Indicia, len(sent.Voided), protocol.Mills(sent.Totals.VoidedPostage).Exact(),
		built.Totals.Indicia, len(built.Voided), protocol.Mills(built.Totals.VoidedPostage).Exact())
	l.log.Error("postal report changed since it was first sent", "report", sent.ReportID, "detail", msg)
	if l.al != nil {
		l.al.Raise(ctx, alerts.ReportRefused, "report/"+sent.From.Format(time.RFC3339)+"/changed", msg)
	}
}

// buyer completes who bought from the sales namespace: a kiosk's id, or a
// web customer's (sale.WebKioskID: "web-" and the account).
func buyer(b postal.Buyer) postal.Buyer {
	if id, ok := strings.CutPrefix(b.Kiosk, "web-"); ok && b.Store == "" {
		if n, err := strconv.ParseInt(id, 10, 64); err == nil {
			return postal.Buyer{Channel: "web", Account: n}
		}
	}
	b.Channel = "kiosk"
	return b
}

// PendingPeriod is the end of the report from from that was sent and never
// answered, if there is one: it must go again before any other period.
func (l *Ledger) PendingPeriod(ctx context.Context, from time.Time) (time.Time, time.Time, bool, error) {
	var f, to int64
	err := l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT period_from, period_to FROM reports WHERE state = 'pending' AND period_from <= ? AND period_to > ? ORDER BY id LIMIT 1`), micros(from), micros(from)).Scan(&f, &to)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return time.Time{}, time.Time{}, false, nil
	case err != nil:
		return time.Time{}, time.Time{}, false, fmt.Errorf("ledger: pending report: %w", err)
	}
	return time.UnixMicro(f).UTC(), time.UnixMicro(to).UTC(), true, nil
}

// ReportedUntil is where the next postal report starts: the end of the
// last accepted report's period, or when the GPSD was created.
func (l *Ledger) ReportedUntil(ctx context.Context) (time.Time, error) {
	var to sql.NullInt64
	if err := l.db.QueryRowContext(ctx, `SELECT MAX(period_to) FROM reports WHERE state = 'accepted'`).Scan(&to); err != nil {
		return time.Time{}, fmt.Errorf("ledger: reported until: %w", err)
	}
	if to.Valid {
		return time.UnixMicro(to.Int64).UTC(), nil
	}
	var created int64
	if err := l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT created_at FROM psd WHERE serial = ?`), GPSDSerial).Scan(&created); err != nil {
		return time.Time{}, fmt.Errorf("ledger: reported until: %w", err)
	}
	return time.UnixMicro(created).UTC(), nil
}

// auditHeads is each chain's last entry before to: chain 0's, if it has
// any, and every PSD's.
func (l *Ledger) auditHeads(ctx context.Context, tx *sql.Tx, to int64) ([]postal.AuditHead, error) {
	serials, err := psdSerials(ctx, tx)
	if err != nil {
		return nil, err
	}
	chains := append([]uint32{legacyChain}, serials...)
	var out []postal.AuditHead
	for _, c := range chains {
		h := postal.AuditHead{Chain: c}
		var hash []byte
		err := tx.QueryRowContext(ctx, l.db.Rebind(`SELECT n, hash FROM audit WHERE chain = ? AND at < ? ORDER BY n DESC LIMIT 1`), c, to).Scan(&h.Seq, &hash)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			continue
		case err != nil:
			return nil, err
		}
		h.Hash = hex.EncodeToString(hash)
		out = append(out, h)
	}
	return out, nil
}
