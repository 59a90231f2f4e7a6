package ledger

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/frank-postage/frank/protocol"
)

// RecordPrint records what the kiosk printed. A printed label's indicium
// moves from issued to printed. Failed labels are logged; voiding and
// reprinting them is the purchase service's job.
func (l *Ledger) RecordPrint(ctx context.Context, r *protocol.PrintReport) error {
	return l.inTx(ctx, func(tx *sql.Tx) error {
		for _, lo := range r.Labels {
			if lo.Outcome != protocol.Printed {
				l.log.Warn("label failed to print", "kiosk", r.KioskID, "request_id", r.RequestID, "label", lo.LabelSerial, "reason", lo.Reason)
				continue
			}
			res, err := tx.ExecContext(ctx, l.db.Rebind(`UPDATE indicia SET state = 'printed'
				WHERE kiosk_id = ? AND request_id = ? AND label = ? AND state = 'issued'`), r.KioskID, r.RequestID, lo.LabelSerial)
			if err != nil {
				return fmt.Errorf("ledger: record print %s: %w", lo.LabelSerial, err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				l.log.Info("print report for no issued indicium (repeat?)", "kiosk", r.KioskID, "label", lo.LabelSerial)
			}
		}
		return nil
	})
}
