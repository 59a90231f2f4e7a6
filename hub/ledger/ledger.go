// Package ledger keeps the postage funds the patent describes (Figs. 8-10):
// one GPSD funded from the postal authority, a pool of MPSDs funded from the
// GPSD, and the indicia each MPSD issues. A sale's register updates,
// funding, indicia and idempotency record commit in one transaction. Every
// register row carries an HMAC control code from the HSM, checked whenever
// the row is loaded.
package ledger

import (
	"context"
	"crypto"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Config holds the ledger's rules. Zero values take the documented defaults.
type Config struct {
	Vendor     string // USPS-assigned vendor id in the indicium; default "FR"
	Model      string // model id; default "2N"
	SoftwareID uint8  // software id in the indicium; default 1
	// MPSDFunding is the pre-set amount moved from the GPSD to an MPSD that
	// runs short (patent Fig. 10); default $1,000.00.
	MPSDFunding protocol.Mills
	// GPSDPurchase is bought from the postal authority when the GPSD runs
	// short; default $100,000.00.
	GPSDPurchase protocol.Mills
	// ControlKey is the HSM label of the HMAC key for control codes.
	ControlKey string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// ControlKeyLabel is the HSM label of the control-code key.
func (c Config) ControlKeyLabel() string {
	if c.ControlKey == "" {
		return "frank-control-1"
	}
	return c.ControlKey
}

func (c *Config) defaults() {
	if c.Vendor == "" {
		c.Vendor = "FR"
	}
	if c.Model == "" {
		c.Model = "2N"
	}
	if c.SoftwareID == 0 {
		c.SoftwareID = 1
	}
	if c.MPSDFunding == 0 {
		c.MPSDFunding = 1_000_000
	}
	if c.GPSDPurchase == 0 {
		c.GPSDPurchase = 100_000_000
	}
	c.ControlKey = c.ControlKeyLabel()
	if c.Now == nil {
		c.Now = time.Now
	}
}

// funder buys postage from the postal authority.
type funder interface {
	BuyFunds(ctx context.Context, requestID string, amountMills int64) (postal.Purchase, error)
}

// Errors a caller may act on.
var (
	ErrTamper = errors.New("ledger: control code mismatch")
	ErrLocked = errors.New("ledger: psd locked")
)

// TamperError names the PSD whose control code did not match.
type TamperError struct{ Serial uint32 }

func (e *TamperError) Error() string {
	return fmt.Sprintf("ledger: psd %d: control code mismatch", e.Serial)
}

// Is makes errors.Is(err, ErrTamper) true.
func (e *TamperError) Is(target error) bool { return target == ErrTamper }

// Ledger is the hub's book of postage funds.
type Ledger struct {
	db  *store.DB
	cfg Config
	mac macer
	pa  funder
	log *slog.Logger

	buyMu sync.Mutex // one postal purchase at a time in this process
}

// Open opens the ledger on db, creating the GPSD on first use and finishing
// any postal purchase a crash interrupted.
func Open(ctx context.Context, db *store.DB, cfg Config, mac macer, pa funder, log *slog.Logger) (*Ledger, error) {
	cfg.defaults()
	l := &Ledger{db: db, cfg: cfg, mac: &lockedMAC{m: mac}, pa: pa, log: log}
	g := PSD{Serial: GPSDSerial, Kind: KindGPSD}
	if err := seal(l.mac, cfg.ControlKey, &g); err != nil {
		return nil, err
	}
	_, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO psd (serial, kind, ar, dr, control, created_at)
		VALUES (?, ?, 0, 0, ?, ?) ON CONFLICT DO NOTHING`), g.Serial, g.Kind, g.Control, micros(cfg.Now()))
	if err != nil {
		return nil, fmt.Errorf("ledger: open: create gpsd: %w", err)
	}
	if err := l.resumePurchases(ctx); err != nil {
		log.Warn("postal purchase still pending", "err", err)
	}
	return l, nil
}

// Config returns the ledger's effective configuration.
func (l *Ledger) Config() Config { return l.cfg }

// Item is one stamp to issue.
type Item struct {
	RateClass string
	Postage   protocol.Mills
	Label     protocol.LabelSerial
}

// Sale is a validated, priced, paid-for purchase.
type Sale struct {
	KioskID   string
	RequestID string
	BodyHash  []byte // SHA-256 of the canonical request, for idempotency
	UserID    uint64
	OriginZIP uint32
	Items     []Item
}

// Session is what one PSDM worker brings to a sale: its own HSM session
// (PKCS#11 sessions must not be shared between goroutines), the signing key
// and the certificate serial the postal authority gave that key.
type Session struct {
	CertSerial uint32
	Signer     crypto.Signer
	MAC        macer
}

// Total is the sale's postage.
func (s *Sale) Total() protocol.Mills {
	var t protocol.Mills
	for _, it := range s.Items {
		t += it.Postage
	}
	return t
}

// Replay returns the stored result of an earlier request with the same id,
// or nil. A different body under the same id is idempotency_conflict.
func (l *Ledger) Replay(ctx context.Context, kioskID, requestID string, bodyHash []byte) ([]byte, error) {
	return replay(ctx, l.db, l.db.DB, kioskID, requestID, bodyHash)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func replay(ctx context.Context, db *store.DB, q querier, kioskID, requestID string, bodyHash []byte) ([]byte, error) {
	var hash, result []byte
	err := q.QueryRowContext(ctx, db.Rebind(`SELECT body_hash, result FROM sales WHERE kiosk_id = ? AND request_id = ?`),
		kioskID, requestID).Scan(&hash, &result)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: replay %s/%s: %w", kioskID, requestID, err)
	}
	if string(hash) != string(bodyHash) {
		return nil, protocol.Errorf(protocol.CodeIdempotencyConflict,
			"request_id %s was used before with a different body", requestID)
	}
	return result, nil
}

// Sell issues the sale's indicia from MPSD mpsd, signed in key, and
// returns the exact result bytes to send. Funding from the GPSD, register
// updates, indicia and the stored result commit together or not at all.
func (l *Ledger) Sell(ctx context.Context, s *Sale, mpsd uint32, key Session) (_ []byte, err error) {
	defer func() { l.lockOnTamper(err) }()
	if prior, err := l.Replay(ctx, s.KioskID, s.RequestID, s.BodyHash); prior != nil || err != nil {
		return prior, err
	}
	// Buy from the postal authority before the transaction, never inside it:
	// the authority is a network away, and the purchase stands on its own.
	if err := l.ensureGPSDFor(ctx, mpsd, s.Total()); err != nil {
		return nil, err
	}
	now := l.cfg.Now()
	var result []byte
	err = l.inTx(ctx, func(tx *sql.Tx) error {
		if prior, err := replay(ctx, l.db, tx, s.KioskID, s.RequestID, s.BodyHash); prior != nil || err != nil {
			result = prior
			return err
		}
		m, err := l.loadPSD(ctx, key.MAC, tx, mpsd)
		if err != nil {
			return err
		}
		if m.Kind != KindMPSD {
			return fmt.Errorf("ledger: sell: psd %d is not an MPSD", mpsd)
		}
		var g *PSD // loaded only if funding is needed
		res := protocol.PurchaseResult{RequestID: s.RequestID, Status: protocol.ResultOK}
		type row struct {
			it   Item
			in   protocol.Indicium
			data []byte
		}
		rows := make([]row, 0, len(s.Items))
		for _, it := range s.Items {
			if err := l.checkLabelFree(ctx, tx, it.Label); err != nil {
				return err
			}
			for m.DR < it.Postage {
				if g == nil {
					if g, err = l.loadPSD(ctx, key.MAC, tx, GPSDSerial); err != nil {
						return err
					}
				}
				if err := l.fund(ctx, tx, g, m, now); err != nil {
					return err
				}
			}
			m.AR += it.Postage
			m.DR -= it.Postage
			if !m.inRange() {
				return fmt.Errorf("ledger: sell: mpsd %d registers out of range: ar %d dr %d", m.Serial, m.AR, m.DR)
			}
			in := protocol.Indicium{CertSerial: key.CertSerial, Vendor: l.cfg.Vendor, Model: l.cfg.Model,
				MPSDSerial: m.Serial, AR: m.AR, Postage: it.Postage, Date: protocol.DateOf(now),
				OriginZIP: s.OriginZIP, UserID: s.UserID, SoftwareID: l.cfg.SoftwareID, Label: it.Label,
				DR: m.DR, RateCategory: it.RateClass}
			if err := in.Sign(key.Signer); err != nil {
				return fmt.Errorf("ledger: sell: %w", err)
			}
			data, err := in.MarshalBinary()
			if err != nil {
				return fmt.Errorf("ledger: sell: %w", err)
			}
			rows = append(rows, row{it, in, data})
			res.Indicia = append(res.Indicia, protocol.IssuedIndicium{MeterNumber: in.MeterNumber(),
				RateClass: it.RateClass, AmountMills: it.Postage, LabelSerial: it.Label.String(), Matrix: data})
		}
		if result, err = json.Marshal(&res); err != nil {
			return fmt.Errorf("ledger: sell: %w", err)
		}
		if _, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO sales (kiosk_id, request_id, body_hash, status, total, result, created_at)
			VALUES (?, ?, ?, 'ok', ?, ?, ?)`), s.KioskID, s.RequestID, s.BodyHash, s.Total(), result, micros(now)); err != nil {
			return fmt.Errorf("ledger: sell: record sale: %w", err)
		}
		for _, r := range rows {
			if _, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO indicia (kiosk_id, request_id, mpsd, label, rate_class, postage, ar, dr, cert_serial, data, created_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`), s.KioskID, s.RequestID, m.Serial, r.it.Label.String(), r.it.RateClass,
				r.it.Postage, r.in.AR, r.in.DR, key.CertSerial, r.data, micros(now)); err != nil {
				return fmt.Errorf("ledger: sell: record indicium: %w", err)
			}
		}
		if g != nil {
			if err := l.storePSD(ctx, key.MAC, tx, g); err != nil {
				return err
			}
		}
		return l.storePSD(ctx, key.MAC, tx, m)
	})
	if err != nil {
		return nil, err
	}
	return result, nil
}

// Reject records a final refusal so that a repeat of the request gets the
// same bytes. Retryable refusals are not recorded: the retry should run.
func (l *Ledger) Reject(ctx context.Context, kioskID, requestID string, bodyHash []byte, perr *protocol.Error) ([]byte, error) {
	result, err := json.Marshal(protocol.Rejected(requestID, perr))
	if err != nil {
		return nil, fmt.Errorf("ledger: reject: %w", err)
	}
	if retryable(perr.Code) {
		return result, nil
	}
	err = l.inTx(ctx, func(tx *sql.Tx) error {
		if prior, err := replay(ctx, l.db, tx, kioskID, requestID, bodyHash); prior != nil || err != nil {
			result = prior
			return err
		}
		_, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO sales (kiosk_id, request_id, body_hash, status, total, result, created_at)
			VALUES (?, ?, ?, 'rejected', 0, ?, ?)`), kioskID, requestID, bodyHash, result, micros(l.cfg.Now()))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: reject %s: %w", requestID, err)
	}
	return result, nil
}

func retryable(c protocol.Code) bool {
	for _, ci := range protocol.Codes {
		if ci.Code == c {
			return ci.Retry
		}
	}
	return true
}

func (l *Ledger) checkLabelFree(ctx context.Context, tx *sql.Tx, label protocol.LabelSerial) error {
	var n int
	err := tx.QueryRowContext(ctx, l.db.Rebind(`SELECT COUNT(*) FROM indicia WHERE label = ? AND state <> 'voided'`), label.String()).Scan(&n)
	if err != nil {
		return fmt.Errorf("ledger: check label %s: %w", label, err)
	}
	if n > 0 {
		return protocol.Errorf(protocol.CodeLabelUsed, "label %s already carries an indicium", label)
	}
	return nil
}

// fund moves the pre-set amount from the GPSD to m (patent Fig. 10, step 1008).
func (l *Ledger) fund(ctx context.Context, tx *sql.Tx, g, m *PSD, now time.Time) error {
	amt := l.cfg.MPSDFunding
	if g.DR < amt {
		return protocol.Errorf(protocol.CodeFundsUnavailable, "the postage fund is short; try again shortly")
	}
	if m.DR+amt > protocol.MaxDR {
		return fmt.Errorf("ledger: fund mpsd %d: descending register would exceed 4 bytes", m.Serial)
	}
	g.DR -= amt
	g.AR += amt
	m.DR += amt
	if _, err := tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO fundings (mpsd, amount, at) VALUES (?, ?, ?)`), m.Serial, amt, micros(now)); err != nil {
		return fmt.Errorf("ledger: fund mpsd %d: %w", m.Serial, err)
	}
	l.log.Info("mpsd funded", "mpsd", m.Serial, "amount", amt.String(), "gpsd_dr", g.DR.String())
	return nil
}

// ensureGPSDFor buys from the postal authority if funding mpsd for total
// would find the GPSD short (patent Fig. 10, step 1006).
func (l *Ledger) ensureGPSDFor(ctx context.Context, mpsd uint32, total protocol.Mills) error {
	m, err := l.loadPSD(ctx, l.mac, l.db.DB, mpsd)
	if err != nil {
		return err
	}
	if m.DR >= total {
		return nil
	}
	need := l.cfg.MPSDFunding * ((total - m.DR + l.cfg.MPSDFunding - 1) / l.cfg.MPSDFunding)
	l.buyMu.Lock()
	defer l.buyMu.Unlock()
	g, err := l.loadPSD(ctx, l.mac, l.db.DB, GPSDSerial)
	if err != nil {
		return err
	}
	for g.DR < need {
		if err := l.buy(ctx); err != nil {
			return err
		}
		if g, err = l.loadPSD(ctx, l.mac, l.db.DB, GPSDSerial); err != nil {
			return err
		}
	}
	return nil
}

// buy records a pending purchase, asks the authority, then credits the GPSD.
func (l *Ledger) buy(ctx context.Context) error {
	id := make([]byte, 8)
	rand.Read(id)
	reqID := l.cfg.Vendor + "-" + hex.EncodeToString(id)
	amt := l.cfg.GPSDPurchase
	if _, err := l.db.ExecContext(ctx, l.db.Rebind(`INSERT INTO fund_purchases (request_id, amount, state, created_at) VALUES (?, ?, 'pending', ?)`),
		reqID, amt, micros(l.cfg.Now())); err != nil {
		return fmt.Errorf("ledger: buy funds: %w", err)
	}
	return l.completePurchase(ctx, reqID, amt)
}

func (l *Ledger) completePurchase(ctx context.Context, reqID string, amt protocol.Mills) error {
	p, err := l.pa.BuyFunds(ctx, reqID, int64(amt))
	if err != nil {
		return &protocol.Error{Code: protocol.CodeFundsUnavailable,
			Message: "the postal authority did not sell funds; try again shortly"}
	}
	err = l.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, l.db.Rebind(`UPDATE fund_purchases SET state = 'done', pa_ref = ?, done_at = ? WHERE request_id = ? AND state = 'pending'`),
			p.ID, micros(l.cfg.Now()), reqID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return nil // another hub process finished it
		}
		g, err := l.loadPSD(ctx, l.mac, tx, GPSDSerial)
		if err != nil {
			return err
		}
		g.DR += amt
		if !g.inRange() {
			return fmt.Errorf("gpsd descending register would exceed 4 bytes")
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

// AcquireMPSD returns an MPSD that can sell, creating a new one with empty
// registers when none exists (patent Fig. 8, step 816).
func (l *Ledger) AcquireMPSD(ctx context.Context) (uint32, error) {
	var serial uint32
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT serial FROM psd WHERE kind = 'mpsd' AND locked IS NULL ORDER BY serial LIMIT 1`).Scan(&serial)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var max sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(serial) FROM psd WHERE kind = 'mpsd'`).Scan(&max); err != nil {
			return err
		}
		serial = FirstMPSDSerial
		if max.Valid {
			serial = uint32(max.Int64) + 1
		}
		if serial > protocol.MaxMPSDSerial {
			return errors.New("mpsd serials exhausted")
		}
		m := PSD{Serial: serial, Kind: KindMPSD}
		if err := seal(l.mac, l.cfg.ControlKey, &m); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, l.db.Rebind(`INSERT INTO psd (serial, kind, ar, dr, control, created_at) VALUES (?, 'mpsd', 0, 0, ?, ?)`),
			m.Serial, m.Control, micros(l.cfg.Now()))
		if err == nil {
			l.log.Info("mpsd created", "mpsd", serial)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ledger: acquire mpsd: %w", err)
	}
	return serial, nil
}

type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// loadPSD reads a register row and checks its control code. A mismatch
// returns a *TamperError; the caller locks the row once its own transaction
// is over (lockOnTamper), because SQLite has one writer at a time.
func (l *Ledger) loadPSD(ctx context.Context, mac macer, q rowQuerier, serial uint32) (*PSD, error) {
	p := &PSD{Serial: serial}
	var locked sql.NullString
	err := q.QueryRowContext(ctx, l.db.Rebind(`SELECT kind, ar, dr, control, locked FROM psd WHERE serial = ?`), serial).
		Scan(&p.Kind, &p.AR, &p.DR, &p.Control, &locked)
	if err != nil {
		return nil, fmt.Errorf("ledger: load psd %d: %w", serial, err)
	}
	p.Locked = locked.String
	ok, err := verifySeal(mac, l.cfg.ControlKey, p)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &TamperError{Serial: serial}
	}
	if p.Locked != "" {
		return nil, fmt.Errorf("ledger: load psd %d (%s): %w", serial, p.Locked, ErrLocked)
	}
	return p, nil
}

// lockOnTamper locks the PSD named by a *TamperError in err, in its own
// transaction, so the lock holds though the sale that found it rolled back.
func (l *Ledger) lockOnTamper(err error) {
	var te *TamperError
	if errors.As(err, &te) {
		l.lock(te.Serial, "control code mismatch")
	}
}

func (l *Ledger) lock(serial uint32, why string) {
	l.log.Error("TAMPER: psd locked", "psd", serial, "reason", why)
	_, err := l.db.ExecContext(context.Background(), l.db.Rebind(`UPDATE psd SET locked = ? WHERE serial = ? AND locked IS NULL`), why, serial)
	if err != nil {
		l.log.Error("could not lock psd", "psd", serial, "err", err)
	}
}

func (l *Ledger) storePSD(ctx context.Context, mac macer, tx *sql.Tx, p *PSD) error {
	if !p.inRange() {
		return fmt.Errorf("ledger: store psd %d: registers out of range: ar %d dr %d", p.Serial, p.AR, p.DR)
	}
	if err := seal(mac, l.cfg.ControlKey, p); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, l.db.Rebind(`UPDATE psd SET ar = ?, dr = ?, control = ? WHERE serial = ?`), p.AR, p.DR, p.Control, p.Serial)
	if err != nil {
		return fmt.Errorf("ledger: store psd %d: %w", p.Serial, err)
	}
	return nil
}

func (l *Ledger) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("ledger: commit: %w", err)
	}
	return nil
}

func micros(t time.Time) int64 { return t.UnixMicro() }

// lockedMAC serializes the ledger's own HSM session, which its background
// work (funding, checks, new MPSDs) shares.
type lockedMAC struct {
	mu sync.Mutex
	m  macer
}

func (l *lockedMAC) MAC(label string, data []byte) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m.MAC(label, data)
}
