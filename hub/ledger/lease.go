package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Slot is an MPSD as a worker holds it: its committed registers and the
// date of its last inspection.
type Slot struct {
	Serial     uint32
	AR, DR     protocol.Mills
	ReportedAt time.Time
}

// Lease checks out up to n MPSDs for this process: free ones first (never
// leased, released, or whose holder's lease expired), then new ones with
// empty registers (patent Fig. 8, step 816). Each is verified against its
// control code; a mismatch locks it and it is skipped.
func (l *Ledger) Lease(ctx context.Context, n int) ([]Slot, error) {
	var out []Slot
	for len(out) < n {
		s, err := l.leaseOne(ctx)
		if err != nil {
			if errors.Is(err, ErrTamper) {
				continue // locked; look for another
			}
			return out, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (l *Ledger) leaseOne(ctx context.Context) (slot Slot, err error) {
	defer func() { l.lockOnTamper(err) }()
	now := l.cfg.Now()
	at, atArgs := l.db.LeaseNow(now)
	err = l.inTx(ctx, func(tx *sql.Tx) error {
		q := `SELECT serial FROM psd WHERE kind = 'mpsd' AND locked IS NULL AND (lease_holder IS NULL OR lease_until < ` + at + `) ORDER BY serial LIMIT 1`
		if l.db.Dialect == "postgres" {
			q += " FOR UPDATE SKIP LOCKED"
		}
		var serial uint32
		err := tx.QueryRowContext(ctx, l.db.Rebind(q), atArgs...).Scan(&serial)
		if errors.Is(err, sql.ErrNoRows) {
			serial, err = l.createMPSD(ctx, tx, now)
		}
		if err != nil {
			return err
		}
		p, err := l.loadPSD(ctx, l.mac, tx, serial, true)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, l.db.Rebind(`UPDATE psd SET lease_holder = ?, lease_until = `+at+` + ? WHERE serial = ?`),
			slices.Concat([]any{l.cfg.Holder}, atArgs, []any{l.cfg.LeaseTTL.Microseconds(), serial})...); err != nil {
			return err
		}
		slot = Slot{Serial: serial, AR: p.AR, DR: p.DR, ReportedAt: p.ReportedAt}
		return nil
	})
	if err != nil {
		return Slot{}, fmt.Errorf("ledger: lease mpsd: %w", err)
	}
	l.log.Info("mpsd leased", "mpsd", slot.Serial, "holder", l.cfg.Holder, "dr", slot.DR.String())
	return slot, nil
}

// createMPSD makes a new MPSD with AR = DR = 0. It is funded from the GPSD
// by its first sale, in that sale's transaction.
func (l *Ledger) createMPSD(ctx context.Context, tx *sql.Tx, now time.Time) (uint32, error) {
	return l.createMPSDAfter(ctx, tx, now, 1, "new mpsd")
}

// createMPSDAfter makes an MPSD whose serial is gap past the highest there
// is, with AR = DR = 0, noting why in its audit entry.
func (l *Ledger) createMPSDAfter(ctx context.Context, tx *sql.Tx, now time.Time, gap uint32, why string) (uint32, error) {
	var max sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(serial) FROM psd WHERE kind = 'mpsd'`).Scan(&max); err != nil {
		return 0, err
	}
	serial := uint32(FirstMPSDSerial) + gap - 1
	if max.Valid {
		serial = uint32(max.Int64) + gap
	}
	if serial > protocol.MaxMPSDSerial {
		return 0, errors.New("mpsd serials exhausted")
	}
	m := PSD{Serial: serial, Kind: KindMPSD}
	if err := seal(l.mac, l.cfg.ControlKey, l.controlGen(), &m); err != nil {
		return 0, err
	}
	_, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO psd (serial, kind, ar, dr, control, created_at, reported_at) VALUES (?, 'mpsd', 0, 0, ?, ?, ?)`),
		m.Serial, m.Control, micros(now), micros(now))
	if err != nil {
		return 0, err
	}
	if err := l.appendAudit(ctx, tx, now, []auditEntry{{PSD: serial, Kind: "create", Ref: why}}); err != nil {
		return 0, err
	}
	l.log.Info("mpsd created", "mpsd", serial, "why", why)
	return serial, nil
}

// RestoreSerialGap is how far past the highest MPSD serial a restored
// database's next MPSDs are numbered: past any that hubs created after the
// backup was taken.
const RestoreSerialGap = 1000

// restoredLock is why Restored locks an MPSD.
const restoredLock = "the database was restored from a backup: stamps issued after it was taken may carry this MPSD's next registers"

// Restored makes a database restored from a backup safe to sell on again.
// Its MPSDs' registers may be behind stamps issued after the backup was
// taken, whose records the restore lost: signing on them again would issue
// a meter number and registers already printed, and sell postage the
// authority was never told of. Every MPSD is locked for good (its funds
// stay with it, for ops to settle with the authority), and new MPSDs are
// numbered RestoreSerialGap past the highest, beyond any created since.
// It returns the MPSDs it locked and the last serial skipped.
func (l *Ledger) Restored(ctx context.Context) (locked []uint32, floor uint32, err error) {
	now := l.cfg.Now()
	err = l.inTx(ctx, func(tx *sql.Tx) error {
		locked = locked[:0]
		if l.db.Dialect == store.Postgres {
			// A hub still running may be creating an MPSD: wait for it, and
			// let none begin, or it would be left unlocked below the floor.
			if _, err := tx.ExecContext(ctx, `LOCK TABLE psd IN SHARE ROW EXCLUSIVE MODE`); err != nil {
				return err
			}
		}
		rows, err := tx.QueryContext(ctx, `SELECT serial FROM psd WHERE kind = 'mpsd' AND locked IS NULL ORDER BY serial`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var s uint32
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return err
			}
			locked = append(locked, s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, l.db.Rebind(`UPDATE psd SET locked = ?, lease_holder = NULL, lease_until = 0 WHERE kind = 'mpsd' AND locked IS NULL`),
			restoredLock); err != nil {
			return err
		}
		// The floor is an MPSD of its own, locked and empty, so the next
		// one created (by MAX(serial) + 1) is past it.
		if floor, err = l.createMPSDAfter(ctx, tx, now, RestoreSerialGap, "serial floor after a restore"); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, l.db.Rebind(`UPDATE psd SET locked = ? WHERE serial = ?`), "the serial floor after a restore; never sold on", floor)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("ledger: restored: %w", err)
	}
	why := fmt.Sprintf("the database was declared restored from a backup: MPSDs %v locked, new MPSDs numbered from %d; settle their funds and the sales after the backup with the postal authority and the card gateway", locked, floor+1)
	l.log.Error("LEDGER RESTORED", "locked", locked, "floor", floor)
	if l.al != nil {
		// A subject of its own: a second restore's alert is news too.
		l.al.Raise(ctx, alerts.Tamper, fmt.Sprintf("ledger/restore/%d", floor), why)
	}
	return locked, floor, nil
}

// LeaseState is what Renew learns about one held MPSD.
type LeaseState struct {
	Held       bool // still ours; false means stop using it
	Locked     string
	ReportedAt time.Time
}

// Renew extends this process's leases on serials and reports their state.
// Leases are written and judged by the database's lease clock
// (store.DB.LeaseNow): on PostgreSQL a hub whose clock ran ahead would take
// live hubs' MPSDs, and one whose clock ran behind would lose its own, the
// sales of every commit in flight on them refused.
func (l *Ledger) Renew(ctx context.Context, serials []uint32) (map[uint32]LeaseState, error) {
	at, now := l.db.LeaseNow(l.cfg.Now())
	ttl := l.cfg.LeaseTTL.Microseconds()
	out := make(map[uint32]LeaseState, len(serials))
	// Only a lease in its second half is extended: a busy MPSD's commits
	// keep it in its first (see storePSD), and an UPDATE whose condition
	// the row does not meet takes no lock, so renewal never waits for the
	// committer, nor it for renewal.
	renew := `UPDATE psd SET lease_until = ` + at + ` + ? WHERE serial = ? AND lease_holder = ? AND locked IS NULL AND lease_until < ` + at + ` + ?`
	read := `SELECT locked, reported_at, lease_holder, lease_until >= ` + at + ` FROM psd WHERE serial = ?`
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		for _, s := range serials {
			if _, err := l.db.ExecStmt(ctx, tx, renew, slices.Concat(now, []any{ttl, s, l.cfg.Holder}, now, []any{ttl / 2})...); err != nil {
				return err
			}
			var locked, holder sql.NullString
			var reported int64
			var current bool
			if err := l.db.QueryRowStmt(ctx, tx, read, slices.Concat(now, []any{s})...).
				Scan(&locked, &reported, &holder, &current); err != nil {
				return err
			}
			held := holder.String == l.cfg.Holder && !locked.Valid && current
			out[s] = LeaseState{Held: held, Locked: locked.String, ReportedAt: time.UnixMicro(reported)}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: renew leases: %w", err)
	}
	return out, nil
}

// Registers reads an MPSD's registers as committed, its seal checked. A
// worker whose stamp did not commit, as far as it was told, takes them up
// before it signs on the MPSD again: the commit may have happened with its
// answer lost, and its own copy would then be behind.
func (l *Ledger) Registers(ctx context.Context, serial uint32) (slot Slot, err error) {
	defer func() { l.lockOnTamper(err) }()
	err = l.inTx(ctx, func(tx *sql.Tx) error {
		p, err := l.loadPSD(ctx, l.mac, tx, serial, false)
		if err != nil {
			return err
		}
		slot = Slot{Serial: serial, AR: p.AR, DR: p.DR, ReportedAt: p.ReportedAt}
		return nil
	})
	if err != nil {
		return Slot{}, fmt.Errorf("ledger: registers of mpsd %d: %w", serial, err)
	}
	return slot, nil
}

// Release gives serials back, at shutdown.
func (l *Ledger) Release(ctx context.Context, serials []uint32) error {
	for _, s := range serials {
		if _, err := l.db.ExecContext(ctx, l.db.Rebind(`UPDATE psd SET lease_holder = NULL, lease_until = 0 WHERE serial = ? AND lease_holder = ?`),
			s, l.cfg.Holder); err != nil {
			return fmt.Errorf("ledger: release mpsd %d: %w", s, err)
		}
	}
	return nil
}
