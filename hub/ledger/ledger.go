// Package ledger keeps the postage funds the patent describes (Figs. 8-10):
// one GPSD funded from the postal authority, a pool of MPSDs funded from the
// GPSD, and the indicia each MPSD issues.
//
// PSDM workers check MPSDs out through leases and issue indicia against the
// registers they hold; the ledger's committer then writes each sale
// (register updates, any GPSD funding, indicia, audit entries and the stored
// result) in one transaction, many sales to a commit. Every register row
// carries an HMAC control code from the HSM, checked whenever the row is
// read; every register change is appended to a hash-chained audit log.
package ledger

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Config holds the ledger's rules. Zero values take the documented defaults.
type Config struct {
	// Licence is the single postal licence number the authority assigned
	// the vendor (patent claim 1). It is stored with the GPSD, and a
	// ledger licensed otherwise refuses to open; the hub serves only with
	// one.
	Licence    string
	Vendor     string // USPS-assigned vendor id in the indicium; default "FR"
	Model      string // model id; default "2N"
	SoftwareID uint8  // software id in the indicium; default 1
	// MPSDFunding is the pre-set amount moved from the GPSD to an MPSD that
	// runs short (patent Fig. 10); default $1,000.00.
	MPSDFunding protocol.Mills
	// GPSDPurchase is bought from the postal authority when the GPSD runs
	// short; default $100,000.00.
	GPSDPurchase protocol.Mills
	// NoAutoFunding stops MPSDs from being funded from the GPSD during
	// sales; an MPSD then sells only what FundMPSD gave it.
	NoAutoFunding bool
	// ControlKey is the HSM label of the HMAC key for control codes.
	ControlKey string
	// LeaseTTL is how long an MPSD lease lasts without renewal; default 15 s.
	LeaseTTL time.Duration
	// InspectionWarn and InspectionStop: a PSD not in a postal report for
	// this long raises an inspection_due alert, then stops selling.
	// Defaults 90 and 120 days.
	InspectionWarn, InspectionStop time.Duration
	// MaxBatch bounds the sales in one commit; default 256.
	MaxBatch int
	// SweepChunk bounds the stamps a compromise sweep reads in one
	// transaction, which holds off a report's build; default 500.
	SweepChunk int
	// Holder names this process in leases; default host/pid/random.
	Holder string
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
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 15 * time.Second
	}
	if c.InspectionWarn == 0 {
		c.InspectionWarn = 90 * 24 * time.Hour
	}
	if c.InspectionStop == 0 {
		c.InspectionStop = 120 * 24 * time.Hour
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 256
	}
	if c.SweepChunk == 0 {
		c.SweepChunk = 500
	}
	if c.Holder == "" {
		host, _ := os.Hostname()
		c.Holder = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), randomHex(4))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// alerter raises alerts for ops; hub/alerts.
type alerter interface {
	Raise(ctx context.Context, kind, subject, message string)
}

// authority is the postal authority: it sells postage, and holds the audit
// heads of the vendor's accepted reports.
type authority interface {
	BuyFunds(ctx context.Context, requestID string, amountMills int64) (postal.Purchase, error)
	Anchors(ctx context.Context) ([]postal.Anchor, error)
}

// Errors a caller may act on.
var (
	ErrTamper    = errors.New("ledger: control code mismatch")
	ErrLocked    = errors.New("ledger: psd locked")
	ErrLeaseLost = errors.New("ledger: mpsd lease lost")
	ErrClosed    = errors.New("ledger: closed")
	ErrLicence   = errors.New("ledger: postal licence")
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
	mac macer // the ledger's own HSM session, serialized
	pa  authority
	al  alerter
	log *slog.Logger
	// lines is what each kiosk's requests may make the ledger log.
	lines lineBudget
	// storeQ is storePSDQuery for the database.
	storeQ string

	queue   chan message
	stop    chan struct{}
	stopped chan struct{}
	synced  chan<- func() // the committer's: answers waiting for their sync
	closeMu sync.Once

	buyMu sync.Mutex // one postal purchase at a time in this process
	// headroomAfter is when Reserve asks the authority for the headroom
	// again after it did not sell; buyMu guards it.
	headroomAfter time.Time
	resMu         sync.Mutex
	reserved      protocol.Mills // GPSD funds promised to records not yet committed

	gpsdReported atomic.Int64 // unix µs of the GPSD's last report, for MaySell
	macGen       atomic.Int32 // the control-code key generation new seals use
	halted       atomic.Pointer[string]
	// refusedKeys are the signing keys (by cert serial) this process knows
	// compromised: their stamps still waiting for the committer are
	// spoiled, not sold. nil while there are none.
	refusedKeys atomic.Pointer[map[uint32]bool]
	refuseMu    sync.Mutex // writers of refusedKeys

	stats struct {
		commits, sales atomic.Int64
		busy           atomic.Int64 // nanoseconds spent in commit transactions
	}
}

// CommitStats says how the group commit is doing: transactions, sales
// written, and time spent writing.
type CommitStats struct {
	Commits, Sales int64
	Busy           time.Duration
}

// Stats returns the committer's counters since Open.
func (l *Ledger) Stats() CommitStats {
	return CommitStats{Commits: l.stats.commits.Load(), Sales: l.stats.sales.Load(), Busy: time.Duration(l.stats.busy.Load())}
}

// Open opens the ledger on db: it creates the GPSD on first use, seeds the
// audit chain of a database that predates it, finishes any postal purchase
// a crash interrupted, and starts the committer. mac is the ledger's own HSM
// session (workers bring theirs).
func Open(ctx context.Context, db *store.DB, cfg Config, mac macer, pa authority, al alerter, log *slog.Logger) (*Ledger, error) {
	cfg.defaults()
	l := &Ledger{db: db, cfg: cfg, mac: &lockedMAC{m: mac}, pa: pa, al: al, log: log, storeQ: storePSDQuery(db),
		queue: make(chan message, 8192), stop: make(chan struct{}), stopped: make(chan struct{})}
	if err := l.RefreshControlKey(ctx); err != nil {
		return nil, err
	}
	g := PSD{Serial: GPSDSerial, Kind: KindGPSD}
	if err := seal(l.mac, cfg.ControlKey, l.controlGen(), &g); err != nil {
		return nil, err
	}
	now := micros(cfg.Now())
	_, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO psd (serial, kind, ar, dr, control, created_at, reported_at)
		VALUES (?, ?, 0, 0, ?, ?, ?) ON CONFLICT DO NOTHING`), g.Serial, g.Kind, g.Control, now, now)
	if err != nil {
		return nil, fmt.Errorf("ledger: open: create gpsd: %w", err)
	}
	if err := l.license(ctx); err != nil {
		return nil, err
	}
	if err := l.seedAudit(ctx); err != nil {
		return nil, err
	}
	if err := db.Prepare(ctx, hotQueries(db)...); err != nil {
		return nil, err
	}
	if err := l.CheckInspection(ctx); err != nil {
		return nil, err
	}
	if err := l.resumePurchases(ctx); err != nil {
		log.Warn("postal purchase still pending", "err", err)
	}
	go l.committer()
	return l, nil
}

// license stores the configured licence with the GPSD on first use, and
// refuses a configuration that names another: a vendor holds one licence,
// and changing it is a matter for the authority, not a flag. A ledger
// opened without one (the admin commands) uses the stored licence, or
// none before the first start: the hub will not serve without one.
func (l *Ledger) license(ctx context.Context) error {
	want := strings.TrimSpace(l.cfg.Licence)
	if want != "" {
		// Set if unset, then read back: two hubs starting at once agree.
		if _, err := l.db.ExecContext(ctx, l.db.Rebind(`UPDATE psd SET licence = ? WHERE serial = ? AND licence IS NULL`), want, GPSDSerial); err != nil {
			return fmt.Errorf("ledger: open: licence: %w", err)
		}
	}
	var have sql.NullString
	if err := l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT licence FROM psd WHERE serial = ?`), GPSDSerial).Scan(&have); err != nil {
		return fmt.Errorf("ledger: open: licence: %w", err)
	}
	switch {
	case !have.Valid: // admin commands before the first start; Start refuses to sell
		return nil
	case want != "" && have.String != want:
		return fmt.Errorf("%w: the GPSD is licensed %q, the configuration says %q", ErrLicence, have.String, want)
	}
	l.cfg.Licence = have.String
	return nil
}

// StoredLicence is the licence stored with the GPSD, "" before the first
// start.
func StoredLicence(ctx context.Context, db *store.DB) (string, error) {
	var have sql.NullString
	err := db.QueryRowContext(ctx, db.Rebind(`SELECT licence FROM psd WHERE serial = ?`), GPSDSerial).Scan(&have)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("ledger: licence: %w", err)
	}
	return have.String, nil
}

// Licence is the postal licence the GPSD holds.
func (l *Ledger) Licence() string { return l.cfg.Licence }

// Close stops the committer after the sales already queued.
func (l *Ledger) Close() {
	l.closeMu.Do(func() {
		close(l.stop)
		<-l.stopped
	})
}

// Config returns the ledger's effective configuration.
func (l *Ledger) Config() Config { return l.cfg }

// Holder is this process's name in leases.
func (l *Ledger) Holder() string { return l.cfg.Holder }

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
	// ReprintOf is the label that failed to print, when this sale is its
	// free reprint; the remedy is recorded with the sale, once.
	ReprintOf *protocol.LabelSerial
	// Payment, if set, records the sale's payment as authorized in the
	// sale's own transaction: one durable commit answers the kiosk.
	// It must change exactly one row, or the sale is refused with Stale.
	Payment *store.Write
	// Account is the web customer buying, 0 for a kiosk's sale. Their
	// labels' sheets must be theirs when the sale commits, or unclaimed
	// and unused (a claim dropped while its hub seemed dead), and are then
	// theirs again; a sheet another customer has is label_not_assigned.
	Account int64
	// Approval is the card payment's approval code, kept in the answer
	// for the customer's receipt (and byte-identical replays).
	Approval string
	// Priced is when the sale's rate table was read; its stamps carry that
	// day, so that a sale priced before midnight and signed after it is
	// not dated the day a new table (other prices) takes effect. Zero:
	// when it is signed.
	Priced time.Time
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
	return replay(ctx, l.db, nil, kioskID, requestID, bodyHash)
}

func replay(ctx context.Context, db *store.DB, tx *sql.Tx, kioskID, requestID string, bodyHash []byte) ([]byte, error) {
	prior, err := priorAnswer(db.QueryRowStmt(ctx, tx, replayQuery, kioskID, requestID).Scan, requestID, bodyHash)
	if err != nil {
		return nil, fmt.Errorf("ledger: replay %s/%s: %w", kioskID, requestID, err)
	}
	return prior, nil
}

// replayQuery finds a request's recorded answer.
const replayQuery = `SELECT body_hash, result FROM sales WHERE kiosk_id = ? AND request_id = ?`

// priorAnswer scans replayQuery's row: the answer, nil if there is none,
// or idempotency_conflict for another body under the same id.
func priorAnswer(scan func(...any) error, requestID string, bodyHash []byte) ([]byte, error) {
	var hash, result []byte
	err := scan(&hash, &result)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if string(hash) != string(bodyHash) {
		return nil, protocol.Errorf(protocol.CodeIdempotencyConflict,
			"request_id %s was used before with a different body", requestID)
	}
	return result, nil
}

// Owner is who a sale's labels must be assigned to: a kiosk, or a web
// customer's account.
type Owner struct {
	KioskID   string
	AccountID int64
}

// Precheck answers, in one query, what a purchase needs to know before any
// work: the stored result of an earlier request with this id (or
// idempotency_conflict), and whether its labels may be used: issued
// (label_unknown), assigned to owner (label_not_assigned), and carrying no
// indicium yet, not even a voided one (label_used).
func (l *Ledger) Precheck(ctx context.Context, kioskID, requestID string, bodyHash []byte, labels []protocol.LabelSerial, owner Owner) (prior []byte, refusal *protocol.Error, err error) {
	c := l.PrecheckRead(kioskID, requestID, bodyHash, labels, owner)
	if err := l.db.WarmRead(ctx, &c.Read); err != nil {
		return nil, nil, fmt.Errorf("ledger: precheck %s/%s: %w", kioskID, requestID, err)
	}
	return c.Result()
}

// A Check is Precheck's query, for a caller that runs it in a batch of its
// own (a request's claim), and its verdict once the batch has run.
type Check struct {
	Read      store.Read
	requestID string
	bodyHash  []byte
	sheets    int
	// the row
	hash, result      []byte
	used, known, mine int
}

// PrecheckRead is Precheck's query, to be run by the caller; Result then
// gives Precheck's answer.
func (l *Ledger) PrecheckRead(kioskID, requestID string, bodyHash []byte, labels []protocol.LabelSerial, owner Owner) *Check {
	var sheets []uint32
	seen := map[protocol.SheetSerial]bool{}
	for _, lb := range labels {
		if !seen[lb.Sheet] {
			seen[lb.Sheet] = true
			sheets = append(sheets, uint32(lb.Sheet))
		}
	}
	ownerCol := "kiosk_id"
	var ownerVal any = owner.KioskID
	if owner.AccountID != 0 {
		ownerCol, ownerVal = "account_id", owner.AccountID
	}
	q := `SELECT s.body_hash, s.result,
		(SELECT COUNT(*) FROM indicia WHERE label IN (` + store.InList(len(labels)) + `)),
		(SELECT COUNT(*) FROM sheets WHERE serial IN (` + store.InList(len(sheets)) + `)),
		(SELECT COUNT(*) FROM sheets WHERE serial IN (` + store.InList(len(sheets)) + `) AND ` + ownerCol + ` = ?)
		FROM (SELECT 1 AS one) AS x LEFT JOIN sales s ON s.kiosk_id = ? AND s.request_id = ?`
	args := make([]any, 0, len(labels)+2*len(sheets)+3)
	for _, lb := range labels {
		args = append(args, lb.String())
	}
	for range 2 {
		for _, sh := range sheets {
			args = append(args, sh)
		}
	}
	args = append(args, ownerVal, kioskID, requestID)
	c := &Check{requestID: requestID, bodyHash: bodyHash, sheets: len(sheets)}
	c.Read = store.Read{Query: q, Args: args, Row: func(scan func(dest ...any) error) error {
		c.hash, c.result = nil, nil
		return scan(&c.hash, &c.result, &c.used, &c.known, &c.mine)
	}}
	return c
}

// Result is Precheck's answer from the row its Read scanned.
func (c *Check) Result() (prior []byte, refusal *protocol.Error, err error) {
	switch {
	case c.hash != nil && string(c.hash) != string(c.bodyHash):
		return nil, nil, protocol.Errorf(protocol.CodeIdempotencyConflict, "request_id %s was used before with a different body", c.requestID)
	case c.hash != nil:
		return c.result, nil, nil
	case c.known < c.sheets:
		return nil, protocol.Errorf(protocol.CodeLabelUnknown, "a label of this request was never issued"), nil
	case c.mine < c.sheets:
		return nil, protocol.Errorf(protocol.CodeLabelNotAssigned, "a label of this request is on a sheet not loaded into this kiosk"), nil
	case c.used > 0:
		return nil, protocol.Errorf(protocol.CodeLabelUsed, "a label of this request already carries an indicium"), nil
	}
	return nil, nil, nil
}

// UsedLabels returns which of labels carry an indicium, for fraud alerts.
func (l *Ledger) UsedLabels(ctx context.Context, labels []protocol.LabelSerial) ([]protocol.LabelSerial, error) {
	var out []protocol.LabelSerial
	for _, lb := range labels {
		var n int
		if err := l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT COUNT(*) FROM indicia WHERE label = ?`), lb.String()).Scan(&n); err != nil {
			return nil, fmt.Errorf("ledger: used labels: %w", err)
		}
		if n > 0 {
			out = append(out, lb)
		}
	}
	return out, nil
}

// RecordReuse keeps the evidence of an offer of a used label.
func (l *Ledger) RecordReuse(ctx context.Context, label protocol.LabelSerial, kioskID, requestID string) error {
	_, err := l.db.ExecContext(ctx, l.db.Rebind(`INSERT INTO label_reuse (label, kiosk_id, request_id, at) VALUES (?, ?, ?, ?)`),
		label.String(), kioskID, requestID, micros(l.cfg.Now()))
	if err != nil {
		return fmt.Errorf("ledger: record reuse of %s: %w", label, err)
	}
	return nil
}

// LabelLive reports whether a label already carries a live indicium.
func (l *Ledger) LabelLive(ctx context.Context, label protocol.LabelSerial) (bool, error) {
	var n int
	err := l.db.QueryRowStmt(ctx, nil, `SELECT COUNT(*) FROM indicia WHERE label = ? AND live = 1`, label.String()).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("ledger: check label %s: %w", label, err)
	}
	return n > 0, nil
}

// Reject records a final refusal so that a repeat of the request gets the
// same bytes. Retryable refusals are not recorded: the retry should run.
func (l *Ledger) Reject(ctx context.Context, kioskID, requestID string, bodyHash []byte, perr *protocol.Error) ([]byte, error) {
	result, err := json.Marshal(protocol.Rejected(requestID, perr))
	if err != nil {
		return nil, fmt.Errorf("ledger: reject: %w", err)
	}
	if Retryable(perr.Code) {
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
	if store.IsConflict(err) {
		// Another hub's answer to the request committed after the look
		// above (two hubs served it, a claim lost with its session): it
		// stands, and is the answer.
		if prior, rerr := l.Replay(ctx, kioskID, requestID, bodyHash); rerr == nil && prior != nil {
			return prior, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: reject %s: %w", requestID, err)
	}
	return result, nil
}

// Retryable reports whether a code's refusal may succeed on a resend.
func Retryable(c protocol.Code) bool {
	for _, ci := range protocol.Codes {
		if ci.Code == c {
			return ci.Retry
		}
	}
	return true
}

// loadPSD reads a register row and checks its control code; a mismatch is
// a *TamperError. forUpdate locks the row in a PostgreSQL transaction, and
// reads its audit chain's head time once it holds the lock.
func (l *Ledger) loadPSD(ctx context.Context, mac macer, tx *sql.Tx, serial uint32, forUpdate bool) (*PSD, error) {
	p := &PSD{Serial: serial}
	if err := p.scan(l.db.QueryRowStmt(ctx, tx, l.psdQuery(forUpdate), serial).Scan); err != nil {
		return nil, err
	}
	if forUpdate {
		if err := l.db.QueryRowStmt(ctx, tx, auditHeadAtQuery, serial).Scan(&p.head.at); err != nil {
			return nil, fmt.Errorf("ledger: load psd %d: %w", serial, err)
		}
	}
	ok, err := verifySeal(mac, l.cfg.ControlKey, p)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &TamperError{Serial: serial}
	}
	return p, nil
}

// psdQuery reads a register row (for p.scan), locking it for the
// transaction if forUpdate.
func (l *Ledger) psdQuery(forUpdate bool) string {
	q := `SELECT kind, ar, dr, control, locked, lease_holder, lease_until, reported_at, audit_n, audit_hash FROM psd WHERE serial = ?`
	if forUpdate {
		q += l.db.ForUpdate()
	}
	return q
}

// scan reads psdQuery's row into p, without checking its seal.
func (p *PSD) scan(scan func(...any) error) error {
	var locked, holder sql.NullString
	var leaseUntil, reported int64
	if err := scan(&p.Kind, &p.AR, &p.DR, &p.Control, &locked, &holder, &leaseUntil, &reported, &p.head.n, &p.head.hash); err != nil {
		return fmt.Errorf("ledger: load psd %d: %w", p.Serial, err)
	}
	p.Locked, p.LeaseHolder = locked.String, holder.String
	p.LeaseUntil, p.ReportedAt = time.UnixMicro(leaseUntil), time.UnixMicro(reported)
	return nil
}

// lockOnTamper locks the PSD named by a *TamperError in err, in its own
// transaction, so the lock holds though the work that found it rolled back.
func (l *Ledger) lockOnTamper(err error) {
	var te *TamperError
	if errors.As(err, &te) {
		l.lock(te.Serial, "control code mismatch")
	}
}

// lock takes a PSD out of service and raises a tamper alert.
func (l *Ledger) lock(serial uint32, why string) {
	l.log.Error("TAMPER: psd locked", "psd", serial, "reason", why)
	ctx := context.Background()
	if _, err := l.db.ExecContext(ctx, l.db.Rebind(`UPDATE psd SET locked = ? WHERE serial = ? AND locked IS NULL`), why, serial); err != nil {
		l.log.Error("could not lock psd", "psd", serial, "err", err)
	}
	l.al.Raise(ctx, alerts.Tamper, fmt.Sprintf("psd/%d", serial), fmt.Sprintf("PSD %d locked: %s", serial, why))
}

func (l *Ledger) storePSD(ctx context.Context, mac macer, tx *sql.Tx, p *PSD) error {
	args, err := l.sealPSD(mac, p)
	if err != nil {
		return err
	}
	if _, err := l.db.ExecStmt(ctx, tx, l.storeQ, args...); err != nil {
		return fmt.Errorf("ledger: store psd %d: %w", p.Serial, err)
	}
	return nil
}

// queueStorePSD is storePSD into a batch, sealed by the ledger's own key.
func (l *Ledger) queueStorePSD(b *store.Batch, p *PSD) error {
	args, err := l.sealPSD(l.mac, p)
	if err != nil {
		return err
	}
	b.Exec(nil, l.storeQ, args...)
	return nil
}

// sealPSD seals p's registers and returns storePSDQuery's arguments.
func (l *Ledger) sealPSD(mac macer, p *PSD) ([]any, error) {
	if !p.inRange() {
		return nil, fmt.Errorf("ledger: store psd %d: registers out of range: ar %d dr %d", p.Serial, p.AR, p.DR)
	}
	if err := seal(mac, l.cfg.ControlKey, l.controlGen(), p); err != nil {
		return nil, err
	}
	// A write by the lease's holder renews the lease too: then Renew has
	// nothing to do for a busy MPSD, and never queues on its row behind
	// the commits.
	_, now := l.db.LeaseNow(l.cfg.Now())
	ttl := l.cfg.LeaseTTL.Microseconds()
	return slices.Concat([]any{p.AR, p.DR, p.Control, l.cfg.Holder}, now, []any{ttl}, now, []any{ttl, p.Serial}), nil
}

func (l *Ledger) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	return l.db.InTx(ctx, fn)
}

func micros(t time.Time) int64 { return t.UnixMicro() }

// storePSDQuery writes a PSD's registers and, when written by its
// lease's holder, extends the lease, by the database's lease clock
// (store.DB.LeaseNow).
func storePSDQuery(db *store.DB) string {
	at, _ := db.LeaseNow(time.Time{})
	return `UPDATE psd SET ar = ?, dr = ?, control = ?,
	lease_until = CASE WHEN lease_holder = ? AND lease_until < ` + at + ` + ? THEN ` + at + ` + ? ELSE lease_until END WHERE serial = ?`
}

// The commit's statements and the columns of the rows it inserts.
var (
	saleCols     = []string{"kiosk_id", "request_id", "body_hash", "status", "total", "result", "created_at"}
	indiciumCols = []string{"kiosk_id", "request_id", "mpsd", "label", "rate_class", "postage", "ar", "dr", "cert_serial", "data", "created_at", "reprint_of"}
	spoiledCols  = append(slices.Clone(indiciumCols[:10]), "reason", "created_at")
	fundingCols  = []string{"mpsd", "amount", "at", "request_id"}
	remedyCols   = []string{"label", "kind", "kiosk_id", "request_id", "new_label", "amount", "at"}
)

// hotQueries are prepared at Open, outside any transaction.
func hotQueries(db *store.DB) []string {
	l := &Ledger{db: db}
	qs := []string{
		replayQuery,
		l.psdQuery(true),
		storePSDQuery(db),
		auditHeadQuery + db.ForUpdate(),
		auditHeadAtQuery,
		auditHeadUpdate,
		stock.MarkUsed(0, 0, time.Time{}).Query,
	}
	for table, cols := range map[string][]string{"sales": saleCols, "indicia": indiciumCols, "spoiled": spoiledCols,
		"fundings": fundingCols, "remedies": remedyCols, "audit": auditCols} {
		qs = append(qs, store.InsertQueries(table, cols)...)
	}
	return qs
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// lockedMAC serializes the ledger's own HSM session, which its background
// work (committer, funding, checks, leases) shares.
type lockedMAC struct {
	mu sync.Mutex
	m  macer
}

func (l *lockedMAC) MAC(label string, data []byte) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m.MAC(label, data)
}
