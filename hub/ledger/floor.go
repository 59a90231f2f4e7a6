package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/frank-postage/frank/hub/store"
)

// The report floor (schema v43). A postal report takes the rows of its
// period by their time, and each hub dates rows by its own clock, so a row
// dated inside a period already reported (written by a hub whose clock is
// behind, or by a commit that waited past the report's build) was in no
// report: a stamp sold and never declared, or a refund never claimed. Every
// row a report takes by time (indicia, spoiled, voids, fundings, postage
// bought, the audit chain; and the events: keys put in service, retired or
// compromised, kiosks retired or lost, tamper alerts) is dated no earlier
// than the floor, read in the transaction that writes it; a report's build raises the floor to the end
// of its period first, once every writer that read the old floor has ended.
const (
	floorQuery = `SELECT floor FROM report_floor WHERE id = 1`
	// flooredArg is a time argument raised to the floor, for a write
	// that reads nothing first.
	flooredArg = store.FlooredTime
)

// notBefore is now, or the floor (micros) when now is before it.
func notBefore(now time.Time, floor int64) time.Time {
	if f := time.UnixMicro(floor); now.Before(f) {
		return f
	}
	return now
}

// floored is now raised to the floor, read in tx: a row tx writes dated by
// it goes in a report not yet built.
func (l *Ledger) floored(ctx context.Context, tx *sql.Tx, now time.Time) (time.Time, error) {
	var floor int64
	if err := tx.QueryRowContext(ctx, floorQuery).Scan(&floor); err != nil {
		return now, fmt.Errorf("ledger: report floor: %w", err)
	}
	return notBefore(now, floor), nil
}

// raiseFloor raises the floor to to. On PostgreSQL it first locks the
// floor's table against everyone: every writer holds a share of that lock
// from its read of the floor to its commit, so this waits for those that
// read the old floor, and a report built after it sees their rows. On
// SQLite the one writing connection already puts writers in turn.
func (l *Ledger) raiseFloor(ctx context.Context, to time.Time) error {
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		if l.db.Dialect == store.Postgres {
			// Sales queue behind the lock while it waits: not for long.
			if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '10s'`); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `LOCK TABLE report_floor IN ACCESS EXCLUSIVE MODE`); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, l.db.Rebind(`UPDATE report_floor SET floor = ? WHERE id = 1 AND floor < ?`), micros(to), micros(to))
		return err
	})
	if err != nil {
		return fmt.Errorf("ledger: raise the report floor to %s: %w", to.UTC().Format(time.RFC3339), err)
	}
	return nil
}
