package ledger

import (
	"context"
	"crypto/sha256"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// WriteChainZero writes, into a database at schema 24, the single audit
// chain a hub before schema 25 kept: an opening entry per PSD with its
// registers as found, AR moved by skew on PSD skewed. It returns the
// chain's length.
func WriteChainZero(ctx context.Context, db *store.DB, at time.Time, skewed uint32, skew protocol.Mills) (int64, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT serial, ar, dr FROM psd ORDER BY serial`)
	if err != nil {
		return 0, err
	}
	var es []auditEntry
	for rows.Next() {
		e := auditEntry{Kind: auditOpening, Ref: "chain start", At: at}
		if err := rows.Scan(&e.PSD, &e.AR, &e.DR); err != nil {
			rows.Close()
			return 0, err
		}
		if e.PSD == skewed {
			e.AR += skew
		}
		es = append(es, e)
	}
	rows.Close()
	prev := make([]byte, sha256.Size)
	for i := range es {
		e := &es[i]
		e.Seq = int64(i + 1)
		e.Hash = chainHash(prev, e)
		prev = e.Hash
		if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO audit (seq, at, psd, kind, amount, ar, dr, ref, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			e.Seq, micros(e.At), e.PSD, e.Kind, e.Amount, e.AR, e.DR, e.Ref, e.Hash); err != nil {
			return 0, err
		}
	}
	if _, err := tx.ExecContext(ctx, db.Rebind(`UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`), len(es), prev); err != nil {
		return 0, err
	}
	return int64(len(es)), tx.Commit()
}
