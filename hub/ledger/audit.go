package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"
	"slices"
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

// Each PSD has its own chain, so the commits of hubs selling from different
// MPSDs never queue on one row. A chain's head (its last entry's position
// and hash) lives in its PSD's row, which every change of the registers
// locks anyway. Chain 0 is the single chain of hubs before schema v25: it
// no longer grows, and each PSD's chain starts where it left that PSD.
const (
	legacyChain = 0
	// auditHeadUpdate moves a chain's head; the row is already locked.
	auditHeadUpdate = `UPDATE psd SET audit_n = ?, audit_hash = ? WHERE serial = ?`
	auditHeadQuery  = `SELECT audit_n, audit_hash FROM psd WHERE serial = ?`
	// auditHeadAtQuery is the time of a chain's last entry (0: none). It is
	// a statement of its own, run once the PSD's row is locked: a locking
	// read that waited for another hub's commit returns that commit's row,
	// but a subquery in it reads from the snapshot taken before the wait,
	// without the entry that commit added.
	auditHeadAtQuery = `SELECT COALESCE(MAX(at), 0) FROM (SELECT at FROM audit WHERE chain = ? ORDER BY n DESC LIMIT 1) h`
)

var auditCols = []string{"chain", "n", "at", "psd", "kind", "amount", "ar", "dr", "ref", "hash"}

// auditHead is a chain's last entry: its position and hash. A chain not yet
// started has n 0 and a nil hash.
type auditHead struct {
	n    int64
	hash []byte
	at   int64 // the entry's time, µs (0: none, or not read)
}

// chainTime is now, or the latest of the heads' times if later: each
// chain's entries rise in time as they do in order, whatever the clocks of
// the hubs that write them, or a wait for a lock between a hub reading its
// clock and taking the chain. A postal report reads each PSD's registers as
// its last entry before the period's end, and lists the movements dated in
// it: an entry dated before the one it follows put a movement of the next
// period into this one's closing reading, and the authority refused the
// report however often it was sent. Rows written with the entries take
// the same time.
func chainTime(now time.Time, heads ...*auditHead) time.Time {
	for _, h := range heads {
		if h != nil {
			now = notBefore(now, h.at)
		}
	}
	return now
}

// prev is the hash the chain's next entry links to.
func (h *auditHead) prev() []byte {
	if h.hash == nil {
		return make([]byte, sha256.Size)
	}
	return h.hash
}

// chainAudit links entries, each onto its PSD's head in heads, and queues
// their rows and the heads they moved. Every head's PSD row must be locked.
func chainAudit(b *store.Batch, now time.Time, entries []auditEntry, heads map[uint32]*auditHead) error {
	if len(entries) == 0 {
		return nil
	}
	rows := make([][]any, len(entries))
	var moved []uint32
	for i := range entries {
		e := &entries[i]
		h := heads[e.PSD]
		if h == nil {
			return fmt.Errorf("ledger: audit: no chain head for psd %d", e.PSD)
		}
		if !slices.Contains(moved, e.PSD) {
			moved = append(moved, e.PSD)
		}
		if micros(now) < h.at {
			return fmt.Errorf("ledger: audit: entry for psd %d dated %s, before its chain's head", e.PSD, now.UTC().Format(time.RFC3339Nano))
		}
		e.Seq, e.At = h.n+1, now
		e.Hash = chainHash(h.prev(), e)
		h.n, h.hash, h.at = e.Seq, e.Hash, micros(now)
		rows[i] = []any{e.PSD, e.Seq, micros(e.At), e.PSD, e.Kind, e.Amount, e.AR, e.DR, e.Ref, e.Hash}
	}
	b.Insert("audit", auditCols, rows)
	slices.Sort(moved)
	for _, s := range moved {
		b.Exec(nil, auditHeadUpdate, heads[s].n, heads[s].hash, s)
	}
	return nil
}

// appendAudit adds entries to their PSDs' chains inside tx, locking each
// PSD's row in serial order.
func (l *Ledger) appendAudit(ctx context.Context, tx *sql.Tx, now time.Time, entries []auditEntry) error {
	if len(entries) == 0 {
		return nil
	}
	now, err := l.floored(ctx, tx, now)
	if err != nil {
		return err
	}
	heads := map[uint32]*auditHead{}
	var serials []uint32
	for _, e := range entries {
		if heads[e.PSD] == nil {
			heads[e.PSD] = &auditHead{}
			serials = append(serials, e.PSD)
		}
	}
	slices.Sort(serials)
	for _, s := range serials {
		h := heads[s]
		if err := l.db.QueryRowStmt(ctx, tx, auditHeadQuery+l.db.ForUpdate(), s).Scan(&h.n, &h.hash); err != nil {
			return fmt.Errorf("ledger: audit head of psd %d: %w", s, err)
		}
		if err := l.db.QueryRowStmt(ctx, tx, auditHeadAtQuery, s).Scan(&h.at); err != nil {
			return fmt.Errorf("ledger: audit head of psd %d: %w", s, err)
		}
		now = chainTime(now, h)
	}
	var b store.Batch
	if err := chainAudit(&b, now, entries, heads); err != nil {
		return err
	}
	return l.db.RunEach(ctx, tx, &b)
}

// seedAudit starts the chain of every PSD that has none: a database from
// before the audit log, or from before each PSD had its own chain. The
// opening entry records the registers as found; check holds them to the
// old chain's last entry for the PSD, where there is one.
func (l *Ledger) seedAudit(ctx context.Context) error {
	return l.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT serial, ar, dr FROM psd WHERE audit_n = 0 ORDER BY serial`+l.db.ForUpdate())
		if err != nil {
			return fmt.Errorf("ledger: seed audit: %w", err)
		}
		var es []auditEntry
		for rows.Next() {
			e := auditEntry{Kind: auditOpening, Ref: "chain start"}
			if err := rows.Scan(&e.PSD, &e.AR, &e.DR); err != nil {
				rows.Close()
				return fmt.Errorf("ledger: seed audit: %w", err)
			}
			es = append(es, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ledger: seed audit: %w", err)
		}
		if len(es) == 0 {
			return nil
		}
		var legacy int64
		if err := tx.QueryRowContext(ctx, `SELECT seq FROM audit_head WHERE id = 1`).Scan(&legacy); err != nil {
			return fmt.Errorf("ledger: seed audit: %w", err)
		}
		if legacy > 0 {
			for i := range es {
				es[i].Ref = fmt.Sprintf("continues chain 0 after its entry %d", legacy)
			}
		}
		return l.appendAudit(ctx, tx, l.cfg.Now(), es)
	})
}

type registers struct{ ar, dr protocol.Mills }

// follows reports whether e moves its PSD's registers from p (seen false:
// no entry before it) as its kind says.
func follows(e *auditEntry, p registers, seen bool) bool {
	if e.Amount < 0 {
		return false
	}
	switch e.Kind {
	case auditOpening:
		return !seen
	case auditCreate:
		return !seen && e.AR == 0 && e.DR == 0
	case auditPurchase, auditFundIn:
		return seen && e.AR == p.ar && e.DR == p.dr+e.Amount
	case auditFundOut, auditSale:
		return seen && e.AR == p.ar+e.Amount && e.DR == p.dr-e.Amount
	case auditRekey:
		return seen && e.Amount == 0 && e.AR == p.ar && e.DR == p.dr
	}
	return false
}

// scanAudit reads an audit row selected as auditSelect.
const auditSelect = `SELECT chain, n, at, psd, kind, amount, ar, dr, ref, hash FROM audit`

func scanAudit(rows *sql.Rows) (chain uint32, e auditEntry, err error) {
	var at int64
	err = rows.Scan(&chain, &e.Seq, &at, &e.PSD, &e.Kind, &e.Amount, &e.AR, &e.DR, &e.Ref, &e.Hash)
	e.At = time.UnixMicro(at)
	return chain, e, err
}

// verifyAudit walks every chain: each hash, each register transition, each
// head, and the last entry of each PSD against its current registers.
func (l *Ledger) verifyAudit(ctx context.Context, tx *sql.Tx, psds []PSD, bad func(string, ...any)) error {
	legacy, err := l.verifyLegacyAudit(ctx, tx, bad)
	if err != nil {
		return err
	}
	heads := map[uint32]auditHead{}
	hrows, err := tx.QueryContext(ctx, `SELECT serial, audit_n, audit_hash FROM psd`)
	if err != nil {
		return err
	}
	for hrows.Next() {
		var s uint32
		var h auditHead
		if err := hrows.Scan(&s, &h.n, &h.hash); err != nil {
			hrows.Close()
			return err
		}
		heads[s] = h
	}
	hrows.Close()
	if err := hrows.Err(); err != nil {
		return err
	}

	rows, err := tx.QueryContext(ctx, auditSelect+` WHERE chain <> 0 ORDER BY chain, n`)
	if err != nil {
		return err
	}
	defer rows.Close()
	type walk struct {
		last registers
		head auditHead
	}
	chains := map[uint32]*walk{}
	for rows.Next() {
		chain, e, err := scanAudit(rows)
		if err != nil {
			return err
		}
		w := chains[chain]
		if w == nil {
			w = &walk{}
			chains[chain] = w
		}
		if e.PSD != chain {
			bad("audit: entry %d of chain %d is of psd %d", e.Seq, chain, e.PSD)
		}
		if e.Seq != w.head.n+1 {
			bad("audit: entry %d of chain %d where %d was expected (an entry was removed)", e.Seq, chain, w.head.n+1)
		}
		if !bytes.Equal(chainHash(w.head.prev(), &e), e.Hash) {
			bad("audit: entry %d of chain %d does not chain (edited, or an entry before it was)", e.Seq, chain)
		}
		switch r, had := legacy[chain]; {
		case !follows(&e, w.last, w.head.n > 0):
			bad("audit: entry %d of chain %d (%s %d) does not follow from the entry before it", e.Seq, chain, e.Kind, e.Amount)
		case e.Kind == auditOpening && len(legacy) > 0 && (!had || r.ar != e.AR || r.dr != e.DR):
			bad("audit: chain %d opens with AR %d DR %d, not the registers chain 0 left psd %d with", chain, e.AR, e.DR, chain)
		}
		w.head = auditHead{n: e.Seq, hash: e.Hash}
		w.last = registers{e.AR, e.DR}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for chain, w := range chains {
		if h := heads[chain]; h.n != w.head.n || !bytes.Equal(h.hash, w.head.hash) {
			bad("audit: chain %d's head (%d) does not match its last entry (%d)", chain, h.n, w.head.n)
		}
	}
	for _, p := range psds {
		w, ok := chains[p.Serial]
		if !ok {
			bad("audit: psd %d has no audit entries", p.Serial)
			continue
		}
		if w.last.ar != p.AR || w.last.dr != p.DR {
			bad("audit: psd %d registers AR %d DR %d differ from its audit trail AR %d DR %d", p.Serial, p.AR, p.DR, w.last.ar, w.last.dr)
		}
	}
	return nil
}

// verifyLegacyAudit walks chain 0 against its head row, and returns the
// registers it leaves each PSD with.
func (l *Ledger) verifyLegacyAudit(ctx context.Context, tx *sql.Tx, bad func(string, ...any)) (map[uint32]registers, error) {
	rows, err := tx.QueryContext(ctx, auditSelect+` WHERE chain = 0 ORDER BY n`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	prev := make([]byte, sha256.Size)
	last := map[uint32]registers{}
	var want int64 = 1
	for rows.Next() {
		_, e, err := scanAudit(rows)
		if err != nil {
			return nil, err
		}
		if e.Seq != want {
			bad("audit: entry %d of chain 0 where %d was expected (an entry was removed)", e.Seq, want)
			want = e.Seq
		}
		want++
		if !bytes.Equal(chainHash(prev, &e), e.Hash) {
			bad("audit: entry %d of chain 0 does not chain (edited, or an entry before it was)", e.Seq)
		}
		prev = e.Hash
		p, seen := last[e.PSD]
		if !follows(&e, p, seen) {
			bad("audit: entry %d of chain 0 (%s %d on psd %d) does not follow from the entry before it", e.Seq, e.Kind, e.Amount, e.PSD)
		}
		last[e.PSD] = registers{e.AR, e.DR}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var headSeq int64
	var headHash []byte
	if err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&headSeq, &headHash); err != nil {
		return nil, err
	}
	if headSeq != want-1 || !bytes.Equal(headHash, prev) {
		bad("audit: chain 0's head (%d) does not match its last entry (%d)", headSeq, want-1)
	}
	return last, nil
}
