package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// fundingHeadroom is how many fundings of the size asked for the GPSD
// should still hold beyond this hub's promises; below that, Reserve buys.
// Other hub processes on the same database promise GPSD funds too, and
// their promises are not visible here: with room for one funding left, two
// hubs would each promise it and the later commit would find the GPSD
// short (funds_unavailable). The headroom is best effort: if the authority
// does not sell, a promise the GPSD covers on its own still stands.
const fundingHeadroom = 4

// Reserve promises amount of GPSD funds to a record about to be issued, so
// that its commit finds them. If the GPSD cannot cover this and every
// earlier promise with fundingHeadroom to spare, it buys from the postal
// authority first (patent Fig. 10, step 1006). The promise ends when the
// record's sale commits or fails.
func (l *Ledger) Reserve(ctx context.Context, amount protocol.Mills) error {
	if l.cfg.NoAutoFunding {
		return protocol.Errorf(protocol.CodeFundsUnavailable, "the postage device is out of funds")
	}
	l.buyMu.Lock()
	defer l.buyMu.Unlock()
	var buyErr error
	tried := false // a purchase for the headroom was asked for once
	for {
		g, err := l.loadPSD(ctx, l.mac, nil, GPSDSerial, false)
		if err != nil {
			l.lockOnTamper(err)
			return err
		}
		if g.Locked != "" {
			return protocol.Errorf(protocol.CodeServiceUnavailable, "the postage fund is locked: %s", g.Locked)
		}
		l.resMu.Lock()
		need := l.reserved + amount*fundingHeadroom
		covered := g.DR-l.reserved >= amount
		if covered && (tried || g.DR >= need || l.cfg.Now().Before(l.headroomAfter)) {
			l.reserved += amount
			l.resMu.Unlock()
			return nil
		}
		l.resMu.Unlock()
		if buyErr != nil {
			return buyErr // not even this promise is covered
		}
		tried = true
		if buyErr = l.buyBelow(ctx, need); buyErr != nil && covered {
			// The authority is down: promises the GPSD covers do not each
			// wait on it (buyMu held) for the headroom meanwhile.
			l.headroomAfter = l.cfg.Now().Add(headroomRetry)
		}
	}
}

// headroomRetry is how long after the authority did not sell for the
// headroom a promise the GPSD covers is made without asking it again.
const headroomRetry = time.Minute

func (l *Ledger) unreserve(amount protocol.Mills) {
	if amount == 0 {
		return
	}
	l.resMu.Lock()
	l.reserved -= amount
	l.resMu.Unlock()
}

// FundingFor is what an MPSD with descending register dr must receive
// before it can issue postage: whole pre-set amounts, or nothing.
func (l *Ledger) FundingFor(dr, postage protocol.Mills) protocol.Mills {
	if dr >= postage {
		return 0
	}
	n := (postage - dr + l.cfg.MPSDFunding - 1) / l.cfg.MPSDFunding
	return n * l.cfg.MPSDFunding
}

// BuyFunds buys the configured amount from the postal authority now.
func (l *Ledger) BuyFunds(ctx context.Context) error {
	l.buyMu.Lock()
	defer l.buyMu.Unlock()
	return l.buy(ctx)
}

// buyBelow buys as buy does, unless the GPSD holds need once this hub
// has the cluster's purchase lock: another hub, short of funds at the same
// time, bought while this one waited, or a pending purchase was finished.
// It compares with need, what the caller's promise and its headroom
// take, rather than with the DR the caller saw: the second of two hubs
// short at once finds the first one's purchase covers it and buys nothing.
// The caller holds buyMu and reads the GPSD again.
func (l *Ledger) buyBelow(ctx context.Context, need protocol.Mills) error {
	unlock, err := l.db.Lock(ctx, "gpsd-purchase")
	if err != nil {
		return fmt.Errorf("ledger: buy funds: %w", err)
	}
	defer unlock()
	// A pending purchase may have been sold with its answer lost: finish
	// it under its own request id, which the authority does not sell
	// twice. A new request id would make the vendor pay again, so none is
	// made while one is still unfinished.
	if err := l.resumePurchases(ctx); err != nil {
		return err
	}
	g, err := l.loadPSD(ctx, l.mac, nil, GPSDSerial, false)
	if err != nil {
		l.lockOnTamper(err)
		return err
	}
	if g.DR >= need {
		return nil
	}
	return l.buy(ctx)
}

// buy records a pending purchase, asks the authority, then credits the
// GPSD. The caller holds buyMu.
func (l *Ledger) buy(ctx context.Context) error {
	reqID := l.cfg.Vendor + "-" + randomHex(8)
	amt := l.cfg.GPSDPurchase
	if _, err := l.db.ExecContext(ctx, l.db.Rebind(`INSERT INTO fund_purchases (request_id, amount, state, created_at) VALUES (?, ?, 'pending', ?)`),
		reqID, amt, micros(l.cfg.Now())); err != nil {
		return fmt.Errorf("ledger: buy funds: %w", err)
	}
	return l.completePurchase(ctx, reqID, amt)
}

func (l *Ledger) completePurchase(ctx context.Context, reqID string, amt protocol.Mills) (err error) {
	p, err := l.pa.BuyFunds(ctx, reqID, int64(amt))
	if err != nil {
		l.log.Warn("postal authority did not sell funds", "request_id", reqID, "err", err)
		return protocol.Errorf(protocol.CodeFundsUnavailable, "the postal authority did not sell funds; try again shortly")
	}
	defer func() { l.lockOnTamper(err) }()
	now := l.cfg.Now()
	err = l.inTx(ctx, func(tx *sql.Tx) error {
		now, err := l.floored(ctx, tx, now)
		if err != nil {
			return err
		}
		// The GPSD first, as a sale's commit takes it: the purchase is
		// dated no earlier than the chain's last entry.
		g, err := l.loadPSD(ctx, l.mac, tx, GPSDSerial, true)
		if err != nil {
			return err
		}
		now = chainTime(now, &g.head)
		res, err := tx.ExecContext(ctx, l.db.Rebind(`UPDATE fund_purchases SET state = 'done', pa_ref = ?, done_at = ? WHERE request_id = ? AND state = 'pending'`),
			p.ID, micros(now), reqID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return nil // another hub process finished it
		}
		g.DR += amt
		if !g.inRange() {
			return fmt.Errorf("gpsd descending register would exceed 4 bytes")
		}
		if err := l.appendAudit(ctx, tx, now, []auditEntry{{PSD: GPSDSerial, Kind: auditPurchase, Amount: amt, AR: g.AR, DR: g.DR, Ref: p.ID}}); err != nil {
			return err
		}
		return l.storePSD(ctx, l.mac, tx, g)
	})
	if err != nil {
		return fmt.Errorf("ledger: credit purchase %s: %w", reqID, err)
	}
	l.log.Info("postage bought from the postal authority", "purchase", p.ID, "amount", amt.String())
	return nil
}

func (l *Ledger) resumePurchases(ctx context.Context) error {
	rows, err := l.db.QueryContext(ctx, `SELECT request_id, amount FROM fund_purchases WHERE state = 'pending'`)
	if err != nil {
		return fmt.Errorf("ledger: resume purchases: %w", err)
	}
	type pending struct {
		id  string
		amt protocol.Mills
	}
	var ps []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.id, &p.amt); err != nil {
			rows.Close()
			return fmt.Errorf("ledger: resume purchases: %w", err)
		}
		ps = append(ps, p)
	}
	rows.Close()
	for _, p := range ps {
		if err := l.completePurchase(ctx, p.id, p.amt); err != nil {
			return err
		}
	}
	return nil
}

// CreateMPSD makes a new, unleased MPSD with empty registers.
func (l *Ledger) CreateMPSD(ctx context.Context) (uint32, error) {
	var serial uint32
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		serial, err = l.createMPSD(ctx, tx, l.cfg.Now())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ledger: create mpsd: %w", err)
	}
	return serial, nil
}

// FundMPSD moves amount from the GPSD to an MPSD that no one holds, as an
// operator would before putting it into service.
func (l *Ledger) FundMPSD(ctx context.Context, serial uint32, amount protocol.Mills) (err error) {
	defer func() { l.lockOnTamper(err) }()
	now := l.cfg.Now()
	err = l.inTx(ctx, func(tx *sql.Tx) error {
		m, err := l.loadPSD(ctx, l.mac, tx, serial, true)
		if err != nil {
			return err
		}
		held := false
		if m.LeaseHolder != "" { // by the clock leases are judged by
			at, args := l.db.LeaseNow(now)
			if err := tx.QueryRowContext(ctx, l.db.Rebind(`SELECT lease_until > `+at+` FROM psd WHERE serial = ?`),
				slices.Concat(args, []any{serial})...).Scan(&held); err != nil {
				return err
			}
		}
		if m.Kind != KindMPSD || held {
			return fmt.Errorf("psd %d is not an MPSD free to fund", serial)
		}
		g, err := l.loadPSD(ctx, l.mac, tx, GPSDSerial, true)
		if err != nil {
			return err
		}
		if amount <= 0 || g.DR < amount {
			return protocol.Errorf(protocol.CodeFundsUnavailable, "the GPSD holds %s, cannot fund %s", g.DR, amount)
		}
		g.DR, g.AR, m.DR = g.DR-amount, g.AR+amount, m.DR+amount
		at, err := l.floored(ctx, tx, now)
		if err != nil {
			return err
		}
		at = chainTime(at, &m.head, &g.head)
		if _, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO fundings (mpsd, amount, at, request_id) VALUES (?, ?, ?, 'operator')`),
			serial, amount, micros(at)); err != nil {
			return err
		}
		if err := l.appendAudit(ctx, tx, at, []auditEntry{
			{PSD: GPSDSerial, Kind: auditFundOut, Amount: amount, AR: g.AR, DR: g.DR, Ref: fmt.Sprintf("mpsd %d", serial)},
			{PSD: serial, Kind: auditFundIn, Amount: amount, AR: m.AR, DR: m.DR, Ref: "gpsd"},
		}); err != nil {
			return err
		}
		if err := l.storePSD(ctx, l.mac, tx, g); err != nil {
			return err
		}
		return l.storePSD(ctx, l.mac, tx, m)
	})
	if err != nil {
		return fmt.Errorf("ledger: fund mpsd %d: %w", serial, err)
	}
	return nil
}

// Unreserve ends a promise a worker made with Reserve but did not use.
func (l *Ledger) Unreserve(amount protocol.Mills) { l.unreserve(amount) }
