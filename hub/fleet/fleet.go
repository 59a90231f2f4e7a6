// Package fleet is the hub's register of kiosks: which store each belongs
// to, its broker credentials (a bcrypt hash; the password is shown once, at
// provisioning), and the numeric id that goes into the indicium's user
// field. Only provisioned kiosks may connect or sell.
package fleet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/accounts/pwcheck"
	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Kiosk is a provisioned kiosk.
type Kiosk struct {
	ID     string
	Store  string
	UserID uint64
	// Retired is when the kiosk was retired (lost, stolen or taken out of
	// the fleet), if it was; RetiredWhy says why.
	Retired    *time.Time
	RetiredWhy string
	// Locked is when ops locked the kiosk (suspected stolen), if they
	// did; LockedBy is who. A locked kiosk is refused every sale.
	Locked   *time.Time
	LockedBy string
	// ZIP is the ZIP code its store mails from, or "" if ops gave none;
	// Get sets it, List does not.
	ZIP protocol.ZIP
	// Zone is the time zone its store sells in, or nil for the hub's own;
	// Get sets it, List does not.
	Zone *time.Location
}

// cacheFor is how often Get asks whether any kiosk changed (the
// kiosks_version row, which every change to kiosks moves, in any process):
// a kiosk retired on another hub, or from a shell, stops selling here
// within it. Until then what Get read stands, and a sale reads no kiosk
// row.
const cacheFor = 2 * time.Second

// Registry knows the kiosks.
type Registry struct {
	// Passwords makes Add give kiosks broker passwords, for a hub that
	// takes them (--kiosk-passwords).
	Passwords bool
	// Cost is the bcrypt cost of new hashes; 0 is bcrypt.DefaultCost.
	Cost int
	db   *store.DB
	mu   sync.Mutex
	ids  map[string]Kiosk
	// gen counts the times ids was emptied because kiosks changed; a
	// read begun before is not kept.
	gen     uint64
	version int64     // kiosks_version when last asked; -1 before
	askedAt time.Time // when
	// ok remembers a password that checked out against a stored hash, so
	// a kiosk that reconnects does not pay for bcrypt again.
	ok *pwcheck.Cache
	// unknown is compared against for a kiosk id with no password, at the
	// kiosks' cost: made on first use.
	unknown     []byte
	unknownOnce sync.Once
}

// New returns the registry on db.
func New(db *store.DB) *Registry {
	return &Registry{db: db, ids: map[string]Kiosk{}, ok: pwcheck.New(0, nil), version: -1}
}

// ErrReservedID refuses a kiosk id or store that the hub uses itself.
var ErrReservedID = errors.New("reserved for the hub's own use")

// reservedKioskIDs are the prefixes of what the hub keys as a kiosk id
// itself. A kiosk named into one would share its idempotency keys, payments
// and claims: a web customer's sales and payments ("web-" and the account,
// sale.WebKioskID), a prepaid account's top-ups (payments.FundKioskID), and
// the claims scopes that make a label's refunds and a kiosk's staff logins
// take turns ("refund-label", "staff-login": a kiosk so named could hold a
// victim kiosk's staff logins with a purchase whose request_id is its id).
// Matched without regard to case, as SQLite's LIKE does.
var reservedKioskIDs = []struct{ prefix, what string }{
	{"web-", "web customers' sales"},
	{"fund-", "prepaid accounts' top-ups"},
	{"refund-", "refunds' claims"},
	{"staff-login", "staff logins' claims"},
}

// webStore is stock.WebStore, whose sheets go to web customers: a kiosk
// there could load them.
const webStore = "web"

// notReserved refuses a kiosk id or store in one of the hub's own
// namespaces. Only provisioning checks: kiosks already provisioned keep
// working, and protocol.ValidKioskID is unchanged.
func notReserved(kioskID, storeID string) error {
	for _, r := range reservedKioskIDs {
		if len(kioskID) >= len(r.prefix) && strings.EqualFold(kioskID[:len(r.prefix)], r.prefix) {
			return fmt.Errorf("a kiosk id may not start with %q, %w (%s); choose another", r.prefix, ErrReservedID, r.what)
		}
	}
	if strings.EqualFold(storeID, webStore) {
		return fmt.Errorf("store %q is %w (web customers' sheets); choose another", webStore, ErrReservedID)
	}
	return nil
}

// Add provisions a kiosk in a store (created if new) and, when the registry
// takes Passwords, returns its new broker password. Provisioning an existing
// kiosk again replaces its password, which is how a lost one is recovered;
// in another store only if it never sold (keepsItsStore), since its sales
// would go with it.
// Without Passwords a kiosk has none at all (it enrolls for a certificate),
// so none can leak, and none costs a bcrypt.
func (r *Registry) Add(ctx context.Context, kioskID, storeID string) (string, error) {
	if !protocol.ValidKioskID(kioskID) || !protocol.ValidKioskID(storeID) {
		return "", fmt.Errorf("fleet: add %q in %q: ids want 1-32 of [A-Za-z0-9_-], and a kiosk id may not start with %s", kioskID, storeID, protocol.HubPrefix)
	}
	if err := notReserved(kioskID, storeID); err != nil {
		return "", fmt.Errorf("fleet: add %s in %s: %w", kioskID, storeID, err)
	}
	var retired sql.NullInt64
	if err := r.db.QueryRowContext(ctx, r.db.Rebind(`SELECT retired_at FROM kiosks WHERE kiosk_id = ?`), kioskID).Scan(&retired); err == nil && retired.Valid {
		return "", fmt.Errorf("fleet: add %s: the kiosk was retired; its id stays with its history, so choose another", kioskID)
	}
	var password string
	var hash sql.NullString
	if r.Passwords {
		password = rand.Text()
		h, err := bcrypt.GenerateFromPassword([]byte(password), r.Cost)
		if err != nil {
			return "", fmt.Errorf("fleet: add %s: %w", kioskID, err)
		}
		hash = sql.NullString{String: string(h), Valid: true}
	}
	now := time.Now().UnixMicro()
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("fleet: add %s: %w", kioskID, err)
	}
	defer tx.Rollback()
	if err := keepsItsStore(ctx, r.db, tx, kioskID, storeID); err != nil {
		return "", fmt.Errorf("fleet: add %s in %s: %w", kioskID, storeID, err)
	}
	w := AddStore(storeID, storeID, time.UnixMicro(now))
	if _, err := tx.ExecContext(ctx, r.db.Rebind(w.Query), w.Args...); err != nil {
		return "", fmt.Errorf("fleet: add %s: %w", kioskID, err)
	}
	res, err := tx.ExecContext(ctx, r.db.Rebind(`UPDATE kiosks SET store = ?, password_hash = ? WHERE kiosk_id = ?`), storeID, hash, kioskID)
	if err != nil {
		return "", fmt.Errorf("fleet: add %s: %w", kioskID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := tx.ExecContext(ctx, r.db.Rebind(`INSERT INTO kiosks (kiosk_id, user_id, created_at, store, password_hash)
			SELECT ?, COALESCE(MAX(user_id), 0) + 1, ?, ?, ? FROM kiosks`), kioskID, now, storeID, hash); err != nil {
			return "", fmt.Errorf("fleet: add %s: %w", kioskID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("fleet: add %s: %w", kioskID, err)
	}
	r.Forget(kioskID)
	r.told(ctx, kioskID)
	return password, nil
}

// keepsItsStore refuses to move a kiosk that has sold to another store.
// Search, exports, shift reports, the kiosk page and the counter refund
// know a sale's store by its kiosk's store now, so a move would hand the
// old store's sales (and their refunds) to the new store's staff. A kiosk
// provisioned again in its own store (a lost password recovered), a new
// kiosk, and a kiosk that never sold, paid or stamped anything pass.
func keepsItsStore(ctx context.Context, db *store.DB, tx *sql.Tx, kioskID, storeID string) error {
	var was sql.NullString
	err := tx.QueryRowContext(ctx, db.Rebind(`SELECT store FROM kiosks WHERE kiosk_id = ?`), kioskID).Scan(&was)
	if errors.Is(err, sql.ErrNoRows) || err == nil && was.Valid && was.String == storeID {
		return nil
	}
	if err != nil {
		return err
	}
	var sold bool
	if err := tx.QueryRowContext(ctx, db.Rebind(`SELECT EXISTS (SELECT 1 FROM sales WHERE kiosk_id = ?)
		OR EXISTS (SELECT 1 FROM indicia WHERE kiosk_id = ?)
		OR EXISTS (SELECT 1 FROM payments WHERE kiosk_id = ?)`), kioskID, kioskID, kioskID).Scan(&sold); err != nil {
		return err
	}
	if !sold {
		return nil
	}
	from, recover := "no store", ""
	if was.Valid {
		from = "store " + was.String
		recover = fmt.Sprintf(" (to recover its password, add it again with --store %s)", was.String)
	}
	return protocol.Errorf(protocol.CodeInvalidRequest,
		"kiosk %s has sales in %s, which would move with it: a kiosk that has sold keeps its store; to move it, retire it (hub kiosk retire %s) and add a new kiosk id in store %s%s",
		kioskID, from, kioskID, storeID, recover)
}

// Get returns a provisioned kiosk in service, or unknown_kiosk (also for a
// retired one).
func (r *Registry) Get(ctx context.Context, kioskID string) (Kiosk, error) {
	r.askVersion(ctx)
	r.mu.Lock()
	k, ok := r.ids[kioskID]
	gen := r.gen
	r.mu.Unlock()
	if !ok {
		var st, why, lockedBy, zip, zone sql.NullString
		var retired, locked sql.NullInt64
		k = Kiosk{ID: kioskID}
		err := r.db.QueryRowContext(ctx, r.db.Rebind(`SELECT k.user_id, k.store, k.retired_at, k.retired_reason, k.locked_at, k.locked_by, s.zip, s.time_zone
			FROM kiosks k LEFT JOIN stores s ON s.id = k.store WHERE k.kiosk_id = ?`), kioskID).
			Scan(&k.UserID, &st, &retired, &why, &locked, &lockedBy, &zip, &zone)
		if errors.Is(err, sql.ErrNoRows) || err == nil && !st.Valid {
			return Kiosk{}, protocol.Errorf(protocol.CodeUnknownKiosk, "kiosk %s is not provisioned at this hub", kioskID)
		}
		if err != nil {
			return Kiosk{}, fmt.Errorf("fleet: get %s: %w", kioskID, err)
		}
		k.Store, k.ZIP = st.String, protocol.ZIP(zip.String)
		if zone.Valid {
			if k.Zone, err = LoadZone(zone.String); err != nil {
				return Kiosk{}, fmt.Errorf("fleet: get %s: %w", kioskID, err)
			}
		}
		if retired.Valid {
			t := time.UnixMicro(retired.Int64).UTC()
			k.Retired, k.RetiredWhy = &t, why.String
		}
		if locked.Valid {
			t := time.UnixMicro(locked.Int64).UTC()
			k.Locked, k.LockedBy = &t, lockedBy.String
		}
		r.mu.Lock()
		if r.gen == gen {
			r.ids[kioskID] = k
		}
		r.mu.Unlock()
	}
	if k.Retired != nil {
		return Kiosk{}, protocol.Errorf(protocol.CodeUnknownKiosk, "kiosk %s was retired on %s (%s)", kioskID, k.Retired.Format(time.DateOnly), k.RetiredWhy)
	}
	return k, nil
}

// ErrRetired is Retire's answer for a kiosk retired already: what a
// retirement cut short left undone can then be finished.
var ErrRetired = errors.New("kiosk retired already")

// Retire takes a kiosk out of the fleet for good: it may no longer log in,
// enroll or sell, an open enrollment code is dropped, and the commands it
// has not answered expire (it will not answer them). Its row stays,
// with its sales and stamps. A lost or stolen kiosk is recorded as a
// device event for the next postal report.
func (r *Registry) Retire(ctx context.Context, kioskID, why string, lost bool) error {
	now := time.Now().UnixMicro()
	kind := "kiosk_retired"
	if lost {
		kind = "kiosk_lost"
	}
	err := r.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, r.db.Rebind(`UPDATE kiosks SET retired_at = ?, retired_reason = ? WHERE kiosk_id = ? AND store IS NOT NULL AND retired_at IS NULL`),
			now, why, kioskID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			var retired sql.NullInt64
			if tx.QueryRowContext(ctx, r.db.Rebind(`SELECT retired_at FROM kiosks WHERE kiosk_id = ?`), kioskID).Scan(&retired) == nil && retired.Valid {
				return ErrRetired
			}
			return protocol.Errorf(protocol.CodeUnknownKiosk, "kiosk %s is not a provisioned kiosk in service", kioskID)
		}
		if _, err := tx.ExecContext(ctx, r.db.Rebind(`DELETE FROM enrollments WHERE kiosk_id = ?`), kioskID); err != nil {
			return err
		}
		w := commands.ExpireKiosk(kioskID)
		if _, err := tx.ExecContext(ctx, r.db.Rebind(w.Query), w.Args...); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, r.db.Rebind(`INSERT INTO device_events (kind, subject, detail, at) VALUES (?, ?, ?, `+store.FlooredTime+`)`),
			kind, "kiosk/"+kioskID, why, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("fleet: retire %s: %w", kioskID, err)
	}
	r.Forget(kioskID)
	r.told(ctx, kioskID)
	return nil
}

// RetireDone records that a retired kiosk's retirement was carried
// through (hub.RetireKiosk): its certificates revoked, its sheets and
// unreported stamps voided.
func (r *Registry) RetireDone(ctx context.Context, kioskID string) error {
	if _, err := r.db.ExecContext(ctx, r.db.Rebind(`UPDATE kiosks SET retire_done_at = ? WHERE kiosk_id = ? AND retired_at IS NOT NULL`),
		time.Now().UnixMicro(), kioskID); err != nil {
		return fmt.Errorf("fleet: retirement of %s done: %w", kioskID, err)
	}
	return nil
}

// Unfinished is a kiosk retired whose retirement was not carried through.
type Unfinished struct{ ID, Why string }

// RetiredUnfinished lists the kiosks retired whose retirement was not
// carried through: a hub stopped between the steps.
func (r *Registry) RetiredUnfinished(ctx context.Context) ([]Unfinished, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT kiosk_id, COALESCE(retired_reason, '') FROM kiosks WHERE retired_at IS NOT NULL AND retire_done_at IS NULL ORDER BY kiosk_id`)
	if err != nil {
		return nil, fmt.Errorf("fleet: retirements unfinished: %w", err)
	}
	defer rows.Close()
	var out []Unfinished
	for rows.Next() {
		var u Unfinished
		if err := rows.Scan(&u.ID, &u.Why); err != nil {
			return nil, fmt.Errorf("fleet: retirements unfinished: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fleet: retirements unfinished: %w", err)
	}
	return out, nil
}

// askVersion asks, at most every cacheFor, whether any kiosk changed, and
// forgets them all if one did. A failed read forgets them too: nothing is
// kept past cacheFor that could not be checked.
func (r *Registry) askVersion(ctx context.Context) {
	r.mu.Lock()
	if time.Since(r.askedAt) <= cacheFor {
		r.mu.Unlock()
		return
	}
	r.askedAt = time.Now() // one asks; the others go on meanwhile
	r.mu.Unlock()
	v := int64(-1)
	if err := r.db.QueryRowStmt(ctx, nil, `SELECT v FROM kiosks_version WHERE id = 1`).Scan(&v); err != nil {
		v = -1
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if v == -1 || v != r.version {
		r.version = v
		r.gen++
		clear(r.ids)
	}
}

// Forget drops what the registry remembers of a kiosk, whose row another
// hub changed.
func (r *Registry) Forget(kioskID string) {
	r.mu.Lock()
	delete(r.ids, kioskID)
	r.mu.Unlock()
	r.ok.Forget(kioskID)
}

// forgetAll drops every kiosk the registry read (not the passwords that
// checked out): a change to their stores.
func (r *Registry) forgetAll() {
	r.mu.Lock()
	r.gen++
	clear(r.ids)
	r.mu.Unlock()
}

// told tells the other hubs that a kiosk's credentials changed. A lost
// notification only delays them until their brokers' next recheck.
func (r *Registry) told(ctx context.Context, kioskID string) {
	r.db.Notify(context.WithoutCancel(ctx), store.CredentialsChannel, kioskID)
}

// UserID returns the numeric id of a provisioned kiosk that may sell:
// kiosk_locked for a kiosk ops locked.
func (r *Registry) UserID(ctx context.Context, kioskID string) (uint64, error) {
	k, err := r.InService(ctx, kioskID)
	return k.UserID, err
}

// InService is Get for a kiosk that may sell: a locked one is
// kiosk_locked.
func (r *Registry) InService(ctx context.Context, kioskID string) (Kiosk, error) {
	k, err := r.Get(ctx, kioskID)
	if err == nil && k.Locked != nil {
		return Kiosk{}, protocol.Errorf(protocol.CodeKioskLocked, "kiosk %s was locked by %s on %s", kioskID, k.LockedBy, k.Locked.Format(time.DateTime))
	}
	return k, err
}

// SetLocked locks a kiosk, so that no hub serves it a sale until it is
// unlocked, or unlocks it. Every hub follows within cacheFor.
func (r *Registry) SetLocked(ctx context.Context, kioskID, by string, locked bool) error {
	var at sql.NullInt64
	var who sql.NullString
	if locked {
		at = sql.NullInt64{Int64: time.Now().UnixMicro(), Valid: true}
		who = sql.NullString{String: by, Valid: true}
	}
	res, err := r.db.ExecContext(ctx, r.db.Rebind(`UPDATE kiosks SET locked_at = ?, locked_by = ? WHERE kiosk_id = ? AND store IS NOT NULL AND retired_at IS NULL`),
		at, who, kioskID)
	if err != nil {
		return fmt.Errorf("fleet: lock %s: %w", kioskID, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return protocol.Errorf(protocol.CodeUnknownKiosk, "kiosk %s is not a provisioned kiosk in service", kioskID)
	}
	r.Forget(kioskID)
	r.told(ctx, kioskID)
	return nil
}

// Authenticate checks a kiosk's broker password. The stored hash is read
// every time, so a password replaced on any hub stops working at once;
// only the bcrypt comparison is skipped for a password that already
// matched this same hash; without slow, that is the only check made. The
// stamp names the credential that matched.
func (r *Registry) Authenticate(kioskID, password string, slow bool) (stamp string, ok bool) {
	var hash sql.NullString
	err := r.db.QueryRowContext(context.Background(), r.db.Rebind(`SELECT password_hash FROM kiosks WHERE kiosk_id = ? AND store IS NOT NULL AND retired_at IS NULL`), kioskID).Scan(&hash)
	if err != nil || !hash.Valid || hash.String == "" {
		if slow { // as long as a wrong password: the id is not told
			r.unknownOnce.Do(func() { r.unknown, _ = bcrypt.GenerateFromPassword([]byte("no kiosk has this password"), r.Cost) })
			bcrypt.CompareHashAndPassword(r.unknown, []byte(password))
		}
		return "", false
	}
	stamp = credentialStamp(hash.String)
	if r.ok.Known(kioskID, hash.String, password) {
		return stamp, true
	}
	if !slow || !r.ok.Check(kioskID, hash.String, password) {
		return "", false
	}
	return stamp, true
}

// Stamps returns the current credential stamp of every provisioned kiosk:
// the broker closes a session whose stamp changed.
func (r *Registry) Stamps(ctx context.Context) (map[string]string, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT kiosk_id, password_hash FROM kiosks WHERE store IS NOT NULL AND password_hash IS NOT NULL AND retired_at IS NULL`)
	if err != nil {
		return nil, fmt.Errorf("fleet: stamps: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, hash string
		if err := rows.Scan(&id, &hash); err != nil {
			return nil, fmt.Errorf("fleet: stamps: %w", err)
		}
		out[id] = credentialStamp(hash)
	}
	return out, rows.Err()
}

// credentialStamp names a stored password hash without repeating it.
func credentialStamp(hash string) string {
	s := sha256.Sum256([]byte(hash))
	return hex.EncodeToString(s[:8])
}

// List lists the provisioned kiosks with their stores, the retired too.
func (r *Registry) List(ctx context.Context) ([]Kiosk, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT kiosk_id, store, user_id, retired_at, COALESCE(retired_reason, ''), locked_at, COALESCE(locked_by, '') FROM kiosks WHERE store IS NOT NULL ORDER BY kiosk_id`)
	if err != nil {
		return nil, fmt.Errorf("fleet: list: %w", err)
	}
	defer rows.Close()
	var out []Kiosk
	for rows.Next() {
		var k Kiosk
		var retired, locked sql.NullInt64
		if err := rows.Scan(&k.ID, &k.Store, &k.UserID, &retired, &k.RetiredWhy, &locked, &k.LockedBy); err != nil {
			return nil, fmt.Errorf("fleet: list: %w", err)
		}
		if retired.Valid {
			t := time.UnixMicro(retired.Int64).UTC()
			k.Retired = &t
		}
		if locked.Valid {
			t := time.UnixMicro(locked.Int64).UTC()
			k.Locked = &t
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// IDs lists the provisioned kiosks.
func (r *Registry) IDs(ctx context.Context) ([]string, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT kiosk_id FROM kiosks WHERE store IS NOT NULL AND retired_at IS NULL ORDER BY kiosk_id`)
	if err != nil {
		return nil, fmt.Errorf("fleet: list: %w", err)
	}
	return column(rows)
}

// AddStore is the write that records a store if it is new, for another
// package to commit in its own transaction (stock adds the stores its
// sheets go to). The stores table is this package's.
func AddStore(id, name string, at time.Time) store.Write {
	return store.Write{
		Query: `INSERT INTO stores (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		Args:  []any{id, name, at.UnixMicro()},
	}
}

// StoreName is the name of a store, or "" for a kiosk with none.
func (r *Registry) StoreName(ctx context.Context, id string) (string, error) {
	if id == "" {
		return "", nil
	}
	var name string
	err := r.db.QueryRowContext(ctx, r.db.Rebind(`SELECT name FROM stores WHERE id = ?`), id).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("fleet: store %s: %w", id, err)
	}
	return name, nil
}
