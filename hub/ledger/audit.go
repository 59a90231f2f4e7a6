package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Audit entry kinds, and how each moves the registers of its PSD.
const (
	auditOpening  = "opening"  // registers as found when the chain started
	auditCreate   = "create"   // a new MPSD, AR = DR = 0
	auditPurchase = "purchase" // GPSD: DR += amount, bought from the postal authority
	auditFundOut  = "fund_out" // GPSD: DR -= amount, AR += amount
	auditFundIn   = "fund_in"  // MPSD: DR += amount
	auditSale     = "sale"     // MPSD: DR -= amount, AR += amount
)

type auditEntry struct {
	Seq    int64
	At     time.Time
	PSD    uint32
	Kind   string
	Amount protocol.Mills
	AR, DR protocol.Mills // after the change
	Ref    string
	Hash   []byte
}

// chainHash is SHA-256(previous hash || the entry in a fixed binary form).
func chainHash(prev []byte, e *auditEntry) []byte {
	h := sha256.New()
	h.Write(prev)
	var b []byte
	b = binary.BigEndian.AppendUint64(b, uint64(e.Seq))
	b = binary.BigEndian.AppendUint64(b, uint64(e.At.UnixMicro()))
	b = binary.BigEndian.AppendUint32(b, e.PSD)
	b = append(b, byte(len(e.Kind)))
	b = append(b, e.Kind...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Amount))
	b = binary.BigEndian.AppendUint64(b, uint64(e.AR))
	b = binary.BigEndian.AppendUint64(b, uint64(e.DR))
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Ref)))
	b = append(b, e.Ref...)
	h.Write(b)
	return h.Sum(nil)
}

// The chain's head: its last entry's seq and hash.
const (
	auditHeadQuery  = `SELECT seq, hash FROM audit_head WHERE id = 1`
	auditHeadUpdate = `UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`
)

var auditCols = []string{"seq", "at", "psd", "kind", "amount", "ar", "dr", "ref", "hash"}

type auditHead struct {
	seq  int64
	hash []byte
}

func (h *auditHead) scan(scan func(...any) error) error {
	if err := scan(&h.seq, &h.hash); err != nil {
		return fmt.Errorf("ledger: audit head: %w", err)
	}
	return nil
}

// chain links entries onto the head and queues their rows and the new head.
func (h *auditHead) chain(b *store.Batch, now time.Time, entries []auditEntry) {
	rows := make([][]any, len(entries))
	for i := range entries {
		e := &entries[i]
		h.seq++
		e.Seq, e.At = h.seq, now
		e.Hash = chainHash(h.hash, e)
		h.hash = e.Hash
		rows[i] = []any{e.Seq, micros(e.At), e.PSD, e.Kind, e.Amount, e.AR, e.DR, e.Ref, e.Hash}
	}
	b.Insert("audit", auditCols, rows)
	b.Exec(nil, auditHeadUpdate, h.seq, h.hash)
}

// appendAudit adds entries to the chain inside tx, locking its head.
func (l *Ledger) appendAudit(ctx context.Context, tx *sql.Tx, now time.Time, entries []auditEntry) error {
	if len(entries) == 0 {
		return nil
	}
	var h auditHead
	if err := h.scan(l.db.QueryRowStmt(ctx, tx, auditHeadQuery+l.db.ForUpdate()).Scan); err != nil {
		return err
	}
	var b store.Batch
	h.chain(&b, now, entries)
	return l.db.RunEach(ctx, tx, &b)
}

// seedAudit starts the chain of a database from before the audit log, with
// an opening entry per PSD that records its registers as found.
func (l *Ledger) seedAudit(ctx context.Context) error {
	return l.inTx(ctx, func(tx *sql.Tx) error {
		var seq int64
		if err := tx.QueryRowContext(ctx, `SELECT seq FROM audit_head WHERE id = 1`+l.db.ForUpdate()).Scan(&seq); err != nil {
			return fmt.Errorf("ledger: seed audit: %w", err)
		}
		if seq > 0 {
			return nil
		}
		rows, err := tx.QueryContext(ctx, `SELECT serial, ar, dr FROM psd ORDER BY serial`)
		if err != nil {
			return fmt.Errorf("ledger: seed audit: %w", err)
		}
		var es []auditEntry
		for rows.Next() {
			e := auditEntry{Kind: auditOpening, Ref: "chain start"}
			if err := rows.Scan(&e.PSD, &e.AR, &e.DR); err != nil {
				rows.Close()
				return err
			}
			es = append(es, e)
		}
		rows.Close()
		return l.appendAudit(ctx, tx, l.cfg.Now(), es)
	})
}

// verifyAudit walks the chain: every hash, every register transition, and
// the last entry of each PSD against its current registers.
func (l *Ledger) verifyAudit(ctx context.Context, tx *sql.Tx, psds []PSD, bad func(string, ...any)) error {
	rows, err := tx.QueryContext(ctx, `SELECT seq, at, psd, kind, amount, ar, dr, ref, hash FROM audit ORDER BY seq`)
	if err != nil {
		return err
	}
	defer rows.Close()
	prev := make([]byte, sha256.Size)
	type regs struct{ ar, dr protocol.Mills }
	last := map[uint32]regs{}
	var want int64 = 1
	for rows.Next() {
		var e auditEntry
		var at int64
		if err := rows.Scan(&e.Seq, &at, &e.PSD, &e.Kind, &e.Amount, &e.AR, &e.DR, &e.Ref, &e.Hash); err != nil {
			return err
		}
		e.At = time.UnixMicro(at)
		if e.Seq != want {
			bad("audit: entry %d where %d was expected (an entry was removed)", e.Seq, want)
			want = e.Seq
		}
		want++
		if !bytes.Equal(chainHash(prev, &e), e.Hash) {
			bad("audit: entry %d does not chain (edited, or an entry before it was)", e.Seq)
		}
		prev = e.Hash
		p, seen := last[e.PSD]
		ok := true
		switch e.Kind {
		case auditOpening:
			ok = !seen
		case auditCreate:
			ok = !seen && e.AR == 0 && e.DR == 0
		case auditPurchase, auditFundIn:
			ok = seen && e.AR == p.ar && e.DR == p.dr+e.Amount
		case auditFundOut, auditSale:
			ok = seen && e.AR == p.ar+e.Amount && e.DR == p.dr-e.Amount
		case auditRekey:
			ok = seen && e.Amount == 0 && e.AR == p.ar && e.DR == p.dr
		default:
			ok = false
		}
		if !ok || e.Amount < 0 {
			bad("audit: entry %d (%s %d on psd %d) does not follow from the entry before it", e.Seq, e.Kind, e.Amount, e.PSD)
		}
		last[e.PSD] = regs{e.AR, e.DR}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var headSeq int64
	var headHash []byte
	if err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&headSeq, &headHash); err != nil {
		return err
	}
	if headSeq != want-1 || !bytes.Equal(headHash, prev) {
		bad("audit: chain head (%d) does not match the last entry (%d)", headSeq, want-1)
	}
	for _, p := range psds {
		r, ok := last[p.Serial]
		if !ok {
			bad("audit: psd %d has no audit entries", p.Serial)
			continue
		}
		if r.ar != p.AR || r.dr != p.DR {
			bad("audit: psd %d registers AR %d DR %d differ from its audit trail AR %d DR %d", p.Serial, p.AR, p.DR, r.ar, r.dr)
		}
	}
	return nil
}
