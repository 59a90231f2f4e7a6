package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// reasonCompromised voids a live stamp that its key's compromise made
// void: every verifier refuses it, so its buyer gets the postage back and
// the postal report claims it.
const reasonCompromised = "key_compromised"

// compromisedStamp is a live stamp a compromise voids.
type compromisedStamp struct {
	id                 int64
	kioskID, requestID string
	paidBy             string // the sale that paid for it (a free reprint's original)
	label              protocol.LabelSerial
	postage            protocol.Mills
}

// VoidCompromised voids every live stamp of a compromised key dated on or
// after the day its compromise names (protocol.CompromiseDate), recording
// each one's refund due in the same transaction, before any money moves,
// as a stamp taken back at the counter is (RefundsDue finishes what the
// caller does not). Hubs may still sign with the key for a moment after
// the compromise is recorded, so a key's stamps are looked for again at
// every call until settle has passed since the compromise was noted; then
// the key is marked swept and not read again. Stamps are read SweepChunk
// at a time, a transaction each: a report's build waits for each one.
func (l *Ledger) VoidCompromised(ctx context.Context, settle time.Duration) ([]RefundDue, error) {
	var out []RefundDue
	after := map[uint32]int64{} // per key, the last stamp id read
	for {
		due, more, err := l.voidCompromisedChunk(ctx, settle, after)
		if err != nil {
			return out, fmt.Errorf("ledger: void a compromised key's stamps: %w", err)
		}
		out = append(out, due...)
		if !more {
			return out, nil
		}
	}
}

// voidCompromisedChunk voids up to SweepChunk stamps read after those in
// after, which it moves on once its transaction commits. It reports
// whether stamps are left to read.
func (l *Ledger) voidCompromisedChunk(ctx context.Context, settle time.Duration, after map[uint32]int64) ([]RefundDue, bool, error) {
	now := l.cfg.Now()
	var out []RefundDue
	var next map[uint32]int64
	var more bool
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		out, next, more = out[:0], maps.Clone(after), false
		type key struct {
			serial             uint32
			compromised, noted int64
		}
		var keys []key
		rows, err := tx.QueryContext(ctx, `SELECT cert_serial, compromised_at, COALESCE(compromise_noted_at, compromised_at) FROM signing_keys
			WHERE compromised_at IS NOT NULL AND compromise_swept_at IS NULL ORDER BY cert_serial`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var k key
			if err := rows.Scan(&k.serial, &k.compromised, &k.noted); err != nil {
				rows.Close()
				return err
			}
			keys = append(keys, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		left := l.cfg.SweepChunk
		for _, k := range keys {
			if left == 0 {
				more = true
				break
			}
			stamps, last, read, err := l.compromisedStamps(ctx, tx, k.serial, protocol.CompromiseDate(time.UnixMicro(k.compromised)), next[k.serial], left)
			if err != nil {
				return err
			}
			if read > 0 {
				next[k.serial] = last
			}
			left -= read
			for _, s := range stamps {
				res, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO remedies (label, kind, kiosk_id, request_id, amount, at, reason) VALUES (?, 'refund', ?, ?, ?, ?, ?)
					ON CONFLICT DO NOTHING`), s.label.String(), s.kioskID, s.requestID, s.postage, micros(now), reasonCompromised)
				if err != nil {
					return err
				}
				if n, err := res.RowsAffected(); err != nil || n == 0 {
					l.log.Error("a compromised key's stamp has a remedy already; left live for ops", "label", s.label, "kiosk", s.kioskID, "request_id", s.requestID)
					continue
				}
				res, err = tx.ExecContext(ctx, l.db.Rebind(voidIndicium+`void_reason = ? WHERE id = ? AND state IN ('issued', 'printed')`),
					micros(now), reasonCompromised, s.id)
				if err != nil {
					return err
				}
				if n, err := res.RowsAffected(); err != nil {
					return fmt.Errorf("ledger: compromise sweep: indicium %d: %w", s.id, err)
				} else if n != 1 {
					return fmt.Errorf("ledger: compromise sweep: indicium %d changed under the sweep", s.id) // the transaction read it live
				}
				out = append(out, RefundDue{KioskID: s.kioskID, SaleID: s.requestID, RefundID: s.requestID, Label: s.label, TakenBack: true, Amount: s.postage, PaidBy: s.paidBy})
			}
			if left == 0 {
				more = true // this key may have more; it is not swept yet
				break
			}
			if now.Sub(time.UnixMicro(k.noted)) > settle {
				if _, err := tx.ExecContext(ctx, l.db.Rebind(`UPDATE signing_keys SET compromise_swept_at = ? WHERE cert_serial = ?`), micros(now), k.serial); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	maps.Copy(after, next)
	return out, more, nil
}

// compromisedStamps lists serial's live stamps dated from on, reading at
// most limit of them with ids above afterID; it returns the last id read
// and how many it read, those it passed over (dated before from) too. A
// stamp is dated in its store's zone, within a day of UTC, so only those
// made from two days before are read.
func (l *Ledger) compromisedStamps(ctx context.Context, tx *sql.Tx, serial uint32, from protocol.Date, afterID int64, limit int) ([]compromisedStamp, int64, int, error) {
	day := time.Date(int(from/10000), time.Month(from/100%100), int(from%100), 0, 0, 0, 0, time.UTC)
	rows, err := tx.QueryContext(ctx, l.db.Rebind(`SELECT id, kiosk_id, request_id, label, postage, data, reprint_of FROM indicia
		WHERE cert_serial = ? AND state IN ('issued', 'printed') AND created_at >= ? AND id > ? ORDER BY id LIMIT ?`),
		serial, micros(day.Add(-48*time.Hour)), afterID, limit)
	if err != nil {
		return nil, 0, 0, err
	}
	var out []compromisedStamp
	var reprints []sql.NullString
	var last int64
	read := 0
	defer rows.Close()
	for rows.Next() {
		var s compromisedStamp
		var label string
		var data []byte
		var reprintOf sql.NullString
		if err := rows.Scan(&s.id, &s.kioskID, &s.requestID, &label, &s.postage, &data, &reprintOf); err != nil {
			return nil, 0, 0, err
		}
		last, read = s.id, read+1
		in, err := protocol.ParseIndicium(data)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("indicium %d: %w", s.id, err)
		}
		if in.Date < from {
			continue
		}
		if s.label, err = protocol.ParseLabelSerial(label); err != nil {
			return nil, 0, 0, fmt.Errorf("indicium %d: %w", s.id, err)
		}
		out = append(out, s)
		reprints = append(reprints, reprintOf)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, 0, err
	}
	rows.Close() // before the reads below, on the transaction's one connection
	for i := range out {
		if out[i].paidBy, err = l.paidBy(ctx, tx, out[i].kioskID, out[i].requestID, reprints[i]); err != nil {
			return nil, 0, 0, fmt.Errorf("indicium %d: %w", out[i].id, err)
		}
	}
	return out, last, read, nil
}
