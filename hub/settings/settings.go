// Package settings is the kiosks' central configuration: settings ops set
// for the whole fleet, a store or one kiosk, and each store's staff
// credentials. A kiosk's settings are the fleet's, overlaid by its
// store's, overlaid by its own. Once a store has staff here, they replace
// the PIN and badges in its kiosks' own files; a member revoked here is
// refused at every kiosk of the store as soon as its config arrives.
package settings

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Fleet is the scope of the fleet-wide settings.
const Fleet = "*"

// StoreScope and KioskScope name the scopes of one store and one kiosk.
func StoreScope(id string) string { return "store/" + id }
func KioskScope(id string) string { return "kiosk/" + id }

// Settings is the central configuration.
type Settings struct {
	// Cost is the bcrypt cost of new hashes; 0 is bcrypt.DefaultCost.
	Cost int
	db   *store.DB
	now  func() time.Time
}

// New returns the central configuration on db; now defaults to time.Now.
func New(db *store.DB, now func() time.Time) *Settings {
	if now == nil {
		now = time.Now
	}
	return &Settings{db: db, now: now}
}

// putSettings writes a scope's settings: scope, body, by, at.
const putSettings = `INSERT INTO kiosk_settings (scope, body, updated_by, updated_at) VALUES (?, ?, ?, ?)
	ON CONFLICT (scope) DO UPDATE SET body = excluded.body, updated_by = excluded.updated_by, updated_at = excluded.updated_at`

// Set replaces the settings of a scope (zero fields inherit).
func (s *Settings) Set(ctx context.Context, scope string, v protocol.KioskSettings, by string) error {
	if err := validScope(scope); err != nil {
		return err
	}
	if err := v.Validate(); err != nil {
		return err
	}
	body, _ := json.Marshal(v)
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(putSettings),
		scope, string(body), by, s.now().UnixMicro()); err != nil {
		return fmt.Errorf("settings: set %s: %w", scope, err)
	}
	return nil
}

// Revision names a scope's settings as read, for SetIf: a hash of them.
func Revision(v protocol.KioskSettings) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// SetIf replaces a scope's settings as Set does, if they are still those
// that revision names (Revision): an operator saving a form loaded before
// another's save, on this hub or another, would undo that save unseen.
func (s *Settings) SetIf(ctx context.Context, scope string, v protocol.KioskSettings, by, revision string) error {
	if err := validScope(scope); err != nil {
		return err
	}
	if err := v.Validate(); err != nil {
		return err
	}
	body, _ := json.Marshal(v)
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		// The one row every settings write moves (its trigger), locked
		// first: a scope's row may not exist yet, and then two first
		// saves would lock nothing and both pass.
		var n int64
		if err := tx.QueryRowContext(ctx, `SELECT v FROM config_version WHERE id = 1`+s.db.ForUpdate()).Scan(&n); err != nil {
			return err
		}
		var cur protocol.KioskSettings
		var was, who string
		switch err := tx.QueryRowContext(ctx, s.db.Rebind(`SELECT body, updated_by FROM kiosk_settings WHERE scope = ?`+s.db.ForUpdate()), scope).Scan(&was, &who); {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			if err := json.Unmarshal([]byte(was), &cur); err != nil {
				return err
			}
		}
		if Revision(cur) != revision {
			return protocol.Errorf(protocol.CodeInvalidRequest, "these settings were changed meanwhile (by %s); load them again and redo the change", who)
		}
		_, err := tx.ExecContext(ctx, s.db.Rebind(putSettings),
			scope, string(body), by, s.now().UnixMicro())
		return err
	})
	if err != nil {
		var pe *protocol.Error
		if errors.As(err, &pe) {
			return err
		}
		return fmt.Errorf("settings: set %s: %w", scope, err)
	}
	return nil
}

func validScope(scope string) error {
	if scope == Fleet {
		return nil
	}
	kind, id, _ := strings.Cut(scope, "/")
	if kind != "store" && kind != "kiosk" || !protocol.ValidKioskID(id) {
		return protocol.Errorf(protocol.CodeInvalidRequest, "scope %q: want *, store/ID or kiosk/ID", scope)
	}
	return nil
}

// Get returns the settings set on one scope, not what it inherits.
func (s *Settings) Get(ctx context.Context, scope string) (protocol.KioskSettings, error) {
	var v protocol.KioskSettings
	var body string
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT body FROM kiosk_settings WHERE scope = ?`), scope).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return v, nil
	}
	if err == nil {
		err = json.Unmarshal([]byte(body), &v)
	}
	if err != nil {
		return v, fmt.Errorf("settings: get %s: %w", scope, err)
	}
	return v, nil
}

// For returns a kiosk's settings in effect, and the names of its store's
// staff: managed says the store has staff here at all (revoked ones
// count), so that a store whose last member was revoked admits nobody.
func (s *Settings) For(ctx context.Context, kioskID, storeID string) (v protocol.KioskSettings, staff []string, managed bool, err error) {
	for _, scope := range []string{Fleet, StoreScope(storeID), KioskScope(kioskID)} {
		o, err := s.Get(ctx, scope)
		if err != nil {
			return v, nil, false, err
		}
		overlay(&v, o)
	}
	all, err := s.Staff(ctx, storeID)
	if err != nil {
		return v, nil, false, err
	}
	for _, m := range all {
		if m.Revoked == nil {
			staff = append(staff, m.Name)
		}
	}
	return v, staff, len(all) > 0, nil
}

// overlay sets in v every field o sets.
func overlay(v *protocol.KioskSettings, o protocol.KioskSettings) {
	if o.RemedyWindowS != 0 {
		v.RemedyWindowS = o.RemedyWindowS
	}
	if o.IdleTimeoutS != 0 {
		v.IdleTimeoutS = o.IdleTimeoutS
	}
	if o.Language != "" {
		v.Language = o.Language
	}
	if o.LabelsLow != 0 {
		v.LabelsLow = o.LabelsLow
	}
	if o.PaperAlert != "" {
		v.PaperAlert = o.PaperAlert
	}
	if o.HeartbeatS != 0 {
		v.HeartbeatS = o.HeartbeatS
	}
}

// Member is one of a store's staff as the hub keeps them. The PIN's
// bcrypt hash and the badge code's SHA-256 (hex) never leave the hub.
type Member struct {
	Name        string     `json:"name"`
	PINHash     string     `json:"-"`
	BadgeSHA256 string     `json:"-"`
	Store       string     `json:"store"`
	HasPIN      bool       `json:"has_pin"`
	HasBadge    bool       `json:"has_badge"`
	AddedBy     string     `json:"added_by"`
	Added       time.Time  `json:"added_at"`
	RevokedBy   string     `json:"revoked_by,omitempty"`
	Revoked     *time.Time `json:"revoked_at,omitempty"`
}

// AddStaff gives a member of a store's staff a PIN (4-8 digits), a badge
// (the code printed on it, STAFF-...), or both; adding a name again
// replaces their credentials and undoes a revocation.
func (s *Settings) AddStaff(ctx context.Context, storeID, name, pin, badge, by string) error {
	name = strings.TrimSpace(name)
	switch {
	case name == "" || len(name) > 64:
		return protocol.Errorf(protocol.CodeInvalidRequest, "name: want 1 to 64 bytes")
	case pin == "" && badge == "":
		return protocol.Errorf(protocol.CodeInvalidRequest, "want a PIN, a badge or both")
	case pin != "" && !protocol.ValidStaffPIN(pin):
		return protocol.Errorf(protocol.CodeInvalidRequest, "pin: want 4 to 8 digits")
	case badge != "" && !protocol.ValidStaffBadge(badge):
		return protocol.Errorf(protocol.CodeInvalidRequest, "badge: want the code on the badge, STAFF-...")
	}
	var pinHash, badgeSum sql.NullString
	if pin != "" {
		h, err := bcrypt.GenerateFromPassword([]byte(pin), s.Cost)
		if err != nil {
			return fmt.Errorf("settings: add staff: %w", err)
		}
		pinHash = sql.NullString{String: string(h), Valid: true}
	}
	if badge != "" {
		badgeSum = sql.NullString{String: BadgeSum(badge), Valid: true}
	}
	// The count and the insert run under the store row's lock, so that
	// two adds at once (two consoles, two hubs) cannot both see room for
	// one more.
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		var id string
		if err := tx.QueryRowContext(ctx, s.db.Rebind(`SELECT id FROM stores WHERE id = ?`+s.db.ForUpdate()), storeID).Scan(&id); errors.Is(err, sql.ErrNoRows) {
			return protocol.Errorf(protocol.CodeInvalidRequest, "no store %s", storeID)
		} else if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, s.db.Rebind(`SELECT COUNT(*) FROM store_staff WHERE store = ? AND revoked_at IS NULL AND name <> ?`), storeID, name).Scan(&n); err != nil {
			return err
		}
		if n >= protocol.MaxStaff {
			return protocol.Errorf(protocol.CodeInvalidRequest, "store %s has %d staff, the most a kiosk's config carries", storeID, n)
		}
		now := s.now().UnixMicro()
		_, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO store_staff (store, name, pin_hash, badge_sha256, added_by, added_at, changed_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (store, name) DO UPDATE SET pin_hash = excluded.pin_hash, badge_sha256 = excluded.badge_sha256,
				added_by = excluded.added_by, added_at = excluded.added_at, revoked_by = NULL, revoked_at = NULL, changed_at = excluded.changed_at`),
			id, name, pinHash, badgeSum, by, now, now)
		return err
	})
	var pe *protocol.Error
	if err != nil && !errors.As(err, &pe) {
		return fmt.Errorf("settings: add staff: %w", err)
	}
	return err
}

// BadgeSum is how a badge code travels and is kept: its SHA-256, hex.
func BadgeSum(code string) string {
	sum := sha256.Sum256([]byte(code))
	return hex.EncodeToString(sum[:])
}

// CheckStaff returns the name of the store's active member whose PIN or
// badge this is, or "" if none. Each PIN costs a bcrypt comparison per
// member with a PIN: the caller bounds the tries.
func (s *Settings) CheckStaff(ctx context.Context, storeID, pin, badge string) (string, error) {
	var rows *sql.Rows
	var err error
	if badge != "" {
		rows, err = s.db.QueryContext(ctx, s.db.Rebind(`SELECT name FROM store_staff
			WHERE store = ? AND badge_sha256 = ? AND revoked_at IS NULL`), storeID, BadgeSum(badge))
	} else {
		rows, err = s.db.QueryContext(ctx, s.db.Rebind(`SELECT name, pin_hash FROM store_staff
			WHERE store = ? AND pin_hash IS NOT NULL AND revoked_at IS NULL ORDER BY name`), storeID)
	}
	if err != nil {
		return "", fmt.Errorf("settings: check staff of %s: %w", storeID, err)
	}
	type member struct{ name, hash string }
	var ms []member
	for rows.Next() {
		var m member
		dst := []any{&m.name}
		if badge == "" {
			dst = append(dst, &m.hash)
		}
		if err := rows.Scan(dst...); err != nil {
			rows.Close()
			return "", fmt.Errorf("settings: check staff of %s: %w", storeID, err)
		}
		ms = append(ms, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("settings: check staff of %s: %w", storeID, err)
	}
	if badge != "" {
		if len(ms) > 0 {
			return ms[0].name, nil
		}
		return "", nil
	}
	// The PIN against each member's hash, on every core: a wrong PIN at a
	// store of 200 costs 200 comparisons of ~80 ms, which the kiosk waits
	// for. Members are taken in name order and none after a match, so the
	// first by name of those with this PIN wins, as one at a time.
	var (
		next  atomic.Int64
		found atomic.Int64 // the lowest index matched, len(ms) if none
		wg    sync.WaitGroup
	)
	found.Store(int64(len(ms)))
	for range min(runtime.GOMAXPROCS(0), len(ms)) {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= found.Load() {
					return
				}
				if bcrypt.CompareHashAndPassword([]byte(ms[i].hash), []byte(pin)) == nil {
					for f := found.Load(); i < f && !found.CompareAndSwap(f, i); f = found.Load() {
					}
				}
			}
		})
	}
	wg.Wait()
	if i := found.Load(); i < int64(len(ms)) {
		return ms[i].name, nil
	}
	return "", nil
}

// RevokeStaff takes a member's credentials away at every kiosk of the
// store.
func (s *Settings) RevokeStaff(ctx context.Context, storeID, name, by string) error {
	now := s.now().UnixMicro()
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE store_staff SET revoked_by = ?, revoked_at = ?, changed_at = ?
		WHERE store = ? AND name = ? AND revoked_at IS NULL`), by, now, now, storeID, name)
	if err != nil {
		return fmt.Errorf("settings: revoke staff: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return protocol.Errorf(protocol.CodeInvalidRequest, "store %s has no active staff member %q", storeID, name)
	}
	return nil
}

// Staff lists a store's staff, the revoked too, by name.
func (s *Settings) Staff(ctx context.Context, storeID string) ([]Member, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT name, COALESCE(pin_hash, ''), COALESCE(badge_sha256, ''), added_by, added_at,
		COALESCE(revoked_by, ''), revoked_at FROM store_staff WHERE store = ? ORDER BY name`), storeID)
	if err != nil {
		return nil, fmt.Errorf("settings: staff of %s: %w", storeID, err)
	}
	defer rows.Close()
	var out []Member
	for rows.Next() {
		m := Member{Store: storeID}
		var added int64
		var revoked sql.NullInt64
		if err := rows.Scan(&m.Name, &m.PINHash, &m.BadgeSHA256, &m.AddedBy, &added, &m.RevokedBy, &revoked); err != nil {
			return nil, fmt.Errorf("settings: staff of %s: %w", storeID, err)
		}
		m.HasPIN, m.HasBadge = m.PINHash != "", m.BadgeSHA256 != ""
		m.Added = time.UnixMicro(added).UTC()
		if revoked.Valid {
			t := time.UnixMicro(revoked.Int64).UTC()
			m.Revoked = &t
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Changed returns a number that every change here moves (a trigger's
// count, not a time: writers' clocks differ), for hubs to notice changes
// made elsewhere (another hub, the command line).
func (s *Settings) Changed(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT v FROM config_version WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("settings: changed: %w", err)
	}
	return v, nil
}
