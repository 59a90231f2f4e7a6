// Package stock keeps the serialized label stock (patent Figs. 4-5):
// stores, sheets of ten labels issued to a store, and their assignment to
// the kiosk that staff load them into, or to a customer account for the web
// portal. A sale's labels are checked against it before anything is signed.
package stock

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Stock is the label stock.
type Stock struct {
	// Hub names this hub in hub_leases. A web sheet it claims records it
	// until a sale on the sheet commits: if the hub dies first, the claim
	// is dropped (SettleClaims).
	Hub string
	db  *store.DB
	now func() time.Time
}

// New returns the stock on db.
func New(db *store.DB, now func() time.Time) *Stock {
	if now == nil {
		now = time.Now
	}
	return &Stock{db: db, now: now}
}

// AddStore creates a store if it does not exist.
func (s *Stock) AddStore(ctx context.Context, id, name string) error {
	if !protocol.ValidKioskID(id) {
		return fmt.Errorf("stock: store id %q: want 1-32 of [A-Za-z0-9_-]", id)
	}
	if name == "" {
		name = id
	}
	w := fleet.AddStore(id, name, s.now())
	_, err := s.db.ExecContext(ctx, s.db.Rebind(w.Query), w.Args...)
	if err != nil {
		return fmt.Errorf("stock: add store %s: %w", id, err)
	}
	return nil
}

// Issue creates n sheets with fresh random serials for a store.
func (s *Stock) Issue(ctx context.Context, storeID string, n int) ([]protocol.SheetSerial, error) {
	if n < 1 || n > 100_000 {
		return nil, fmt.Errorf("stock: issue: want 1 to 100000 sheets, got %d", n)
	}
	var exists int
	if err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT COUNT(*) FROM stores WHERE id = ?`), storeID).Scan(&exists); err != nil {
		return nil, fmt.Errorf("stock: issue: %w", err)
	}
	if exists == 0 {
		return nil, fmt.Errorf("stock: issue: no store %q", storeID)
	}
	out := make([]protocol.SheetSerial, 0, n)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("stock: issue: %w", err)
	}
	defer tx.Rollback()
	now := s.now().UnixMicro()
	for len(out) < n {
		var b [4]byte
		rand.Read(b[:])
		serial := protocol.SheetSerial(binary.BigEndian.Uint32(b[:]))
		res, err := s.db.ExecStmt(ctx, tx, `INSERT INTO sheets (serial, store, issued_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			uint32(serial), storeID, now)
		if err != nil {
			return nil, fmt.Errorf("stock: issue: %w", err)
		}
		if k, _ := res.RowsAffected(); k == 1 { // a clash with an existing serial just draws again
			out = append(out, serial)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("stock: issue: %w", err)
	}
	return out, nil
}

// Import records sheets whose serials a label printer made, for a store.
// Sheets already known are left as they are.
func (s *Stock) Import(ctx context.Context, storeID string, serials []protocol.SheetSerial) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("stock: import: %w", err)
	}
	defer tx.Rollback()
	for _, sh := range serials {
		if _, err := s.db.ExecStmt(ctx, tx, `INSERT INTO sheets (serial, store, issued_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			uint32(sh), storeID, s.now().UnixMicro()); err != nil {
			return fmt.Errorf("stock: import %s: %w", sh, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("stock: import: %w", err)
	}
	return nil
}

// Load assigns sheets to a kiosk on ops' word (hub stock load). Each sheet
// must belong to the kiosk's store and have labels left; one loaded into
// another kiosk of the store, or given to a customer, moves to this one.
func (s *Stock) Load(ctx context.Context, kioskID string, sheets []protocol.SheetSerial) ([]protocol.SheetState, error) {
	return s.load(ctx, kioskID, sheets, true)
}

// LoadAtKiosk is a kiosk's own load, as its staff scanned the sheets in:
// Load, but a sheet another kiosk or a customer holds stays where it is
// (label_assigned_elsewhere). Else a kiosk, stolen with its credentials,
// could take its siblings' stock away from them.
func (s *Stock) LoadAtKiosk(ctx context.Context, kioskID string, sheets []protocol.SheetSerial) ([]protocol.SheetState, error) {
	return s.load(ctx, kioskID, sheets, false)
}

func (s *Stock) load(ctx context.Context, kioskID string, sheets []protocol.SheetSerial, move bool) ([]protocol.SheetState, error) {
	var storeID sql.NullString
	var locked sql.NullInt64
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT store, locked_at FROM kiosks WHERE kiosk_id = ?`), kioskID).Scan(&storeID, &locked)
	if errors.Is(err, sql.ErrNoRows) || err == nil && !storeID.Valid {
		return nil, protocol.Errorf(protocol.CodeUnknownKiosk, "kiosk %s is not provisioned", kioskID)
	}
	if err == nil && locked.Valid {
		return nil, protocol.Errorf(protocol.CodeKioskLocked, "kiosk %s is locked: ops unlock it first", kioskID)
	}
	if err != nil {
		return nil, fmt.Errorf("stock: load: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("stock: load: %w", err)
	}
	defer tx.Rollback()
	elsewhere := func(sh protocol.SheetSerial) error {
		return protocol.Errorf(protocol.CodeLabelAssignedElsewhere,
			"sheet %s is loaded into another kiosk or assigned to a customer; ops can move it (hub stock load)", sh)
	}
	// Rows are locked (by the UPDATE) in ascending serial order, once each,
	// whatever the request's order: two loads that share sheets then queue
	// on the first one they share and never deadlock on PostgreSQL. The
	// ledger marks sheets used in the same order. The answer keeps the
	// request's order, the order the kiosk hands labels out in.
	for _, sh := range slices.Compact(slices.Sorted(slices.Values(sheets))) {
		var st string
		var inval sql.NullInt64
		var holder sql.NullString
		var account sql.NullInt64
		err := tx.QueryRowContext(ctx, s.db.Rebind(`SELECT store, invalidated_at, kiosk_id, account_id FROM sheets WHERE serial = ?`), uint32(sh)).
			Scan(&st, &inval, &holder, &account)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil, protocol.Errorf(protocol.CodeLabelUnknown, "sheet %s was never issued", sh)
		case err != nil:
			return nil, fmt.Errorf("stock: load: %w", err)
		case st != storeID.String:
			return nil, protocol.Errorf(protocol.CodeLabelNotAssigned, "sheet %s belongs to another store", sh)
		case inval.Valid:
			return nil, protocol.Errorf(protocol.CodeLabelUsed, "every label of sheet %s is used", sh)
		case !move && (holder.Valid && holder.String != kioskID || account.Valid):
			return nil, elsewhere(sh)
		}
		q := `UPDATE sheets SET kiosk_id = ?, account_id = NULL, assigned_at = ?, claim_hub = NULL WHERE serial = ?`
		args := []any{kioskID, s.now().UnixMicro(), uint32(sh)}
		if !move {
			// Again in the write: another kiosk's load of the same sheet may
			// have committed since the read (PostgreSQL reads the row again
			// here once that commit is through).
			q += ` AND (kiosk_id IS NULL OR kiosk_id = ?) AND account_id IS NULL`
			args = append(args, kioskID)
		}
		res, err := tx.ExecContext(ctx, s.db.Rebind(q), args...)
		if err != nil {
			return nil, fmt.Errorf("stock: load: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return nil, fmt.Errorf("stock: load: %w", err)
		} else if n != 1 {
			return nil, elsewhere(sh)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("stock: load: %w", err)
	}
	out := make([]protocol.SheetState, 0, len(sheets))
	for _, sh := range sheets {
		st, err := s.State(ctx, sh)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// AssignToAccount gives a sheet to a web customer.
func (s *Stock) AssignToAccount(ctx context.Context, sheet protocol.SheetSerial, accountID int64) error {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE sheets SET account_id = ?, kiosk_id = NULL, assigned_at = ?, claim_hub = NULL
		WHERE serial = ? AND invalidated_at IS NULL`),
		accountID, s.now().UnixMicro(), uint32(sheet))
	if err != nil {
		return fmt.Errorf("stock: assign %s: %w", sheet, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return protocol.Errorf(protocol.CodeLabelUnknown, "sheet %s was never issued, or is used up", sheet)
	}
	return nil
}

// State lists a sheet's free positions.
func (s *Stock) State(ctx context.Context, sheet protocol.SheetSerial) (protocol.SheetState, error) {
	st := protocol.SheetState{Sheet: sheet.String(), Free: []int{}}
	used := map[int]bool{}
	// A range, not LIKE, so that the label index serves it.
	first := protocol.LabelSerial{Sheet: sheet, Position: 1}.String()
	last := protocol.LabelSerial{Sheet: sheet, Position: protocol.LabelsPerSheet}.String()
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT label FROM indicia WHERE label BETWEEN ? AND ?`), first, last)
	if err != nil {
		return st, fmt.Errorf("stock: state %s: %w", sheet, err)
	}
	defer rows.Close()
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			return st, fmt.Errorf("stock: state %s: %w", sheet, err)
		}
		if ls, err := protocol.ParseLabelSerial(l); err == nil {
			used[int(ls.Position)] = true
		}
	}
	for p := 1; p <= protocol.LabelsPerSheet; p++ {
		if !used[p] {
			st.Free = append(st.Free, p)
		}
	}
	return st, rows.Err()
}

// Sheets lists the sheets assigned to a kiosk that still have labels.
func (s *Stock) Sheets(ctx context.Context, kioskID string) ([]protocol.SheetSerial, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT serial FROM sheets WHERE kiosk_id = ? AND invalidated_at IS NULL ORDER BY assigned_at, serial`), kioskID)
	if err != nil {
		return nil, fmt.Errorf("stock: sheets of %s: %w", kioskID, err)
	}
	defer rows.Close()
	var out []protocol.SheetSerial
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("stock: sheets of %s: %w", kioskID, err)
		}
		out = append(out, protocol.SheetSerial(v))
	}
	return out, rows.Err()
}

// VoidKiosk invalidates every sheet loaded into a retired kiosk: its free
// labels may never carry a stamp (the kiosk may be in a thief's hands).
// It returns how many sheets.
func (s *Stock) VoidKiosk(ctx context.Context, kioskID string) (int, error) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE sheets SET invalidated_at = ? WHERE kiosk_id = ? AND invalidated_at IS NULL`),
		s.now().UnixMicro(), kioskID)
	if err != nil {
		return 0, fmt.Errorf("stock: void %s: %w", kioskID, err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// Answer serves a kiosk's StockLoad message and returns the StockResult.
func (s *Stock) Answer(ctx context.Context, kioskID string, payload []byte) ([]byte, *protocol.Error) {
	res := protocol.StockResult{Status: protocol.ResultOK}
	req, err := protocol.DecodeStockLoad(payload)
	if req != nil {
		res.RequestID = req.RequestID
	}
	if err == nil && req.KioskID != kioskID {
		err = protocol.Errorf(protocol.CodeKioskMismatch, "kiosk_id %s in a message on kiosk %s's topic", req.KioskID, kioskID)
	}
	if err == nil {
		sheets := make([]protocol.SheetSerial, len(req.Sheets))
		for i, sh := range req.Sheets {
			sheets[i], _ = protocol.ParseSheetSerial(sh) // validated by the decoder
		}
		res.Sheets, err = s.LoadAtKiosk(ctx, kioskID, sheets)
	}
	var perr *protocol.Error
	if err != nil {
		perr = protocol.AsError(err)
		res = protocol.StockResult{RequestID: res.RequestID, Status: protocol.ResultRejected, Error: perr}
	}
	out, _ := json.Marshal(res) // plain data: cannot fail
	return out, perr
}

// WebStore is the store whose sheets are sold for printing at home: such
// a sheet belongs to the first customer who prints on it.
const WebStore = "web"

// Claim gives an unclaimed sheet of the web store to accountID, for the
// sale about to be made on it. It does nothing to any other sheet: the
// sale's own checks then refuse it. It returns the claim's time when this
// call took the sheet (zero when it did not), for Unclaim: a sale not made
// must not leave the sheet its customer's.
//
// The claim names this hub until a sale on the sheet commits (MarkUsed):
// if the hub dies before its sale is made or refused, settlement drops it
// (SettleClaims). The same customer's next sale takes over such a claim
// of a dead hub, and so undoes it if that sale is not made either. Callers
// hold the sheet's turn (sale.takeSheet): no other sale on it is in flight.
func (s *Stock) Claim(ctx context.Context, sheet protocol.SheetSerial, accountID int64) (int64, error) {
	now := s.now()
	at := now.UnixMicro()
	lease, leaseArgs := s.db.LeaseNow(now)
	// used = 0: a sheet that carries stamps is its buyer's, even if its
	// claim was undone meanwhile (see Unclaim), never a newcomer's. A
	// claim of this hub's own is not taken over: its sale's outcome is
	// unknown, and the sale may still commit.
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE sheets SET account_id = ?, assigned_at = ?, claim_hub = ?
		WHERE serial = ? AND store = ? AND kiosk_id IS NULL AND invalidated_at IS NULL AND used = 0
		AND (account_id IS NULL OR account_id = ? AND claim_hub <> ? AND `+deadClaim(lease)+`)`),
		append([]any{accountID, at, nullHub(s.Hub), uint32(sheet), WebStore, accountID, s.Hub}, leaseArgs...)...)
	if err != nil {
		return 0, fmt.Errorf("stock: claim %s: %w", sheet, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return 0, fmt.Errorf("stock: claim %s: %w", sheet, err)
	} else if n != 1 {
		return 0, nil
	}
	return at, nil
}

// deadClaim is the condition, on a sheets row and now (the time leases
// are judged at, from store.LeaseNow), that the hub that claimed it has no
// live lease.
func deadClaim(now string) string {
	return `NOT EXISTS (SELECT 1 FROM hub_leases l WHERE l.hub = sheets.claim_hub AND l.until >= ` + now + `)`
}

// nullHub is hub as a claim records it: a Stock that names no hub (an
// offline command) makes claims no settlement drops, as before hubs were
// named.
func nullHub(hub string) any {
	if hub == "" {
		return nil
	}
	return hub
}

// Unclaim undoes the claim Claim made at claimedAt, when the sale it was
// made for was not: the sheet is unclaimed again. Only that claim, and only
// while no label of the sheet is used: a sale committed on it (the ledger
// counts used in the sale's own commit) keeps it its buyer's, and a sheet
// ops assigned or moved since keeps their word.
func (s *Stock) Unclaim(ctx context.Context, sheet protocol.SheetSerial, accountID, claimedAt int64) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE sheets SET account_id = NULL, assigned_at = NULL, claim_hub = NULL
		WHERE serial = ? AND store = ? AND account_id = ? AND assigned_at = ? AND kiosk_id IS NULL AND used = 0`),
		uint32(sheet), WebStore, accountID, claimedAt)
	if err != nil {
		return fmt.Errorf("stock: unclaim %s: %w", sheet, err)
	}
	return nil
}

// turnTaker takes a sheet's turn if no live hub holds it (claims.Claims).
// An alias, so that the users of SettleClaims name the same type.
type turnTaker = interface {
	TryTake(ctx context.Context, scope, name string) (release func(), ok bool, err error)
}

// sheetTurn is the scope of the claim that web sales on one sheet take
// turns under (sale.takeSheet).
const sheetTurn = "web-sheet"

// SettleClaims drops the claims of web sheets that hubs now dead made for
// sales that never committed: the hub died (or stopped) after Claim and
// before the sale was made or refused, so no Unclaim came. Each is dropped
// holding the sheet's turn (turns, nil when no other hub serves the
// database), so never under a sale being made on it; a sheet whose turn
// a live hub holds waits for the next settlement. A sale committed on the
// sheet meanwhile keeps it its buyer's (used). It returns the sheets
// dropped.
func (s *Stock) SettleClaims(ctx context.Context, turns turnTaker) ([]protocol.SheetSerial, error) {
	lease, leaseArgs := s.db.LeaseNow(s.now())
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT serial FROM sheets
		WHERE claim_hub IS NOT NULL AND claim_hub <> ? AND used = 0 AND `+deadClaim(lease)+` ORDER BY serial`),
		append([]any{s.Hub}, leaseArgs...)...)
	if err != nil {
		return nil, fmt.Errorf("stock: settle claims: %w", err)
	}
	var found []protocol.SheetSerial
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, fmt.Errorf("stock: settle claims: %w", err)
		}
		found = append(found, protocol.SheetSerial(v))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("stock: settle claims: %w", err)
	}
	var dropped []protocol.SheetSerial
	var errs []error
	for _, sh := range found {
		ok, err := s.dropClaim(ctx, turns, sh)
		if err != nil {
			// One that fails must not hold up the others; it is tried again.
			errs = append(errs, err)
		} else if ok {
			dropped = append(dropped, sh)
		}
	}
	return dropped, errors.Join(errs...)
}

// dropClaim drops sheet's claim if its hub is still dead and no sale on
// it committed, holding its turn. It reports whether it did.
func (s *Stock) dropClaim(ctx context.Context, turns turnTaker, sheet protocol.SheetSerial) (bool, error) {
	if turns != nil {
		release, ok, err := turns.TryTake(ctx, sheetTurn, sheet.String())
		if err != nil || !ok {
			return false, err
		}
		defer release()
	}
	// Read again in the write: a sale of the same customer on a live hub
	// may have taken the claim over (Claim) since the look above.
	lease, leaseArgs := s.db.LeaseNow(s.now())
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE sheets SET account_id = NULL, assigned_at = NULL, claim_hub = NULL
		WHERE serial = ? AND store = ? AND claim_hub IS NOT NULL AND claim_hub <> ? AND kiosk_id IS NULL AND used = 0 AND `+deadClaim(lease)),
		append([]any{uint32(sheet), WebStore, s.Hub}, leaseArgs...)...)
	if err != nil {
		return false, fmt.Errorf("stock: drop claim %s: %w", sheet, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("stock: drop claim %s: %w", sheet, err)
	}
	return n == 1, nil
}

// Batch is the sheets issued to a store at one time, and how far they
// have gone: loaded into a kiosk or claimed by a customer, labels used.
type Batch struct {
	Store      string    `json:"store"`
	IssuedAt   time.Time `json:"issued_at"`
	Sheets     int       `json:"sheets"`
	Loaded     int       `json:"loaded"`
	LabelsUsed int       `json:"labels_used"`
	LabelsLeft int       `json:"labels_left"`
}

// Batches lists every batch, newest first.
func (s *Stock) Batches(ctx context.Context) ([]Batch, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT store, issued_at, COUNT(*),
		SUM(CASE WHEN kiosk_id IS NOT NULL OR account_id IS NOT NULL THEN 1 ELSE 0 END), SUM(used)
		FROM sheets GROUP BY store, issued_at ORDER BY issued_at DESC, store`)
	if err != nil {
		return nil, fmt.Errorf("stock: batches: %w", err)
	}
	defer rows.Close()
	out := []Batch{}
	for rows.Next() {
		var b Batch
		var at int64
		if err := rows.Scan(&b.Store, &at, &b.Sheets, &b.Loaded, &b.LabelsUsed); err != nil {
			return nil, fmt.Errorf("stock: batches: %w", err)
		}
		b.IssuedAt = time.UnixMicro(at)
		b.LabelsLeft = b.Sheets*protocol.LabelsPerSheet - b.LabelsUsed
		out = append(out, b)
	}
	return out, rows.Err()
}

// WebOwnerQuery reads, for a web sale's commit, a sheet's customer (0:
// none), its labels used, and 1 if a kiosk holds it. The ledger reads it
// in the sale's transaction, the row locked on PostgreSQL, so that the
// sheet cannot change hands before the sale commits.
const WebOwnerQuery = `SELECT COALESCE(account_id, 0), used, CASE WHEN kiosk_id IS NULL THEN 0 ELSE 1 END FROM sheets WHERE serial = ?`

// Retake is the write that gives a sheet, unclaimed and unused, back to
// the customer whose sale on it commits: a claim its hub made was dropped
// while the hub seemed dead (SettleClaims), and the hub lived on to
// commit the sale.
func Retake(sheet uint32, accountID int64, at time.Time) store.Write {
	return store.Write{
		Query: `UPDATE sheets SET account_id = ?, assigned_at = ? WHERE serial = ? AND account_id IS NULL AND kiosk_id IS NULL`,
		Args:  []any{accountID, at.UnixMicro(), sheet},
	}
}

// MarkUsed is the write that counts n labels of a sheet as used, the sheet
// invalidated with its tenth: the ledger commits it in the transaction of
// the sale that used them. A web sheet's claim is then its buyer's for
// good: no hub's to drop (claim_hub). The sheets table is this package's; others
// change it only through writes like this one.
func MarkUsed(sheet uint32, n int, at time.Time) store.Write {
	return store.Write{
		Query: `UPDATE sheets SET used = used + ?, invalidated_at = CASE WHEN used + ? >= 10 THEN ? ELSE invalidated_at END, claim_hub = NULL
		WHERE serial = ?`,
		Args: []any{n, n, at.UnixMicro(), sheet},
	}
}
