package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
)

// auditRekey records that a PSD's row was resealed under a new control-code
// key; its registers do not move, and Ref names the generation.
const auditRekey = "rekey"

func (l *Ledger) controlGen() int { return max(int(l.macGen.Load()), 1) }

// ControlKeyGen is the control-code key generation new seals use.
func (l *Ledger) ControlKeyGen() int { return l.controlGen() }

// raiseGen moves the generation new seals use up to gen, never down: a
// refresh that read control_keys before a rotation committed must not undo
// the rotation. It returns the generation before, and whether it moved.
func (l *Ledger) raiseGen(gen int) (int, bool) {
	for {
		cur := l.macGen.Load()
		if int32(gen) <= cur {
			return int(cur), false
		}
		if l.macGen.CompareAndSwap(cur, int32(gen)) {
			return int(cur), true
		}
	}
}

// RefreshControlKey takes up the newest control-code key generation, as a
// rotation by any process on the database left it, and reseals the rows
// this process wrote under an older one before it knew.
func (l *Ledger) RefreshControlKey(ctx context.Context) error {
	var gen sql.NullInt64
	if err := l.db.QueryRowContext(ctx, `SELECT MAX(gen) FROM control_keys`).Scan(&gen); err != nil {
		return fmt.Errorf("ledger: control key: %w", err)
	}
	g := int(max(gen.Int64, 1))
	was, moved := l.raiseGen(g)
	if !moved {
		return nil
	}
	l.log.Info("control codes made under key generation", "gen", g, "label", controlLabel(l.cfg.ControlKey, g))
	// At Open (was 0) this process has sealed nothing yet; and a database
	// from before the per-PSD audit chains must have them seeded first.
	if was > 0 {
		return l.resealStale(ctx, g)
	}
	return nil
}

// RotateControlKey makes the next generation of the control-code key in
// the HSM (through makeKey, with the label it should carry), then in one
// transaction records it, reseals every PSD row under it and records each
// reseal in the audit chain. A row whose code does not check under its own
// key stops the rotation: that is tamper, and resealing would hide it.
//
// This process seals under the new key from before that transaction, so a
// write that waits on its row locks cannot put an old code back. A write
// sealed just before and stored just after is caught by a second pass.
// Hubs that have not followed yet go on sealing under the old key, whose
// codes still check, and reseal those rows when they follow.
func (l *Ledger) RotateControlKey(ctx context.Context, makeKey func(label string) error) (int, error) {
	var cur sql.NullInt64
	if err := l.db.QueryRowContext(ctx, `SELECT MAX(gen) FROM control_keys`).Scan(&cur); err != nil {
		return 0, fmt.Errorf("ledger: rotate control key: %w", err)
	}
	prev := int(max(cur.Int64, 1))
	gen := prev + 1
	label := controlLabel(l.cfg.ControlKey, gen)
	if err := makeKey(label); err != nil {
		return 0, fmt.Errorf("ledger: rotate control key: %w", err)
	}
	l.raiseGen(gen)
	now := l.cfg.Now()
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO control_keys (gen, label, created_at) VALUES (?, ?, ?)`), gen, label, micros(now)); err != nil {
			return err
		}
		return l.resealOlder(ctx, tx, gen)
	})
	if err != nil {
		// Codes made under gen meanwhile still check: its key is in the HSM.
		l.macGen.CompareAndSwap(int32(gen), int32(prev))
		return 0, fmt.Errorf("ledger: rotate control key: %w", err)
	}
	if err := l.resealStale(ctx, gen); err != nil {
		return 0, fmt.Errorf("ledger: rotate control key: %w", err)
	}
	l.log.Info("control-code key rotated; every PSD resealed", "gen", gen, "label", label)
	return gen, nil
}

// resealStale reseals, in a transaction of its own, every row still under a
// generation older than gen.
func (l *Ledger) resealStale(ctx context.Context, gen int) error {
	if err := l.inTx(ctx, func(tx *sql.Tx) error { return l.resealOlder(ctx, tx, gen) }); err != nil {
		return fmt.Errorf("ledger: reseal under control key %d: %w", gen, err)
	}
	return nil
}

// resealOlder locks every PSD row and reseals, under generation gen, those
// sealed under an older one, checking each first, with a rekey entry in the
// audit chain for each.
func (l *Ledger) resealOlder(ctx context.Context, tx *sql.Tx, gen int) error {
	// MPSDs in serial order, then the GPSD: the order a sale's commit and
	// a funding lock them in, so none of them deadlocks with this.
	rows, err := tx.QueryContext(ctx, `SELECT serial, kind, ar, dr, control FROM psd ORDER BY serial = 1, serial`+l.db.ForUpdate())
	if err != nil {
		return err
	}
	var stale []PSD
	for rows.Next() {
		var p PSD
		if err := rows.Scan(&p.Serial, &p.Kind, &p.AR, &p.DR, &p.Control); err != nil {
			rows.Close()
			return err
		}
		if sealGen(p.Control) < gen {
			stale = append(stale, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var audit []auditEntry
	for i := range stale {
		p := &stale[i]
		ok, err := verifySeal(l.mac, l.cfg.ControlKey, p)
		if err != nil {
			return err
		}
		if !ok {
			return &TamperError{Serial: p.Serial}
		}
		if err := seal(l.mac, l.cfg.ControlKey, gen, p); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, l.db.Rebind(`UPDATE psd SET control = ? WHERE serial = ?`), p.Control, p.Serial); err != nil {
			return err
		}
		audit = append(audit, auditEntry{PSD: p.Serial, Kind: auditRekey, AR: p.AR, DR: p.DR, Ref: "control key " + strconv.Itoa(gen)})
	}
	return l.appendAudit(ctx, tx, l.cfg.Now(), audit)
}
