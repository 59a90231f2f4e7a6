package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/protocol"
)

// ResetTTL is how long a password-reset link is good for once made.
const ResetTTL = 30 * time.Minute

// What is wrong with a reset link. The holder of a link may be told which:
// a link is unguessable, so the answer gives a guesser nothing.
var (
	ErrResetUnknown = errors.New("accounts: the reset link is not valid")
	ErrResetUsed    = errors.New("accounts: the reset link was already used")
	ErrResetExpired = errors.New("accounts: the reset link has expired")
)

// ErrNoLogin is a reset asked for a login no account has. Callers must not
// tell the asker (see NewReset).
var ErrNoLogin = errors.New("accounts: no account has that login")

// checkPassword applies the registration rules: bcrypt reads at most 72
// bytes, and short passwords are guessed.
func checkPassword(pw string) error {
	if len(pw) < 10 || len(pw) > 72 {
		return protocol.Errorf(protocol.CodeInvalidRequest, "password: want 10-72 characters")
	}
	return nil
}

// ChangePassword sets the account's password to next, given its current
// one; a wrong current password is ErrAuth. It also spends the account's
// open reset links.
func (a *Accounts) ChangePassword(ctx context.Context, id int64, current, next string) error {
	// The rules first: a refused new password must not need, nor test, the
	// current one.
	if err := checkPassword(next); err != nil {
		return err
	}
	var old string
	err := a.db.QueryRowContext(ctx, a.db.Rebind(`SELECT password_hash FROM accounts WHERE id = ?`), id).Scan(&old)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrAuth
	}
	if err != nil {
		return fmt.Errorf("accounts: change password: %w", err)
	}
	if bcrypt.CompareHashAndPassword([]byte(old), []byte(current)) != nil {
		return ErrAuth
	}
	h, err := bcrypt.GenerateFromPassword([]byte(next), a.Cost)
	if err != nil {
		return fmt.Errorf("accounts: change password: %w", err)
	}
	return a.db.InTx(ctx, func(tx *sql.Tx) error {
		// Only over the hash that was checked: of two changes at once, the
		// second knew a password that is no longer current.
		res, err := tx.ExecContext(ctx, a.db.Rebind(`UPDATE accounts SET password_hash = ? WHERE id = ? AND password_hash = ?`), string(h), id, old)
		if err != nil {
			return fmt.Errorf("accounts: change password: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return ErrAuth
		}
		return a.spendResets(ctx, tx, id)
	})
}

// NewReset makes a one-time link token with which the holder sets a new
// password for login before expiry. Only its hash is stored. For a login
// no account has it is ErrNoLogin: the caller answers the asker the same
// either way, so that the form tells no one which logins exist.
func (a *Accounts) NewReset(ctx context.Context, login string) (token string, expires time.Time, err error) {
	var id int64
	err = a.db.QueryRowContext(ctx, a.db.Rebind(`SELECT id FROM accounts WHERE login = ?`), login).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, ErrNoLogin
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("accounts: new reset: %w", err)
	}
	token = rand.Text() // 130 random bits
	now := a.now()
	expires = now.Add(ResetTTL)
	h := sha256.Sum256([]byte(token))
	err = a.db.InTx(ctx, func(tx *sql.Tx) error {
		// Links are kept a day past expiry, to say "expired" rather than
		// "not valid" to someone who comes back late.
		if _, err := tx.ExecContext(ctx, a.db.Rebind(`DELETE FROM password_resets WHERE expires_at < ?`), now.Add(-24*time.Hour).UnixMicro()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, a.db.Rebind(`INSERT INTO password_resets (hash, account_id, created_at, expires_at) VALUES (?, ?, ?, ?)`),
			h[:], id, now.UnixMicro(), expires.UnixMicro())
		return err
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("accounts: new reset: %w", err)
	}
	return token, expires, nil
}

// CheckReset says whether token may still set a password: nil, or
// ErrResetUnknown, ErrResetUsed or ErrResetExpired.
func (a *Accounts) CheckReset(ctx context.Context, token string) error {
	_, err := a.resetState(ctx, a.db, token)
	return err
}

// queryer is a database or a transaction.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// resetState finds the account token resets, if it still may.
func (a *Accounts) resetState(ctx context.Context, q queryer, token string) (int64, error) {
	if token == "" || len(token) > 64 {
		return 0, ErrResetUnknown
	}
	h := sha256.Sum256([]byte(token))
	var id, expires int64
	var used sql.NullInt64
	err := q.QueryRowContext(ctx, a.db.Rebind(`SELECT account_id, expires_at, used_at FROM password_resets WHERE hash = ?`), h[:]).Scan(&id, &expires, &used)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, ErrResetUnknown
	case err != nil:
		return 0, fmt.Errorf("accounts: reset link: %w", err)
	case used.Valid:
		return 0, ErrResetUsed
	case a.now().UnixMicro() >= expires:
		return 0, ErrResetExpired
	}
	return id, nil
}

// Reset sets a new password with a reset link's token, once: the link and
// the account's other open links are spent. It returns the account, whose
// sessions the caller ends. A password that breaks the rules leaves the
// link unspent, to try again.
func (a *Accounts) Reset(ctx context.Context, token, next string) (int64, error) {
	if err := checkPassword(next); err != nil {
		return 0, err
	}
	if _, err := a.resetState(ctx, a.db, token); err != nil {
		return 0, err // before spending a bcrypt hash on a dead link
	}
	h, err := bcrypt.GenerateFromPassword([]byte(next), a.Cost)
	if err != nil {
		return 0, fmt.Errorf("accounts: reset: %w", err)
	}
	th := sha256.Sum256([]byte(token))
	var id int64
	err = a.db.InTx(ctx, func(tx *sql.Tx) error {
		now := a.now().UnixMicro()
		// Spent in one statement, so that of two uses at once one wins.
		err := tx.QueryRowContext(ctx, a.db.Rebind(`UPDATE password_resets SET used_at = ?
			WHERE hash = ? AND used_at IS NULL AND expires_at > ? RETURNING account_id`), now, th[:], now).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			_, err = a.resetState(ctx, tx, token)
			if err == nil {
				err = ErrResetUsed
			}
			return err
		}
		if err != nil {
			return fmt.Errorf("accounts: reset: %w", err)
		}
		if _, err := tx.ExecContext(ctx, a.db.Rebind(`UPDATE accounts SET password_hash = ? WHERE id = ?`), string(h), id); err != nil {
			return fmt.Errorf("accounts: reset: %w", err)
		}
		return a.spendResets(ctx, tx, id)
	})
	if err != nil {
		return 0, err
	}
	return id, nil
}

// spendResets marks the account's open links used: once the password is
// new, a link made for the old one must not replace it.
func (a *Accounts) spendResets(ctx context.Context, tx *sql.Tx, id int64) error {
	if _, err := tx.ExecContext(ctx, a.db.Rebind(`UPDATE password_resets SET used_at = ? WHERE account_id = ? AND used_at IS NULL`),
		a.now().UnixMicro(), id); err != nil {
		return fmt.Errorf("accounts: spend reset links: %w", err)
	}
	return nil
}
