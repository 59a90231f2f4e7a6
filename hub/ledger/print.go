package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/frank-postage/frank/protocol"
)

// RecordPrint records what the kiosk printed. A printed label's indicium
// moves from issued to printed. A failed one is voided at once: its
// postage goes into the postal report as a refund claim (the registers
// never run backwards) and the label counts as spoiled; the customer then
// gets one remedy, a free reprint or a refund. Reports are idempotent.
//
// Every sale brings a report, so each label's outcome joins the group
// commit instead of committing alone: a commit per report cost a third of
// the hub's sales. The outcomes need no transaction together, because each
// is a guarded update of one label that a resent report cannot apply
// twice, and the report is confirmed only once all of them are durable.
func (l *Ledger) RecordPrint(ctx context.Context, r *protocol.PrintReport) error {
	now := micros(l.cfg.Now())
	notBefore := micros(l.cfg.Now().Add(-RemedyLimit))
	done := make([]int64, len(r.Labels))
	errs := make([]error, len(r.Labels))
	var wg sync.WaitGroup
	for i, lo := range r.Labels {
		if slices.ContainsFunc(r.Labels[:i], func(o protocol.LabelOutcome) bool { return o.LabelSerial == lo.LabelSerial }) {
			continue // a label's first outcome counts, as it did when they ran in turn
		}
		wg.Go(func() { // together, so they share one commit
			if lo.Outcome == protocol.Printed {
				done[i], errs[i] = l.db.GroupExec(ctx, printedQuery, now, r.KioskID, r.RequestID, lo.LabelSerial)
				return
			}
			done[i], errs[i] = l.db.GroupExec(ctx, printFailedQuery, now, failReason(lo.Reason), r.KioskID, r.RequestID, lo.LabelSerial, notBefore)
		})
	}
	wg.Wait()
	var repeats []string
	for i, lo := range r.Labels {
		switch {
		case errs[i] != nil:
			return fmt.Errorf("ledger: record print %s: %w", lo.LabelSerial, errs[i])
		case done[i] == 0 && lo.Outcome != protocol.Printed && l.stillIssued(ctx, r.KioskID, r.RequestID, lo.LabelSerial):
			if ls, err := protocol.ParseLabelSerial(lo.LabelSerial); err == nil {
				l.lateRemedy(ctx, r.KioskID, ls, "a failure report") // the report itself is confirmed: resent, it would be refused again
			}
		case done[i] == 0:
			repeats = append(repeats, lo.LabelSerial)
		case lo.Outcome != protocol.Printed:
			l.log.Warn("label failed to print; indicium voided", "kiosk", r.KioskID, "request_id", r.RequestID, "label", lo.LabelSerial, "reason", lo.Reason)
		}
	}
	if len(repeats) > 0 {
		// One line a report, within the kiosk's budget: the labels are the
		// kiosk's word, and a stolen kiosk may name any number of them.
		l.kioskLog(slog.LevelInfo, r.KioskID, "print report for no issued indicium (a repeat?)", "request_id", r.RequestID,
			"label", repeats[0], "labels", len(repeats))
	}
	return nil
}

// What one kiosk's requests may make the ledger log: kioskLines lines a
// minute, in bursts of as many. A stolen kiosk repeating print reports or
// late remedies would otherwise write a line for each, and journald, past
// its rate limit, drops the hub's other lines with them. (The MQTT front
// keeps its own budget for the lines it writes.)
const (
	kioskLines = 10
	// lineKiosks bounds the kiosks counted before the idle ones are dropped.
	lineKiosks = 10_000
)

// lineBudget counts the lines about each kiosk.
type lineBudget struct {
	mu sync.Mutex
	by map[string]*kioskBudget
}

type kioskBudget struct {
	lines   *rate.Limiter
	skipped int // lines left out since the last one written
}

// take reports whether a line about kiosk may be written at now, and how
// many were left out before it.
func (b *lineBudget) take(kiosk string, now time.Time) (ok bool, skipped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.by == nil {
		b.by = map[string]*kioskBudget{}
	}
	k := b.by[kiosk]
	if k == nil {
		if len(b.by) >= lineKiosks {
			for id, k := range b.by {
				if k.skipped == 0 && k.lines.TokensAt(now) >= kioskLines {
					delete(b.by, id) // as if never counted
				}
			}
		}
		k = &kioskBudget{lines: rate.NewLimiter(rate.Every(time.Minute/kioskLines), kioskLines)}
		b.by[kiosk] = k
	}
	if !k.lines.AllowN(now, 1) {
		k.skipped++
		return false, 0
	}
	skipped, k.skipped = k.skipped, 0
	return true, skipped
}

// kioskLog logs a line about what kioskID asked, within its budget.
func (l *Ledger) kioskLog(level slog.Level, kioskID, msg string, args ...any) {
	l.KioskLog(l.log, level, kioskID, msg, args...)
}

// KioskLog logs to log a line about what kioskID asked or sent, within
// the kiosk's budget of kioskLines a minute, which the hub's own lines
// about a kiosk's messages (its offline status) share with the ledger's.
// The first line after some were left out says how many.
func (l *Ledger) KioskLog(log *slog.Logger, level slog.Level, kioskID, msg string, args ...any) {
	ok, skipped := l.lines.take(kioskID, l.cfg.Now())
	if !ok {
		return
	}
	if skipped > 0 {
		args = append(args, "lines_left_out", skipped)
	}
	log.Log(context.Background(), level, msg, append([]any{"kiosk", kioskID}, args...)...)
}

// stillIssued reports whether kioskID's label of sale requestID is issued.
func (l *Ledger) stillIssued(ctx context.Context, kioskID, requestID, label string) bool {
	var n int
	err := l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT COUNT(*) FROM indicia WHERE kiosk_id = ? AND request_id = ? AND label = ? AND state = 'issued'`),
		kioskID, requestID, label).Scan(&n)
	return err == nil && n > 0
}

// The hub's own void reasons. A kiosk's report cannot give them: the
// remedies, the shift report and the ledger check tell a stamp refunded
// at the counter from a failed print by its reason.
const (
	reasonRefund  = "refund_requested"
	reasonRemedy  = "remedy_requested"
	reasonRetired = "kiosk_retired"
)

// failReason is the void reason kept for a kiosk's failed print: its own
// word (jam, paper_out, ...) when that is a short lower-case token and not
// one of the hub's, else print_failed.
func failReason(r string) string {
	ok := r != "" && len(r) <= 32 && r != reasonRefund && r != reasonRemedy && r != reasonRetired && r != reasonCompromised &&
		strings.Trim(r, "abcdefghijklmnopqrstuvwxyz_") == ""
	if !ok {
		return "print_failed"
	}
	return r
}

const (
	// voidIndicium begins every void: the state and the live mark change
	// together, or the label stays held (schema v33), and voided_at, its
	// first argument raised to the report floor, says which postal report
	// claims it back (v40, v43).
	voidIndicium = `UPDATE indicia SET state = 'voided', live = NULL, voided_at = ` + flooredArg + `, `

	printedQuery = `UPDATE indicia SET state = 'printed', printed_at = ?
		WHERE kiosk_id = ? AND request_id = ? AND label = ? AND state = 'issued'`
	// A stamp issued longer ago than RemedyLimit stays issued.
	printFailedQuery = voidIndicium + `void_reason = ?
		WHERE kiosk_id = ? AND request_id = ? AND label = ? AND state = 'issued' AND created_at >= ?`
)

// Spoiled is a label that failed to print, as a remedy needs it.
type Spoiled struct {
	Label     protocol.LabelSerial
	RateClass string
	Postage   protocol.Mills
	// PaidBy is the sale whose payment paid for the stamp: the sale itself,
	// or for a free reprint the sale of the label it replaced.
	PaidBy string
}

// FailedLabel finds a label of kioskID's sale requestID whose print failed
// and that has no remedy yet, for its free reprint; anything else is
// remedy_not_allowed. A label not yet reported either way is voided now:
// asking for a remedy says it failed, and the report may still be on its
// way. A stamp issued longer ago than RemedyLimit gets no reprint
// (remedy_not_allowed, and ops are told): its customer has long gone.
func (l *Ledger) FailedLabel(ctx context.Context, kioskID, requestID string, label protocol.LabelSerial) (*Spoiled, error) {
	sp, err := l.spoiledLabel(ctx, kioskID, requestID, label, true)
	if err != nil {
		return nil, err
	}
	var n int
	if err := l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT COUNT(*) FROM remedies WHERE label = ?`), label.String()).Scan(&n); err != nil {
		return nil, fmt.Errorf("ledger: failed label %s: %w", label, err)
	}
	if n > 0 {
		return nil, protocol.Errorf(protocol.CodeRemedyNotAllowed, "label %s already had its reprint or refund", label)
	}
	return sp, nil
}

// spoiledLabel is FailedLabel without the look for a remedy. A stamp
// issued longer ago than RemedyLimit is not voided here: a kiosk that says
// so late may have had it used (verifiers answered valid meanwhile). A
// failed label voided in time may still be refunded late, as the leader
// would refund it (RefundUnclaimed), but not reprinted.
func (l *Ledger) spoiledLabel(ctx context.Context, kioskID, requestID string, label protocol.LabelSerial, reprint bool) (*Spoiled, error) {
	now := l.cfg.Now()
	notBefore := now.Add(-RemedyLimit)
	if _, err := l.db.ExecContext(ctx, l.db.Rebind(voidIndicium+`void_reason = 'remedy_requested'
		WHERE kiosk_id = ? AND request_id = ? AND label = ? AND state = 'issued' AND created_at >= ?`),
		micros(now), kioskID, requestID, label.String(), micros(notBefore)); err != nil {
		return nil, fmt.Errorf("ledger: failed label %s: %w", label, err)
	}
	sp := &Spoiled{Label: label, PaidBy: requestID}
	var state, reason string
	var reprintOf sql.NullString
	var created int64
	err := l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT rate_class, postage, state, COALESCE(void_reason, ''), reprint_of, created_at FROM indicia WHERE kiosk_id = ? AND request_id = ? AND label = ?`),
		kioskID, requestID, label.String()).Scan(&sp.RateClass, &sp.Postage, &state, &reason, &reprintOf, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, protocol.Errorf(protocol.CodeRemedyNotAllowed, "label %s is not in sale %s of this kiosk", label, requestID)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: failed label %s: %w", label, err)
	}
	if time.UnixMicro(created).Before(notBefore) && (state == "issued" || reprint && state == "voided" && failedVoid(reason)) {
		what := "a refund"
		if reprint {
			what = "a free reprint"
		}
		return nil, l.lateRemedy(ctx, kioskID, label, what)
	}
	if state != "voided" {
		return nil, protocol.Errorf(protocol.CodeRemedyNotAllowed, "label %s was not reported as failed", label)
	}
	if reason == reasonRefund {
		// Taken back at the counter: its remedy is that refund, even while
		// the refund's money has not moved (staff finish it there).
		return nil, protocol.Errorf(protocol.CodeRemedyNotAllowed, "label %s was taken back at the counter, not spoiled", label)
	}
	if sp.PaidBy, err = l.paidBy(ctx, l.db, kioskID, requestID, reprintOf); err != nil {
		return nil, fmt.Errorf("ledger: failed label %s: %w", label, err)
	}
	return sp, nil
}

// rowQuerier reads one row: the database or a transaction.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// paidBy is the sale that paid for kioskID's stamp of sale saleID: a free
// reprint (reprintOf, the label it replaced) is followed back to the sale
// that was paid.
func (l *Ledger) paidBy(ctx context.Context, q rowQuerier, kioskID, saleID string, reprintOf sql.NullString) (string, error) {
	for hops := 0; reprintOf.Valid; hops++ {
		if hops == 16 {
			return "", errors.New("reprints chain past 16 labels")
		}
		err := q.QueryRowContext(ctx, l.db.Rebind(`SELECT request_id, reprint_of FROM indicia WHERE kiosk_id = ? AND label = ? AND state = 'voided'`),
			kioskID, reprintOf.String).Scan(&saleID, &reprintOf)
		if err != nil {
			return "", fmt.Errorf("the sale %s reprints: %w", reprintOf.String, err)
		}
	}
	return saleID, nil
}

// ReserveRefund makes the remedy of a failed label of kioskID's sale
// saleID a refund, asked for by kioskID's request refundID, before any
// money moves: the remedies row is the label's one remedy (its key), so a
// reprint committed first refuses the refund here, and a reprint that
// would commit after finds it. A label whose remedy is a refund already,
// by any request of this kiosk, is found again: its money may not have
// moved yet (the hub stopped in between, or the payment failed), and the
// caller finishes it, moving it once.
func (l *Ledger) ReserveRefund(ctx context.Context, kioskID, saleID string, label protocol.LabelSerial, refundID string) (*Spoiled, error) {
	sp, err := l.spoiledLabel(ctx, kioskID, saleID, label, false)
	if err != nil {
		return nil, err
	}
	res, err := l.db.ExecContext(ctx, l.db.Rebind(`INSERT INTO remedies (label, kind, kiosk_id, request_id, amount, at) VALUES (?, 'refund', ?, ?, ?, ?)
		ON CONFLICT DO NOTHING`), label.String(), kioskID, refundID, sp.Postage, micros(l.cfg.Now()))
	if err != nil {
		return nil, fmt.Errorf("ledger: reserve refund of %s: %w", label, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, fmt.Errorf("ledger: reserve refund of %s: %w", label, err)
	} else if n == 1 {
		return sp, nil
	}
	var kind, by string
	var amount protocol.Mills
	err = l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT kind, kiosk_id, amount FROM remedies WHERE label = ?`), label.String()).Scan(&kind, &by, &amount)
	if err != nil {
		return nil, fmt.Errorf("ledger: reserve refund of %s: %w", label, err)
	}
	if kind != "refund" || by != kioskID {
		return nil, protocol.Errorf(protocol.CodeRemedyNotAllowed, "label %s already had its reprint or refund", label)
	}
	sp.Postage = amount
	return sp, nil
}

// RefundDue is a refund recorded before its money moved (ReserveRefund,
// RefundUnused, VoidIssued) whose money has not moved: its hub stopped in
// between, or the payment's outcome was not known, and no request for the
// label has come since.
type RefundDue struct {
	KioskID  string
	SaleID   string // the sale whose label failed, or was taken back
	RefundID string // the refund request that recorded it
	Label    protocol.LabelSerial
	// TakenBack is a stamp taken back unused, at the counter or in the
	// portal, or voided by its key's compromise, refunded Amount to the
	// sale PaidBy (SaleID, or for a free reprint the sale it reprints);
	// the others are failed labels.
	TakenBack bool
	// Unclaimed is a label its kiosk voided as failed before, refunded
	// by the hub for want of a remedy (RefundUnclaimed, VoidIssued).
	Unclaimed bool
	Amount    protocol.Mills
	PaidBy    string
}

// RefundsDue lists the refunds recorded between since and before with no
// payment refund for their label (every refund of a label is made under
// the ref "refund:LABEL").
func (l *Ledger) RefundsDue(ctx context.Context, since, before time.Time) ([]RefundDue, error) {
	rows, err := l.db.QueryContext(ctx, l.db.Rebind(`SELECT r.kiosk_id, r.request_id, r.label, r.amount,
			COALESCE((SELECT i.request_id FROM indicia i WHERE i.label = r.label AND i.kiosk_id = r.kiosk_id ORDER BY i.id DESC LIMIT 1), ''),
			COALESCE((SELECT i.void_reason FROM indicia i WHERE i.label = r.label AND i.kiosk_id = r.kiosk_id ORDER BY i.id DESC LIMIT 1), ''),
			(SELECT i.reprint_of FROM indicia i WHERE i.label = r.label AND i.kiosk_id = r.kiosk_id ORDER BY i.id DESC LIMIT 1)
		FROM remedies r
		WHERE r.kind = 'refund' AND r.at >= ? AND r.at < ?
			AND NOT EXISTS (SELECT 1 FROM payment_refunds p WHERE p.kiosk_id = r.kiosk_id AND p.ref = 'refund:' || r.label)`),
		micros(since), micros(before))
	if err != nil {
		return nil, fmt.Errorf("ledger: refunds due: %w", err)
	}
	var out []RefundDue
	var reprints []sql.NullString
	for rows.Next() {
		var d RefundDue
		var label, reason string
		var reprintOf sql.NullString
		if err := rows.Scan(&d.KioskID, &d.RefundID, &label, &d.Amount, &d.SaleID, &reason, &reprintOf); err != nil {
			rows.Close()
			return nil, fmt.Errorf("ledger: refunds due: %w", err)
		}
		var err error
		if d.Label, err = protocol.ParseLabelSerial(label); err != nil || d.SaleID == "" {
			continue // not a label's refund
		}
		d.TakenBack = reason == reasonRefund || reason == reasonCompromised
		out = append(out, d)
		reprints = append(reprints, reprintOf)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: refunds due: %w", err)
	}
	for i := range out {
		if out[i].PaidBy, err = l.paidBy(ctx, l.db, out[i].KioskID, out[i].SaleID, reprints[i]); err != nil {
			return nil, fmt.Errorf("ledger: refunds due: label %s: %w", out[i].Label, err)
		}
	}
	return out, nil
}

// ReleaseRefund drops the refund ReserveRefund recorded for kioskID's
// label, once its payment refused to move any money: the label has no
// remedy again. A refund at the counter (it names its operator) stays.
func (l *Ledger) ReleaseRefund(ctx context.Context, kioskID string, label protocol.LabelSerial) error {
	if _, err := l.db.ExecContext(ctx, l.db.Rebind(`DELETE FROM remedies WHERE label = ? AND kind = 'refund' AND kiosk_id = ? AND by_operator IS NULL`),
		label.String(), kioskID); err != nil {
		return fmt.Errorf("ledger: release refund of %s: %w", label, err)
	}
	return nil
}

// VoidIssued voids every indicium of kioskID's sales that was issued and
// never reported printed or failed, as if the kiosk had died (it was
// retired): their postage is claimed back in the postal report. Each
// one's refund is recorded due in the same transaction, as a kiosk's
// refund is before its money moves (request RetiredRefund), so a refund
// that fails, or a hub that stops, part way through is finished by the
// leader (RefundsDue). So is the refund of each label the kiosk voided as
// failed whose customer got no remedy: the kiosk will not refund it now.
// It returns the labels, with their sales.
func (l *Ledger) VoidIssued(ctx context.Context, kioskID, reason string) ([]RefundDue, error) {
	var out []RefundDue
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, l.db.Rebind(`SELECT request_id, label FROM indicia WHERE kiosk_id = ? AND state = 'issued' ORDER BY id`), kioskID)
		if err != nil {
			return err
		}
		for rows.Next() {
			r := RefundDue{KioskID: kioskID, RefundID: RetiredRefund}
			var label string
			if err := rows.Scan(&r.SaleID, &label); err != nil {
				rows.Close()
				return err
			}
			if r.Label, err = protocol.ParseLabelSerial(label); err != nil {
				rows.Close()
				return err
			}
			out = append(out, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO remedies (label, kind, kiosk_id, request_id, amount, at)
			SELECT label, 'refund', kiosk_id, ?, postage, ? FROM indicia WHERE kiosk_id = ? AND state = 'issued'
			ON CONFLICT DO NOTHING`), RetiredRefund, micros(l.cfg.Now()), kioskID); err != nil {
			return err
		}
		if _, err = tx.ExecContext(ctx, l.db.Rebind(voidIndicium+`void_reason = ? WHERE kiosk_id = ? AND state = 'issued'`), micros(l.cfg.Now()), reason, kioskID); err != nil {
			return err
		}
		failed, err := l.refundUnremedied(ctx, tx, RetiredRefund, `i.kiosk_id = ?`, kioskID)
		out = append(out, failed...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: void issued of %s: %w", kioskID, err)
	}
	return out, nil
}

// RetiredRefund is the request that refunds a retired kiosk's stamps.
const RetiredRefund = "retired"

// LabelRef is a label of a sale.
type LabelRef struct {
	RequestID string
	Label     protocol.LabelSerial
}

// KioskFailures is how many of a kiosk's stamps issued since some time
// it said failed to print, of how many.
type KioskFailures struct {
	KioskID string
	Failed  int
	Total   int
}

// FailedPrints lists the kiosks with at least min stamps voided since
// that they reported failed (or asked a remedy for), with their totals:
// the stamps they were issued or had voided since. A void counts when it
// happens, not when its stamp was issued, so stamps voided long after
// their sale count too (index indicia_voided_at). Web customers' stamps
// are never reported; retired kiosks' voids are not theirs.
func (l *Ledger) FailedPrints(ctx context.Context, since time.Time, min int) ([]KioskFailures, error) {
	rows, err := l.db.QueryContext(ctx, l.db.Rebind(`SELECT kiosk_id, COUNT(*),
			(SELECT COUNT(*) FROM indicia t WHERE t.kiosk_id = v.kiosk_id AND (t.created_at >= ? OR t.voided_at >= ?))
		FROM indicia v
		WHERE live IS NULL AND voided_at >= ? AND kiosk_id NOT LIKE 'web-%' AND COALESCE(void_reason, '') NOT IN (?, ?, ?)
		GROUP BY kiosk_id HAVING COUNT(*) >= ?`), micros(since), micros(since), micros(since), reasonRefund, reasonRetired, reasonCompromised, min)
	if err != nil {
		return nil, fmt.Errorf("ledger: failed prints: %w", err)
	}
	defer rows.Close()
	var out []KioskFailures
	for rows.Next() {
		var f KioskFailures
		if err := rows.Scan(&f.KioskID, &f.Failed, &f.Total); err != nil {
			return nil, fmt.Errorf("ledger: failed prints: %w", err)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// Unconfirmed lists kiosk sales with labels issued longer ago than age and
// never reported printed or failed. Web customers' stamps (kiosk ids
// "web-N") print at home and are never reported.
func (l *Ledger) Unconfirmed(ctx context.Context, age time.Duration) ([][2]string, error) {
	rows, err := l.db.QueryContext(ctx, l.db.Rebind(`SELECT DISTINCT kiosk_id, request_id FROM indicia WHERE state = 'issued' AND created_at < ? AND kiosk_id NOT LIKE 'web-%'`),
		micros(l.cfg.Now().Add(-age)))
	if err != nil {
		return nil, fmt.Errorf("ledger: unconfirmed: %w", err)
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var k, r string
		if err := rows.Scan(&k, &r); err != nil {
			return nil, fmt.Errorf("ledger: unconfirmed: %w", err)
		}
		out = append(out, [2]string{k, r})
	}
	return out, rows.Err()
}

// RefundUnused takes back an unused stamp, a web customer's or one staff
// hold at the counter (by names the operator, why their reason): its
// indicium is voided (claimed back in the postal report) if it was issued
// no earlier than notBefore, and its refund recorded, in one transaction,
// before any money moves. A hub that stops before the money moved leaves
// the refund due (RefundsDue); a retry finds it and finishes it. A stamp
// refunded before, or voided for another reason, is remedy_not_allowed.
func (l *Ledger) RefundUnused(ctx context.Context, kioskID, requestID string, label protocol.LabelSerial, notBefore time.Time, by, why string) (*Spoiled, error) {
	sp := &Spoiled{Label: label, PaidBy: requestID}
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, l.db.Rebind(voidIndicium+`void_reason = 'refund_requested'
			WHERE kiosk_id = ? AND request_id = ? AND label = ? AND state IN ('issued', 'printed') AND created_at >= ?`),
			micros(l.cfg.Now()), kioskID, requestID, label.String(), micros(notBefore)); err != nil {
			return err
		}
		var state, reason string
		var reprintOf sql.NullString
		err := tx.QueryRowContext(ctx, l.db.Rebind(`SELECT rate_class, postage, state, COALESCE(void_reason, ''), reprint_of FROM indicia
			WHERE kiosk_id = ? AND request_id = ? AND label = ?`), kioskID, requestID, label.String()).Scan(&sp.RateClass, &sp.Postage, &state, &reason, &reprintOf)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return protocol.Errorf(protocol.CodeRemedyNotAllowed, "label %s is not in purchase %s", label, requestID)
		case err != nil:
			return err
		case state != "voided":
			return protocol.Errorf(protocol.CodeRemedyNotAllowed, "stamp %s is past its refund window", label)
		case reason != reasonRefund:
			return protocol.Errorf(protocol.CodeRemedyNotAllowed, "stamp %s was voided (%s), not sold", label, reason)
		}
		if sp.PaidBy, err = l.paidBy(ctx, tx, kioskID, requestID, reprintOf); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO remedies (label, kind, kiosk_id, request_id, amount, at, by_operator, reason) VALUES (?, 'refund', ?, ?, ?, ?, ?, ?)
			ON CONFLICT DO NOTHING`), label.String(), kioskID, requestID, sp.Postage, micros(l.cfg.Now()), nullString(by), nullString(why))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		// Recorded before: finish it if its money has not moved.
		var kind, who, sale string
		var moved int
		if err := tx.QueryRowContext(ctx, l.db.Rebind(`SELECT kind, kiosk_id, request_id,
				(SELECT COUNT(*) FROM payment_refunds WHERE kiosk_id = ? AND request_id = ? AND ref = ?) FROM remedies WHERE label = ?`),
			kioskID, sp.PaidBy, "refund:"+label.String(), label.String()).Scan(&kind, &who, &sale, &moved); err != nil {
			return err
		}
		if kind != "refund" || who != kioskID || sale != requestID || moved > 0 {
			return protocol.Errorf(protocol.CodeRemedyNotAllowed, "stamp %s was refunded already", label)
		}
		return nil
	})
	if err != nil {
		var perr *protocol.Error
		if errors.As(err, &perr) {
			return nil, err
		}
		return nil, fmt.Errorf("ledger: refund unused %s: %w", label, err)
	}
	return sp, nil
}

// ReleaseTakenBack drops the refund RefundUnused recorded for kioskID's
// sale requestID, once its payment refused to move any money for good:
// the stamp stays taken back, and staff or the customer may ask again.
func (l *Ledger) ReleaseTakenBack(ctx context.Context, kioskID, requestID string, label protocol.LabelSerial) error {
	if _, err := l.db.ExecContext(ctx, l.db.Rebind(`DELETE FROM remedies WHERE label = ? AND kind = 'refund' AND kiosk_id = ? AND request_id = ?`),
		label.String(), kioskID, requestID); err != nil {
		return fmt.Errorf("ledger: release refund of %s: %w", label, err)
	}
	return nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// LabelSale names the sale whose indicium is on label: the live one, or
// else the last one voided.
func (l *Ledger) LabelSale(ctx context.Context, label protocol.LabelSerial) (kioskID, requestID string, err error) {
	err = l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT kiosk_id, request_id FROM indicia WHERE label = ?
		ORDER BY CASE WHEN state = 'voided' THEN 1 ELSE 0 END, id DESC LIMIT 1`), label.String()).Scan(&kioskID, &requestID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", protocol.Errorf(protocol.CodeLabelUnknown, "no stamp was sold on label %s", label)
	}
	if err != nil {
		return "", "", fmt.Errorf("ledger: label sale %s: %w", label, err)
	}
	return kioskID, requestID, nil
}

// Void is one entry of the void list: an indicium that must not be
// accepted as postage, by the meter that made it and its label.
type Void struct {
	Meter  string `json:"meter"`
	Label  string `json:"label"`
	AR     int64  `json:"ar"` // tells it from a later stamp on the same label
	Reason string `json:"reason"`
}

// VoidList is every voided or spoiled indicium, oldest first.
func (l *Ledger) VoidList(ctx context.Context) ([]Void, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT mpsd, label, ar, COALESCE(void_reason, 'voided') FROM indicia WHERE live IS NULL
		UNION ALL SELECT mpsd, label, ar, 'spoiled: ' || reason FROM spoiled`)
	if err != nil {
		return nil, fmt.Errorf("ledger: void list: %w", err)
	}
	defer rows.Close()
	out := []Void{}
	for rows.Next() {
		var v Void
		var mpsd uint32
		if err := rows.Scan(&mpsd, &v.Label, &v.AR, &v.Reason); err != nil {
			return nil, fmt.Errorf("ledger: void list: %w", err)
		}
		v.Meter = protocol.MeterNumber(l.cfg.Vendor, l.cfg.Model, mpsd)
		out = append(out, v)
	}
	return out, rows.Err()
}

// VoidCount is how many entries the void list holds. Nothing leaves the
// list and no entry changes (a void is an update from issued or printed
// only), so a list of the same count is the same list.
func (l *Ledger) VoidCount(ctx context.Context) (int64, error) {
	var n int64
	if err := l.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM indicia WHERE live IS NULL) + (SELECT COUNT(*) FROM spoiled)`).Scan(&n); err != nil {
		return 0, fmt.Errorf("ledger: void count: %w", err)
	}
	return n, nil
}

// VoidPageMax is the most entries one VoidPage call returns.
const VoidPageMax = 10_000

// VoidPage is one page of the void list, for lists too long to send
// whole. The pages follow one fixed order: voided indicia by row id, then
// spoiled ones by row id (indexes indicia_voided and spoiled's key), so a
// page costs an index range however long the list. after is "" for the
// first page, else the next cursor of the page before; next is "" on the
// last page. Nothing leaves the list, so a walk holds every entry voided
// before its first page; one voided during the walk may be missed, as a
// list fetched whole a moment before would miss it. A cursor that is not
// one, or a limit outside 1 to VoidPageMax, is an invalid request.
func (l *Ledger) VoidPage(ctx context.Context, after string, limit int) (page []Void, next string, err error) {
	if limit < 1 || limit > VoidPageMax {
		return nil, "", protocol.Errorf(protocol.CodeInvalidRequest, "void list: limit %d: want 1 to %d", limit, VoidPageMax)
	}
	c, err := parseVoidCursor(after)
	if err != nil {
		return nil, "", err
	}
	// One entry more than asked says whether another page follows.
	type keyed struct {
		Void
		cursor voidCursor
	}
	var got []keyed
	walk := func(spoiled bool, from int64) error {
		q := `SELECT id, mpsd, label, ar, COALESCE(void_reason, 'voided') FROM indicia WHERE live IS NULL AND id > ? ORDER BY id LIMIT ?`
		if spoiled {
			q = `SELECT id, mpsd, label, ar, 'spoiled: ' || reason FROM spoiled WHERE id > ? ORDER BY id LIMIT ?`
		}
		rows, err := l.db.QueryContext(ctx, l.db.Rebind(q), from, limit+1-len(got))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			k := keyed{cursor: voidCursor{spoiled: spoiled}}
			var mpsd uint32
			if err := rows.Scan(&k.cursor.id, &mpsd, &k.Label, &k.AR, &k.Reason); err != nil {
				return err
			}
			k.Meter = protocol.MeterNumber(l.cfg.Vendor, l.cfg.Model, mpsd)
			got = append(got, k)
		}
		return rows.Err()
	}
	if !c.spoiled {
		err = walk(false, c.id)
		c = voidCursor{spoiled: true}
	}
	if err == nil && len(got) <= limit {
		err = walk(true, c.id)
	}
	if err != nil {
		return nil, "", fmt.Errorf("ledger: void list page: %w", err)
	}
	if len(got) > limit {
		got = got[:limit]
		next = got[limit-1].cursor.String()
	}
	page = make([]Void, len(got))
	for i, k := range got {
		page[i] = k.Void
	}
	return page, next, nil
}

// voidCursor is a place in VoidPage's order: a row of indicia, or of
// spoiled, which come after all of indicia's.
type voidCursor struct {
	spoiled bool
	id      int64
}

// String is the cursor as clients carry it: "i" or "s", then the row id.
func (c voidCursor) String() string {
	if c.spoiled {
		return "s" + strconv.FormatInt(c.id, 10)
	}
	return "i" + strconv.FormatInt(c.id, 10)
}

// parseVoidCursor reads what voidCursor.String wrote; "" is the start.
func parseVoidCursor(s string) (voidCursor, error) {
	if s == "" {
		return voidCursor{}, nil
	}
	n, err := strconv.ParseInt(s[1:], 10, 64)
	c := voidCursor{spoiled: s[0] == 's', id: n}
	if err != nil || n < 0 || (s[0] != 'i' && s[0] != 's') || c.String() != s {
		return voidCursor{}, protocol.Errorf(protocol.CodeInvalidRequest, "void list: after %q: not a cursor this hub gave", s)
	}
	return c, nil
}

// IndiciumStatus says whether the indicium a meter made for label is
// valid (issued or printed), voided, or unknown to this vendor. ar, when
// not 0, names the stamp (its ascending register): a label may carry a
// voided stamp and a later live one, and a verifier holding the voided one
// must not hear valid.
func (l *Ledger) IndiciumStatus(ctx context.Context, meter string, label protocol.LabelSerial, ar int64) (status, reason string, err error) {
	var mpsd uint32
	prefix := l.cfg.Vendor + l.cfg.Model
	if rest, ok := strings.CutPrefix(meter, prefix); !ok || len(rest) != 8 {
		return "unknown", "", nil
	} else if n, err := strconv.ParseUint(rest, 10, 32); err != nil {
		return "unknown", "", nil
	} else {
		mpsd = uint32(n)
	}
	rows, err := l.db.QueryContext(ctx, l.db.Rebind(`SELECT i.state, COALESCE(i.void_reason, ''), i.data, COALESCE(k.compromised_at, 0)
			FROM indicia i LEFT JOIN signing_keys k ON k.cert_serial = i.cert_serial WHERE i.mpsd = ? AND i.label = ? AND (? = 0 OR i.ar = ?)
		UNION ALL SELECT 'voided', 'spoiled: ' || reason, data, 0 FROM spoiled WHERE mpsd = ? AND label = ? AND (? = 0 OR ar = ?)`),
		mpsd, label.String(), ar, ar, mpsd, label.String(), ar, ar)
	if err != nil {
		return "", "", fmt.Errorf("ledger: indicium status: %w", err)
	}
	defer rows.Close()
	status = "unknown"
	for rows.Next() {
		var st, why string
		var data []byte
		var compromised int64
		if err := rows.Scan(&st, &why, &data, &compromised); err != nil {
			return "", "", fmt.Errorf("ledger: indicium status: %w", err)
		}
		if st != "voided" {
			// The live one; any others on the label were voided before it.
			// A stamp its key's compromise voids, as every verifier reads
			// the rule, is not valid here either.
			if in, err := protocol.ParseIndicium(data); err == nil && compromised != 0 && in.Date >= protocol.CompromiseDate(time.UnixMicro(compromised)) {
				return "voided", "key_compromised", nil
			}
			return "valid", "", nil
		}
		status, reason = "voided", why
	}
	return status, reason, rows.Err()
}
