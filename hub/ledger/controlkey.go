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

// RefreshControlKey takes up the newest control-code key generation, as a
// rotation by any process on the database left it.
func (l *Ledger) RefreshControlKey(ctx context.Context) error {
	var gen sql.NullInt64
	if err := l.db.QueryRowContext(ctx, `SELECT MAX(gen) FROM control_keys`).Scan(&gen); err != nil {
		return fmt.Errorf("ledger: control key: %w", err)
	}
	if g := int32(max(gen.Int64, 1)); g != l.macGen.Load() {
		l.macGen.Store(g)
		l.log.Info("control codes made under key generation", "gen", g, "label", controlLabel(l.cfg.ControlKey, int(g)))
	}
	return nil
}

// RotateControlKey makes the next generation of the control-code key in
// the HSM (through makeKey, with the label it should carry), then in one
// transaction records it, reseals every PSD row under it and records each
// reseal in the audit chain. A row whose code does not check under its own
// key stops the rotation: that is tamper, and resealing would hide it.
// Hubs that have not followed yet go on sealing under the old key, whose
// codes still check.
func (l *Ledger) RotateControlKey(ctx context.Context, makeKey func(label string) error) (int, error) {
	var cur sql.NullInt64
	if err := l.db.QueryRowContext(ctx, `SELECT MAX(gen) FROM control_keys`).Scan(&cur); err != nil {
		return 0, fmt.Errorf("ledger: rotate control key: %w", err)
	}
	gen := int(max(cur.Int64, 1)) + 1
	label := controlLabel(l.cfg.ControlKey, gen)
	if err := makeKey(label); err != nil {
		return 0, fmt.Errorf("ledger: rotate control key: %w", err)
	}
	now := l.cfg.Now()
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO control_keys (gen, label, created_at) VALUES (?, ?, ?)`), gen, label, micros(now)); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT serial, kind, ar, dr, control FROM psd ORDER BY serial`+l.db.ForUpdate())
		if err != nil {
			return err
		}
		var all []PSD
		for rows.Next() {
			var p PSD
			if err := rows.Scan(&p.Serial, &p.Kind, &p.AR, &p.DR, &p.Control); err != nil {
				rows.Close()
				return err
			}
			all = append(all, p)
		}
		rows.Close()
		var audit []auditEntry
		for i := range all {
			p := &all[i]
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
		return l.appendAudit(ctx, tx, now, audit)
	})
	if err != nil {
		return 0, fmt.Errorf("ledger: rotate control key: %w", err)
	}
	l.macGen.Store(int32(gen))
	l.log.Info("control-code key rotated; every PSD resealed", "gen", gen, "label", label)
	return gen, nil
}
