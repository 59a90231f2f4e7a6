// Package operators keeps the people who run Frank from the hub console:
// vendor ops, who see and do everything, and store staff, who see only
// their own stores' kiosks and label stock. Passwords are bcrypt hashes;
// API tokens for the operator API are random, shown once, and kept as
// SHA-256 hashes; each expires, and is read-only unless made to write.
package operators

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/accounts/pwcheck"
	"github.com/frank-postage/frank/hub/store"
)

// Roles.
const (
	RoleOps   = "ops"
	RoleStaff = "staff"
)

// Operator is someone who may use the console or the operator API.
type Operator struct {
	ID     int64    `json:"id"`
	Login  string   `json:"login"`
	Role   string   `json:"role"`
	Stores []string `json:"stores,omitempty"` // staff only
	// Token is the API token they came by; nil for a console login.
	Token *Token `json:"token,omitempty"`
}

// Scope is what an API token may do.
type Scope string

// Scopes. A token reads unless it was made to write: one leaked from a
// script that only looks cannot change anything. A metrics token reads
// /metrics and nothing else: the one a scraper like Prometheus holds (and
// may send over plain HTTP) reads no sales, customers or settings.
const (
	ReadOnly    Scope = "read"
	ReadWrite   Scope = "write"
	MetricsOnly Scope = "metrics"
)

// Token lifetimes: a leaked token stops working on its own.
const (
	DefaultTokenTTL = 90 * 24 * time.Hour
	MaxTokenTTL     = 365 * 24 * time.Hour
)

// Token is what an operator's API token allows.
type Token struct {
	Name      string    `json:"name"`
	Scope     Scope     `json:"scope"`
	ExpiresAt time.Time `json:"expires_at"`
}

// MayWrite reports whether t may change things; no token may not.
func (t *Token) MayWrite() bool { return t != nil && t.Scope == ReadWrite }

// Ops reports whether o may see everything.
func (o *Operator) Ops() bool { return o.Role == RoleOps }

// MaySee reports whether o may see what belongs to storeID.
func (o *Operator) MaySee(storeID string) bool {
	return o.Ops() || slices.Contains(o.Stores, storeID)
}

// MaxLogin is the longest operator login.
const MaxLogin = 64

// ErrAuth is a wrong login, password or token; they are not told apart.
var ErrAuth = errors.New("operators: wrong login or password")

// Operators is the operator store.
type Operators struct {
	// Cost is the bcrypt cost of new hashes; 0 is bcrypt.DefaultCost.
	Cost int
	db   *store.DB
	now  func() time.Time
	// verified remembers passwords that matched for VerifiedFor: the
	// console's login limits count only failures, so without it anyone
	// with an operator login (store staff) could have the hub run a bcrypt
	// for every request they send.
	verified *pwcheck.Cache
	// unknown is compared against for a login that does not exist, at Cost
	// like every stored hash, so that a missing login takes as long as a
	// wrong password. Made on first use, once Cost is set: a bcrypt hash
	// costs tens of milliseconds, which every start would pay.
	unknown     []byte
	unknownOnce sync.Once
}

// VerifiedFor is how long a password that matched an operator's stored
// hash is taken again without bcrypt, while that hash stands: a password
// reset (hub operator add), on any hub, has a new hash and is checked
// again.
const VerifiedFor = 5 * time.Minute

// New returns the store on db.
func New(db *store.DB, now func() time.Time) *Operators {
	if now == nil {
		now = time.Now
	}
	return &Operators{db: db, now: now, verified: pwcheck.New(VerifiedFor, func(hash, pw []byte) error { return compareHash(hash, pw) })}
}

// compareHash checks a password against a hash; tests count it.
var compareHash = bcrypt.CompareHashAndPassword

// Add creates an operator, or resets the password of an existing one (how
// a forgotten or stolen password is recovered), revoking its API tokens;
// Hub.SetOperator also ends its console sessions. An empty role keeps an
// existing operator's role (a new one is ops), and nil stores keep a staff
// member's stores: a password reset must not change what someone may do.
func (s *Operators) Add(ctx context.Context, login, password, role string, stores []string) (*Operator, error) {
	if len(login) < 3 || len(login) > MaxLogin {
		return nil, fmt.Errorf("operators: add: login wants 3-%d characters", MaxLogin)
	}
	if len(password) < 12 || len(password) > 72 {
		return nil, errors.New("operators: add: password wants 12-72 characters")
	}
	if role != "" && role != RoleOps && role != RoleStaff {
		return nil, fmt.Errorf("operators: add: role %q: want ops or staff", role)
	}
	if role == RoleStaff && stores != nil && len(stores) == 0 {
		return nil, errors.New("operators: add: store staff need at least one store")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), s.Cost)
	if err != nil {
		return nil, fmt.Errorf("operators: add: %w", err)
	}
	var op *Operator
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		op = &Operator{Login: login, Role: role}
		var oldRole string
		err := tx.QueryRowContext(ctx, s.db.Rebind(`SELECT id, role FROM operators WHERE login = ?`), login).Scan(&op.ID, &oldRole)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		exists := err == nil
		if op.Role == "" {
			op.Role = RoleOps
			if exists {
				op.Role = oldRole
			}
		}
		keepStores := exists && oldRole == RoleStaff && op.Role == RoleStaff && stores == nil
		if op.Role == RoleStaff && !keepStores {
			if len(stores) == 0 {
				return errors.New("store staff need at least one store (--stores)")
			}
			op.Stores = stores
		}
		err = tx.QueryRowContext(ctx, s.db.Rebind(`INSERT INTO operators (login, password_hash, role, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (login) DO UPDATE SET password_hash = excluded.password_hash, role = excluded.role RETURNING id`),
			login, string(h), op.Role, s.now().UnixMicro()).Scan(&op.ID)
		if err != nil {
			return err
		}
		// A reset is for a password forgotten or stolen: whoever holds the
		// old one loses the API tokens it made (and, by the hub, the
		// console sessions).
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE api_tokens SET revoked_at = ? WHERE operator_id = ? AND revoked_at IS NULL`), s.now().UnixMicro(), op.ID); err != nil {
			return err
		}
		if keepStores {
			return nil
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM operator_stores WHERE operator_id = ?`), op.ID); err != nil {
			return err
		}
		for _, st := range op.Stores {
			var known int
			if err := tx.QueryRowContext(ctx, s.db.Rebind(`SELECT COUNT(*) FROM stores WHERE id = ?`), st).Scan(&known); err != nil {
				return fmt.Errorf("store %s: %w", st, err)
			}
			if known == 0 {
				return fmt.Errorf("no store %s (hub stock issue makes one)", st)
			}
			if _, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO operator_stores (operator_id, store) VALUES (?, ?)`), op.ID, st); err != nil {
				return fmt.Errorf("store %s: %w", st, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("operators: add %s: %w", login, err)
	}
	if op.Role == RoleStaff && op.Stores == nil {
		kept, err := s.ByID(ctx, op.ID)
		if err != nil {
			return nil, fmt.Errorf("operators: add %s: %w", login, err)
		}
		op.Stores = kept.Stores
	}
	return op, nil
}

// Authenticate checks a login and password. The stored hash is read every
// time; a password that matched that same hash within VerifiedFor costs no
// bcrypt.
func (s *Operators) Authenticate(ctx context.Context, login, password string) (*Operator, error) {
	var id int64
	var hash string
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT id, password_hash FROM operators WHERE login = ?`), login).Scan(&id, &hash)
	if err != nil {
		s.unknownOnce.Do(func() { s.unknown, _ = bcrypt.GenerateFromPassword([]byte("not a password anyone has"), s.Cost) })
		compareHash(s.unknown, []byte(password))
		return nil, ErrAuth
	}
	if !s.verified.Check(strconv.FormatInt(id, 10), hash, password) {
		return nil, ErrAuth
	}
	return s.ByID(ctx, id)
}

// ByID finds an operator with their stores.
func (s *Operators) ByID(ctx context.Context, id int64) (*Operator, error) {
	op := &Operator{ID: id}
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT login, role FROM operators WHERE id = ?`), id).Scan(&op.Login, &op.Role)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrAuth
	}
	if err != nil {
		return nil, fmt.Errorf("operators: read %d: %w", id, err)
	}
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT store FROM operator_stores WHERE operator_id = ? ORDER BY store`), id)
	if err != nil {
		return nil, fmt.Errorf("operators: read %d: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var st string
		if err := rows.Scan(&st); err != nil {
			return nil, fmt.Errorf("operators: read %d: %w", id, err)
		}
		op.Stores = append(op.Stores, st)
	}
	return op, rows.Err()
}

// NewToken creates an API token for login, with scope, that expires ttl
// from now, and returns it; only its hash is kept, so it cannot be shown
// again.
func (s *Operators) NewToken(ctx context.Context, login, name string, scope Scope, ttl time.Duration) (string, error) {
	if scope != ReadOnly && scope != ReadWrite && scope != MetricsOnly {
		return "", fmt.Errorf("operators: new token for %s: scope %q: want %s, %s or %s", login, scope, ReadOnly, ReadWrite, MetricsOnly)
	}
	if ttl <= 0 || ttl > MaxTokenTTL {
		return "", fmt.Errorf("operators: new token for %s: lifetime %v: want more than 0 and at most %d days", login, ttl, MaxTokenTTL/(24*time.Hour))
	}
	var id int64
	if err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT id FROM operators WHERE login = ?`), login).Scan(&id); err != nil {
		return "", fmt.Errorf("operators: new token for %s: no such operator", login)
	}
	tok := "frk_" + rand.Text()
	h := sha256.Sum256([]byte(tok))
	now := s.now()
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(`INSERT INTO api_tokens (hash, operator_id, name, scope, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`),
		h[:], id, name, string(scope), now.UnixMicro(), now.Add(ttl).UnixMicro()); err != nil {
		return "", fmt.Errorf("operators: new token for %s: %w", login, err)
	}
	return tok, nil
}

// ByToken finds the operator an unrevoked, unexpired API token belongs
// to, with what the token allows. An expired token is as wrong as an
// unknown one: ErrAuth.
func (s *Operators) ByToken(ctx context.Context, token string) (*Operator, error) {
	h := sha256.Sum256([]byte(token))
	var id, expires int64
	var t Token
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT operator_id, name, scope, expires_at FROM api_tokens
		WHERE hash = ? AND revoked_at IS NULL AND expires_at > ?`), h[:], s.now().UnixMicro()).Scan(&id, &t.Name, &t.Scope, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrAuth
	}
	if err != nil {
		return nil, fmt.Errorf("operators: token: %w", err)
	}
	op, err := s.ByID(ctx, id)
	if err != nil {
		return nil, err
	}
	t.ExpiresAt = time.UnixMicro(expires).UTC()
	op.Token = &t
	return op, nil
}

// RevokeTokens revokes every token of login. An unknown login is an
// error: a mistyped one must not look like a revocation done.
func (s *Operators) RevokeTokens(ctx context.Context, login string) (int64, error) {
	var known int
	if err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT COUNT(*) FROM operators WHERE login = ?`), login).Scan(&known); err != nil {
		return 0, fmt.Errorf("operators: revoke tokens of %s: %w", login, err)
	}
	if known == 0 {
		return 0, fmt.Errorf("operators: revoke tokens: no operator %s", login)
	}
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE api_tokens SET revoked_at = ? WHERE revoked_at IS NULL
		AND operator_id = (SELECT id FROM operators WHERE login = ?)`), s.now().UnixMicro(), login)
	if err != nil {
		return 0, fmt.Errorf("operators: revoke tokens of %s: %w", login, err)
	}
	return res.RowsAffected()
}
