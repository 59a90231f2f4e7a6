package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/protocol"
)

// MaxRemedyWindow is the longest time ops may give a kiosk's customer to
// choose a reprint or a refund (remedy_window_s is at most 3600).
const MaxRemedyWindow = time.Hour

// remedySlack covers a kiosk that lost the hub for a while around a
// failed print: its report and remedy request come once it is back.
const remedySlack = time.Hour

// RemedyLimit is how long after its issue a kiosk's stamp may still be
// reported failed, or voided by a remedy request. Later, the stamp may
// have been mailed meanwhile (verifiers answered valid): it stays issued,
// and staff take it back at the counter if the failure was genuine.
const RemedyLimit = protocol.RemedyLimit // MaxRemedyWindow + remedySlack, as kiosks know it

// UnclaimedAfter is how long after a kiosk voided a label as failed the
// leader refunds it if it got no remedy (RefundUnclaimed): the customer's
// choice is over, and the kiosk that should have refunded it did not (it
// died, or lost the hub).
const UnclaimedAfter = MaxRemedyWindow + remedySlack

// UnclaimedRefund is the request that refunds a failed label nobody claimed.
const UnclaimedRefund = "unclaimed"

// lateRemedy refuses what a kiosk asked of a label (a failure report, a
// refund, a free reprint) for a stamp issued longer ago than RemedyLimit,
// and tells ops: a kiosk refunding stamps it used, or one off or cut off
// from the hub for hours around a failed print, whose customer staff
// refund at the counter.
func (l *Ledger) lateRemedy(ctx context.Context, kioskID string, label protocol.LabelSerial, what string) *protocol.Error {
	// Within the kiosk's budget: the alert, one per kiosk while open, is
	// what ops act on; a stolen kiosk may ask this of every old stamp.
	l.kioskLog(slog.LevelWarn, kioskID, "remedy refused: its stamp was issued too long ago", "label", label, "asked", what, "limit", RemedyLimit.String())
	l.al.Raise(ctx, alerts.LateRemedy, "kiosk/"+kioskID, fmt.Sprintf(
		"kiosk %s asked %s of label %s past the %s a kiosk has to say a label failed; refused, the stamp left as it was. If the customer's label really failed, refund it at the counter; many such requests suggest a kiosk refunding stamps it used",
		kioskID, what, label, RemedyLimit))
	e := protocol.Errorf(protocol.CodeRemedyNotAllowed, "label %s was issued more than %s ago, past the time in which a kiosk may say it failed or ask its remedy; staff may take it back at the counter",
		label, RemedyLimit)
	e.Expired = true
	return e
}

// failedVoid reports whether a void reason is a failed print: the kiosk's
// own word, or remedy_requested; not the hub's other reasons.
func failedVoid(reason string) bool {
	return reason != reasonRefund && reason != reasonRetired && reason != reasonCompromised
}

// RefundUnclaimed records a refund (request UnclaimedRefund) for each
// label a kiosk voided as failed between since and before that has no
// remedy, and returns them for their money to move. Remedies are keyed
// by label, so a reprint or a refund the kiosk gets first wins, and one
// that comes after finds this refund (a refund request finishes it; a
// reprint is refused). A locked kiosk's labels wait: ops decide.
// Labels in skip are passed over: their refunds were refused for good
// lately (the payment was never captured, say), and would be recorded and
// refused again at every call.
func (l *Ledger) RefundUnclaimed(ctx context.Context, since, before time.Time, skip []string) ([]RefundDue, error) {
	var out []RefundDue
	where := `i.voided_at >= ? AND i.voided_at < ? AND i.kiosk_id NOT LIKE 'web-%'
			AND NOT EXISTS (SELECT 1 FROM kiosks k WHERE k.kiosk_id = i.kiosk_id AND k.locked_at IS NOT NULL)`
	args := []any{micros(since), micros(before)}
	if len(skip) > 0 {
		where += ` AND i.label NOT IN (` + strings.TrimSuffix(strings.Repeat("?, ", len(skip)), ", ") + `)`
		for _, lb := range skip {
			args = append(args, lb)
		}
	}
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = l.refundUnremedied(ctx, tx, UnclaimedRefund, where, args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: refund unclaimed: %w", err)
	}
	return out, nil
}

// refundUnremedied records, in tx, a refund for request refundID of each
// label voided as failed that has no remedy and matches where (on indicia
// i), and returns those it recorded.
func (l *Ledger) refundUnremedied(ctx context.Context, tx *sql.Tx, refundID, where string, args ...any) ([]RefundDue, error) {
	rows, err := tx.QueryContext(ctx, l.db.Rebind(`SELECT i.kiosk_id, i.request_id, i.label, i.postage FROM indicia i
		WHERE i.state = 'voided' AND COALESCE(i.void_reason, '') NOT IN (?, ?, ?) AND `+where+`
			AND NOT EXISTS (SELECT 1 FROM remedies r WHERE r.label = i.label)
		ORDER BY i.id`), append([]any{reasonRefund, reasonRetired, reasonCompromised}, args...)...)
	if err != nil {
		return nil, err
	}
	var found []RefundDue
	for rows.Next() {
		d := RefundDue{RefundID: refundID, Unclaimed: true}
		var label string
		if err := rows.Scan(&d.KioskID, &d.SaleID, &label, &d.Amount); err != nil {
			rows.Close()
			return nil, err
		}
		if d.Label, err = protocol.ParseLabelSerial(label); err != nil {
			continue // not a label's stamp
		}
		found = append(found, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []RefundDue
	at := micros(l.cfg.Now())
	for _, d := range found {
		res, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO remedies (label, kind, kiosk_id, request_id, amount, at) VALUES (?, 'refund', ?, ?, ?, ?)
			ON CONFLICT DO NOTHING`), d.Label.String(), d.KioskID, refundID, d.Amount, at)
		if err != nil {
			return nil, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return nil, err
		} else if n == 1 { // else another request or hub remedied it meanwhile
			out = append(out, d)
		}
	}
	return out, nil
}
