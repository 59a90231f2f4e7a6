package ledger

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/protocol"
)

// Report is the result of Check.
type Report struct {
	GPSD        PSD
	MPSDs       []PSD
	FundsBought protocol.Mills // sum of completed postal purchases
	Indicia     int
	Spoiled     int // signed but never sold; claimed back in the postal report
	// Anchors are the audit heads the postal authority holds, one per
	// chain, checked against the chains; none before any report carried
	// one, or if the authority did not answer (AnchorUnchecked says why).
	Anchors         []postal.Anchor
	AnchorUnchecked string
	Violations      []string
}

// OK reports whether no invariant is broken.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// Check reads the whole ledger in one transaction and checks every
// invariant:
//
//   - every control code matches its registers;
//   - no register is negative or wider than its field;
//   - GPSD.AR + GPSD.DR = funds bought from the postal authority (eq. 1);
//   - GPSD.AR = sum of MPSD.AR + MPSD.DR (eq. 2);
//   - each MPSD's AR + DR = what the GPSD gave it, and its AR = the postage
//     of every indicium it signed (voided and spoiled ones too: registers
//     never run backwards);
//   - an indicium is voided exactly when it has a void time, which puts
//     its refund claim in a postal report;
//   - each sale's total = the postage of its indicia;
//   - each payment's refunded total is the refunds recorded for it;
//   - each prepaid account's balance is the sum of its entries;
//   - a failed label gets one remedy: no label refunded has a live
//     reprint, and no label reprinted had its postage refunded;
//   - the audit log chains, every entry follows from the one before it for
//     its PSD, and each PSD's last entry matches its registers;
//   - the chain still holds the head the postal authority was given in the
//     last accepted report: an audit log wiped, reseeded or rewritten before
//     it is a violation, even if it chains again.
//
// It reads one snapshot and lets sales go on meanwhile. A violation halts
// the ledger: it opens no more sales until the hub restarts, and a hub
// does not start on a ledger that fails the check.
func (l *Ledger) Check(ctx context.Context) (*Report, error) {
	r, err := l.check(ctx)
	if err == nil && !r.OK() {
		why := fmt.Sprintf("the ledger check found %d violations and stopped all sales; the first: %s", len(r.Violations), r.Violations[0])
		l.Halt(why)
		if l.al != nil {
			// Not the check's context: its deadline may be spent by now.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			l.al.Raise(actx, alerts.Tamper, "ledger", why)
			cancel()
		}
	}
	return r, err
}

// Halt stops all sales for reason; the first reason stays.
func (l *Ledger) Halt(reason string) {
	if l.halted.CompareAndSwap(nil, &reason) {
		l.log.Error("LEDGER HALTED: no more sales", "reason", reason)
	}
}

// Stopped is the refusal a kiosk gets once the ledger halted, or nil. The
// reason stays with ops.
func (l *Ledger) Stopped() error {
	if l.halted.Load() == nil {
		return nil
	}
	return protocol.Errorf(protocol.CodeServiceUnavailable, "sales are stopped: the hub's ledger check failed, and ops have been alerted")
}

// Halted returns why sales are stopped, or "".
func (l *Ledger) Halted() string {
	if r := l.halted.Load(); r != nil {
		return *r
	}
	return ""
}

func (l *Ledger) check(ctx context.Context) (*Report, error) {
	r := &Report{}
	bad := func(format string, args ...any) { r.Violations = append(r.Violations, fmt.Sprintf(format, args...)) }
	// The anchor first, outside the snapshot: the chain only grows, so an
	// anchor read before it is still in it.
	actx, cancel := context.WithTimeout(ctx, anchorTimeout)
	r.Anchors, r.AnchorUnchecked = l.anchors(actx)
	cancel()
	err := l.db.ReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT serial, kind, ar, dr, control, COALESCE(locked, '') FROM psd ORDER BY serial`)
		if err != nil {
			return err
		}
		var all []PSD
		for rows.Next() {
			var p PSD
			if err := rows.Scan(&p.Serial, &p.Kind, &p.AR, &p.DR, &p.Control, &p.Locked); err != nil {
				rows.Close()
				return err
			}
			all = append(all, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var sumMPSD protocol.Mills
		gpsds := 0
		for i := range all {
			p := &all[i]
			ok, err := verifySeal(l.mac, l.cfg.ControlKey, p)
			if err != nil {
				return err
			}
			if !ok {
				bad("psd %d: control code does not match its registers", p.Serial)
			}
			if !p.inRange() {
				bad("psd %d: registers out of range: ar %d dr %d", p.Serial, p.AR, p.DR)
			}
			switch p.Kind {
			case KindGPSD:
				r.GPSD = *p
				gpsds++
			case KindMPSD:
				r.MPSDs = append(r.MPSDs, *p)
				sumMPSD += p.AR + p.DR
			}
		}
		if gpsds != 1 {
			bad("want exactly one GPSD, found %d", gpsds)
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(amount), 0) FROM fund_purchases WHERE state = 'done'`).Scan(&r.FundsBought); err != nil {
			return err
		}
		if r.GPSD.AR+r.GPSD.DR != r.FundsBought {
			bad("equation 1: GPSD AR %d + DR %d != funds bought %d", r.GPSD.AR, r.GPSD.DR, r.FundsBought)
		}
		if r.GPSD.AR != sumMPSD {
			bad("equation 2: GPSD AR %d != sum of MPSD AR+DR %d", r.GPSD.AR, sumMPSD)
		}
		funded, err := sums(ctx, tx, `SELECT mpsd, SUM(amount) FROM fundings GROUP BY mpsd`)
		if err != nil {
			return err
		}
		issued, err := sums(ctx, tx, `SELECT mpsd, SUM(postage) FROM indicia GROUP BY mpsd`)
		if err != nil {
			return err
		}
		spoiled, err := sums(ctx, tx, `SELECT mpsd, SUM(postage) FROM spoiled GROUP BY mpsd`)
		if err != nil {
			return err
		}
		for _, m := range r.MPSDs {
			if m.AR+m.DR != funded[m.Serial] {
				bad("mpsd %d: AR %d + DR %d != funded %d", m.Serial, m.AR, m.DR, funded[m.Serial])
			}
			if m.AR != issued[m.Serial]+spoiled[m.Serial] {
				bad("mpsd %d: AR %d != postage of its indicia %d and spoiled indicia %d", m.Serial, m.AR, issued[m.Serial], spoiled[m.Serial])
			}
		}
		// live marks the indicia that hold their label (schema v33); it must
		// say what the state says, or a voided label stays taken, or worse,
		// a live one is free for a second stamp.
		// voided_at (schema v40) likewise, or a void is claimed back in no
		// postal report.
		var astray, undated int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN (state = 'voided') = (live IS NULL) THEN 0 ELSE 1 END), 0),
				COALESCE(SUM(CASE WHEN (state = 'voided') = (voided_at IS NOT NULL) THEN 0 ELSE 1 END), 0)
			FROM indicia`).Scan(&r.Indicia, &astray, &undated); err != nil {
			return err
		}
		if astray > 0 {
			bad("%d indicia whose live mark disagrees with their state", astray)
		}
		if undated > 0 {
			bad("%d indicia whose void time disagrees with their state", undated)
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM spoiled`).Scan(&r.Spoiled); err != nil {
			return err
		}
		var mismatched int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM sales s WHERE s.status = 'ok' AND s.total !=
			(SELECT COALESCE(SUM(i.postage), 0) FROM indicia i WHERE i.kiosk_id = s.kiosk_id AND i.request_id = s.request_id)`).Scan(&mismatched); err != nil {
			return err
		}
		if mismatched > 0 {
			bad("%d sales whose total differs from the postage of their indicia", mismatched)
		}
		// The customers' money: each payment's refunded total is the refunds
		// recorded for it, once each (the schema keeps it within the capture).
		var miscounted int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM payments p WHERE p.refunded <>
			(SELECT COALESCE(SUM(f.amount), 0) FROM payment_refunds f WHERE f.kiosk_id = p.kiosk_id AND f.request_id = p.request_id)`).Scan(&miscounted); err != nil {
			return err
		}
		if miscounted > 0 {
			bad("%d payments whose refunded total differs from their recorded refunds", miscounted)
		}
		// Prepaid accounts: each balance is what its entries add up to
		// (top-ups, holds, their releases, refunds); a debit and its entry
		// commit together.
		var unbalanced int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts a WHERE a.balance <>
			(SELECT COALESCE(SUM(e.amount), 0) FROM account_entries e WHERE e.account_id = a.id)`).Scan(&unbalanced); err != nil {
			return err
		}
		if unbalanced > 0 {
			bad("%d accounts whose balance differs from their entries", unbalanced)
		}
		if err := checkRemedies(ctx, tx, bad); err != nil {
			return err
		}
		if err := l.verifyAudit(ctx, tx, all, bad); err != nil {
			return err
		}
		for _, a := range r.Anchors {
			if err := l.verifyAnchor(ctx, tx, a, bad); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: check: %w", err)
	}
	return r, nil
}

// checkRemedies checks that each failed label got one remedy, a free
// reprint or its money back, never both. The remedies table keys one row
// by label; these look past it, at the stamps and at the money.
func checkRemedies(ctx context.Context, tx *sql.Tx, bad func(string, ...any)) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM indicia i JOIN remedies r ON r.label = i.reprint_of
		WHERE i.reprint_of IS NOT NULL AND i.state <> 'voided' AND r.kind = 'refund'`).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		bad("%d live reprints of labels whose remedy was a refund", n)
	}
	// The stamp that failed is the reprinted label's voided indicium of the
	// same kiosk; its payment's refund for the label is keyed refund:LABEL.
	// A stamp taken back at the counter (refund_requested) is another sale
	// on the label, refunded in its own right.
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM remedies r
		JOIN indicia i ON i.label = r.label AND i.kiosk_id = r.kiosk_id AND i.state = 'voided' AND COALESCE(i.void_reason, '') <> 'refund_requested'
		JOIN payment_refunds f ON f.kiosk_id = i.kiosk_id AND f.request_id = i.request_id AND f.ref = 'refund:' || r.label
		WHERE r.kind = 'reprint'`).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		bad("%d failed labels that got a free reprint and their postage refunded", n)
	}
	return nil
}

// anchorTimeout bounds the wait for the authority: a hub starts, and checks
// its ledger, when the authority is down too.
const anchorTimeout = 5 * time.Second

// anchors asks the authority for the audit heads it holds; an authority
// that does not answer leaves the anchors unchecked, with the reason.
func (l *Ledger) anchors(ctx context.Context) ([]postal.Anchor, string) {
	if l.pa == nil {
		return nil, "no postal authority configured"
	}
	a, err := l.pa.Anchors(ctx)
	if err != nil {
		l.log.Warn("audit anchor not checked: the postal authority did not answer", "err", err)
		return nil, err.Error()
	}
	return a, ""
}

// verifyAnchor checks that a chain holds the entry the authority was told
// of, with the same hash.
func (l *Ledger) verifyAnchor(ctx context.Context, tx *sql.Tx, a postal.Anchor, bad func(string, ...any)) error {
	var hash []byte
	err := tx.QueryRowContext(ctx, l.db.Rebind(`SELECT hash FROM audit WHERE chain = ? AND n = ?`), a.Chain, a.Seq).Scan(&hash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		bad("audit: the postal authority holds entry %d of chain %d (report %s) and the chain has no such entry: the audit log was wiped, reset or cut", a.Seq, a.Chain, a.ReportRef)
	case err != nil:
		return err
	case hex.EncodeToString(hash) != a.Hash:
		bad("audit: entry %d of chain %d differs from the one the postal authority holds (report %s): the audit log was rewritten", a.Seq, a.Chain, a.ReportRef)
	}
	return nil
}

func sums(ctx context.Context, tx *sql.Tx, query string) (map[uint32]protocol.Mills, error) {
	rows, err := tx.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[uint32]protocol.Mills{}
	for rows.Next() {
		var s uint32
		var v protocol.Mills
		if err := rows.Scan(&s, &v); err != nil {
			return nil, err
		}
		out[s] = v
	}
	return out, rows.Err()
}
